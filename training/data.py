"""Datasets as in-memory arrays, and tf.data pipelines over them.

Sources, in order: ``<data_dir>/<dataset>.npz`` (arrays ``x_train, y_train, x_test, y_test`` as
``tf.keras.datasets`` returns them; for CIFAR-100 optionally ``y_train_coarse, y_test_coarse, fine_to_coarse``
too), then ``tf.keras.datasets`` (its cache, else a download), then, for MNIST only, the subset bundled with
this repository.

Training augmentation is a pure function of the run seed and of each example's place in the run:
``train_pipeline`` hands ``preprocess`` every example's ``Draws``, made with stateless random ops from
(seed, global batch index, position in the global batch). So a run resumed at step k, and a global batch split
over any number of replicas, augment bit for bit as one uninterrupted one-device run does.
"""

import dataclasses
import math
import os
import zipfile
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from training.errors import OneLineError


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and a report need to know of a dataset before loading it."""

    height: int
    width: int
    channels: int
    num_classes: int
    class_names: tuple = ()  # one per class, in label order; empty: the label number is the name
    coarse_class_names: tuple = ()  # superclasses (CIFAR-100's 20), in coarse label order; empty: none

    @property
    def image_shape(self):
        return (self.height, self.width, self.channels)

    @property
    def num_coarse_classes(self):
        return len(self.coarse_class_names)


_CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)
_CIFAR100_SUPERCLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
    "household_furniture", "insects", "large_carnivores", "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes", "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
    "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
)

# Every dataset the loader knows, with its class names as the datasets' documentation gives them.
DATASETS = {
    "mnist": DatasetInfo(28, 28, 1, 10, tuple(str(digit) for digit in range(10))),
    "fashion_mnist": DatasetInfo(28, 28, 1, 10, ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal",
                                                 "shirt", "sneaker", "bag", "ankle boot")),
    "cifar10": DatasetInfo(32, 32, 3, 10, ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                           "ship", "truck")),
    "cifar100": DatasetInfo(32, 32, 3, 100, _CIFAR100_CLASSES, _CIFAR100_SUPERCLASSES),
}
REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
COARSE_KEYS = ("y_train_coarse", "y_test_coarse", "fine_to_coarse")  # optional, all or none
# Largest array an .npz may declare. CIFAR's 50,000 training images are 50,000 x 32 x 32 x 3 = 153.6 MB; a
# header asking for more than 4 GiB is a corrupt or foreign file, refused before any allocation.
MAX_ARRAY_BYTES = 2**32
BUNDLED_MNIST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bundled_data",
                             "mnist_subset.npz")


class DataError(OneLineError, ValueError):
    """A dataset that cannot be found or does not hold what it should; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Images as uint8 NHWC and labels as int32 (n,), with where they came from.

    The coarse fields are CIFAR-100's superclass labels, int32, when the source file has them (else None):
    ``y_*_coarse`` (n,) in [0, 20) and ``fine_to_coarse`` (100,), with ``fine_to_coarse[y] == y_coarse``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    y_train_coarse: np.ndarray = None
    y_test_coarse: np.ndarray = None
    fine_to_coarse: np.ndarray = None

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
    arrays, unavailable = _from_keras(name, allow_download)
    if arrays is not None:
        return _validated(name, arrays, "tf.keras.datasets", source=f"tf.keras.datasets.{name}")
    if name == "mnist" and os.path.exists(BUNDLED_MNIST):
        logging.warning("full MNIST was neither found nor downloadable (%s): training on the bundled subset (10,000 "
                        "training images, the official 10,000 test images) from %s", unavailable, BUNDLED_MNIST)
        return _from_npz(name, BUNDLED_MNIST, source=f"bundled MNIST subset {BUNDLED_MNIST}")
    where = os.path.join(data_dir, f"{name}.npz") if data_dir else f"<data_dir>/{name}.npz"
    raise DataError(f"dataset '{name}' not found: put {where} (arrays {', '.join(REQUIRED_KEYS)}) there and "
                    f"pass --data_dir, or allow tf.keras.datasets to download it ({unavailable})")


