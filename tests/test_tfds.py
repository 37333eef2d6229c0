"""Training on a dataset TensorFlow Datasets prepared (``--dataset=tfds --tfds_name=NAME --data_dir=PATH``), read
without the tensorflow-datasets package: what a prepared dataset is taken to be, its images as decoded, the one
line each bad one gets, and a run on one, exported and predicted with.

``write_prepared`` writes the files tensorflow-datasets 4.9.10 writes (dataset_info.json, features.json,
label.labels.txt, one TFRecord file per shard; compared with the package's own output in WORKSPACE.md section 13),
here from the bundled MNIST subset: the digits 7, 0 and 1 under the class names seven, zero and one (labels 0, 1,
2: TFDS keeps its names' order, not a sorted one), in an order mixed as TFDS mixes a split's examples.
"""

import io
import json
import re
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tensorflow as tf
from conftest import CLI_TIMEOUT_SECONDS, REPO_ROOT, train_disk_run_on_a_copy
from PIL import Image

from training import data as data_lib
from training import dataset_info, exporting, predicting, prepared_tfds
from training.config import ConfigError, TrainConfig
from training.errors import OneLineError, RunError
from training.rundir import RunDir
from training.trainer import train

DIGITS = {"seven": 7, "zero": 0, "one": 1}  # class name -> the MNIST digit, in label order
CLASS_NAMES = tuple(DIGITS)
PER_CLASS = {"train": 24, "test": 6}  # 72 training and 18 test images
TRAIN_SHARDS = (40, 32)  # the training split in two shards, read in order
FEATURES_DICT = "tensorflow_datasets.core.features.features_dict.FeaturesDict"


