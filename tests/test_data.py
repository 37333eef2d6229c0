"""Dataset loading (files, the bundled MNIST fallback, errors naming the file) and the tf.data pipelines."""

import re

import numpy as np
import pytest

from training import data as data_lib
from training.data import DataError

# Images scaled by 1/255 in float32 against float64 NumPy: within one float32 ulp of values <= 1.
PIXEL_ATOL = 1e-6


def _mnist_arrays(num_train=4, num_test=2):
    """A minimal valid MNIST-style set: (n, 28, 28) uint8 images and (n,) uint8 labels, as Keras stores it."""
    rng = np.random.default_rng(0)
    return dict(x_train=rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
                y_train=np.arange(num_train, dtype=np.uint8) % 10,
                x_test=rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
                y_test=np.arange(num_test, dtype=np.uint8)[::-1] % 10)


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
    path = tmp_path / "mnist.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=re.escape(f"{path}: {message}")):
        data_lib.load("mnist", str(tmp_path), allow_download=False)


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


def test_a_missing_dataset_says_which_file_to_put_where(tmp_path, empty_keras_home):
    where = tmp_path / "cifar100.npz"
    with pytest.raises(DataError, match=re.escape(f"dataset 'cifar100' not found: put {where} (arrays x_train, "
                                                  "y_train, x_test, y_test) there and pass --data_dir")):
        data_lib.load("cifar100", str(tmp_path), allow_download=False)


def test_mnist_falls_back_to_the_bundled_subset(tmp_path, empty_keras_home):
    dataset = data_lib.load("mnist", str(tmp_path), allow_download=False)  # tmp_path holds no mnist.npz
    assert dataset.source == f"bundled MNIST subset {data_lib.BUNDLED_MNIST}"
    assert dataset.x_train.shape == (10_000, 28, 28, 1) and dataset.x_test.shape == (10_000, 28, 28, 1)
    assert dataset.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the official test set's start
    assert dataset.y_train.dtype == np.int32


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
    return _take(data_lib.train_pipeline(x, y, BATCH, seed, data_lib.make_preprocess(), skip_batches),
                 num_batches)


def test_train_order_depends_only_on_the_seed():
    first = _train_batches(seed=3, num_batches=3 * BATCHES_PER_EPOCH)
    assert _train_batches(seed=3, num_batches=3 * BATCHES_PER_EPOCH) == first
    assert _train_batches(seed=4, num_batches=3 * BATCHES_PER_EPOCH) != first
    epochs = [sum(first[e * BATCHES_PER_EPOCH:(e + 1) * BATCHES_PER_EPOCH], []) for e in range(3)]
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
    dataset = data_lib.train_pipeline(x[:10], y[:10], BATCH, 0, data_lib.make_preprocess())
    # 10 examples do not fill batches of 4: the stream repeats before batching, so none is short.
    assert [len(labels) for labels in _take(dataset, 5)] == [BATCH] * 5


def test_eval_pipeline_yields_every_example_once_in_order():
    x, y = _indexed_examples()
    batches = _take(data_lib.eval_pipeline(x[:10], y[:10], BATCH, data_lib.make_preprocess()), 100)
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_standardize_uses_per_channel_training_statistics():
    images = np.array([[[[0, 255]], [[255, 255]]]], np.uint8)  # one 2x1 image, two channels
    mean, std = data_lib.channel_stats(images)
    np.testing.assert_allclose(mean, [0.5, 1.0], atol=PIXEL_ATOL)
    np.testing.assert_allclose(std, [0.5, 0.0], atol=PIXEL_ATOL)
    preprocess = data_lib.make_preprocess(mean=np.float32([0.5, 0.5]), std=np.float32([0.5, 0.25]))
    out, labels = preprocess(images, np.int32([7]))
    # (x / 255 - mean) / std per channel.
    np.testing.assert_allclose(out.numpy()[0, :, 0], [[-1.0, 2.0], [1.0, 2.0]], atol=PIXEL_ATOL)
    assert np.asarray(labels).tolist() == [7]


def test_augment_gives_each_image_its_own_crop_window_and_flip():
    # 256 copies of one 8x8 image whose pixels all differ. Each output must be an 8x8 window of the image padded
    # by 4 reflected pixels, flipped or not; with 81 windows x 2 flips to draw from, a batch that shared one
    # window would hold at most 2 distinct images, while per-image draws give dozens.
    image = np.arange(64, dtype=np.uint8).reshape(8, 8)
    batch = np.repeat(image[np.newaxis, :, :, np.newaxis], 256, axis=0)
    out, _ = data_lib.make_preprocess(augment=True)(batch, np.zeros(256, np.int32))
    out = np.rint(out.numpy()[..., 0] * 255)
    padded = np.pad(image.astype(np.float64), 4, mode="reflect")  # NumPy's "reflect" is TF's REFLECT
    unflipped = [padded[r:r + 8, c:c + 8] for r in range(9) for c in range(9)]
    windows = unflipped + [np.fliplr(window) for window in unflipped]
    for crop in out:
        assert any(np.array_equal(crop, window) for window in windows)
    assert len({crop.tobytes() for crop in out}) > 40
    # Some crops match no unflipped window (so they were flipped), and some match one.
    matches_unflipped = sum(any(np.array_equal(crop, window) for window in unflipped) for crop in out)
    assert 0 < matches_unflipped < 256