def split_validation(dataset, fraction, seed):
    """Holds ``round(fraction * n)`` training examples out for validation: returns ``(rest, (x_val, y_val))``.

    The held-out examples are the first of a permutation of the training set fixed by ``seed`` (NumPy's
    ``default_rng``), so one seed always holds out the same ones. ``rest`` is ``dataset`` without them: same
    test set, training arrays (and coarse labels) in their original order. ``x_val, y_val`` keep that order too;
    their superclasses, if wanted, are ``rest.fine_to_coarse[y_val]``. ``fraction=0`` returns ``dataset`` itself
    and empty validation arrays.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"split_validation: fraction must be in [0, 1), got {fraction}")
    num_train = len(dataset.x_train)
    num_val = round(fraction * num_train)
    if num_val == 0:
        return dataset, (dataset.x_train[:0], dataset.y_train[:0])
    if num_val == num_train:
        raise ValueError(f"split_validation: fraction {fraction} of {num_train} examples leaves none to train on")
    order = np.random.default_rng(seed).permutation(num_train)
    held_out, kept = np.sort(order[:num_val]), np.sort(order[num_val:])
    coarse = {} if dataset.y_train_coarse is None else {"y_train_coarse": dataset.y_train_coarse[kept]}
    rest = dataclasses.replace(
        dataset, x_train=dataset.x_train[kept], y_train=dataset.y_train[kept], **coarse,
        source=f"{dataset.source}, less {num_val} validation examples (split seed {seed})")
    return rest, (dataset.x_train[held_out], dataset.y_train[held_out])


def _from_keras(name, allow_download):
    """``(arrays, None)`` from ``tf.keras.datasets``, only from its cache unless ``allow_download``; ``(None, why)``
    when it cannot give them."""
    if not _in_keras_cache(name):
        if not allow_download:
            return None, "not in the Keras cache, and downloads are off"
        logging.info("%s is not in the Keras cache: downloading it with tf.keras.datasets", name)
    # Keras prints its download notice and progress bar on stdout unless its logging is "non-interactive"; then
    # they are absl INFO records like any other library's. A failure is reported all the same: it is `why`.
    interactive = keras.config.is_interactive_logging_enabled()
    keras.config.disable_interactive_logging()
    try:
        (x_train, y_train), (x_test, y_test) = getattr(tf.keras.datasets, name).load_data()
    except Exception as error:  # noqa: BLE001  (no network, a partial download, a server error: not available)
        return None, f"tf.keras.datasets: {error}"
    finally:
        if interactive:
            keras.config.enable_interactive_logging()
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}, None


def _in_keras_cache(name):
    cache = os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "datasets")
    entries = {"mnist": "mnist.npz", "fashion_mnist": "fashion-mnist", "cifar10": "cifar-10-batches-py",
               "cifar100": "cifar-100-python"}
    return os.path.exists(os.path.join(cache, entries[name]))


def _from_npz(name, path, source):
    return _validated(name, _read_npz(path), path, source)


def _read_npz(path):
    """The required arrays of the .npz at ``path``, and the coarse ones if present; each header checked first."""
    try:
        with open(path, "rb") as file:
            start = file.read(6)
        if not start:
            raise DataError(f"{path}: not a readable .npz file (it is empty: 0 bytes)")
        if start == b"\x93NUMPY":
            raise DataError(f"{path}: not a readable .npz file (it holds a single .npy array; save the arrays "
                            f"{', '.join(REQUIRED_KEYS)} together with numpy.savez)")
        with zipfile.ZipFile(path) as archive:
            members = {member.filename[:-len(".npy")]: member for member in archive.infolist()
                       if member.filename.endswith(".npy")}
            missing = [key for key in REQUIRED_KEYS if key not in members]
            if missing:
                raise DataError(f"{path}: missing arrays {', '.join(missing)}; expected {', '.join(REQUIRED_KEYS)}")
            keys = REQUIRED_KEYS + tuple(key for key in COARSE_KEYS if key in members)
            for key in keys:
                _check_header(path, key, archive, members[key])
            arrays = {}
            for key in keys:
                with archive.open(members[key]) as file:
                    arrays[key] = np.lib.format.read_array(file, allow_pickle=False)
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{path}: its arrays do not fit in this machine's free memory") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from None
    return arrays


def _check_header(path, key, archive, member):
    """Refuses an array whose .npy header declares Python objects, or more bytes than are stored or sane.

    Runs before the array is read, so a corrupt or hostile shape costs no allocation.
    """
    with archive.open(member) as file:
        try:
            version = np.lib.format.read_magic(file)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(file)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(file)
            else:
                raise ValueError(f"format version {version[0]}.{version[1]}, expected 1.0 or 2.0")
        except ValueError as error:
            raise DataError(f"{path}: {key} is not a readable .npy array ({error})") from None
        header_bytes = file.tell()
    if dtype.hasobject:
        raise DataError(f"{path}: {key} holds Python objects (dtype {dtype}), which are not loaded because "
                        f"unpickling can run code; expected numeric arrays")
    declared = math.prod(shape) * dtype.itemsize
    stored = member.file_size - header_bytes
    if declared > stored:
        raise DataError(f"{path}: {key} declares shape {shape} of {dtype} ({declared:,} bytes), but the archive "
                        f"stores only {stored:,} bytes for it")
    if declared > MAX_ARRAY_BYTES:
        raise DataError(f"{path}: {key} declares shape {shape} of {dtype} ({declared:,} bytes), more than the "
                        f"{MAX_ARRAY_BYTES:,}-byte limit for one array")


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
        y = _labels(y, f"y_{part}", len(x), f"x_{part}", num_classes, name, where)
        if len(x) == 0:
            raise DataError(f"{where}: x_{part} is empty")
        split[part] = (x, y)
    coarse = _validated_coarse(name, arrays, where, split["train"][1], split["test"][1])
    return Dataset(name, *split["train"], *split["test"], source=source, **coarse)


def _labels(y, key, length, matching, num_classes, name, where):
    """``y`` as int32 (n,) after checking its shape, dtype and range [0, num_classes)."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)  # CIFAR labels come as (n, 1)
    if y.ndim != 1 or len(y) != length:
        raise DataError(f"{where}: {key} has shape {y.shape}, expected ({length},) to match {matching}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: {key} has dtype {y.dtype}, expected integer class labels")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{where}: {key} holds labels in [{y.min()}, {y.max()}], expected [0, {num_classes}) "
                        f"for {name}")
    return y.astype(np.int32)


