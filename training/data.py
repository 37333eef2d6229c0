"""Datasets as in-memory arrays, and tf.data pipelines over them.

Sources, in order: ``<data_dir>/<dataset>.npz`` (arrays ``x_train, y_train, x_test, y_test`` as
``tf.keras.datasets`` returns them), then ``tf.keras.datasets`` (its cache, else a download), then, for MNIST
only, the subset bundled with this repository.
"""

import dataclasses
import os
import zipfile

import numpy as np
import tensorflow as tf
from absl import logging



@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and a report need to know of a dataset before loading it."""

    height: int
    width: int
    channels: int
    num_classes: int
    class_names: tuple = ()  # one per class, in label order; empty: the label number is the name

    @property
    def image_shape(self):
        return (self.height, self.width, self.channels)


_CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm").split()

# Every dataset the loader knows, with its class names as the datasets' documentation gives them.
DATASETS = {
    "mnist": DatasetInfo(28, 28, 1, 10, tuple(str(digit) for digit in range(10))),
    "fashion_mnist": DatasetInfo(28, 28, 1, 10, ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal",
                                                 "shirt", "sneaker", "bag", "ankle boot")),
    "cifar10": DatasetInfo(32, 32, 3, 10, ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                           "ship", "truck")),
    "cifar100": DatasetInfo(32, 32, 3, 100, tuple(_CIFAR100_CLASSES)),
}
REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
BUNDLED_MNIST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bundled_data",
                             "mnist_subset.npz")


class DataError(ValueError):
    """A dataset that cannot be found or does not hold what it should; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Images as uint8 NHWC and labels as int32 (n,), with where they came from."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    @property
    def image_shape(self):
        return self.x_train.shape[1:]

    @property
    def info(self):
        return DATASETS[self.name]

    @property
    def num_classes(self):
        return self.info.num_classes


