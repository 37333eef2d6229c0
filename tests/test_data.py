"""Dataset loading (files, the bundled MNIST fallback, errors naming the file, CIFAR-100 superclasses), the
validation split, and the tf.data pipelines with their augmentation options."""

import dataclasses
import logging
import os
import re
import urllib.error
import zipfile

import keras
import numpy as np
import pytest
from keras.src.backend import config as keras_config
from keras.src.utils import file_utils as keras_file_utils

from training import data as data_lib
from training import pipeline
from training.data import DataError

# Images scaled by 1/255 in float32 against float64 NumPy: within one float32 ulp of values <= 1.
PIXEL_ATOL = 1e-6


def _mnist_arrays(num_train=4, num_test=2):
    """A minimal valid MNIST-style set: (n, 28, 28) uint8 images and (n,) uint8 labels, as Keras stores it."""
    rng = np.random.default_rng(0)
    return {"x_train": rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
            "y_train": np.arange(num_train, dtype=np.uint8) % 10,
            "x_test": rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
            "y_test": np.arange(num_test, dtype=np.uint8)[::-1] % 10}


def test_load_reads_the_npz_in_data_dir_and_adds_a_channel_axis(tmp_path):
    arrays = _mnist_arrays()
    np.savez(tmp_path / "mnist.npz", **arrays)
    dataset = data_lib.load("mnist", str(tmp_path), allow_download=False)
    assert dataset.source == str(tmp_path / "mnist.npz")
    assert dataset.x_train.shape == (4, 28, 28, 1) and dataset.x_test.shape == (2, 28, 28, 1)
    assert dataset.x_train.dtype == np.uint8
    np.testing.assert_array_equal(dataset.x_train[..., 0], arrays["x_train"])
    assert dataset.y_train.dtype == np.int32 and dataset.y_train.tolist() == [0, 1, 2, 3]
    assert dataset.y_test.tolist() == [1, 0]
    assert dataset.image_shape == (28, 28, 1) and dataset.num_classes == 10


def test_cifar_labels_of_shape_n_by_1_are_flattened(tmp_path):
    images = np.zeros((3, 32, 32, 3), np.uint8)
    labels = np.array([[99], [0], [42]], np.int64)  # as tf.keras.datasets.cifar100 returns them
    np.savez(tmp_path / "cifar100.npz", x_train=images, y_train=labels, x_test=images[:2], y_test=labels[:2])
    dataset = data_lib.load("cifar100", str(tmp_path), allow_download=False)
    assert dataset.y_train.shape == (3,) and dataset.y_train.dtype == np.int32
    assert dataset.y_train.tolist() == [99, 0, 42] and dataset.y_test.tolist() == [99, 0]
    assert dataset.x_train.shape == (3, 32, 32, 3) and dataset.num_classes == 100


def _without_y_test(arrays):
    del arrays["y_test"]


def _narrow_images(arrays):
    arrays["x_train"] = arrays["x_train"][:, :, :27]


def _float_images(arrays):
    arrays["x_test"] = arrays["x_test"].astype(np.float32) / 255


def _label_ten(arrays):
    arrays["y_test"] = np.array([3, 10], np.uint8)


def _short_labels(arrays):
    arrays["y_train"] = arrays["y_train"][:3]


def _float_labels(arrays):
    arrays["y_train"] = arrays["y_train"].astype(np.float32)


@pytest.mark.parametrize("corrupt,message", [
    (_without_y_test, "missing arrays y_test; expected x_train, y_train, x_test, y_test"),
    (_narrow_images, "x_train has shape (4, 28, 27, 1), expected (n, 28, 28, 1)"),
    (_float_images, "x_test has dtype float32, expected uint8 pixels in [0, 255]"),
    (_label_ten, "y_test holds labels in [3, 10], expected [0, 10) for mnist"),
    (_short_labels, "y_train has shape (3,), expected (4,) to match x_train"),
    (_float_labels, "y_train has dtype float32, expected integer class labels"),
], ids=["missing_key", "image_shape", "image_dtype", "label_range", "label_count", "label_dtype"])
def test_a_malformed_npz_raises_data_error_naming_the_file(tmp_path, corrupt, message):
    arrays = _mnist_arrays()
    corrupt(arrays)
    _assert_refused(tmp_path, "mnist", arrays, message)


def _assert_refused(folder, name, arrays, message):
    """Saves ``arrays`` as ``<folder>/<name>.npz`` and checks that loading it fails with ``<path>: <message>``."""
    path = folder / f"{name}.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=re.escape(f"{path}: {message}")):
        data_lib.load(name, str(folder), allow_download=False)


