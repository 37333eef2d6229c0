"""A TensorFlow Datasets image classification dataset as TFDS prepared it on disk, trained on with
``--dataset=tfds --tfds_name=NAME[/CONFIG][:VERSION] --data_dir=<TFDS data_dir>``: read with TensorFlow alone, never
downloaded, without the ``tensorflow-datasets`` package (12 more pinned packages, pyarrow among them, for what this
module and ``data.load_tfds`` do: WORKSPACE.md section 13).

Why these flags. ``--dataset=tfds`` keeps ``--dataset`` a closed list of kinds, as ``folder`` does, and the name
gets a setting of its own because it says which data a run trains on: a FIXED setting, checked on resume, while
``--data_dir`` says only where the prepared datasets live now and may change when they move (a FREE setting, as for a
folder); the data fingerprint in config.json still refuses other images there. ``--dataset=tfds:<name>`` would
make ``--dataset`` an open string, lose its parse-time choices, and put a colon in run directory names.

The format, as tensorflow-datasets 4.9.10 writes and reads it (``tensorflow_datasets/core/``, file named):

- A prepared dataset is ``<data_dir>/<name>/[<config>/]<version>/`` (``utils/file_utils.get_dataset_dir``), the
  version ``x.y.z`` in numbers without leading zeros (``utils/version.py``), the folder holding
  ``dataset_info.json`` and ``features.json`` (``utils/file_utils.is_valid_variant_dir``). TFDS prepares into
  ``incomplete.<random>_<version>/`` and renames it when done (``utils/file_utils.incomplete_dir``): a folder of
  another name is a preparation that did not finish.
- ``dataset_info.json`` is the ``DatasetInfo`` proto as ``json_format.MessageToJson`` writes it (field names in
  lowerCamelCase, 64-bit integers as strings): ``name`` (the builder's, which shard names start with),
  ``fileFormat`` (absent: ``tfrecord``), ``splits`` (each ``{name, shardLengths, numBytes, filepathTemplate}``),
  ``supervisedKeys`` (``{input, output}``, or ``{tuple: {items: [{featureKey}, ...]}}``) and possibly ``features``.
- ``features.json`` is the ``Feature`` proto of the top feature (``features/feature.py`` ``save_config``):
  ``{pythonClassName, featuresDict: {features: {<key>: Feature}}}``; an image is ``{image: {shape: {dimensions:
  [h, w, c]}, dtype, encodingFormat}}`` with -1 for a size the images do not share, a class label
  ``{classLabel: {numClasses}}``. TFDS before the proto wrote ``{type: <class path>, content: {...}}``
  (``FeatureConnector.from_json``'s legacy mode), also read here. ``dataset_info.json``'s own ``features``, when
  present, comes first (``dataset_info.read_proto_from_builder_dir``).
- A class label's names are ``<key>.labels.txt``, one a line (``features/class_label_feature.py``); without the
  file the names are the label numbers.
- A split's shards are ``filepathTemplate`` (default ``{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}``, e.g.
  ``mnist-train.tfrecord-00000-of-00001``), one per ``shardLengths`` entry, the numbers in at least 5 digits
  (``naming.py``), in that order (``splits.SplitInfo.filepaths``). Here they are read one after the other, record
  by record: TFDS's order when it reads with ``interleave_cycle_length=1``, as it does for a dataset that disables
  shuffling; by default it interleaves blocks of 16 records of up to 16 shards (``reader.py``), the same records
  in another order.
- Each record is a serialized ``tf.train.Example``: the image its encoded file (PNG or JPEG bytes, a bytes feature)
  and the label an int64 (``Image.get_serialized_info``, ``ClassLabel``), -1 for an example without a label.
  TFDS decodes with ``tf.image.decode_image(bytes, channels=<declared channels>)``, as ``data.load_tfds`` does.

What is read. The image feature and the class label are the dataset's ``supervisedKeys`` when they name an image
and a class label, else its only image and its only class label. The training set is the ``train`` split; the test
set is the ``test`` split, else ``TEST_FRACTION`` of ``train`` held out as a folder's is, by a permutation fixed by
``TEST_SPLIT_SEED`` (not ``--seed``): over the whole split, not class by class, so that both counts are known from
dataset_info.json before a record is read (TFDS stores a split's examples shuffled). Other splits (``validation``,
``extra``) are not read; ``--validation_split`` holds part of the training set out. Images are uint8 PNG or JPEG;
TFDS's uint16 and float32 images are refused.

This module reads JSON, lists files and reads the first record of a shard (TFRecord framing and the few protobuf
fields of an Example, in Python), without TensorFlow, so that the flags of a run can check a prepared dataset
before TensorFlow is imported; ``data.load_tfds`` reads the shards. Whatever keeps a prepared dataset from being
read is a ``TfdsError`` whose one line names the folder or file.
"""