def png(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def example(image, label, image_key="image", label_key="label"):
    """A serialized tf.train.Example as TFDS writes one: the encoded image's bytes and an int64 label."""
    return tf.train.Example(features=tf.train.Features(feature={
        image_key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        label_key: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    })).SerializeToString()


def image_feature(shape=(28, 28, 1), dtype="uint8"):
    return {"image": {"dtype": dtype, "shape": {"dimensions": [str(size) for size in shape]}},
            "pythonClassName": "tensorflow_datasets.core.features.image_feature.Image"}


def class_label(num_classes):
    return {"classLabel": {"numClasses": str(num_classes)},
            "pythonClassName": "tensorflow_datasets.core.features.class_label_feature.ClassLabel"}


def write_prepared(folder, shards, features=None, names=CLASS_NAMES, **info):
    """Writes in ``folder`` (``<data_dir>/<name>/<version>``) a dataset as TFDS prepares it: ``shards``, ``{split:
    [[serialized record, ...] per shard]}``, as TFRecord files; features.json of ``features`` (default: an image
    of 28x28x1 and a class label of ``names``); label.labels.txt of ``names``; dataset_info.json, ``info``
    replacing its fields."""
    folder.mkdir(parents=True)
    name = folder.parent.name
    features = features or {"image": image_feature(), "label": class_label(len(names))}
    (folder / "features.json").write_text(json.dumps({"featuresDict": {"features": features},
                                                      "pythonClassName": FEATURES_DICT}, indent=4, sort_keys=True))
    if names:
        (folder / "label.labels.txt").write_text("\n".join(names) + "\n")
    splits = []
    for split, records in shards.items():
        for index, shard in enumerate(records):
            path = folder / f"{name}-{split}.tfrecord-{index:05d}-of-{len(records):05d}"
            with tf.io.TFRecordWriter(str(path)) as writer:
                for record in shard:
                    writer.write(record)
        splits.append({"filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}", "name": split,
                       "numBytes": str(sum(map(len, sum(records, [])))),
                       "shardLengths": [str(len(shard)) for shard in records]})
    supervised = {"tuple": {"items": [{"featureKey": "image"}, {"featureKey": "label"}]}}
    (folder / "dataset_info.json").write_text(json.dumps({
        "fileFormat": "tfrecord", "moduleName": "tests", "name": name, "splits": splits,
        "supervisedKeys": supervised, "version": folder.name, **info}, indent=2, sort_keys=True))


def digit_splits(mnist):
    """``{split: (images (n, 28, 28), labels)}``: ``PER_CLASS`` images of each digit of ``DIGITS``, mixed."""
    splits = {}
    for split, count in PER_CLASS.items():
        x, y = mnist[f"x_{split}"], mnist[f"y_{split}"]
        chosen = [(index, label) for label, digit in enumerate(DIGITS.values())
                  for index in np.flatnonzero(y == digit)[:count]]
        order = np.random.default_rng(1).permutation(len(chosen))
        splits[split] = (np.stack([x[chosen[i][0]] for i in order]),
                         np.array([chosen[i][1] for i in order], np.int32))
    return splits


def shards_of(records, lengths):
    ends = np.cumsum(lengths)
    return [records[end - length:end] for end, length in zip(ends, lengths)]


@pytest.fixture(scope="module")
def digits(tmp_path_factory, bundled_mnist):
    """``(data_dir, {split: (images, labels)})``: the digits prepared as ``digits:1.0.0`` in ``data_dir``, in the
    order they are read back: shard after shard, record by record."""
    data_dir = tmp_path_factory.mktemp("tfds")
    splits = digit_splits(bundled_mnist)
    records = {split: [example(png(image), int(label)) for image, label in zip(*arrays)]
               for split, arrays in splits.items()}
    write_prepared(data_dir / "digits" / "1.0.0", {"train": shards_of(records["train"], TRAIN_SHARDS),
                                                   "test": [records["test"]]})
    return data_dir, splits


def test_a_prepared_dataset_is_described_from_its_json_files(digits):
    data_dir, _ = digits
    info = dataset_info.describe("tfds", str(data_dir), tfds_name="digits")
    assert info == dataset_info.DatasetInfo(28, 28, 1, 3, 72, 18, CLASS_NAMES)
    assert dataset_info.describe("tfds", str(data_dir), (14, 10), 3, "digits:1.0.0").image_shape == (14, 10, 3)
    prepared = prepared_tfds.scan(str(data_dir), "digits")
    assert (prepared.name, prepared.image_key, prepared.label_key) == ("digits:1.0.0", "image", "label")
    assert [len(shards) for shards in (prepared.train.shards, prepared.test.shards)] == [2, 1]
    assert dataset_info.from_record(dataset_info.as_record(info)) == info


def test_a_prepared_dataset_loads_its_images_and_labels_unchanged_in_record_order(digits):
    data_dir, splits = digits
    dataset = data_lib.load("tfds", str(data_dir), tfds_name="digits")
    # PNG is lossless: every image is the MNIST array written, in the shards' order, under its label.
    for x, y, split in ((dataset.x_train, dataset.y_train, "train"), (dataset.x_test, dataset.y_test, "test")):
        assert np.array_equal(x[..., 0], splits[split][0]) and np.array_equal(y, splits[split][1])
        assert x.dtype == np.uint8 and y.dtype == np.int32
    assert dataset.info == dataset_info.describe("tfds", str(data_dir), tfds_name="digits")
    assert dataset.source == f"TFDS digits:1.0.0 in {data_dir}/digits/1.0.0 (its train and test splits)"


def test_without_a_test_split_a_fifth_of_train_is_held_out_the_same_in_every_run(tmp_path, digits):
    _, splits = digits
    x, y = splits["train"]
    write_prepared(tmp_path / "digits" / "2.0.0", {"train": [[example(png(i), int(j)) for i, j in zip(x, y)]]})
    write_prepared(tmp_path / "digits" / "10.0.0", {"train": [[example(png(x[0]), 0)] * 5]})  # "10" after "2"
    dataset = data_lib.load("tfds", str(tmp_path), tfds_name="digits:2.0.0")
    held = prepared_tfds.held_out_positions(72)
    assert len(held) == 14 and dataset_info.describe("tfds", str(tmp_path), tfds_name="digits:2.0.0").num_test == 14
    assert np.array_equal(dataset.x_test[..., 0], x[held]) and np.array_equal(dataset.y_test, y[held])
    assert np.array_equal(dataset.x_train[..., 0], np.delete(x, held, axis=0))
    assert dataset.source.endswith("(20% of its train split held out for testing, split seed 0)")
    assert prepared_tfds.scan(str(tmp_path), "digits").name == "digits:10.0.0"  # the highest, by number


def test_features_written_by_older_tfds_and_images_of_any_size_are_read(tmp_path):
    legacy = {"type": FEATURES_DICT, "content": {
        "image": {"type": "tensorflow_datasets.core.features.image_feature.Image",
                  "content": {"shape": [None, None, 3], "dtype": "uint8", "encoding_format": "jpeg"}},
        "label": {"type": "tensorflow_datasets.core.features.class_label_feature.ClassLabel",
                  "content": {"num_classes": 2}}}}
    images = np.random.default_rng(0).integers(0, 256, (5, 6, 10, 3), dtype=np.uint8)
    write_prepared(tmp_path / "rgb" / "1.0.0", {"train": [[example(png(image), i % 2) for i, image in
                                                           enumerate(images)]]}, names=None, features={"-": {}})
    (tmp_path / "rgb" / "1.0.0" / "features.json").write_text(json.dumps(legacy))
    # No labels file: the label numbers are the names. The size is left open: the first image's is read.
    assert dataset_info.describe("tfds", str(tmp_path), tfds_name="rgb") == dataset_info.DatasetInfo(
        6, 10, 3, 2, 4, 1, ("0", "1"))
    dataset = data_lib.load("tfds", str(tmp_path), tfds_name="rgb", image_size=(3, 5), image_channels=1)
    assert dataset.x_train.shape == (4, 3, 5, 1) and dataset.info.image_shape == (3, 5, 1)


GREY = np.zeros((8, 8), np.uint8)
SMALL = {"train": 10, "test": 4}  # records per split of a small dataset


def _small(data_dir, name="digits", version="1.0.0", shape=(8, 8, 1), images=None, labels=None, splits=SMALL,
           **kwargs):
    """A small three-class dataset of blank 8x8 images in ``data_dir``; ``images`` and ``labels`` replace some
    records' (``{(split, index): value}``). Returns the version folder."""
    images, labels = images or {}, labels or {}
    shards = {split: [[example(images.get((split, i), png(GREY)), labels.get((split, i), i % 3))
                       for i in range(count)]] for split, count in splits.items()}
    folder = data_dir / name / version
    kwargs.setdefault("features", {"image": image_feature(shape), "label": class_label(3)})
    write_prepared(folder, shards, **kwargs)
    return folder


def _shard(folder, split="train"):
    return folder / f"{folder.parent.name}-{split}.tfrecord-00000-of-00001"


def _configs(data_dir):
    _small(data_dir, "digits/small")
    _small(data_dir, "digits/large")


def _cut_short(data_dir):
    shard = _shard(_small(data_dir))
    shard.write_bytes(shard.read_bytes()[:-10])  # the last record loses its end


def _replace_file(data_dir, path, content):
    (_small(data_dir) / path).write_bytes(content)


def _dataset_info(data_dir, **fields):
    folder = _small(data_dir)
    info = json.loads((folder / "dataset_info.json").read_text())
    (folder / "dataset_info.json").write_text(json.dumps({**info, **fields}))


def _first_record_garbage(data_dir):
    folder = _small(data_dir)
    with tf.io.TFRecordWriter(str(_shard(folder))) as writer:
        for _ in range(SMALL["train"]):
            writer.write(b"\xff\xff not an Example")


# Each bad dataset: how it is made in tmp_path (``root``), its one line ({root}: the data_dir; {shard}: the train
# shard; {test}: the test shard), the name asked for, and the image size asked for.
BAD = {
    "missing": (lambda root: None, "{root}/digits: not found; --dataset=tfds reads a dataset TensorFlow Datasets has "
                                   "prepared in --data_dir (e.g. `tfds build digits --data_dir={root}`) and never "
                                   "downloads one", "digits", ()),
    "unfinished": (lambda root: (root / "digits" / "incomplete.AB12CD_1.0.0").mkdir(parents=True),
                   "{root}/digits: no prepared version (a folder named x.y.z holding dataset_info.json); "
                   "incomplete.AB12CD_1.0.0 is a preparation that did not finish", "digits", ()),
    "other_version": (_small, "{root}/digits: version 2.0.0 is not prepared (prepared there: 1.0.0)", "digits:2.0.0",
                      ()),
    "configs": (_configs, "{root}/digits holds the configs large, small; name one: --tfds_name=digits/large",
                "digits", ()),
    "no_class_label": (lambda root: _small(root, features={"caption": {"text": {}}, "image": image_feature((8, 8, 1))}),
                       "{root}/digits/1.0.0: not an image classification dataset this code reads (features caption "
                       "(text), image (image)); it needs one image and one class label, or supervised keys naming "
                       "them", "digits", ()),
    "uint16_images": (lambda root: _small(root, features={"image": image_feature((8, 8, 1), "uint16"),
                                                          "label": class_label(3)}),
                      "{root}/digits/1.0.0: its images 'image' are uint16; this code reads uint8 images (PNG or JPEG)",
                      "digits", ()),
    "array_record": (lambda root: _dataset_info(root, fileFormat="array_record"),
                     "{root}/digits/1.0.0: its shards are array_record files; this code reads TFRecord shards "
                     "(prepare it with file_format='tfrecord', TFDS's default)", "digits", ()),
    "not_json": (lambda root: _replace_file(root, "dataset_info.json", b"{"),
                 "{root}/digits/1.0.0/dataset_info.json: not readable JSON (Expecting property name enclosed in "
                 "double quotes: line 1 column 2 (char 1))", "digits", ()),
    "no_train_split": (lambda root: _small(root, splits={"test": 4}),
                       "{root}/digits/1.0.0: no train split (it has test); --dataset=tfds trains on the train split",
                       "digits", ()),
    "names_and_classes_differ": (lambda root: _small(root, names=("a", "b")),
                                 "{root}/digits/1.0.0/label.labels.txt: 2 names for the 3 classes of 'label' in "
                                 "features.json", "digits", ()),
    "missing_shard": (lambda root: _shard(_small(root), "test").unlink(),
                      "{test}: a shard of the test split is missing (No such file or directory); prepare the dataset "
                      "again", "digits", ()),
    "not_a_tfrecord_file": (lambda root: _shard(_small(root)).write_bytes(b"not a TFRecord file"),
                            "{shard}: not a TFRecord file (its first record's length does not fit the file)", "digits",
                            ()),
    "not_examples": (_first_record_garbage, "{shard}: its first record is not a tf.train.Example with the encoded "
                                            "image 'image' and the int64 label 'label' that features.json declares",
                     "digits", ()),
    "cut_short": (_cut_short, "{shard}: 9 readable records, where dataset_info.json counts 10 (reading stops at record "
                              "9: the file is damaged or cut short); prepare the dataset again", "digits", ()),
    "undecodable_image": (lambda root: _small(root, images={("train", 2): b"not an image"}),
                          "{shard} record 2: its image 'image' cannot be decoded (cannot identify image file)",
                          "digits", ()),
    "size_not_declared": (lambda root: _small(root, images={("test", 1): png(np.zeros((9, 8), np.uint8))}),
                          "{test} record 1: an image of 9x8, not the 8x8 its feature declares; give "
                          "--image_size=HEIGHT,WIDTH to bring every image to one size", "digits", ()),
    "mixed_sizes": (lambda root: _small(root, shape=(-1, -1, 1),
                                        images={("train", 3): png(np.zeros((9, 8), np.uint8))}),
                    "images of mixed size: {shard} record 0 has 8x8, {shard} record 3 has 9x8; give "
                    "--image_size=HEIGHT,WIDTH to bring every image to one size", "digits", ()),
    "unlabelled": (lambda root: _small(root, labels={("test", 1): -1}),
                   "{test} record 1: no label (-1, TFDS's mark of an unlabelled example, or none recorded); the test "
                   "split cannot be trained or tested on", "digits", (8, 8)),
    "label_outside_the_classes": (lambda root: _small(root, labels={("train", 4): 3}),
                                  "{shard} record 4: the label 3, outside the 3 classes of 'label'; the train split "
                                  "cannot be trained or tested on", "digits", ()),
}


@pytest.mark.parametrize("name", BAD)
def test_a_bad_prepared_dataset_is_refused_in_one_line_naming_it(tmp_path, name):
    make, message, tfds_name, image_size = BAD[name]
    make(tmp_path)
    folder = tmp_path / "digits" / "1.0.0"
    with pytest.raises(OneLineError) as raised:
        data_lib.load("tfds", str(tmp_path), tfds_name=tfds_name, image_size=image_size)
    assert str(raised.value) == message.format(root=tmp_path, shard=_shard(folder), test=_shard(folder, "test"))


BOMB_SIDE = 20_000  # pixels a side a header declares: 400,000,000 in all, more than Pillow opens
PILLOW_LIMIT = 2 * Image.MAX_IMAGE_PIXELS  # what Pillow refuses to open: 178,956,970 pixels in Pillow 13


def declaring(side):
    """A PNG whose header declares ``side`` x ``side`` pixels (an 8x8 one's IHDR chunk rewritten, with its CRC): all
    that Pillow reads of a decompression bomb before refusing it."""
    image = bytearray(png(GREY))
    image[16:24] = struct.pack(">II", side, side)  # IHDR's width and height, after the signature, length and type
    image[29:33] = struct.pack(">I", zlib.crc32(image[12:29]))  # the CRC of IHDR's type and data
    return bytes(image)


def test_a_first_image_declaring_more_pixels_than_pillow_opens_is_refused_in_one_line(tmp_path):
    # A size the feature leaves open (-1) is read from the first training image's header.
    folder = _small(tmp_path, shape=(-1, -1, 1), images={("train", 0): declaring(BOMB_SIDE)})
    prepared = prepared_tfds.scan(str(tmp_path), "digits")
    with pytest.raises(prepared_tfds.TfdsError) as raised:
        dataset_info.tfds_info(prepared)
    assert raised.type is prepared_tfds.TfdsError
    assert str(raised.value) == (f"{_shard(folder)} record 0: cannot be read as an image (its header declares "
                                 f"400,000,000 pixels, more than Pillow's limit of {PILLOW_LIMIT:,}: a damaged file "
                                 "or a decompression bomb)")


def _too_many_classes_in_features_json(data_dir):
    # No label.labels.txt: the class names would be the label numbers, a trillion of them.
    _small(data_dir, names=(), features={"image": image_feature((8, 8, 1)), "label": class_label(10**12)})


def _too_many_classes_in_dataset_info(data_dir):
    # dataset_info.json's own features come before features.json's (3 classes here), as TFDS reads them.
    _dataset_info(data_dir, features={"featuresDict": {"features": {"image": image_feature((8, 8, 1)),
                                                                    "label": class_label(10**6 + 1)}}})


@pytest.mark.parametrize("make, where, declared", [
    (_too_many_classes_in_features_json, "features.json", "1000000000000"),
    (_too_many_classes_in_dataset_info, "dataset_info.json", "1000001"),
])
def test_a_class_label_of_more_than_a_million_classes_is_refused_in_one_line_naming_its_file(tmp_path, make, where,
                                                                                            declared):
    make(tmp_path)
    with pytest.raises(prepared_tfds.TfdsError) as raised:
        prepared_tfds.scan(str(tmp_path), "digits")
    assert raised.type is prepared_tfds.TfdsError
    assert str(raised.value) == (f"{tmp_path}/digits/1.0.0/{where}: its class label 'label' declares numClasses "
                                 f"{declared}, more than the 1,000,000 classes this code reads")


def test_a_dataset_not_prepared_stops_the_command_at_its_flags_in_one_line(tmp_path):
    # Found while the flags are parsed: no TensorFlow start-up, no download, exit status 2 as for any refused flag.
    process = subprocess.run([sys.executable, "-m", "training.train", "--dataset=tfds", "--tfds_name=digits",
                              f"--data_dir={tmp_path}", f"--logdir={tmp_path / 'run'}"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS)
    assert process.returncode == 2 and process.stdout == ""
    assert process.stderr == (f"train.py: error: flags dataset=tfds, data_dir={tmp_path}, tfds_name=digits: "
                              f"{BAD['missing'][1].format(root=tmp_path)}\n")
    assert not (tmp_path / "run").exists()


def test_a_tfds_config_checks_its_settings():
    with pytest.raises(ConfigError, match=re.escape("--dataset=tfds reads a dataset TensorFlow Datasets prepared in "
                                                    "--data_dir; give --data_dir=")):
        TrainConfig(dataset="tfds", tfds_name="mnist")
    with pytest.raises(ConfigError, match=re.escape("give --tfds_name=NAME[/CONFIG][:VERSION]")):
        TrainConfig(dataset="tfds", data_dir="x")
    with pytest.raises(ConfigError, match=re.escape("--tfds_name names the dataset of --dataset=tfds, not of "
                                                    "--dataset=mnist")):
        TrainConfig(tfds_name="mnist")
    for name in ("mnist:3.0", "mnist/..:1.0.0", "../mnist", "mnist:03.0.1"):
        with pytest.raises(ConfigError, match=re.escape(f"setting tfds_name='{name}': --tfds_name must be "
                                                        "NAME[/CONFIG][:VERSION]")):
            TrainConfig(dataset="tfds", data_dir="x", tfds_name=name)
    config = TrainConfig(dataset="tfds", data_dir="x", tfds_name="imagenette/320px-v2:1.0.0", image_size=(64, 64))
    assert config.logdir == "runs/tfds-imagenette-320px-v2-1.0.0-mnist_cnn-keras-custom"


# Chance is 1/3 on three classes; 2/3 of the 18 test images is twice chance, which a net that learnt nothing
# reaches with probability below 1e-3 (binomial, 12 of 18 at p = 1/3), as in tests/test_image_folder.py.
ABOVE_CHANCE = 2 / 3


@pytest.fixture(scope="module")
def tfds_run(digits, tmp_path_factory):
    """A run trained on a copy of ``digits`` of its own, which its tests may move."""
    return train_disk_run_on_a_copy(digits[0], tmp_path_factory.mktemp("tfds_run"), dataset="tfds",
                                    tfds_name="digits")


def test_a_tfds_run_trains_above_chance_and_records_its_classes(tfds_run):
    config, result = tfds_run
    assert result.results["test_accuracy"] >= ABOVE_CHANCE and result.results["dataset"] == "tfds"
    saved = RunDir(config.logdir).read_saved()["data"]
    assert saved["class_names"] == list(CLASS_NAMES) and saved["image_shape"] == [28, 28, 1]
    assert saved["source"].startswith("TFDS digits:1.0.0 in ")


def test_a_tfds_run_refuses_to_resume_on_renamed_classes(tfds_run, tmp_path):
    config, _ = tfds_run
    renamed = tmp_path / "renamed"
    shutil.copytree(config.data_dir, renamed)
    (renamed / "digits" / "1.0.0" / "label.labels.txt").write_text("7\n0\n1\n")  # the same pixels and labels
    with pytest.raises(RunError, match=re.escape("holds a run trained on other data")):
        train(TrainConfig(**{**vars(config), "data_dir": str(renamed), "train_steps": 31}))


def test_a_tfds_run_exports_and_predicts_by_class_names_where_the_data_is_gone(tfds_run, digits, tmp_path):
    config, result = tfds_run
    exporting.export_run(config.logdir)
    moved = tmp_path / "moved"
    shutil.move(config.data_dir, moved)  # from here on the run's own --data_dir is gone
    evaluation = predicting.evaluate_split(config.logdir, "test", data_dir=str(moved))
    assert evaluation.class_names == CLASS_NAMES and evaluation.total == 18
    # The same weights on the same images in another graph: the run's accuracy, to one image (as tests/test_export.py).
    assert abs(evaluation.accuracy - result.results["test_accuracy"]) <= 1 / 18 + 1e-6
    image = tmp_path / "seven.png"
    Image.fromarray(digits[1]["test"][0][list(digits[1]["test"][1]).index(0)]).save(image)  # a seven of the test set
    predictions = predicting.predict_files(config.logdir, [str(image)], top_k=3)
    assert sorted(name for name, _ in predictions[0].top) == sorted(CLASS_NAMES)
    assert abs(sum(probability for _, probability in predictions[0].top) - 1) < 1e-5  # float32 softmax