def test_a_file_that_is_not_a_zip_raises_data_error_naming_it(tmp_path):
    path = tmp_path / "mnist.npz"
    path.write_text("this is not an npz file\n")
    with pytest.raises(DataError, match=re.escape(f"{path}: not a readable .npz file")):
        data_lib.load("mnist", str(tmp_path), allow_download=False)


def test_a_truncated_npz_raises_data_error_naming_it(tmp_path):
    # An interrupted download or copy: the zip header is there, the central directory at the end is not.
    full, path = tmp_path / "full.npz", tmp_path / "mnist.npz"
    np.savez(full, **_mnist_arrays())
    path.write_bytes(full.read_bytes()[:1000])
    with pytest.raises(DataError, match=re.escape(f"{path}: not a readable .npz file")):
        data_lib.load("mnist", str(tmp_path), allow_download=False)


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DataError, match=re.escape("unknown dataset 'svhn'; choose one of mnist, fashion_mnist, "
                                                  "cifar10, cifar100")):
        data_lib.load("svhn")


def test_a_missing_dataset_says_which_file_to_put_where(empty_keras_home):
    with pytest.raises(DataError, match=re.escape("dataset 'cifar100' not found: put <data_dir>/cifar100.npz (arrays "
                                                  "x_train, y_train, x_test, y_test) there and pass --data_dir")):
        data_lib.load("cifar100", allow_download=False)


def test_mnist_without_data_dir_falls_back_to_the_bundled_subset(empty_keras_home):
    dataset = data_lib.load("mnist", "", allow_download=False)
    assert dataset.source == f"bundled MNIST subset {data_lib.BUNDLED_MNIST}"
    assert dataset.x_train.shape == (10_000, 28, 28, 1) and dataset.x_test.shape == (10_000, 28, 28, 1)
    assert dataset.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the official test set's start
    assert dataset.y_train.dtype == np.int32


def test_the_bundled_subset_asked_for_by_name_is_loaded_though_the_keras_cache_holds_mnist(monkeypatch):
    # A sweep of the main job (--bundled_mnist) trains on the subset on a machine with full MNIST at hand too.
    full = dict(x_train=np.zeros((60, 28, 28), np.uint8), y_train=np.zeros(60, np.uint8),
                x_test=np.zeros((10, 28, 28), np.uint8), y_test=np.zeros(10, np.uint8))
    monkeypatch.setattr(data_lib, "_from_keras", lambda name, allow_download: (full, None))
    assert len(data_lib.load("mnist", "", allow_download=False).x_train) == 60
    dataset = data_lib.load_bundled_mnist()
    assert dataset.source == f"bundled MNIST subset {data_lib.BUNDLED_MNIST}" and dataset.name == "mnist"
    assert dataset.x_train.shape == (10_000, 28, 28, 1) and dataset.x_test.shape == (10_000, 28, 28, 1)


def test_a_data_dir_without_the_dataset_is_refused_not_replaced_by_the_bundled_subset(tmp_path, empty_keras_home):
    # Training on 10,000 images instead of the 60,000 the user pointed at would change every result quietly.
    with pytest.raises(DataError, match=re.escape(
            f"dataset 'mnist' not found: {tmp_path / 'mnist.npz'} does not exist (--data_dir {tmp_path} must hold "
            "mnist.npz with arrays x_train, y_train, x_test, y_test; without --data_dir the Keras cache is used, "
            "then the bundled subset)")):
        data_lib.load("mnist", str(tmp_path), allow_download=False)


# The bundled subset's fingerprint as config.json records it. Pinned: a change of what is hashed would make every
# run recorded so far look as if it had trained on other data, and refuse its resume.
BUNDLED_SHA256 = "601cf2b8e0576b8213b3d6f397917d0df7ba154fa9aae52910ed834ec314148d"


def test_the_fingerprint_of_the_bundled_subset_is_pinned(empty_keras_home):
    dataset = data_lib.load("mnist", "", allow_download=False)
    assert data_lib.fingerprint(dataset) == {"sha256": BUNDLED_SHA256, "source": dataset.source,
                                             "images": [10_000, 10_000]}