import dataclasses
import io
import json
import os
import re
import stat

from training import image_folder
from training.errors import DataDirError, first_line
from training.image_folder import TEST_FRACTION, TEST_SPLIT_SEED

TRAIN, TEST = "train", "test"
DATASET_INFO, FEATURES = "dataset_info.json", "features.json"
DEFAULT_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
TFRECORD = "tfrecord"
SHARD_DIGITS = 5  # at least, in shard numbers
MAX_JSON_BYTES = 2**26  # 64 MiB: a dataset_info.json with statistics of many features is a few MB
UNLABELLED = -1  # the label TFDS stores for an example without one
# Classes of a class label, at most: far above the ~22,000 of ImageNet-21k, the largest common image classification
# label, and few enough that their names (the label numbers, without a labels.txt) take about 60 MB, where a
# damaged numClasses of 10**12 would fill the memory building them.
MAX_CLASSES = 10**6

# NAME[/CONFIG][:VERSION], as tfds.load names a dataset (``naming._NAME_REG``), without namespaces, wildcards or
# builder arguments; a config starts with a letter or digit, so that it never climbs out of the data_dir.
_NAME = re.compile(r"(?P<name>[A-Za-z]\w*)(/(?P<config>\w[\w+.\-]*))?(:(?P<version>(0|[1-9]\d*)(\.(0|[1-9]\d*)){2}))?")
_VERSION = re.compile(r"(0|[1-9]\d*)(\.(0|[1-9]\d*)){2}")
_IMAGE, _CLASS_LABEL, _FEATURES_DICT = "image", "classLabel", "featuresDict"
_FEATURE_META = ("pythonClassName", "python_class_name", "description", "valueRange", "value_range")


class TfdsError(DataDirError):
    """A prepared TensorFlow Datasets dataset that cannot be read as images and class labels; the message names the
    folder or file."""


def valid_name(tfds_name):
    """Whether ``tfds_name`` is empty or ``NAME[/CONFIG][:VERSION]`` (a config check of ``--tfds_name``)."""
    return not tfds_name or bool(_NAME.fullmatch(tfds_name))


@dataclasses.dataclass(frozen=True)
class Split:
    """A split's shards, in reading order, and the examples in each as dataset_info.json records them."""

    name: str
    shards: tuple
    lengths: tuple

    @property
    def size(self):
        return sum(self.lengths)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What a prepared dataset is, before any image is decoded."""

    path: str  # the version folder
    name: str  # NAME[/CONFIG]:VERSION as found
    image_key: str  # the image's feature, a key of each tf.train.Example
    label_key: str  # the class label's
    image_shape: tuple  # (height, width, channels) as declared, None where the images do not share one
    class_names: tuple
    train: Split
    test: Split  # None: TEST_FRACTION of train is held out

    @property
    def num_test(self):
        return self.test.size if self.test else round(TEST_FRACTION * self.train.size)

    @property
    def num_train(self):
        return self.train.size - (0 if self.test else self.num_test)

    @property
    def splits(self):
        """The splits read: train, and test when there is one."""
        return (self.train, self.test) if self.test else (self.train,)

    @property
    def split(self):
        """How the test set was made, for the data's source line."""
        if self.test:
            return "its train and test splits"
        return f"{TEST_FRACTION:.0%} of its train split held out for testing, split seed {TEST_SPLIT_SEED}"