def load(name, data_dir=None, allow_download=True):
    """Returns the ``Dataset`` called ``name`` from the first source that has it (see the module docstring)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}")
    if data_dir:
        path = os.path.join(data_dir, f"{name}.npz")
        if os.path.exists(path):
            return _from_npz(name, path, source=path)
    arrays = _from_keras(name, allow_download)
    if arrays is not None:
        return _validated(name, arrays, "tf.keras.datasets", source=f"tf.keras.datasets.{name}")
    if name == "mnist" and os.path.exists(BUNDLED_MNIST):
        logging.warning("full MNIST was neither found nor downloadable: training on the bundled subset (10,000 "
                        "training images, the official 10,000 test images) from %s", BUNDLED_MNIST)
        return _from_npz(name, BUNDLED_MNIST, source=f"bundled MNIST subset {BUNDLED_MNIST}")
    where = os.path.join(data_dir, f"{name}.npz") if data_dir else f"<data_dir>/{name}.npz"
    raise DataError(f"dataset '{name}' not found: put {where} (arrays {', '.join(REQUIRED_KEYS)}) there and "
                    f"pass --data_dir, or allow tf.keras.datasets to download it")


def _from_keras(name, allow_download):
    """Arrays from ``tf.keras.datasets``; only its cache unless ``allow_download``. None when unavailable."""
    if not allow_download and not _in_keras_cache(name):
        return None
    try:
        (x_train, y_train), (x_test, y_test) = getattr(tf.keras.datasets, name).load_data()
    except Exception:  # No network, a partial download, a server error: all mean "not available here".
        return None
    return dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _in_keras_cache(name):
    cache = os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "datasets")
    entries = {"mnist": "mnist.npz", "fashion_mnist": "fashion-mnist", "cifar10": "cifar-10-batches-py",
               "cifar100": "cifar-100-python"}
    return os.path.exists(os.path.join(cache, entries[name]))


def _from_npz(name, path, source):
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in REQUIRED_KEYS if key not in npz.files]
            if missing:
                raise DataError(f"{path}: missing arrays {', '.join(missing)}; expected {', '.join(REQUIRED_KEYS)}")
            arrays = {key: npz[key] for key in REQUIRED_KEYS}
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from None
    return _validated(name, arrays, path, source)


def _validated(name, arrays, where, source):
    """Checks shapes, dtypes and label range; returns a ``Dataset`` with NHWC uint8 images, int32 labels."""
    info = DATASETS[name]
    height, width, channels, num_classes = info.height, info.width, info.channels, info.num_classes
    split = {}
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.dtype != np.uint8:
            raise DataError(f"{where}: x_{part} has dtype {x.dtype}, expected uint8 pixels in [0, 255]")
        if x.ndim == 3 and channels == 1:
            x = x[..., np.newaxis]  # MNIST-style (n, 28, 28) -> (n, 28, 28, 1)
        if x.shape[1:] != (height, width, channels):
            raise DataError(f"{where}: x_{part} has shape {x.shape}, expected (n, {height}, {width}, {channels})")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.reshape(-1)  # CIFAR labels come as (n, 1)
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{where}: y_{part} has shape {y.shape}, expected ({len(x)},) to match x_{part}")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{where}: y_{part} has dtype {y.dtype}, expected integer class labels")
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise DataError(f"{where}: y_{part} holds labels in [{y.min()}, {y.max()}], expected "
                            f"[0, {num_classes}) for {name}")
        if len(x) == 0:
            raise DataError(f"{where}: x_{part} is empty")
        split[part] = (x, y.astype(np.int32))
    return Dataset(name, *split["train"], *split["test"], source=source)


def channel_stats(images):
    """Per-channel mean and standard deviation of uint8 images, on the [0, 1] scale."""
    scaled = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return scaled.mean(axis=0).astype(np.float32), scaled.std(axis=0).astype(np.float32)


def make_preprocess(mean=None, std=None, augment=False, dtype=tf.float32):
    """Returns ``fn(images_uint8, labels) -> (images, labels)`` for batches of NHWC images.

    Images go to [0, 1], then ``(x - mean) / std`` per channel when both are given. ``augment`` adds the
    standard CIFAR augmentation: each image is padded by 4 pixels (reflected), cropped back to its size at a
    random offset, and flipped left-right with probability 1/2.
    """

    def preprocess(images, labels):
        x = tf.cast(images, tf.float32) / 255.0
        if mean is not None:
            x = (x - mean) / std
        if augment:
            x = _random_crop_and_flip(x, padding=4)
        return tf.cast(x, dtype), labels

    return preprocess


def _random_crop_and_flip(images, padding):
    """Each image gets its own crop window and its own coin flip.

    ``tf.image.random_crop`` on a whole batch would draw one window for all of it, so the offsets are drawn
    per image and the windows are cut with two batched gathers (rows, then columns).
    """
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]], mode="REFLECT")
    offsets = tf.random.uniform([batch, 2], minval=0, maxval=2 * padding + 1, dtype=tf.int32)
    rows = offsets[:, :1] + tf.range(height)[tf.newaxis, :]
    cols = offsets[:, 1:] + tf.range(width)[tf.newaxis, :]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    cropped = tf.gather(cropped, cols, axis=2, batch_dims=1)
    return tf.image.random_flip_left_right(cropped)


def train_pipeline(x, y, batch_size, seed, preprocess, skip_batches=0, replicas=(0, 1, 1)):
    """An endless tf.data pipeline of shuffled training batches of ``batch_size`` (the remainder dropped).

    The order depends only on ``seed``, so a run resumed at step ``skip_batches`` sees the batches that the
    uninterrupted run would have seen. ``replicas=(first, count, total)`` cuts each global batch into
    ``total`` equal parts and yields parts ``first .. first + count - 1`` one after another: what one
    worker's ``count`` replicas take in a distributed run (see ``distributed_train_dataset``).
    """
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = dataset.batch(batch_size, drop_remainder=True).skip(skip_batches)
    first, count, total = replicas
    if total > 1:
        part = batch_size // total

        def this_workers_parts(images, labels):
            # (B, ...) -> (count, B / total, ...): this worker's replicas' slices of the global batch, in order.
            take = slice(first * part, (first + count) * part)
            return tf.data.Dataset.from_tensor_slices(
                (tf.reshape(images[take], [count, part, *images.shape[1:]]), tf.reshape(labels[take], [count, part])))

        dataset = dataset.flat_map(this_workers_parts)
    return _parallel_map_and_prefetch(dataset, preprocess)


def _parallel_map_and_prefetch(dataset, preprocess):
    """Preprocesses batches on all cores and keeps two ready, with tf.data's autotuning off.

    The pipelines are in-memory slicing and scaling, which fixed settings serve well; and in TensorFlow 2.21
    the autotuning thread of a long-lived iterator can hold up the iterator's deletion (the end of a run) for
    up to a minute.
    """
    dataset = dataset.map(preprocess, num_parallel_calls=os.cpu_count() or 1, deterministic=True)
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(2).with_options(options)


def distributed_train_dataset(strategy, x, y, batch_size, seed, preprocess, skip_batches=0):
    """``train_pipeline`` distributed so that replica r of the run gets part r of every global batch.

    Every worker shuffles identically, so the replicas together see exactly the batches of a one-device run
    with the same seed, whatever the number of workers and devices.
    """

    def dataset_fn(context):
        local = context.num_replicas_in_sync // context.num_input_pipelines
        replicas = (context.input_pipeline_id * local, local, context.num_replicas_in_sync)
        return train_pipeline(x, y, batch_size, seed, preprocess, skip_batches, replicas)

    return strategy.distribute_datasets_from_function(dataset_fn)


def distributed_eval_dataset(strategy, x, y, batch_size, preprocess):
    """The test set split across workers, in per-replica batches; every example is evaluated once."""

    def dataset_fn(context):
        shard = slice(context.input_pipeline_id, None, context.num_input_pipelines)
        return eval_pipeline(x[shard], y[shard], context.get_per_replica_batch_size(batch_size), preprocess)

    return strategy.distribute_datasets_from_function(dataset_fn)


def eval_pipeline(x, y, batch_size, preprocess):
    """Every test example exactly once, in order, in minibatches of ``batch_size`` (the last one smaller)."""
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    return _parallel_map_and_prefetch(dataset, preprocess)