def test_the_same_arrays_stored_otherwise_have_one_fingerprint_and_any_change_another(tmp_path):
    arrays = _mnist_arrays()
    np.savez(tmp_path / "mnist.npz", **arrays)
    (tmp_path / "other").mkdir()
    # Compressed, with a channel axis and int64 labels: the same images and labels once validated.
    np.savez_compressed(tmp_path / "other" / "mnist.npz", **dict(
        arrays, x_train=arrays["x_train"][..., np.newaxis], y_train=arrays["y_train"].astype(np.int64)))
    first, second = (data_lib.fingerprint(data_lib.load("mnist", str(folder), allow_download=False))
                     for folder in (tmp_path, tmp_path / "other"))
    assert first["sha256"] == second["sha256"] and first["source"] != second["source"]
    dataset = data_lib.load("mnist", str(tmp_path), allow_download=False)
    changed = {"a pixel": dict(x_train=dataset.x_train.copy()), "a label": dict(y_test=dataset.y_test.copy()),
               "train and test swapped": dict(x_train=dataset.x_test, y_train=dataset.y_test, x_test=dataset.x_train,
                                              y_test=dataset.y_train)}
    changed["a pixel"]["x_train"][3, 27, 27, 0] ^= 1
    changed["a label"]["y_test"][0] = 9
    hashes = {case: data_lib.fingerprint(dataclasses.replace(dataset, **fields))["sha256"]
              for case, fields in changed.items()}
    assert len(set(hashes.values()) | {first["sha256"]}) == 4, hashes


MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"


def test_a_failed_download_prints_nothing_and_its_cause_is_in_the_fallback_warning(
        empty_keras_home, monkeypatch, capsys, caplog):
    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("no network here")

    # Keras reads KERAS_HOME once, when imported, so its cache folder is pointed at the empty one here; its
    # download goes through this module's urlretrieve.
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(empty_keras_home))
    monkeypatch.setattr(keras_file_utils, "urlretrieve", no_network)
    caplog.set_level(logging.INFO, logger="absl")
    dataset = data_lib.load("mnist", "", allow_download=True)
    assert dataset.source == f"bundled MNIST subset {data_lib.BUNDLED_MNIST}"
    # Keras' "Downloading data from ..." is a log record, not a line on stdout.
    assert capsys.readouterr().out == ""
    records = [(record.levelname, record.getMessage()) for record in caplog.records]
    assert records == [
        ("INFO", "mnist is not in the Keras cache: downloading it with tf.keras.datasets"),
        ("INFO", f"Downloading data from {MNIST_URL}"),
        ("WARNING", f"full MNIST was neither found nor downloadable (tf.keras.datasets: URL fetch failure on "
                    f"{MNIST_URL}: None -- no network here): training on the bundled subset (10,000 training "
                    f"images, the official 10,000 test images) from {data_lib.BUNDLED_MNIST}")]
    assert keras.config.is_interactive_logging_enabled()  # Keras' own setting is put back


# The pipelines, on 24 examples whose label is their index and whose four pixels all equal it, so each batch
# says which examples it holds and whether images and labels stayed paired.
NUM_EXAMPLES = 24
BATCH = 4
BATCHES_PER_EPOCH = NUM_EXAMPLES // BATCH


def _indexed_examples():
    images = np.repeat(np.arange(NUM_EXAMPLES, dtype=np.uint8), 4).reshape(NUM_EXAMPLES, 2, 2, 1)
    return images, np.arange(NUM_EXAMPLES, dtype=np.int32)


def _take(dataset, num_batches):
    """Labels of the first ``num_batches`` batches, checking every image still matches its label."""
    batches = []
    for images, labels in dataset.take(num_batches):
        images, labels = images.numpy(), labels.numpy()
        np.testing.assert_allclose(images, np.broadcast_to(labels[:, None, None, None] / 255, images.shape),
                                   atol=PIXEL_ATOL)
        batches.append(labels.tolist())
    return batches


def _train_batches(seed, num_batches, skip_batches=0):
    x, y = _indexed_examples()
    return _take(pipeline.train_pipeline(x, y, BATCH, seed, pipeline.make_preprocess(), skip_batches),
                 num_batches)


def test_train_order_depends_only_on_the_seed():
    first = _train_batches(seed=3, num_batches=3 * BATCHES_PER_EPOCH)
    assert _train_batches(seed=3, num_batches=3 * BATCHES_PER_EPOCH) == first
    assert _train_batches(seed=4, num_batches=3 * BATCHES_PER_EPOCH) != first
    epochs = [[label for batch in first[e * BATCHES_PER_EPOCH:(e + 1) * BATCHES_PER_EPOCH] for label in batch]
              for e in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(NUM_EXAMPLES))  # each epoch sees every example once
    assert epochs[0] != epochs[1] != epochs[2]  # and in a new order
    assert epochs[0] != list(range(NUM_EXAMPLES))  # shuffled at all