def _validated_coarse(name, arrays, where, y_train, y_test):
    """The optional superclass labels as ``Dataset`` fields, checked against the fine labels; {} if absent."""
    present = [key for key in COARSE_KEYS if key in arrays]
    if not present:
        return {}
    num_coarse = DATASETS[name].num_coarse_classes
    if not num_coarse:
        raise DataError(f"{where}: holds {', '.join(present)}, but {name} has no superclasses")
    missing = [key for key in COARSE_KEYS if key not in arrays]
    if missing:
        raise DataError(f"{where}: holds {', '.join(present)} but not {', '.join(missing)}; superclass labels need "
                        f"all of {', '.join(COARSE_KEYS)}")
    num_classes = DATASETS[name].num_classes
    mapping = _labels(arrays["fine_to_coarse"], "fine_to_coarse", num_classes, f"the {num_classes} classes",
                      num_coarse, name, where)
    fields = {"fine_to_coarse": mapping}
    for part, fine in (("train", y_train), ("test", y_test)):
        key = f"y_{part}_coarse"
        coarse = _labels(arrays[key], key, len(fine), f"y_{part}", num_coarse, name, where)
        wrong = np.flatnonzero(mapping[fine] != coarse)
        if len(wrong):
            i = wrong[0]
            raise DataError(f"{where}: {key}[{i}] is {coarse[i]}, but fine_to_coarse maps its fine label "
                            f"{fine[i]} to {mapping[fine[i]]}")
        fields[key] = coarse
    return fields


def channel_stats(images):
    """Per-channel mean and standard deviation of uint8 images, on the [0, 1] scale."""
    scaled = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return scaled.mean(axis=0).astype(np.float32), scaled.std(axis=0).astype(np.float32)


class Draws(NamedTuple):
    """The random numbers behind a batch's augmentation, one row per example (``train_pipeline`` makes them)."""

    crop_flip: tf.Tensor  # (b, 3) float32 in [0, 1): row offset, column offset, flip coin; new at every step
    example_coin: tf.Tensor  # (b,) float32 in [0, 1): one per training example, fixed for the whole run
    epoch: tf.Tensor  # (b,) int64: how many full passes over the training set came before this example


FLIP_MODES = ("random", "alternating", "none")


def make_preprocess(mean=None, std=None, augment=False, dtype=tf.float32, crop_padding=4, flip="random"):
    """Returns ``fn(images_uint8, labels, draws=None) -> (images, labels)`` for batches of NHWC images.

    Images go to [0, 1], then ``(x - mean) / std`` per channel when both are given. ``augment`` adds the CIFAR
    augmentation, decided by ``draws`` (the ``Draws`` that ``train_pipeline`` passes with every batch; required
    when augmenting). Each image is padded by ``crop_padding`` pixels (reflected; 0: no translation), cropped
    back to its size at its own offset, and flipped left-right as ``flip`` says: ``"random"``, on its own fair
    coin at every step; ``"alternating"``, on a coin fixed per training example XOR "the epoch is odd", so each
    example is seen flipped in every other epoch (airbench's alternating flip); ``"none"``, never.
    """
    if flip not in FLIP_MODES:
        raise ValueError(f"make_preprocess: flip must be one of {', '.join(FLIP_MODES)}, got {flip!r}")
    if not isinstance(crop_padding, int) or crop_padding < 0:
        raise ValueError(f"make_preprocess: crop_padding must be a whole number of pixels >= 0, got {crop_padding!r}")

    def preprocess(images, labels, draws=None):
        x = tf.cast(images, tf.float32) / 255.0
        if mean is not None:
            x = (x - mean) / std
        if augment:
            if draws is None:
                raise ValueError("make_preprocess(augment=True): the function needs each example's draws; pass it "
                                 "to train_pipeline, which supplies them")
            x = _crop_and_flip(x, draws, crop_padding, flip)
        return tf.cast(x, dtype), labels

    return preprocess