def scan(data_dir, tfds_name):
    """The ``Prepared`` dataset ``tfds_name`` (``NAME[/CONFIG][:VERSION]``; no version: the highest prepared) in
    the TFDS ``data_dir``, or a ``TfdsError`` saying why it cannot be read: not prepared there, not that version,
    a config to choose, dataset_info.json or features.json unreadable, no image or no class label, shards of
    another format or missing, a first record that is no Example of the two."""
    match = _NAME.fullmatch(tfds_name)
    if not match:
        raise TfdsError(f"--tfds_name={tfds_name!r} is not NAME[/CONFIG][:VERSION] (e.g. mnist:3.0.1)")
    path = _version_folder(data_dir, match["name"], match["config"], match["version"])
    info = _read_json(os.path.join(path, DATASET_INFO))
    file_format = info.get("fileFormat") or TFRECORD
    if file_format != TFRECORD:
        raise TfdsError(f"{path}: its shards are {file_format} files; this code reads TFRecord shards (prepare it "
                        "with file_format='tfrecord', TFDS's default)")
    features = info.get("features") or _read_json(os.path.join(path, FEATURES))
    image_key, label_key, shape, num_classes = _image_and_label(path, info, _top_features(path, features))
    class_names = _class_names(path, label_key, num_classes)
    splits = _splits(path, info, match["name"])
    if TRAIN not in splits:
        raise TfdsError(f"{path}: no {TRAIN} split (it has {', '.join(sorted(splits)) or 'none'}); --dataset=tfds "
                        f"trains on the {TRAIN} split")
    name = f"{match['name']}{'/' + match['config'] if match['config'] else ''}:{os.path.basename(path)}"
    prepared = Prepared(path, name, image_key, label_key, shape, class_names, splits[TRAIN], splits.get(TEST))
    if not prepared.test and not 0 < prepared.num_test < prepared.train.size:
        raise TfdsError(f"{path}: no {TEST} split, and too few examples in {TRAIN} ({prepared.train.size}) to hold "
                        f"{TEST_FRACTION:.0%} out for testing")
    for split in prepared.splits:
        if not split.size:
            raise TfdsError(f"{path}: its {split.name} split holds no examples")
    first_image(prepared)  # the records are Examples of these two features
    return prepared


def _version_folder(data_dir, name, config, version):
    """``<data_dir>/<name>[/<config>]/<version>``, the version given or the highest prepared one."""
    dataset_dir = os.path.join(data_dir, name, *([config] if config else []))
    if not os.path.isdir(dataset_dir):
        prepare = f"tfds build {name}{'/' + config if config else ''} --data_dir={data_dir}"
        raise TfdsError(f"{dataset_dir}: not found; --dataset=tfds reads a dataset TensorFlow Datasets has prepared "
                        f"in --data_dir (e.g. `{prepare}`) and never downloads one")
    versions = _prepared_versions(dataset_dir)
    if version:
        if version not in versions:
            found = f"prepared there: {', '.join(versions)}" if versions else "no version is prepared there"
            raise TfdsError(f"{dataset_dir}: version {version} is not prepared ({found})")
        return os.path.join(dataset_dir, version)
    if versions:
        return os.path.join(dataset_dir, versions[-1])
    configs = [entry for entry in _entries(dataset_dir) if not config and _prepared_versions(
        os.path.join(dataset_dir, entry))]
    if configs:
        raise TfdsError(f"{dataset_dir} holds the configs {', '.join(configs)}; name one: "
                        f"--tfds_name={name}/{configs[0]}")
    unfinished = [entry for entry in _entries(dataset_dir) if entry.startswith("incomplete.")]
    why = f"; {unfinished[0]} is a preparation that did not finish" if unfinished else ""
    raise TfdsError(f"{dataset_dir}: no prepared version (a folder named x.y.z holding {DATASET_INFO}){why}")


def _entries(folder):
    try:
        return sorted(os.listdir(folder))
    except OSError as error:
        raise TfdsError(f"{folder}: cannot be listed ({error.strerror})") from None


def _prepared_versions(folder):
    """The versions prepared in ``folder``, lowest first: its x.y.z folders that hold a dataset_info.json."""
    versions = [entry for entry in _entries(folder) if _VERSION.fullmatch(entry)
                and os.path.isfile(os.path.join(folder, entry, DATASET_INFO))]
    return sorted(versions, key=lambda version: tuple(map(int, version.split("."))))


def _read_json(path):
    """The JSON object in the file ``path``."""
    try:
        value = json.loads(_read_text(path))
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        raise TfdsError(f"{path}: not readable JSON ({first_line(error)})") from None
    if not isinstance(value, dict):
        raise TfdsError(f"{path}: holds {type(value).__name__}, not a JSON object")
    return value


