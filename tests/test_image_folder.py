"""Training on a folder of class folders (``--dataset=folder --data_dir=PATH``): what a folder is taken to be, its
images as decoded, the one line each bad folder gets, and a run on one, exported and predicted with.

The folders are written here from the bundled MNIST subset (digits 0, 1 and 7 as PNGs, in folders named zero, one
and seven, so that the sorted names are not the digits' order) and from a few drawn RGB images.
"""

import io
import os
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
from training import dataset_info, exporting, image_folder, pipeline, predicting
from training.config import ConfigError, TrainConfig
from training.errors import OneLineError, RunError
from training.rundir import RunDir
from training.trainer import train

DIGITS = {"zero": 0, "one": 1, "seven": 7}  # folder name -> the MNIST digit its images show
PER_CLASS = 30  # images per class folder: 6 held out for testing (20%), 24 to train on
CLASS_NAMES = ("one", "seven", "zero")  # sorted folder names: labels 0, 1, 2


def write_digits(root, mnist, per_class=PER_CLASS):
    """``root/<name>/<i>.png`` for the first ``per_class`` training images of each digit of ``DIGITS``; returns
    ``{path: pixels (28, 28)}``."""
    written = {}
    for name, digit in DIGITS.items():
        (root / name).mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(mnist["y_train"] == digit)[:per_class]):
            path = root / name / f"{i:03d}.png"
            Image.fromarray(mnist["x_train"][index]).save(path)
            written[str(path)] = mnist["x_train"][index]
    return written


@pytest.fixture(scope="module")
def digits(tmp_path_factory, bundled_mnist):
    root = tmp_path_factory.mktemp("digits")
    return root, write_digits(root, bundled_mnist)


def test_a_folder_is_described_from_its_folder_names_and_first_image(digits):
    root, _ = digits
    info = dataset_info.describe("folder", str(root))
    assert info == dataset_info.DatasetInfo(28, 28, 1, 3, 72, 18, CLASS_NAMES)
    assert dataset_info.describe("folder", str(root), (14, 10), 3).image_shape == (14, 10, 3)
    assert dataset_info.from_record(dataset_info.as_record(info)) == info


def test_a_folder_loads_its_images_unchanged_with_labels_in_sorted_folder_order(digits):
    root, written = digits
    dataset = data_lib.load("folder", str(root))
    layout = image_folder.scan(str(root))
    # PNG is lossless: every image is the MNIST array it was written from, under its folder's label.
    for files, labels, x, y in ((layout.train_files, layout.train_labels, dataset.x_train, dataset.y_train),
                                (layout.test_files, layout.test_labels, dataset.x_test, dataset.y_test)):
        assert np.array_equal(x[..., 0], np.stack([written[path] for path in files]))
        assert list(y) == list(labels) == [CLASS_NAMES.index(path.split("/")[-2]) for path in files]
    # 20% of each class held out, the same files at every scan, none in both splits.
    assert np.bincount(dataset.y_test).tolist() == [6, 6, 6] and np.bincount(dataset.y_train).tolist() == [24] * 3
    assert image_folder.scan(str(root)) == layout and not set(layout.train_files) & set(layout.test_files)
    assert dataset.info == dataset_info.describe("folder", str(root)) and dataset.num_classes == 3
    assert dataset.source == f"image folder {root} (20% of each class held out for testing, split seed 0)"


def test_train_and_test_folders_are_the_split(tmp_path, bundled_mnist):
    written = write_digits(tmp_path / "train", bundled_mnist, per_class=3)
    for name in DIGITS:
        shutil.copytree(tmp_path / "train" / name, tmp_path / "test" / name)
    layout = image_folder.scan(str(tmp_path))
    assert layout.split == "its train/ and test/ folders" and layout.class_names == CLASS_NAMES
    assert len(layout.train_files) == len(layout.test_files) == len(written) == 9
    assert all("/test/" in path for path in layout.test_files)


def rgb_images(folder, count, size, seed):
    """``count`` PNGs of random RGB pixels of ``size`` (h, w) in ``folder``; returns their arrays."""
    folder.mkdir(parents=True)
    images = np.random.default_rng(seed).integers(0, 256, (count, *size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    return images


def test_images_are_converted_and_cropped_as_asked_and_predict_fits_its_inputs_alike(tmp_path):
    cats = rgb_images(tmp_path / "cat", 3, (12, 20), seed=0)
    rgb_images(tmp_path / "dog", 3, (12, 20), seed=1)
    dataset = data_lib.load("folder", str(tmp_path), image_size=(6, 6), image_channels=1, image_fit="crop")
    assert dataset.x_train.shape[1:] == dataset.info.image_shape == (6, 6, 1)
    # The central 12x12 window (columns 4 to 15), grey, resized: the same ops give the same bytes.
    window = tf.image.rgb_to_grayscale(cats[:, :, 4:16])
    expected = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(window, (6, 6), antialias=True)), 0, 255), tf.uint8)
    cat_images = np.concatenate([dataset.x_train[dataset.y_train == 0], dataset.x_test[dataset.y_test == 0]])
    assert sorted(map(bytes, cat_images)) == sorted(map(bytes, expected.numpy()))
    fitted, changes = predicting.fit(cats, (6, 6, 1), "crop")
    assert changes == ("RGB -> grey", "cropped 12x20 -> 12x12", "resized 12x12 -> 6x6")
    assert np.array_equal(fitted, expected.numpy())
    stretched = data_lib.load("folder", str(tmp_path), image_size=(6, 10), image_channels=3)
    assert stretched.x_train.shape[1:] == (6, 10, 3) and pipeline.crop_window(12, 20, (6, 10)) == (12, 20)