def test_skipping_k_batches_resumes_at_batch_k():
    full = _train_batches(seed=1, num_batches=2 * BATCHES_PER_EPOCH)
    skip = 7  # into the second epoch, past a reshuffle
    assert _train_batches(seed=1, num_batches=len(full) - skip, skip_batches=skip) == full[skip:]


def test_train_batches_are_full():
    x, y = _indexed_examples()
    dataset = pipeline.train_pipeline(x[:10], y[:10], BATCH, 0, pipeline.make_preprocess())
    # 10 examples do not fill batches of 4: the stream repeats before batching, so none is short.
    assert [len(labels) for labels in _take(dataset, 5)] == [BATCH] * 5


def test_eval_pipeline_yields_every_example_once_in_order():
    x, y = _indexed_examples()
    batches = _take(pipeline.eval_pipeline(x[:10], y[:10], BATCH, pipeline.make_preprocess()), 100)
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_standardize_uses_per_channel_training_statistics():
    images = np.array([[[[0, 255]], [[255, 255]]]], np.uint8)  # one 2x1 image, two channels
    mean, std = pipeline.channel_stats(images)
    np.testing.assert_allclose(mean, [0.5, 1.0], atol=PIXEL_ATOL)
    np.testing.assert_allclose(std, [0.5, 0.0], atol=PIXEL_ATOL)
    preprocess = pipeline.make_preprocess(mean=np.float32([0.5, 0.5]), std=np.float32([0.5, 0.25]))
    out, labels = preprocess(images, np.int32([7]))
    # (x / 255 - mean) / std per channel.
    np.testing.assert_allclose(out.numpy()[0, :, 0], [[-1.0, 2.0], [1.0, 2.0]], atol=PIXEL_ATOL)
    assert np.asarray(labels).tolist() == [7]



# Augmentation options, through the training pipeline that supplies the draws. One 8x8 image whose 64 pixels all
# differ, so an output says which window of the reflect-padded image it is and whether it was flipped.
IMAGE = np.arange(64, dtype=np.uint8).reshape(8, 8)


def _augmented_copies(num_copies=256, **options):
    """``num_copies`` copies of IMAGE, augmented as one training batch; (n, 8, 8) float64 pixel values."""
    batch = np.repeat(IMAGE[np.newaxis, :, :, np.newaxis], num_copies, axis=0)
    preprocess = pipeline.make_preprocess(augment=True, **options)
    images, _ = next(iter(pipeline.train_pipeline(batch, np.zeros(num_copies, np.int32), num_copies, 0,
                                                  preprocess)))
    return np.rint(images.numpy()[..., 0].astype(np.float64) * 255)


def _windows(padding):
    """The unflipped and the flipped crops of IMAGE padded by ``padding`` reflected pixels."""
    padded = np.pad(IMAGE.astype(np.float64), padding, mode="reflect")  # NumPy's "reflect" is TF's REFLECT
    span = 2 * padding + 1
    unflipped = [padded[r:r + 8, c:c + 8] for r in range(span) for c in range(span)]
    return unflipped, [np.fliplr(window) for window in unflipped]


def _matches(crop, windows):
    return any(np.array_equal(crop, window) for window in windows)


def test_augment_gives_each_image_its_own_crop_window_and_flip():
    # 81 windows x 2 flips to draw from: a batch that shared one window would hold at most 2 distinct images,
    # while per-image draws give dozens.
    out = _augmented_copies()
    unflipped, flipped = _windows(padding=4)
    for crop in out:
        assert _matches(crop, unflipped + flipped)
    assert len({crop.tobytes() for crop in out}) > 40
    # Some crops match no unflipped window (so they were flipped), and some match one.
    matches_unflipped = sum(_matches(crop, unflipped) for crop in out)
    assert 0 < matches_unflipped < 256


def test_flip_none_only_translates():
    out = _augmented_copies(flip="none")
    unflipped, _ = _windows(padding=4)
    assert all(_matches(crop, unflipped) for crop in out)
    assert len({crop.tobytes() for crop in out}) > 40


def test_crop_padding_zero_only_flips():
    out = _augmented_copies(crop_padding=0)
    is_flipped = [np.array_equal(crop, np.fliplr(IMAGE)) for crop in out]
    assert all(flipped or np.array_equal(crop, IMAGE) for crop, flipped in zip(out, is_flipped))
    assert 0 < sum(is_flipped) < 256


def test_crop_padding_two_stays_within_two_pixels():
    out = _augmented_copies(crop_padding=2, flip="none")
    unflipped, _ = _windows(padding=2)
    assert all(_matches(crop, unflipped) for crop in out)
    assert len({crop.tobytes() for crop in out}) == 25  # all 5 x 5 offsets drawn among 256 images