def _read_text(path):
    """The text of the regular file ``path`` (a named pipe would block the reader), at most ``MAX_JSON_BYTES``."""
    try:
        status = os.stat(path)
        if not stat.S_ISREG(status.st_mode) or status.st_size > MAX_JSON_BYTES:
            raise TfdsError(f"{path}: not a regular file of at most {MAX_JSON_BYTES:,} bytes")
        with open(path, encoding="utf-8") as file:
            return file.read()
    except FileNotFoundError:
        raise TfdsError(f"{path}: not found; a prepared dataset holds {DATASET_INFO} and {FEATURES}") from None
    except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError
        raise TfdsError(f"{path}: cannot be read ({first_line(error)})") from None


def _get(message, name, default=None):
    """A proto field of ``message`` (a dict) as JSON spells it: lowerCamelCase (what TFDS writes), or the proto's
    own snake_case name (what ``json_format.Parse`` accepts too)."""
    snake = re.sub(r"[A-Z]", lambda upper: "_" + upper.group().lower(), name)
    value = message.get(name, message.get(snake, default)) if isinstance(message, dict) else default
    return default if value is None else value


def _top_features(path, features):
    """``{key: (kind, content)}`` of the top FeaturesDict ``features`` (proto or legacy JSON): kind ``image``,
    ``classLabel`` or another, content as JSON gives it."""
    legacy = isinstance(features, dict) and "type" in features
    top = features.get("content") if legacy else _get(_get(features, _FEATURES_DICT), "features")
    if not isinstance(top, dict) or not top:
        raise TfdsError(f"{path}: its features are not a FeaturesDict of named features (read from {FEATURES} or "
                        f"{DATASET_INFO}); an image classification dataset has an image and a class label")
    return {key: _kind(feature, legacy) for key, feature in top.items()}


def _kind(feature, legacy):
    if not isinstance(feature, dict):
        return "unknown", {}
    if legacy:
        kind = str(feature.get("type", "")).rsplit(".", 1)[-1]
        kind, content = {"Image": _IMAGE, "ClassLabel": _CLASS_LABEL}.get(kind, kind), feature.get("content")
    else:  # the one field of the Feature's oneof that is set, beside its class name and documentation
        kind = next((key for key in feature if key not in _FEATURE_META), "unknown")
        kind, content = {"class_label": _CLASS_LABEL}.get(kind, kind), feature.get(kind)
    return kind, content if isinstance(content, dict) else {}


def _image_and_label(path, info, features):
    """``(image key, label key, declared image shape, number of classes)``: the supervised keys when they are an
    image and a class label, else the only image and the only class label."""
    images = [key for key, (kind, _) in features.items() if kind == _IMAGE]
    labels = [key for key, (kind, _) in features.items() if kind == _CLASS_LABEL]
    keys = _supervised_keys(info)
    if keys and keys[0] in images and keys[1] in labels:
        image, label = keys
    elif len(images) == 1 and len(labels) == 1:
        image, label = images[0], labels[0]
    else:
        shown = ", ".join(f"{key} ({kind})" for key, (kind, _) in features.items())
        raise TfdsError(f"{path}: not an image classification dataset this code reads (features {shown}); it needs "
                        "one image and one class label, or supervised keys naming them")
    shape, dtype = _image_shape(path, image, features[image][1])
    if dtype != "uint8":
        raise TfdsError(f"{path}: its images '{image}' are {dtype}; this code reads uint8 images (PNG or JPEG)")
    return image, label, shape, _num_classes(path, info, label, features[label][1])


def _num_classes(path, info, key, content):
    """The number of classes the class label ``key`` declares (``content``, as ``_kind`` gives it), at most
    ``MAX_CLASSES``."""
    try:
        num_classes = int(_get(content, "numClasses") or len(_get(content, "names", ())))
    except (TypeError, ValueError):
        raise TfdsError(f"{path}: its class label '{key}' gives no number of classes") from None
    if num_classes > MAX_CLASSES:
        features_file = DATASET_INFO if info.get("features") else FEATURES  # where scan read the features from
        raise TfdsError(f"{os.path.join(path, features_file)}: its class label '{key}' declares numClasses "
                        f"{num_classes}, more than the {MAX_CLASSES:,} classes this code reads")
    return num_classes


def _supervised_keys(info):
    """``(input, output)`` of dataset_info.json's supervised keys when both are feature keys, else None."""
    keys = _get(info, "supervisedKeys", {})
    if _get(keys, "input") and _get(keys, "output"):
        return _get(keys, "input"), _get(keys, "output")
    items = _get(_get(keys, "tuple", {}), "items", [])
    named = [_get(item, "featureKey") for item in items if isinstance(item, dict)]
    return tuple(named[:2]) if len(named) >= 2 and all(named[:2]) else None