def _image(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


GREY, RGB = np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.uint8)


def _two_classes(root, a=GREY, b=GREY):
    for name, pixels in (("a", a), ("b", b)):
        for i in range(3):
            _image(root / name / f"{i}.png", pixels)


def _loose_image(root):
    _image(root / "loose.png", GREY)


def _no_images(root):
    for name in ("a", "b"):
        (root / name).mkdir()
    (root / "a" / "notes.txt").touch()


def _empty_class(root):
    _image(root / "a" / "0.png", GREY)
    (root / "b").mkdir()


def _corrupt_image(root):
    _two_classes(root)
    (root / "b" / "1.png").write_bytes(b"\x89PNG not really")


def _named_pipe(root):
    _two_classes(root)
    (root / "b" / "1.png").unlink()
    os.mkfifo(root / "b" / "1.png")  # reading it would block for ever


def _mixed_sizes(root):
    _two_classes(root)
    _image(root / "b" / "2.png", np.zeros((9, 8), np.uint8))


def _other_test_classes(root):
    _two_classes(root / "train")
    _two_classes(root / "test")
    shutil.copytree(root / "test" / "b", root / "test" / "c")


# Each bad folder: how it is made in tmp_path (``root``), its one line ({root}: its path; {first}: the first image
# the loader read, which the held-out split decides), and the folder given, relative to root.
BAD_FOLDERS = {
    "missing": (lambda root: None, "{root}/x does not exist; --dataset=folder reads a folder of class folders, one "
                                   "per class, each holding that class's images", "x"),
    "a_file": (lambda root: (root / "x").write_text("not a folder"),
               "{root}/x is not a folder; --dataset=folder reads a folder of class folders, one per class, each "
               "holding that class's images", "x"),
    "no_class_folders": (_loose_image, "{root} holds no class folders but 1 image directly in it (loose.png, ...); "
                                       "put each class's images in a folder named after the class; --dataset=folder "
                                       "reads one folder per class, each holding that class's images", ""),
    "no_images": (_no_images, "{root}: no images in any of its 2 class folders (files ending in .bmp, .gif, .jpeg, "
                              ".jpg, .png)", ""),
    "empty_class": (_empty_class, "{root}/b: an empty class folder, no images; add images (files ending in .bmp, "
                                  ".gif, .jpeg, .jpg, .png) or remove the folder", ""),
    "single_class": (lambda root: _image(root / "a" / "0.png", GREY),
                     "{root} holds a single class folder (a); a classifier needs at least two classes, one folder "
                     "each", ""),
    "corrupt_image": (_corrupt_image, "{root}/b/1.png: cannot be decoded as an image (cannot identify image file "
                                      "'{root}/b/1.png'); replace or remove it", ""),
    "named_pipe": (_named_pipe, "{root}/b/1.png: not a regular file; an image folder holds image files", ""),
    "mixed_channels": (lambda root: _two_classes(root, GREY, RGB),
                       "images of mixed channels: {first} has 1 (grey), {root}/b/0.png has 3 (RGB); give "
                       "--image_channels=1 or --image_channels=3 to convert every image to grey or RGB", ""),
    "mixed_sizes": (_mixed_sizes, "images of mixed size: {first} has 8x8, {root}/b/2.png has 9x8; give "
                                  "--image_size=HEIGHT,WIDTH to bring every image to one size", ""),
    "train_test_classes_differ": (_other_test_classes, "{root}: train/ and test/ hold different class folders (only "
                                                       "in test/: c); give both the same ones", ""),
    "too_few_to_test": (lambda root: _image(root / "a" / "0.png", GREY) or _image(root / "b" / "0.png", GREY),
                        "{root}: too few images to hold 20% of each class out for testing (2 in all); add images, "
                        "or give train/ and test/ folders", ""),
}