def test_alternating_flip_flips_each_example_on_every_other_epoch():
    # 10 examples in batches of 4, so batches straddle epochs: example i's flip in epoch e must be its own fixed
    # coin XOR (e odd). Image i is 1x4 with pixels 10 * column + i: increasing unless flipped.
    num_examples, batch, num_batches = 10, 4, 8  # 32 draws: epochs 0, 1, 2 whole and 2 examples of epoch 3
    images = (10 * np.arange(4) + np.arange(num_examples)[:, None]).astype(np.uint8).reshape(num_examples, 1, 4, 1)
    preprocess = pipeline.make_preprocess(augment=True, crop_padding=0, flip="alternating")
    batches = pipeline.train_pipeline(images, np.arange(num_examples, dtype=np.int32), batch, 5, preprocess)
    flips = {}  # (example, epoch) -> flipped
    for k, (out, labels) in enumerate(batches.take(num_batches)):
        pixels = np.rint(out.numpy()[:, 0, :, 0] * 255)
        for j, (row, label) in enumerate(zip(pixels, labels.numpy())):
            assert sorted(row) == sorted(images[label, 0, :, 0])  # the example's own pixels, maybe reversed
            flips[label, (k * batch + j) // num_examples] = bool(row[0] > row[-1])
    assert len(flips) == num_batches * batch
    for (example, epoch), flipped in flips.items():
        assert flipped == flips[example, 0] ^ (epoch % 2 == 1), (example, epoch)
    assert 0 < sum(flips[example, 0] for example in range(num_examples)) < num_examples  # a coin, not a constant


@pytest.mark.parametrize("options,message", [
    ({"flip": "sometimes"}, "make_preprocess: flip must be one of random, alternating, none, got 'sometimes'"),
    ({"crop_padding": -1}, "make_preprocess: crop_padding must be a whole number of pixels >= 0, got -1"),
    ({"crop_padding": 2.5}, "make_preprocess: crop_padding must be a whole number of pixels >= 0, got 2.5"),
], ids=["flip_mode", "negative_padding", "fractional_padding"])
def test_bad_augment_options_raise_one_line(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        pipeline.make_preprocess(augment=True, **options)


def test_padding_that_cannot_reflect_is_refused_when_the_pipeline_is_built():
    x, y = _indexed_examples()  # 2x2 images: REFLECT needs padding < 2
    with pytest.raises(ValueError, match=re.escape("crop_padding 4 must be smaller than the 2x2 images")):
        pipeline.train_pipeline(x, y, BATCH, 0, pipeline.make_preprocess(augment=True))


def test_augmenting_without_the_pipelines_draws_is_refused():
    with pytest.raises(ValueError, match=re.escape("the function needs each example's draws; pass it to "
                                                   "train_pipeline")):
        pipeline.make_preprocess(augment=True)(np.zeros((1, 8, 8, 1), np.uint8), np.int32([0]))


# Loading checks that run before any array is read.
def test_an_empty_file_raises_data_error_naming_it(tmp_path):
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=re.escape(f"{path}: not a readable .npz file (it is empty: 0 bytes)")):
        data_lib.load("mnist", str(tmp_path), allow_download=False)


def test_a_single_npy_array_under_the_npz_name_raises_data_error(tmp_path):
    path = tmp_path / "mnist.npz"
    with open(path, "wb") as file:
        np.save(file, _mnist_arrays()["x_train"])
    with pytest.raises(DataError, match=re.escape(f"{path}: not a readable .npz file (it holds a single .npy "
                                                  "array; save the arrays x_train, y_train, x_test, y_test "
                                                  "together with numpy.savez)")):
        data_lib.load("mnist", str(tmp_path), allow_download=False)


def _npz_declaring(path, arrays, key, shape):
    """Writes ``arrays`` as an .npz whose member ``key`` has its real data but a header declaring ``shape``."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w") as member:
                if name == key:
                    np.lib.format.write_array_header_1_0(member, {"descr": np.lib.format.dtype_to_descr(
                        array.dtype), "fortran_order": False, "shape": shape})
                    member.write(array.tobytes())
                else:
                    np.lib.format.write_array(member, array)


def test_a_header_declaring_more_bytes_than_stored_is_refused_before_reading(tmp_path):
    # 10**12 images of 28x28 would be a MemoryError (or a swapped-out machine) if the loader believed the header.
    path = tmp_path / "mnist.npz"
    _npz_declaring(path, _mnist_arrays(), "x_train", (10**12, 28, 28))
    with pytest.raises(DataError, match=re.escape(
            f"{path}: x_train declares shape (1000000000000, 28, 28) of uint8 (784,000,000,000,000 bytes), but the "
            "archive stores only 3,136 bytes for it")):  # 4 images x 28 x 28 x 1 byte
        data_lib.load("mnist", str(tmp_path), allow_download=False)


def test_an_array_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(data_lib, "MAX_ARRAY_BYTES", 1000)
    np.savez(tmp_path / "mnist.npz", **_mnist_arrays())
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'mnist.npz'}: x_train declares shape (4, 28, 28) "
                                                  "of uint8 (3,136 bytes), more than the 1,000-byte limit")):
        data_lib.load("mnist", str(tmp_path), allow_download=False)


def test_object_arrays_are_refused(tmp_path):
    arrays = _mnist_arrays()
    arrays["y_train"] = np.array([0, 1, 2, "3"], dtype=object)  # np.savez pickles object arrays
    path = tmp_path / "mnist.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=re.escape(f"{path}: y_train holds Python objects (dtype object), which are "
                                                  "not loaded")):
        data_lib.load("mnist", str(tmp_path), allow_download=False)


def _npz_with_header(path, arrays, key, header):
    """Writes ``arrays`` as an .npz whose member ``key`` has its real data after a version 1.0 header of the
    given text (padded as NumPy pads it)."""
    text = header.encode("latin1")
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w") as member:
                if name == key:
                    member.write(b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + array.tobytes())
                else:
                    np.lib.format.write_array(member, array)


@pytest.mark.parametrize("header, message", [
    # NumPy tokenizes a version 1.0 header before parsing it, and its TokenError is no ValueError.
    ("{'descr': '|u1', 'fortran_order': False, 'shape': (4, 28, 28), '''",
     "x_train is not a readable .npy array (EOF in multi-line string)"),
    ("{'descr': '|u1', 'fortran_order': False, 'shape': (4, 28, 28",
     "x_train is not a readable .npy array (EOF in multi-line statement)"),
    ("{'descr': '|u1', 'fortran_order': False, 'shape': (-4, 28, 28), }",
     "x_train declares shape (-4, 28, 28), with a negative dimension"),
], ids=["unterminated_string", "unclosed_bracket", "negative_dimension"])
def test_an_npy_header_that_does_not_parse_raises_data_error_naming_the_file(tmp_path, header, message):
    path = tmp_path / "mnist.npz"
    _npz_with_header(path, _mnist_arrays(), "x_train", header)
    with pytest.raises(DataError, match=f"^{re.escape(f'{path}: {message}')}$"):
        data_lib.load("mnist", str(tmp_path), allow_download=False)


def test_a_header_declaring_71_tib_is_refused_before_reading(tmp_path):
    path = tmp_path / "mnist.npz"
    _npz_with_header(path, _mnist_arrays(), "x_train",
                     "{'descr': '<f8', 'fortran_order': False, 'shape': (9765625000000,), }")  # 8 x 9.77e12 bytes
    with pytest.raises(DataError, match=re.escape(f"{path}: x_train declares shape (9765625000000,) of float64 "
                                                  "(78,125,000,000,000 bytes), but the archive stores only 3,136")):
        data_lib.load("mnist", str(tmp_path), allow_download=False)


def test_a_fifo_named_like_the_dataset_is_refused_without_blocking(tmp_path):
    # Opening a FIFO for reading waits for a writer: before the check the loader hung here, silently.
    path = tmp_path / "mnist.npz"
    os.mkfifo(path)
    message = f"{path}: not a regular file (a named pipe); a dataset is read from an .npz file"
    with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
        data_lib.load("mnist", str(tmp_path), allow_download=False)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_symlink_to_an_endless_device_is_refused_before_a_byte_is_read(tmp_path, device):
    # Read as a zip, /dev/zero took 8 GB in 20 s and answered neither SIGINT nor SIGTERM.
    path = tmp_path / "mnist.npz"
    os.symlink(device, path)
    with pytest.raises(DataError, match=re.escape(f"{path}: not a regular file (a character device: {device}, "
                                                  "through a symlink)")):
        data_lib.load("mnist", str(tmp_path), allow_download=False)


def test_a_directory_or_a_dangling_symlink_under_the_dataset_name_is_refused(tmp_path):
    (tmp_path / "a" / "mnist.npz").mkdir(parents=True)
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'a' / 'mnist.npz'}: not a regular file (a "
                                                  "directory)")):
        data_lib.load("mnist", str(tmp_path / "a"), allow_download=False)
    (tmp_path / "b").mkdir()
    os.symlink(tmp_path / "gone.npz", tmp_path / "b" / "mnist.npz")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'b' / 'mnist.npz'}: not found (a symlink to "
                                                  f"{tmp_path / 'gone.npz'}, which does not exist)")):
        data_lib.load("mnist", str(tmp_path / "b"), allow_download=False)


def test_a_file_larger_than_four_times_the_dataset_is_refused_before_reading(tmp_path):
    # MNIST's 70,000 images of 784 bytes are 54,880,000 bytes; 4x is 219,520,000. A sparse file costs no disk.
    with open(tmp_path / "mnist.npz", "wb") as file:
        file.truncate(219_520_001)
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'mnist.npz'}: 219,520,001 bytes, more than the "
                                                  "219,520,000-byte limit for mnist (4x its official images "
                                                  "uncompressed); not this dataset")):
        data_lib.load("mnist", str(tmp_path), allow_download=False)


def test_a_damaged_keras_cache_entry_with_downloads_off_is_refused_and_never_downloaded(
        empty_keras_home, monkeypatch):
    downloads = []

    def record_download(url, *args, **kwargs):
        downloads.append(url)

    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(empty_keras_home))
    monkeypatch.setattr(keras_file_utils, "urlretrieve", record_download)
    entry = empty_keras_home / "datasets" / "mnist.npz"
    entry.parent.mkdir()
    entry.write_bytes(b"half a download")  # not the hash Keras expects: Keras would fetch the file again
    message = (f"{entry} in the Keras cache is damaged or incomplete, so tf.keras.datasets would download mnist "
               f"again, and downloads are off: delete {entry}, allow downloads, or pass --data_dir")
    with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
        data_lib.load("mnist", allow_download=False)
    assert downloads == []
    assert entry.read_bytes() == b"half a download"  # left in place for the user to look at
    assert keras_file_utils.urlretrieve is record_download  # Keras' own download function is back


# CIFAR-100 superclass labels. A synthetic mapping (fine label mod 20) stands in for the official one.
FINE_TO_COARSE = np.arange(100, dtype=np.int64) % 20


def _cifar100_arrays():
    rng = np.random.default_rng(1)
    y_train, y_test = np.array([99, 0, 42, 57], np.int64), np.array([[7], [20], [63]], np.int64)  # test as (n, 1)
    return {"x_train": rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), "y_train": y_train,
            "x_test": rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8), "y_test": y_test,
            "y_train_coarse": FINE_TO_COARSE[y_train], "y_test_coarse": FINE_TO_COARSE[y_test[:, 0]],
            "fine_to_coarse": FINE_TO_COARSE}


def test_cifar100_coarse_labels_are_kept_when_present(tmp_path):
    np.savez(tmp_path / "cifar100.npz", **_cifar100_arrays())
    dataset = data_lib.load("cifar100", str(tmp_path), allow_download=False)
    assert dataset.y_train_coarse.tolist() == [19, 0, 2, 17] and dataset.y_test_coarse.tolist() == [7, 0, 3]
    assert dataset.y_train_coarse.dtype == np.int32 and dataset.y_test_coarse.dtype == np.int32
    np.testing.assert_array_equal(dataset.fine_to_coarse, FINE_TO_COARSE)
    assert dataset.info.num_coarse_classes == 20 and len(dataset.info.class_names) == 100
    assert dataset.info.coarse_class_names[4] == "fruit_and_vegetables"  # superclass of "apple", fine label 0


def test_coarse_labels_default_to_none(tmp_path):
    arrays = {key: value for key, value in _cifar100_arrays().items() if key in data_lib.REQUIRED_KEYS}
    np.savez(tmp_path / "cifar100.npz", **arrays)
    dataset = data_lib.load("cifar100", str(tmp_path), allow_download=False)
    assert dataset.y_train_coarse is None and dataset.y_test_coarse is None and dataset.fine_to_coarse is None


def _short_coarse(arrays):
    arrays["y_train_coarse"] = arrays["y_train_coarse"][:3]


def _coarse_twenty(arrays):
    arrays["y_test_coarse"] = np.array([7, 20, 3])


def _coarse_disagrees(arrays):
    arrays["y_train_coarse"] = np.array([19, 0, 3, 17])


def _no_mapping(arrays):
    del arrays["fine_to_coarse"]


@pytest.mark.parametrize("corrupt,message", [
    (_short_coarse, "y_train_coarse has shape (3,), expected (4,) to match y_train"),
    (_coarse_twenty, "y_test_coarse holds labels in [3, 20], expected [0, 20) for cifar100"),
    (_coarse_disagrees, "y_train_coarse[2] is 3, but fine_to_coarse maps its fine label 42 to 2"),
    (_no_mapping, ("holds y_train_coarse, y_test_coarse but not fine_to_coarse; superclass labels need all of "
                   "y_train_coarse, y_test_coarse, fine_to_coarse")),
], ids=["length", "range", "mapping", "partial"])
def test_malformed_coarse_labels_raise_data_error_naming_the_file(tmp_path, corrupt, message):
    arrays = _cifar100_arrays()
    corrupt(arrays)
    _assert_refused(tmp_path, "cifar100", arrays, message)


# Validation split, on a Dataset whose training label is the example's index (CIFAR-100 has 100 classes).
def _indexed_cifar100(num_train=40):
    x = np.repeat(np.arange(num_train, dtype=np.uint8), 32 * 32 * 3).reshape(num_train, 32, 32, 3)
    y = np.arange(num_train, dtype=np.int32)
    return data_lib.Dataset("cifar100", x, y, x[:2], y[:2], source="indexed", y_train_coarse=y % 20,
                            y_test_coarse=y[:2] % 20, fine_to_coarse=np.arange(100, dtype=np.int32) % 20)


def test_split_validation_holds_out_a_disjoint_seeded_subset_of_the_training_set():
    dataset = _indexed_cifar100()
    rest, (x_val, y_val) = data_lib.split_validation(dataset, 0.25, seed=3)
    assert len(y_val) == 10 and len(rest.y_train) == 30  # round(0.25 * 40)
    assert set(y_val.tolist()).isdisjoint(rest.y_train.tolist())
    assert sorted(y_val.tolist() + rest.y_train.tolist()) == list(range(40))
    assert rest.y_train.tolist() == sorted(rest.y_train.tolist())  # the rest keeps its order
    np.testing.assert_array_equal(x_val[:, 0, 0, 0], y_val)  # images stay with their labels
    np.testing.assert_array_equal(rest.x_train[:, 0, 0, 0], rest.y_train)
    np.testing.assert_array_equal(rest.y_train_coarse, rest.y_train % 20)
    assert rest.x_test is dataset.x_test and rest.y_test is dataset.y_test
    assert y_val.tolist() != list(range(10))  # drawn, not the first ten


def test_split_validation_depends_only_on_the_seed():
    dataset = _indexed_cifar100()
    first = data_lib.split_validation(dataset, 0.25, seed=3)
    again = data_lib.split_validation(dataset, 0.25, seed=3)
    other = data_lib.split_validation(dataset, 0.25, seed=4)
    np.testing.assert_array_equal(again[0].x_train, first[0].x_train)
    np.testing.assert_array_equal(again[1][0], first[1][0])
    np.testing.assert_array_equal(again[1][1], first[1][1])
    assert other[1][1].tolist() != first[1][1].tolist()


@pytest.mark.parametrize("num_train,fraction,num_val", [(40, 0.1, 4), (23, 0.1, 2), (23, 0.3, 7), (5, 0.5, 2)])
def test_split_validation_sizes_are_rounded(num_train, fraction, num_val):
    rest, (x_val, y_val) = data_lib.split_validation(_indexed_cifar100(num_train), fraction, seed=0)
    assert num_val == round(fraction * num_train)  # Python rounds 2.5 to 2
    assert len(x_val) == len(y_val) == num_val and len(rest.x_train) == num_train - num_val


def test_split_validation_of_zero_returns_the_dataset_unchanged():
    dataset = _indexed_cifar100()
    rest, (x_val, y_val) = data_lib.split_validation(dataset, 0, seed=3)
    assert rest is dataset
    assert x_val.shape == (0, 32, 32, 3) and y_val.shape == (0,)


@pytest.mark.parametrize("fraction,message", [
    (1.0, "split_validation: fraction must be in [0, 1), got 1.0"),
    (-0.1, "split_validation: fraction must be in [0, 1), got -0.1"),
    (0.99, "split_validation: fraction 0.99 of 40 examples leaves none to train on"),
    # 0.01 x 40 = 0.4 images: none held out, where a run would have logged validation accuracy 0.0 as measured.
    (0.01, "--validation_split 0.01 of 40 training images holds out none (it rounds to 0 images): give at least "
           "0.025, or 0 for no validation set"),
])
def test_split_validation_refuses_bad_fractions(fraction, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        data_lib.split_validation(_indexed_cifar100(), fraction, seed=0)