def _image_shape(path, key, content):
    """``((height, width, channels), dtype)`` of an image feature, None for a size not declared."""
    shape = _get(content, "shape", [None, None, 3])
    dimensions = _get(shape, "dimensions", []) if isinstance(shape, dict) else shape
    try:
        dimensions = [None if size is None or int(size) <= 0 else int(size) for size in dimensions]
    except (TypeError, ValueError):
        dimensions = []
    if len(dimensions) != 3:
        raise TfdsError(f"{path}: its images '{key}' have shape {dimensions or shape}; this code reads images of "
                        "shape (height, width, channels)")
    if dimensions[2] not in (None, 1, 2, 3, 4):
        raise TfdsError(f"{path}: its images '{key}' have {dimensions[2]} channels; expected 1 to 4")
    return tuple(dimensions), _get(content, "dtype", "uint8")


def _class_names(path, key, num_classes):
    """The class names of the label ``key``: ``<key>.labels.txt`` when present, else the label numbers."""
    names_file = os.path.join(path, f"{key}.labels.txt")
    if os.path.lexists(names_file):
        names = tuple(line.strip() for line in _read_text(names_file).split("\n") if line.strip())
        if num_classes and len(names) != num_classes:
            raise TfdsError(f"{names_file}: {len(names)} names for the {num_classes} classes of '{key}' in "
                            f"{FEATURES}")
        num_classes = len(names)
    else:
        names = tuple(str(label) for label in range(num_classes))
    if num_classes < 2:
        raise TfdsError(f"{path}: its class label '{key}' has {num_classes} class{'es' * (num_classes != 1)}; a "
                        "classifier needs at least two")
    return names


def _splits(path, info, name):
    """``{split name: Split}`` of dataset_info.json, each shard checked to be a regular file."""
    splits, entries = {}, _get(info, "splits", [])
    if not isinstance(entries, list):
        raise TfdsError(f"{os.path.join(path, DATASET_INFO)}: its splits are not a list")
    for entry in entries:
        split = _get(entry, "name")
        try:
            lengths = tuple(int(length) for length in _get(entry, "shardLengths", []))
        except (TypeError, ValueError):
            lengths = ()
        if not isinstance(split, str) or not lengths or min(lengths) < 0:
            raise TfdsError(f"{os.path.join(path, DATASET_INFO)}: split {split!r} records no shard lengths")
        template = _get(entry, "filepathTemplate") or DEFAULT_TEMPLATE
        shards = tuple(_shard_path(path, template, _get(info, "name") or name, split, index, len(lengths))
                       for index in range(len(lengths)))
        for shard in shards:
            _check_regular(shard, split)
        splits[split] = Split(split, shards, lengths)
    return splits


def _shard_path(path, template, dataset, split, index, count):
    """The path of shard ``index`` of ``count`` of ``split`` (``naming.ShardedFileTemplate``), inside ``path``."""
    digits = max(len(str(count)), SHARD_DIGITS)
    number, total = f"{index:0{digits}d}", f"{count:0{digits}d}"
    values = dict(DATASET=dataset, SPLIT=split, FILEFORMAT=TFRECORD, SHARD_INDEX=number, NUM_SHARDS=total,
                  SHARD_X_OF_Y=f"{number}-of-{total}")
    try:
        relative = template.format(**values)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError):
        raise TfdsError(f"{os.path.join(path, DATASET_INFO)}: split {split}'s filepathTemplate {template!r} is not "
                        "one TFDS writes") from None
    shard = os.path.normpath(os.path.join(path, relative))
    if os.path.isabs(relative) or not shard.startswith(os.path.join(os.path.normpath(path), "")):
        raise TfdsError(f"{os.path.join(path, DATASET_INFO)}: split {split}'s filepathTemplate {template!r} points "
                        "outside the dataset's folder")
    return shard


def _check_regular(shard, split):
    try:
        regular = stat.S_ISREG(os.stat(shard).st_mode)
    except OSError as error:
        raise TfdsError(f"{shard}: a shard of the {split} split is missing ({error.strerror}); prepare the dataset "
                        "again") from None
    if not regular:
        raise TfdsError(f"{shard}: not a regular file; a shard of the {split} split is a TFRecord file")