@pytest.mark.parametrize("name", BAD_FOLDERS)
def test_a_bad_folder_is_refused_in_one_line_naming_it(tmp_path, name):
    make, message, below = BAD_FOLDERS[name]
    make(tmp_path)
    first = image_folder.scan(str(tmp_path)).files[0] if "{first}" in message else None
    with pytest.raises(OneLineError) as raised:
        data_lib.load("folder", str(tmp_path / below) if below else str(tmp_path))
    assert str(raised.value) == message.format(root=tmp_path, first=first)


def test_a_bad_folder_stops_the_command_at_its_flags_in_one_line(tmp_path):
    BAD_FOLDERS["empty_class"][0](tmp_path)
    # Found while the flags are parsed: no TensorFlow start-up, exit status 2 as for any refused flag.
    process = subprocess.run([sys.executable, "-m", "training.train", "--dataset=folder", f"--data_dir={tmp_path}",
                              f"--logdir={tmp_path / 'run'}"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=CLI_TIMEOUT_SECONDS)
    assert process.returncode == 2 and process.stdout == ""
    assert process.stderr == (f"train.py: error: flags dataset=folder, data_dir={tmp_path}: "
                              f"{BAD_FOLDERS['empty_class'][1].format(root=tmp_path)}\n")
    assert not (tmp_path / "run").exists()


BOMB_SIDE = 20_000  # pixels a side a header declares: 400,000,000 in all, more than Pillow opens
# Pillow refuses to open more than twice its MAX_IMAGE_PIXELS (89,478,485 in Pillow 13: 178,956,970); it only warns
# between the two.
PILLOW_LIMIT = 2 * Image.MAX_IMAGE_PIXELS


def declaring(side, pixels=GREY):
    """A PNG of ``pixels`` whose header declares ``side`` x ``side`` pixels (its IHDR chunk rewritten, with its
    CRC): all that Pillow reads of a decompression bomb before refusing it."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    png = bytearray(buffer.getvalue())
    png[16:24] = struct.pack(">II", side, side)  # IHDR's width and height, after the signature, length and type
    png[29:33] = struct.pack(">I", zlib.crc32(png[12:29]))  # the CRC of IHDR's type and data
    return bytes(png)


def test_an_image_declaring_more_pixels_than_pillow_opens_is_refused_in_one_line_at_the_flags(tmp_path):
    _two_classes(tmp_path)
    for path in tmp_path.glob("*/*.png"):
        path.write_bytes(declaring(BOMB_SIDE))
    first = image_folder.scan(str(tmp_path)).train_files[0]  # the image whose header the flags read
    why = (f"its header declares 400,000,000 pixels, more than Pillow's limit of {PILLOW_LIMIT:,}: a damaged file "
           "or a decompression bomb")
    with pytest.raises(image_folder.FolderError) as raised:
        image_folder.image_header(first)
    assert raised.type is image_folder.FolderError
    assert str(raised.value) == f"{first}: cannot be read as an image ({why})"
    with pytest.raises(ConfigError) as raised:
        TrainConfig(dataset="folder", data_dir=str(tmp_path)).check_on_disk()
    assert str(raised.value).endswith(f": {first}: cannot be read as an image ({why})")
    # Pillow says the same of any such image TensorFlow fails to decode later (data.py quotes it), also of one
    # read from memory, as a TFDS record is.
    assert image_folder.why_undecodable(str(tmp_path / "b" / "2.png")) == why
    assert image_folder.why_undecodable(io.BytesIO(declaring(BOMB_SIDE))) == why


# Folders nested in a class folder: past Python's default recursion limit, the one the flags are checked under
# (TensorFlow, imported later, raises it to 3,000, deeper than a path of PATH_MAX, 4,096 bytes, can nest folders).
DEEP = 1_100
DEFAULT_RECURSION_LIMIT = 1_000


def test_images_nested_deeper_than_the_recursion_limit_are_found_in_sorted_path_order(tmp_path):
    _two_classes(tmp_path / "train")
    _two_classes(tmp_path / "test")
    class_b = tmp_path / "train" / "b"
    folder = class_b
    for depth in range(1, DEEP + 1):
        folder /= "d"
        folder.mkdir()  # a level at a time: os.makedirs recurses once per level too
        if depth == DEEP // 2:
            middle = folder / "e.png"  # after the folder d beside it in sorted order: found after what d holds
    for path in (middle, folder / "bottom.png", class_b / "z.png"):
        _image(path, GREY)
    (folder / ".hidden.png").write_bytes(b"skipped: its name starts with a dot")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(DEFAULT_RECURSION_LIMIT)  # as in a command's flag checks, before TensorFlow is imported
    try:
        layout = image_folder.scan(str(tmp_path))
    finally:
        sys.setrecursionlimit(limit)
        # pytest's later removal of old temporary folders recurses once per level: the tree goes now, bottom up.
        for path in (middle, folder / "bottom.png", folder / ".hidden.png"):
            path.unlink()
        deepest = folder
        while deepest != class_b:
            deepest.rmdir()
            deepest = deepest.parent
    class_a = tmp_path / "train" / "a"
    assert layout.train_files == tuple(str(path) for path in (
        class_a / "0.png", class_a / "1.png", class_a / "2.png",
        class_b / "0.png", class_b / "1.png", class_b / "2.png", folder / "bottom.png", middle, class_b / "z.png"))
    assert layout.train_labels == (0, 0, 0, 1, 1, 1, 1, 1, 1)


def test_a_folder_config_checks_its_settings_and_its_folder():
    with pytest.raises(ConfigError, match=re.escape("--dataset=folder reads the class folders in --data_dir")):
        TrainConfig(dataset="folder")
    with pytest.raises(ConfigError, match=re.escape("--image_size, --image_channels and --image_fit shape the "
                                                    "images of --dataset=folder")):
        TrainConfig(image_size=(32, 32))
    with pytest.raises(ConfigError, match=re.escape("--image_fit=crop fits images to --image_size")):
        TrainConfig(dataset="folder", data_dir="x", image_fit="crop")


def test_an_arch_that_does_not_fit_the_folder_images_is_refused_at_the_start(digits, tmp_path):
    root, _ = digits
    config = TrainConfig(dataset="folder", data_dir=str(root), arch="c4k9v-c4k9v-c4k9v-c4k9v")  # no disk read yet
    assert config.logdir == f"runs/folder-{root.name}-c4k9v-c4k9v-c4k9v-c4k9v-keras-custom"
    with pytest.raises(ConfigError, match=re.escape("--arch architecture token 'c4k9v': kernel size 9 does not fit "
                                                    "its input of shape (4, 4, 4)")):
        config.check_on_disk()
    with pytest.raises(ConfigError, match=re.escape("--crop_padding 4 must be smaller than the folder's 4x4 images")):
        TrainConfig(dataset="folder", data_dir=str(root), image_size=(4, 4), augment=True, arch="d8").check_on_disk()


# Chance is 1/3 on three classes. A few hundred images of three digits this distinct are told apart after a few
# dozen steps by any small net; 2/3 on the 18 test images is twice chance, which a net that learnt nothing reaches
# with probability below 1e-3 (binomial, 12 of 18 at p = 1/3).
ABOVE_CHANCE = 2 / 3


@pytest.fixture(scope="module")
def folder_run(digits, tmp_path_factory):
    """A run trained on a copy of ``digits`` of its own, which its tests may change."""
    return train_disk_run_on_a_copy(digits[0], tmp_path_factory.mktemp("folder_run"), dataset="folder")


def test_a_folder_run_trains_above_chance_and_records_its_classes(folder_run):
    config, result = folder_run
    assert result.results["test_accuracy"] >= ABOVE_CHANCE and result.results["dataset"] == "folder"
    saved = RunDir(config.logdir).read_saved()["data"]
    assert saved["class_names"] == list(CLASS_NAMES) and saved["image_shape"] == [28, 28, 1]


def test_a_folder_run_refuses_to_resume_on_other_images(folder_run, tmp_path):
    config, _ = folder_run
    renamed = tmp_path / "renamed"
    shutil.copytree(config.data_dir, renamed)
    (renamed / "seven").rename(renamed / "z_seven")  # the same pixels, other class names
    with pytest.raises(RunError, match=re.escape("holds a run trained on other data")):
        train(TrainConfig(**{**vars(config), "data_dir": str(renamed), "train_steps": 31}))


def test_a_folder_run_exports_and_predicts_by_folder_names_where_the_folder_is_gone(folder_run, tmp_path):
    config, result = folder_run
    exporting.export_run(config.logdir)
    moved = tmp_path / "moved"
    shutil.move(config.data_dir, moved)  # from here on the run's own --data_dir is gone
    evaluation = predicting.evaluate_split(config.logdir, "test", data_dir=str(moved))
    assert evaluation.class_names == CLASS_NAMES and evaluation.total == 18
    # The same weights on the same images in another graph: the run's accuracy, to one image (as tests/test_export.py).
    assert abs(evaluation.accuracy - result.results["test_accuracy"]) <= 1 / 18 + 1e-6
    seven = moved / "seven" / "000.png"
    big = tmp_path / "big.png"
    Image.fromarray(np.kron(np.asarray(Image.open(seven)), np.ones((2, 2), np.uint8))).save(big)
    predictions = predicting.predict_files(config.logdir, [str(seven), str(big)], top_k=3)
    assert [sorted(name for name, _ in p.top) for p in predictions] == [sorted(CLASS_NAMES)] * 2
    assert predictions[1].changes == ("resized 56x56 -> 28x28",)
    assert all(abs(sum(probability for _, probability in p.top) - 1) < 1e-5 for p in predictions)  # float32 softmax
