"""Datasets as in-memory arrays: where they come from and the checks they pass (pipelines: ``pipeline.py``).

Sources: ``<data_dir>/<dataset>.npz`` when a ``data_dir`` is given (arrays ``x_train, y_train, x_test, y_test`` as
``tf.keras.datasets`` returns them; for CIFAR-100 optionally ``y_train_coarse, y_test_coarse, fine_to_coarse``
too), and only that; without one, ``tf.keras.datasets`` (its cache, else a download), then, for MNIST only, the
subset bundled with this repository. ``folder``: the image files of the class folders in ``data_dir``
(``training/image_folder.py``), decoded once. ``tfds``: the TFRecord shards of a dataset TensorFlow Datasets
prepared in ``data_dir`` (``training/prepared_tfds.py``), decoded once the same way.

A folder's images are decoded once, by a tf.data pipeline over its files on every core, fitted to one size and
kept in memory as uint8 arrays, as the built-in datasets are (``MAX_ARRAY_BYTES`` at most): the training pipeline
then draws batches and augmentations from them as a pure function of the seed and step, so a resumed or
distributed run sees exactly the batches of an uninterrupted one, and the fingerprint, validation split,
standardisation and whitening read the arrays the built-in datasets give. Streaming the files at every epoch
would decode each image once per epoch and lose that exactness; a folder too large for memory at its size is
refused with a line asking for a smaller ``--image_size``. A prepared TFDS dataset is read likewise: its records'
encoded images are decoded by the same pipeline into the same arrays.
"""

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import stat
import tokenize
import zipfile

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from keras.src.utils import file_utils as keras_file_utils

from training import dataset_info, image_folder, prepared_tfds
from training.dataset_info import (
    DATASET_CHOICES,
    DATASETS,  # noqa: F401  (tests read it as data.DATASETS)
    FOLDER,
    TFDS,
    DatasetInfo,
    describe,
    held_out_count,
)
from training.errors import OneLineError, first_line
from training.pipeline import fit_to_size

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
COARSE_KEYS = ("y_train_coarse", "y_test_coarse", "fine_to_coarse")  # optional, all or none
# Largest array an .npz may declare. CIFAR's 50,000 training images are 50,000 x 32 x 32 x 3 = 153.6 MB; a
# header asking for more than 4 GiB is a corrupt or foreign file, refused before any allocation. The same bound
# holds a folder's decoded images: beyond it they are refused before decoding.
MAX_ARRAY_BYTES = 2**32
DECODE_BATCH = 256  # images a folder's decoding pipeline hands over at a time
RECORD_BATCH = 1024  # records a TFDS shard's reading pipeline hands over at a time
# Largest data file, as a multiple of the dataset's official images in uint8 (``DatasetInfo.image_bytes``: MNIST's
# 70,000 x 784 = 54.9 MB, CIFAR's 60,000 x 3,072 = 184.3 MB), which an .npz holds at most once uncompressed
# (Keras' compressed mnist.npz is 11.5 MB). Four times leaves room for int64 labels, extra arrays and zip overhead;
# a larger file is not this dataset, and is refused before a byte of it is read.
MAX_FILE_SIZE_FACTOR = 4
BUNDLED_MNIST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bundled_data",
                             "mnist_subset.npz")