def first_image(prepared, every_shard=False):
    """The encoded first image of the training set, after checking that the first record of each split's first
    shard (of every shard with ``every_shard``) is a tf.train.Example with the image's bytes and an int64 label
    (``TfdsError`` naming the shard)."""
    first = None
    for split in prepared.splits:
        shards = [shard for shard, length in zip(split.shards, split.lengths) if length]
        for shard in shards if every_shard else shards[:1]:
            image = _first_example(shard, prepared.image_key, prepared.label_key)
            first = first or image
    return first


def first_image_header(prepared, image=None):
    """``(height, width, channels)`` of the training set's first image (``image_folder.image_header``), read from
    its header; channels without an alpha channel."""
    try:
        return image_folder.image_header(io.BytesIO(image or first_image(prepared)),
                                         name=f"{prepared.train.shards[0]} record 0")
    except image_folder.FolderError as error:
        raise TfdsError(str(error)) from None


def _first_example(shard, image_key, label_key):
    """The image bytes of the first record of the TFRecord file ``shard``, checked to be a tf.train.Example with
    ``image_key`` bytes and an ``label_key`` int64."""
    try:
        with open(shard, "rb") as file:
            header = file.read(12)  # uint64 length, uint32 masked CRC-32C of it (tf.io.TFRecordWriter)
            length = int.from_bytes(header[:8], "little") if len(header) == 12 else -1
            record = file.read(length) if 0 <= length <= os.fstat(file.fileno()).st_size else b""
    except OSError as error:
        raise TfdsError(f"{shard}: cannot be read ({error.strerror})") from None
    if length < 0 or len(record) != length:
        raise TfdsError(f"{shard}: not a TFRecord file (its first record's length does not fit the file)")
    try:
        features = _example_features(record)
    except ValueError:
        features = {}
    image, label = features.get(image_key, {}), features.get(label_key, {})
    if not image.get(1) or 3 not in label:  # Feature: 1 bytes_list, 2 float_list, 3 int64_list
        raise TfdsError(f"{shard}: its first record is not a tf.train.Example with the encoded image '{image_key}' "
                        f"and the int64 label '{label_key}' that {FEATURES} declares")
    return image[1][0]


def _example_features(record):
    """``{key: {list field number: values}}`` of a serialized tf.train.Example: the bytes of a bytes_list's values,
    the raw bytes of the other lists (``example.proto``, ``feature.proto``: Example.features = 1, Features.feature =
    1, a map entry's key = 1 and value = 2, BytesList.value = 1). ``ValueError`` when it is no protobuf message."""
    found = {}
    for number, features in _fields(record):
        if number != 1:
            continue
        for number, entry in _fields(features):
            if number != 1:
                continue
            entry = dict(_fields(entry))
            lists = {}
            for kind, values in _fields(entry.get(2, b"")):
                lists[kind] = [value for field, value in _fields(values) if field == 1] if kind == 1 else values
            found[bytes(entry.get(1, b"")).decode("utf-8", "replace")] = lists
    return found


def _fields(message):
    """``(field number, value)`` of each field of the protobuf message ``message`` (bytes): an int for a varint,
    bytes for a length-delimited field; fixed-width fields are skipped. ``ValueError`` at a malformed one."""
    message, position = memoryview(message), 0
    while position < len(message):
        key, position = _varint(message, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _varint(message, position)
        elif wire_type == 2:
            size, position = _varint(message, position)
            value, position = bytes(message[position:position + size]), position + size
        elif wire_type in (1, 5):
            value, position = None, position + (8 if wire_type == 1 else 4)
        else:
            raise ValueError(f"wire type {wire_type}")
        if position > len(message) or number == 0:
            raise ValueError("a field runs past the message's end")
        if value is not None:
            yield number, value


def _varint(message, position):
    value = shift = 0
    while True:
        if position >= len(message) or shift > 63:
            raise ValueError("a malformed varint")
        byte = message[position]
        value, shift, position = value | (byte & 0x7F) << shift, shift + 7, position + 1
        if not byte & 0x80:
            return value, position


def held_out_positions(num_examples):
    """The positions, sorted, of the ``round(TEST_FRACTION * num_examples)`` examples of a train split held out for
    testing when the dataset has no test split: the first of a permutation fixed by ``TEST_SPLIT_SEED``."""
    import numpy as np  # here: every command's flags import this module, and most never hold a split out

    held = round(TEST_FRACTION * num_examples)
    return np.sort(np.random.default_rng(TEST_SPLIT_SEED).permutation(num_examples)[:held])