def _crop_and_flip(images, draws, padding, flip):
    """Each image gets the crop window and the flip its draws pick.

    The windows are cut with two batched gathers (rows, then columns); a flip reverses the column indices, so
    one gather both crops and flips. Gathers copy values, so the output is exact.
    """
    height, width = images.shape[1], images.shape[2]
    if height is not None and padding >= min(height, width):
        raise ValueError(f"make_preprocess: crop_padding {padding} must be smaller than the {height}x{width} "
                         f"images, to reflect")
    shape = tf.shape(images)
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]], mode="REFLECT")
    # u in [0, 1) -> offset in 0 .. 2 * padding; the minimum guards against float rounding up to the end.
    offsets = tf.minimum(tf.cast(draws.crop_flip[:, :2] * (2 * padding + 1), tf.int32), 2 * padding)
    columns = tf.range(shape[2])
    columns = tf.where(_flips(draws, flip)[:, tf.newaxis], tf.reverse(columns, [0]), columns)  # (b, W)
    rows = offsets[:, :1] + tf.range(shape[1])[tf.newaxis, :]  # (b, H)
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, offsets[:, 1:] + columns, axis=2, batch_dims=1)


def _flips(draws, flip):
    """(b,) bool: which images to flip left-right, as ``make_preprocess`` documents."""
    if flip == "random":
        return draws.crop_flip[:, 2] < 0.5
    if flip == "alternating":
        return tf.math.logical_xor(draws.example_coin < 0.5, draws.epoch % 2 == 1)
    return tf.zeros_like(draws.epoch, tf.bool)


# Second words of the stateless seed pairs (run seed, word): global batch k draws with k = 0, 1, 2, ...; the
# per-example coins use a word no batch index takes. The draws run on the CPU, where the stateless ops' default
# algorithm is Philox (the same numbers as alg="philox", whose seed scrambling costs 70 ms more per trace).
_EXAMPLE_COIN_WORD = -1


def train_pipeline(x, y, batch_size, seed, preprocess, skip_batches=0, replicas=(0, 1, 1)):
    """An endless tf.data pipeline of shuffled training batches of ``batch_size`` (the remainder dropped).

    Yields ``preprocess(images, labels, draws)``, with ``draws`` the batch's ``Draws``. The order depends
    only on ``seed``, and the draws only on ``seed`` and each example's place in the run, so a run resumed at
    step ``skip_batches`` sees, augmented identically, the batches the uninterrupted run would have seen.
    ``replicas=(first, count, total)`` cuts each global batch into ``total`` equal parts and yields parts
    ``first .. first + count - 1`` one after another: what one worker's ``count`` replicas take in a
    distributed run (see ``distributed_train_dataset``). The draws are made for the whole global batch before
    it is cut, so an image's crop and flip do not depend on how the batch is split.
    """
    if seed is None:
        raise ValueError("train_pipeline: seed must be an integer; the batch order and augmentation derive from it")
    num_examples = len(x)
    with tf.device("CPU:0"):  # where tf.data runs; eagerly the coins would otherwise be drawn on a GPU
        images, labels = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
        example_coins = tf.random.stateless_uniform([num_examples], [seed, _EXAMPLE_COIN_WORD])
    # Indices, not images, are shuffled and batched: skipping to a resumed step copies no pixels.
    order = tf.data.Dataset.range(num_examples).shuffle(num_examples, seed=seed, reshuffle_each_iteration=True)
    batches = order.repeat().batch(batch_size, drop_remainder=True).enumerate().skip(skip_batches)
    first, count, total = replicas
    part = batch_size // total

    def this_workers_parts(step, indices):
        crop_flip = tf.random.stateless_uniform([batch_size, 3], tf.stack([tf.constant(seed, tf.int64), step]))
        place = step * batch_size + tf.range(batch_size, dtype=tf.int64)  # examples before each, in the run
        draws = Draws(crop_flip, tf.gather(example_coins, indices), place // num_examples)
        # (B, ...) -> (count, B / total, ...): this worker's replicas' slices of the global batch, in order.
        take = slice(first * part, (first + count) * part)
        return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(
            lambda t: tf.reshape(t[take], [count, part, *t.shape[1:]]), (indices, draws)))

    def gather_and_preprocess(indices, draws):
        return preprocess(tf.gather(images, indices), tf.gather(labels, indices), draws)

    return _parallel_map_and_prefetch(batches.flat_map(this_workers_parts), gather_and_preprocess)


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