class DataError(OneLineError, ValueError):
    """A dataset that cannot be found or does not hold what it should; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Images as uint8 NHWC and labels as int32 (n,), with where they came from.

    The coarse fields are CIFAR-100's superclass labels, int32, when the source file has them (else None):
    ``y_*_coarse`` (n,) in [0, 20) and ``fine_to_coarse`` (100,), with ``fine_to_coarse[y] == y_coarse``.
    ``disk_info`` is the ``DatasetInfo`` of a dataset read from disk (a folder, a prepared TFDS dataset), made from
    what was decoded (a built-in's is its row of ``DATASETS``).
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
    disk_info: DatasetInfo = None

    @property
    def image_shape(self):
        return self.x_train.shape[1:]

    @property
    def info(self):
        return self.disk_info or describe(self.name)

    @property
    def num_classes(self):
        return self.info.num_classes


def load(name, data_dir=None, allow_download=True, image_size=(), image_channels=0, image_fit="stretch",
         tfds_name=""):
    """Returns the ``Dataset`` called ``name`` from the first source that has it (see the module docstring).

    A ``data_dir`` given must hold ``<name>.npz``: the other sources are for when none is given, since training on
    another copy of the data than the one asked for would be a silent mistake. For ``folder``, ``data_dir`` is the
    folder of class folders, for ``tfds`` TensorFlow Datasets' data_dir holding the prepared dataset ``tfds_name``;
    ``image_size``, ``image_channels`` and ``image_fit`` say what their images become (``load_folder``,
    ``load_tfds``).
    """
    if name not in DATASET_CHOICES:
        raise DataError(f"unknown dataset '{name}'; choose one of {', '.join(DATASET_CHOICES)}")
    if name == FOLDER:
        if not data_dir:
            raise DataError("--dataset=folder reads the class folders in --data_dir; give --data_dir")
        return load_folder(data_dir, image_size, image_channels, image_fit)
    if name == TFDS:
        if not data_dir or not tfds_name:
            raise DataError("--dataset=tfds reads the dataset --tfds_name from TFDS's --data_dir; give both")
        return load_tfds(data_dir, tfds_name, image_size, image_channels, image_fit)
    if data_dir:
        path = os.path.join(data_dir, f"{name}.npz")
        if not os.path.lexists(path):
            raise DataError(f"dataset '{name}' not found: {path} does not exist (--data_dir {data_dir} must hold "
                            f"{name}.npz with arrays {', '.join(REQUIRED_KEYS)}; without --data_dir the Keras "
                            f"cache is used{', then the bundled subset' if name == 'mnist' else ''})")
        return _from_npz(name, path, source=path)
    arrays, unavailable = _from_keras(name, allow_download)
    if arrays is not None:
        return _validated(name, arrays, "tf.keras.datasets", source=f"tf.keras.datasets.{name}")
    if name == "mnist" and os.path.exists(BUNDLED_MNIST):
        logging.warning("full MNIST was neither found nor downloadable (%s): training on the bundled subset (10,000 "
                        "training images, the official 10,000 test images) from %s", unavailable, BUNDLED_MNIST)
        return load_bundled_mnist()
    raise DataError(f"dataset '{name}' not found: put <data_dir>/{name}.npz (arrays {', '.join(REQUIRED_KEYS)}) "
                    f"there and pass --data_dir, or allow tf.keras.datasets to download it ({unavailable})")


def load_bundled_mnist():
    """The MNIST subset bundled in bundled_data/ (10,000 training images, the official 10,000 test images): what
    ``load`` falls back to for MNIST, asked for by name where a table is of the subset (the main job's sweep), so
    that a machine holding full MNIST still trains on the subset."""
    return _from_npz("mnist", BUNDLED_MNIST, source=f"bundled MNIST subset {BUNDLED_MNIST}")


def load_for(config, data_dir="", allow_download=None):
    """The dataset of the run ``config`` describes (``load`` with its settings), from ``data_dir`` instead of the
    run's own when given, downloading as ``allow_download`` says, else as the run's setting does."""
    return load(config.dataset, data_dir or config.data_dir,
                config.allow_download if allow_download is None else allow_download, config.image_size,
                config.image_channels, config.image_fit, config.tfds_name)


def load_folder(root, image_size=(), image_channels=0, image_fit="stretch"):
    """The images of the folder of class folders ``root`` (``image_folder.scan``) as a ``Dataset`` named
    ``folder``: uint8 ``(n, H, W, C)`` in the class folders' file order, labels the classes' sorted order.

    Every image is decoded (PNG, JPEG, BMP, GIF's first frame), its alpha channel dropped, converted to
    ``image_channels`` (1: grey, 3: RGB) when given and brought to ``image_size`` (height, width) by ``image_fit``
    (``pipeline.fit_to_size``) when given; else every image must have the first image's channels and size.
    ``image_folder.FolderError`` or ``DataError`` names the folder or file that keeps the folder from loading.
    """
    layout = image_folder.scan(root)
    first = _decode_files(layout.files[:1], lambda image: (image,))[0][0]  # its own size and channels
    height, width = image_size or first.shape[:2]
    channels = image_channels or first.shape[2]
    needed = len(layout.files) * height * width * channels
    if needed > MAX_ARRAY_BYTES:
        raise DataError(f"{root}: {len(layout.files):,} images of {height}x{width}x{channels} take {needed:,} bytes "
                        f"decoded, more than the {MAX_ARRAY_BYTES:,} this code keeps in memory; give a smaller "
                        "--image_size")
    pixels, own_channels, own_sizes = _decode_all(layout.files, (height, width), channels, image_fit)
    if not image_channels:
        _refuse_mixed(layout.files, own_channels, "channels", lambda c: f"{c} ({'grey' if c == 1 else 'RGB'})",
                      "--image_channels=1 or --image_channels=3 to convert every image to grey or RGB")
    if not image_size:
        _refuse_mixed(layout.files, [tuple(size) for size in own_sizes], "size", lambda s: f"{s[0]}x{s[1]}",
                      "--image_size=HEIGHT,WIDTH to bring every image to one size")
    num_train = len(layout.train_files)
    info = DatasetInfo(height, width, channels, len(layout.class_names), num_train, len(layout.test_files),
                       layout.class_names)
    return Dataset(FOLDER, pixels[:num_train], np.asarray(layout.train_labels, np.int32), pixels[num_train:],
                   np.asarray(layout.test_labels, np.int32), source=f"image folder {os.path.abspath(root)} "
                   f"({layout.split})", disk_info=info)


def _decode(contents, channels=0):
    """The image file ``contents`` (a string tensor) as uint8 ``(h, w, c)``, c 1 (grey) or 3 (RGB): decoded to
    ``channels`` when given (1 to 4, as TFDS decodes its images), else to the file's own; an alpha channel is
    dropped, as predict drops it."""
    image = tf.io.decode_image(contents, channels=channels, expand_animations=False)  # a GIF's first frame
    found = tf.shape(image)[2]
    return image[:, :, :found - 1 + found % 2]  # 2 (grey, alpha) -> 1, 4 (RGBA) -> 3


def _to_channels(image, channels):
    """A grey or RGB ``image`` as ``channels`` (1 or 3), with the conversions predict uses."""
    if image.shape[2] is not None:  # decoded to the channels a TFDS feature declares: known when traced
        if image.shape[2] == channels:
            return image
        return tf.image.rgb_to_grayscale(image) if channels == 1 else tf.image.grayscale_to_rgb(image)
    found = tf.shape(image)[2]
    if channels == 1:
        return tf.cond(found == 3, lambda: tf.image.rgb_to_grayscale(tf.ensure_shape(image, [None, None, 3])),
                       lambda: tf.ensure_shape(image, [None, None, 1]))
    return tf.cond(found == 1, lambda: tf.image.grayscale_to_rgb(tf.ensure_shape(image, [None, None, 1])),
                   lambda: tf.ensure_shape(image, [None, None, 3]))


def _fitted(size, channels, fit):
    """``convert(image) -> (pixels, own channels, own size)``: a decoded image as uint8 ``(*size, channels)``, and
    its channels and (h, w) as decoded, before conversion, for the checks that they agree."""
    def convert(image):
        converted = fit_to_size(_to_channels(image, channels), size, fit)
        return tf.ensure_shape(converted, (*size, channels)), tf.shape(image)[2], tf.shape(image)[:2]

    return convert


def _decode_all(files, size, channels, fit):
    """``(pixels, own channels, own sizes)`` of every file: uint8 ``(n, *size, channels)``, and each image's
    channels and (h, w) as decoded (``_fitted``)."""
    return _decode_files(files, _fitted(size, channels, fit))


def _decode_files(files, convert):
    """Every file's ``_decode`` put through ``convert(image) -> tuple of tensors``: one NumPy array per part of
    that tuple, along the files in order. A file that does not decode is named in a ``DataError``, with what
    Pillow says of it."""
    # As bytes: a file name that is not UTF-8 (os.listdir gives it with surrogates) is still a name to read.
    parts, failed = _decoded([os.fsencode(f) for f in files], lambda path: convert(_decode(tf.io.read_file(path))))
    if failed is not None:
        path = files[failed]
        raise DataError(f"{path}: cannot be decoded as an image ({image_folder.why_undecodable(path)}); replace or "
                        "remove it")
    return parts


def _decoded(sources, convert):
    """``(parts, None)``: each of ``sources`` (file names, encoded images) put through ``convert(source) -> tuple
    of tensors``, one NumPy array per part along the sources in order; ``(None, i)`` when source ``i`` fails.

    tf.data decodes on every core. A source that fails is dropped there (``ignore_errors``) and found afterwards:
    decoding it alone in TensorFlow would log a warning of its own before the one line that names it.
    """
    def decode(index, source):
        return (index, *convert(source))

    indexed = tf.data.Dataset.from_tensor_slices((tf.range(len(sources), dtype=tf.int64), sources))
    decoded = indexed.map(decode, num_parallel_calls=os.cpu_count() or 1, deterministic=True).ignore_errors()
    options = tf.data.Options()
    options.autotune.enabled = False  # fixed parallelism, as the training pipelines (pipeline.py says why)
    batches = list(decoded.batch(DECODE_BATCH).with_options(options).as_numpy_iterator())
    decoded_count = sum(len(batch[0]) for batch in batches)
    if decoded_count < len(sources):
        indices = np.concatenate([batch[0] for batch in batches]) if batches else np.zeros(0, np.int64)
        return None, int(np.setdiff1d(np.arange(len(sources)), indices)[0])
    return tuple(np.concatenate([batch[part] for batch in batches]) for part in range(1, len(batches[0]))), None


def load_tfds(data_dir, tfds_name, image_size=(), image_channels=0, image_fit="stretch"):
    """The images of the dataset ``tfds_name`` that TensorFlow Datasets prepared in ``data_dir``
    (``prepared_tfds.scan``) as a ``Dataset`` named ``tfds``: uint8 ``(n, H, W, C)`` shard after shard in record
    order, labels as recorded, the test set its ``test`` split or held out of ``train`` (``prepared_tfds``).

    Each image is decoded as TFDS decodes it (to the channels its feature declares; a GIF's first frame), its alpha
    channel dropped, then converted and fitted as a folder's images are (``load_folder``). Without
    ``image_size`` every image must have the size the feature declares, else the first image's; without
    ``image_channels``, the first image's channels. ``prepared_tfds.TfdsError`` or ``DataError`` names the
    folder, shard or record that keeps the dataset from loading.
    """
    prepared = prepared_tfds.scan(data_dir, tfds_name)
    info = dataset_info.tfds_info(prepared, image_size, image_channels)
    count = sum(split.size for split in prepared.splits)
    needed = count * info.height * info.width * info.channels
    if needed > MAX_ARRAY_BYTES:
        raise DataError(f"{prepared.path}: {count:,} images of {info.height}x{info.width}x{info.channels} take "
                        f"{needed:,} bytes decoded, more than the {MAX_ARRAY_BYTES:,} this code keeps in memory; give "
                        "a smaller --image_size")
    prepared_tfds.first_image(prepared, every_shard=True)  # TensorFlow then parses the records without a warning
    declared = prepared.image_shape
    convert = _fitted(info.image_shape[:2], info.channels, image_fit)
    arrays = []
    for split in prepared.splits:
        encoded, labels = _read_records(split, prepared)
        parts, failed = _decoded(encoded, lambda contents: convert(_decode(contents, declared[2] or 0)))
        if failed is not None:
            why = image_folder.why_undecodable(io.BytesIO(encoded[failed]))
            raise DataError(f"{_record(split, failed)}: its image '{prepared.image_key}' cannot be decoded ({why})")
        pixels, own_channels, own_sizes = parts
        first = _record(prepared.train, 0)  # whose header gave the size or channels the feature leaves open
        if not image_size:
            _refuse_other_sizes(split, own_sizes, (info.height, info.width), declared, first)
        if not image_channels:
            _refuse_other_channels(split, own_channels, info.channels, first)
        arrays.append((pixels, labels))
    if prepared.test:
        (x_train, y_train), (x_test, y_test) = arrays
    else:
        (x, y), = arrays
        held = np.zeros(len(x), bool)
        held[prepared_tfds.held_out_positions(len(x))] = True
        x_train, y_train, x_test, y_test = x[~held], y[~held], x[held], y[held]
    return Dataset(TFDS, x_train, y_train, x_test, y_test, disk_info=info,
                   source=f"TFDS {prepared.name} in {os.path.abspath(prepared.path)} ({prepared.split})")


def _read_records(split, prepared):
    """``(encoded images, labels)`` of every record of ``split``, shard by shard: a bytes object array and int32
    labels in [0, classes). A shard with other than the records dataset_info.json counts (a damaged or cut short
    file, whose reading stops at the first damaged record), a record that is not a tf.train.Example of the two
    features, or a label outside the classes is named in a ``DataError``."""
    image_key, label_key = prepared.image_key, prepared.label_key
    features = {image_key: tf.io.FixedLenFeature([], tf.string, default_value=""),
                label_key: tf.io.FixedLenFeature([], tf.int64, default_value=prepared_tfds.UNLABELLED)}

    def parse(records):
        examples = tf.io.parse_example(records, features)
        return examples[image_key], examples[label_key]

    encoded, labels = [], []
    for shard, length in zip(split.shards, split.lengths):
        records = tf.data.TFRecordDataset(shard).ignore_errors()  # a damaged record ends the shard: counted below
        try:
            batches = list(records.batch(RECORD_BATCH).map(parse).as_numpy_iterator())
        except tf.errors.OpError as error:
            raise DataError(f"{shard}: holds records that are not tf.train.Examples with the encoded image "
                            f"'{image_key}' and the int64 label '{label_key}' ({first_line(error)})") from None
        found = sum(len(images) for images, _ in batches)
        if found != length:
            why = (f"reading stops at record {found}: the file is damaged or cut short" if found < length else
                   "more than that")
            raise DataError(f"{shard}: {found:,} readable records, where {prepared_tfds.DATASET_INFO} counts "
                            f"{length:,} ({why}); prepare the dataset again")
        encoded += [images for images, _ in batches]
        labels += [shard_labels for _, shard_labels in batches]
    encoded = np.concatenate(encoded) if encoded else np.zeros(0, object)
    labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    num_classes = len(prepared.class_names)
    outside = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(outside):
        index, label = outside[0], labels[outside[0]]
        what = ("no label (-1, TFDS's mark of an unlabelled example, or none recorded)" if label == -1 else
                f"the label {label}, outside the {num_classes} classes of '{label_key}'")
        raise DataError(f"{_record(split, index)}: {what}; the {split.name} split cannot be trained or tested on")
    return encoded, labels.astype(np.int32)


def _record(split, index):
    """Which record of which shard the ``index``-th example of ``split`` is, for a message."""
    ends = np.cumsum(split.lengths)
    shard = int(np.searchsorted(ends, index, side="right"))
    return f"{split.shards[shard]} record {index - (ends[shard - 1] if shard else 0)}"


def _refuse_other_sizes(split, sizes, expected, declared, first):
    """``DataError`` naming the first image of ``split`` whose size is not ``expected``: the size the image
    feature declares, else that of the image ``first`` names."""
    odd = next((i for i, size in enumerate(sizes) if tuple(size) != expected), None)
    if odd is None:
        return
    remedy = "give --image_size=HEIGHT,WIDTH to bring every image to one size"
    (height, width), (want_height, want_width) = sizes[odd], expected
    if None not in declared[:2]:
        raise DataError(f"{_record(split, odd)}: an image of {height}x{width}, not the {want_height}x{want_width} "
                        f"its feature declares; {remedy}")
    raise DataError(f"images of mixed size: {first} has {want_height}x{want_width}, {_record(split, odd)} has "
                    f"{height}x{width}; {remedy}")


def _refuse_other_channels(split, channels, expected, first):
    """``DataError`` naming the first image of ``split`` whose channels are not those of the image ``first``
    names (the channels the feature declares are those of every image as decoded)."""
    odd = next((i for i, found in enumerate(channels) if found != expected), None)
    if odd is not None:
        shown = {1: "1 (grey)", 3: "3 (RGB)"}
        raise DataError(f"images of mixed channels: {first} has {shown[expected]}, {_record(split, odd)} has "
                        f"{shown[int(channels[odd])]}; give --image_channels=1 or --image_channels=3 to convert every "
                        "image to grey or RGB")


def _refuse_mixed(files, values, what, shown, remedy):
    """``DataError`` naming the first of ``files`` whose value (its channels, its size) differs from the first's."""
    odd = next((i for i, value in enumerate(values) if value != values[0]), None)
    if odd is not None:
        raise DataError(f"images of mixed {what}: {files[0]} has {shown(values[0])}, {files[odd]} has "
                        f"{shown(values[odd])}; give {remedy}")


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
    num_val = held_out_count(num_train, fraction)
    if fraction == 0:
        return dataset, (dataset.x_train[:0], dataset.y_train[:0])
    if num_val == 0:  # an empty validation set would be evaluated as accuracy 0.0, not as missing
        raise DataError(f"--validation_split {fraction:g} of {num_train} training images holds out none (it rounds "
                        f"to 0 images): give at least {1 / num_train:.2g}, or 0 for no validation set")
    if num_val == num_train:
        raise DataError(f"split_validation: fraction {fraction} of {num_train} examples leaves none to train on")
    order = np.random.default_rng(seed).permutation(num_train)
    held_out, kept = np.sort(order[:num_val]), np.sort(order[num_val:])
    coarse = {} if dataset.y_train_coarse is None else {"y_train_coarse": dataset.y_train_coarse[kept]}
    rest = dataclasses.replace(
        dataset, x_train=dataset.x_train[kept], y_train=dataset.y_train[kept], **coarse,
        source=f"{dataset.source}, less {num_val} validation examples (split seed {seed})")
    return rest, (dataset.x_train[held_out], dataset.y_train[held_out])


def fingerprint(dataset):
    """What config.json records of the data a run trained on: ``{"sha256", "source", "images"}``, the SHA-256 of
    the arrays training and evaluation read (``REQUIRED_KEYS``, each with its dtype and shape) in their validated
    form (uint8 NHWC images, int32 labels), so the same images and labels give the same hash whichever source
    held them (an .npz, compressed or not, or the Keras cache). CIFAR-100's coarse labels, which only predictions
    read, are left out. Hashing CIFAR-10's 184 MB takes 0.15 s on the AMD EPYC here, 7% of reading its .npz.

    The hash of a dataset read from disk (a folder, a prepared TFDS dataset) covers its class names too, and its
    record also holds what the dataset is (``dataset_info.as_record``: image shape and class names), so a run can
    be opened where that data is not.
    """
    digest = hashlib.sha256()
    for key in REQUIRED_KEYS:
        array = np.ascontiguousarray(getattr(dataset, key))
        digest.update(f"{key} {array.dtype.str} {array.shape}\n".encode())  # the same bytes in another shape differ
        digest.update(array.data)
    if dataset.disk_info is None:
        return {"sha256": digest.hexdigest(), "source": dataset.source,
                "images": [len(dataset.x_train), len(dataset.x_test)]}
    # Its labels are its class names: folders renamed are other data, though every pixel is the same.
    digest.update(f"class_names {json.dumps(list(dataset.info.class_names))}\n".encode())
    return {"sha256": digest.hexdigest(), "source": dataset.source, **dataset_info.as_record(dataset.info)}


class _DownloadRefused(BaseException):
    """Keras asked to download a file while downloads are off. A ``BaseException``, so that ``get_file``'s own
    ``except Exception`` clean-up, which deletes the file it was to download, leaves a damaged cache entry in place
    for the user to look at."""

    def __init__(self, target):
        super().__init__(target)
        self.target = target


@contextlib.contextmanager
def _downloads_refused():
    """Makes every download by ``keras.utils.get_file`` raise ``_DownloadRefused`` while the block runs.

    Keras downloads again whatever it finds damaged in its cache (a hash that does not match, a missing file of
    Fashion-MNIST's four), so an entry's presence does not mean no download; its ``urlretrieve`` is the one
    call every download goes through.
    """
    def refuse(url, target, *args, **kwargs):
        del url, args, kwargs
        raise _DownloadRefused(target)

    original = keras_file_utils.urlretrieve
    keras_file_utils.urlretrieve = refuse
    try:
        yield
    finally:
        keras_file_utils.urlretrieve = original


def _from_keras(name, allow_download):
    """``(arrays, None)`` from ``tf.keras.datasets``, only from its cache unless ``allow_download``; ``(None, why)``
    when it cannot give them. A damaged cache entry with downloads off raises ``DataError``."""
    entry = _keras_cache_entry(name)
    if not os.path.lexists(entry):
        if not allow_download:
            return None, "not in the Keras cache, and downloads are off"
        logging.info("%s is not in the Keras cache: downloading it with tf.keras.datasets", name)
    elif not os.path.isdir(entry):
        _open_regular(entry, name).close()  # Keras would hash a FIFO or /dev/zero for ever
    # Keras prints its download notice and progress bar on stdout unless its logging is "non-interactive"; then
    # they are absl INFO records like any other library's. A failure is reported all the same: it is `why`.
    interactive = keras.config.is_interactive_logging_enabled()
    keras.config.disable_interactive_logging()
    try:
        with contextlib.nullcontext() if allow_download else _downloads_refused():
            (x_train, y_train), (x_test, y_test) = getattr(tf.keras.datasets, name).load_data()
    except _DownloadRefused as refused:
        damaged = "is damaged or incomplete" if os.path.exists(refused.target) else "is missing"
        raise DataError(f"{refused.target} in the Keras cache {damaged}, so tf.keras.datasets would download "
                        f"{name} again, and downloads are off: delete {entry}, allow downloads, or pass "
                        f"--data_dir") from None
    except Exception as error:  # noqa: BLE001  (no network, a partial download, a server error: not available)
        return None, f"tf.keras.datasets: {error}"
    finally:
        if interactive:
            keras.config.enable_interactive_logging()
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}, None


def _keras_cache_entry(name):
    """Where ``tf.keras.datasets`` keeps ``name`` (a file or a folder), whether or not it is there."""
    cache = os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "datasets")
    entries = {"mnist": "mnist.npz", "fashion_mnist": "fashion-mnist", "cifar10": "cifar-10-batches-py",
               "cifar100": "cifar-100-python"}
    return os.path.join(cache, entries[name])


def _from_npz(name, path, source):
    return _validated(name, _read_npz(path, name), path, source)


# What a path that is not a regular file is, for the message refusing it.
_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _open_regular(path, name):
    """``path`` opened for reading in binary, after checking that it is a regular file (symlinks followed) of at
    most ``MAX_FILE_SIZE_FACTOR`` times the dataset's images.

    A FIFO would block the reader for ever and ``/dev/zero`` or ``/dev/urandom`` would fill the memory, neither
    answering a signal, so the kind is checked with ``stat`` before opening, and again on the opened descriptor
    (``O_NONBLOCK`` keeps a FIFO swapped in between from blocking the open).
    """
    try:
        _check_regular(path, os.stat(path), name)
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        target = f" (a symlink to {os.path.realpath(path)}, which does not exist)" if os.path.islink(path) else ""
        raise DataError(f"{path}: not found{target}") from None
    except OSError as error:
        raise DataError(f"{path}: cannot be opened ({error.strerror})") from None
    try:
        _check_regular(path, os.fstat(descriptor), name)
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _check_regular(path, status, name):
    real = os.path.realpath(path)
    via = f"{real}, through a symlink" if real != os.path.abspath(path) else ""
    if not stat.S_ISREG(status.st_mode):
        kind = next((kind for is_kind, kind in _FILE_KINDS if is_kind(status.st_mode)), "not a regular file")
        raise DataError(f"{path}: not a regular file ({kind}{': ' + via if via else ''}); a dataset is read from "
                        "an .npz file")
    limit = MAX_FILE_SIZE_FACTOR * describe(name).image_bytes
    if status.st_size > limit:
        raise DataError(f"{path}: {status.st_size:,} bytes{' (' + via + ')' if via else ''}, more than the "
                        f"{limit:,}-byte limit for {name} ({MAX_FILE_SIZE_FACTOR}x its official images "
                        "uncompressed); not this dataset")


def _read_npz(path, name):
    """The required arrays of ``name``'s .npz at ``path``, and the coarse ones if present; the file's kind and
    size and each array's header checked before any array is read."""
    try:
        with _open_regular(path, name) as file:
            start = file.read(6)
            if not start:
                raise DataError(f"{path}: not a readable .npz file (it is empty: 0 bytes)")
            if start == b"\x93NUMPY":
                raise DataError(f"{path}: not a readable .npz file (it holds a single .npy array; save the arrays "
                                f"{', '.join(REQUIRED_KEYS)} together with numpy.savez)")
            file.seek(0)
            with zipfile.ZipFile(file) as archive:
                return _read_members(path, name, archive)
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{path}: its arrays do not fit in this machine's free memory") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from None


def _read_members(path, name, archive):
    members = {member.filename[:-len(".npy")]: member for member in archive.infolist()
               if member.filename.endswith(".npy")}
    missing = [key for key in REQUIRED_KEYS if key not in members]
    if missing:
        raise DataError(f"{path}: missing arrays {', '.join(missing)}; expected {', '.join(REQUIRED_KEYS)}")
    keys = REQUIRED_KEYS + tuple(key for key in COARSE_KEYS if key in members)
    limit = min(MAX_ARRAY_BYTES, MAX_FILE_SIZE_FACTOR * describe(name).image_bytes)
    for key in keys:
        check_npy_header(path, key, archive, members[key], limit)
    arrays = {}
    for key in keys:
        with archive.open(members[key]) as file:
            arrays[key] = np.lib.format.read_array(file, allow_pickle=False)
    return arrays


def check_npy_header(path, key, archive, member, limit):
    """Refuses the array ``key`` (the ``member`` of the open .npz ``archive`` at ``path``) when its .npy header
    does not parse, declares Python objects, a negative dimension, or more bytes than are stored or than
    ``limit``; returns its ``(shape, dtype)``.

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
        except (ValueError, SyntaxError, tokenize.TokenError) as error:  # NumPy tokenizes the header's text
            raise DataError(f"{path}: {key} is not a readable .npy array ({first_line(error)})") from None
        header_bytes = file.tell()
    if dtype.hasobject:
        raise DataError(f"{path}: {key} holds Python objects (dtype {dtype}), which are not loaded because "
                        f"unpickling can run code; expected numeric arrays")
    if any(size < 0 for size in shape):
        raise DataError(f"{path}: {key} declares shape {shape}, with a negative dimension")
    declared = math.prod(shape) * dtype.itemsize
    stored = member.file_size - header_bytes
    if declared > stored:
        raise DataError(f"{path}: {key} declares shape {shape} of {dtype} ({declared:,} bytes), but the archive "
                        f"stores only {stored:,} bytes for it")
    if declared > limit:
        raise DataError(f"{path}: {key} declares shape {shape} of {dtype} ({declared:,} bytes), more than the "
                        f"{limit:,}-byte limit for one array")
    return shape, dtype


def _validated(name, arrays, where, source):
    """Checks shapes, dtypes and label range; returns a ``Dataset`` with NHWC uint8 images, int32 labels."""
    info = describe(name)
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
    num_coarse = describe(name).num_coarse_classes
    if not num_coarse:
        raise DataError(f"{where}: holds {', '.join(present)}, but {name} has no superclasses")
    missing = [key for key in COARSE_KEYS if key not in arrays]
    if missing:
        raise DataError(f"{where}: holds {', '.join(present)} but not {', '.join(missing)}; superclass labels need "
                        f"all of {', '.join(COARSE_KEYS)}")
    num_classes = describe(name).num_classes
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
