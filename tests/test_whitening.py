"""The patch-whitening layer ``w{size}``: its kernel whitens, both networks take it by name, nothing trains it.

Patches are cut here with explicit loops, independently of ``models.whitening``'s strided view, so a wrong
patch layout (HWC against the kernel's HWI) cannot pass.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from models import whitening

# TF32 would round float32 conv inputs on Ampere+ GPUs; off, as in the other numerical suites.
tf.config.experimental.enable_tensor_float_32_execution(False)

# float64 numpy throughout the kernel checks: the whitened second moment is V^T S V / sqrt(..) with an
# orthonormal V from eigh, exact up to ~1e-15 relative on these O(1)-conditioned matrices; 1e-10 leaves room.
FLOAT64_TOL = 1e-10
# float32 conv of float32 images with the float32-rounded kernel against float64 numpy: a few ulps of O(10)
# values (the whitening gain reaches ~10 on these images).
FLOAT32_TOL = 1e-4
NUM_CLASSES = 3


def _images(n=48, size=6, channels=3, seed=0):
    """Images with correlated channels and neighbouring pixels, like natural images, standardised."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size + 1, size + 1, channels))
    x = x[:, 1:, 1:] + 0.8 * x[:, :-1, 1:] + 0.5 * x[:, 1:, :-1]  # spatial correlation
    x = x @ np.array([[1.0, 0.7, 0.2], [0.0, 1.0, 0.6], [0.0, 0.0, 1.0]])[:channels, :channels]  # channel mixing
    return (x - x.mean(axis=(0, 1, 2))) / x.std(axis=(0, 1, 2))


def _loop_patches(images, size):
    """Every size x size patch, flattened in (h, w, c) order: (N * H' * W', size * size * C)."""
    n, height, width, _ = images.shape
    rows = [images[:, i:i + size, j:j + size, :].reshape(n, -1)
            for i in range(height - size + 1) for j in range(width - size + 1)]
    return np.concatenate(rows)


def _eigenvalues(images, size):
    patches = _loop_patches(images, size)
    return np.sort(np.linalg.eigvalsh(patches.T @ patches / len(patches)))[::-1]


@pytest.mark.parametrize("size", [1, 2, 3])
def test_whitening_kernel_whitens_the_patches(size):
    images = _images()
    eps = whitening.WHITENING_EPSILON
    kernel = whitening.whitening_kernel(images, size, eps)
    dim = size * size * 3
    assert kernel.shape == (size, size, 3, 2 * dim)
    filters = kernel.reshape(dim, 2 * dim)
    whitened = _loop_patches(images, size) @ filters[:, :dim]  # the +V half
    moment = whitened.T @ whitened / len(whitened)
    # Exactly decorrelated, with variance lambda / (lambda + eps) along eigen-direction i, largest lambda first.
    eigenvalues = _eigenvalues(images, size)
    np.testing.assert_allclose(moment, np.diag(eigenvalues / (eigenvalues + eps)), atol=FLOAT64_TOL, rtol=0)
    # So the directions kept (lambda >= 100 eps: all of them here) have unit variance to within 1%.
    kept = eigenvalues >= 100 * eps
    assert kept.all()
    np.testing.assert_allclose(np.diag(moment)[kept], 1.0, atol=0.01)


def test_without_eps_the_whitened_moment_is_the_identity():
    images = _images()
    filters = whitening.whitening_kernel(images, 2, eps=0.0).reshape(12, 24)[:, :12]
    whitened = _loop_patches(images, 2) @ filters
    np.testing.assert_allclose(whitened.T @ whitened / len(whitened), np.eye(12), atol=FLOAT64_TOL, rtol=0)


def test_second_half_of_the_filters_is_the_negated_first_half():
    kernel = whitening.whitening_kernel(_images(), 2)
    np.testing.assert_array_equal(kernel[..., 12:], -kernel[..., :12])
    # Largest eigenvalue first: filter norms 1 / sqrt(lambda + eps) grow along the filters.
    norms = np.linalg.norm(kernel[..., :12].reshape(12, 12), axis=0)
    assert (np.diff(norms) > 0).all()


def test_second_moment_is_the_same_across_chunks():
    # More images than one chunk (256), so the chunked sum is checked against one pass over all patches.
    images = _images(n=300, size=3, channels=1)
    patches = _loop_patches(images, 2)
    np.testing.assert_allclose(whitening.patch_second_moment(images, 2), patches.T @ patches / len(patches),
                               atol=FLOAT64_TOL, rtol=FLOAT64_TOL)


@pytest.mark.parametrize("impl", ["keras", "reference"])
def test_initialise_whitening_assigns_the_kernel_by_name(impl):
    images = _images()
    network = models.build_network(impl, "w2g-B4-gmp", (6, 6, 3), NUM_CLASSES)
    assert whitening.initialise_whitening(network, images) == ["whiten1/conv/kernel"]
    expected = whitening.whitening_kernel(images, 2).astype(np.float32)
    np.testing.assert_array_equal(network.named_weights()["whiten1/conv/kernel"].numpy(), expected)
    # A network without a whitening layer is left alone.
    assert whitening.initialise_whitening(models.build_network(impl, "c4k3-gap", (6, 6, 3), NUM_CLASSES),
                                          images) == []


def test_the_whitening_layer_computes_the_whitened_patches():
    # With ReLU after +V and -V: relu(z) - relu(-z) = z, the whitened patch coordinates themselves. Checks the
    # kernel's HWIO layout against the convolution Keras runs (reference/ runs the same one: equivalence tests).
    images = _images(n=4)
    model = models.build_model("w2", (6, 6, 3), NUM_CLASSES)
    whitening.initialise_whitening(model, images)
    layer = model.stack[0]
    assert layer.name == "whiten1"
    out = layer(images.astype(np.float32), training=False).numpy()  # (4, 5, 5, 24)
    z = (out[..., :12] - out[..., 12:]).reshape(-1, 12)  # rows in (n, i, j) order
    filters = whitening.whitening_kernel(images, 2).reshape(12, 24)[:, :12]
    # _loop_patches orders the rows (i, j, n): reorder to (n, i, j).
    expected = (_loop_patches(images, 2) @ filters).reshape(5, 5, 4, 12).transpose(2, 0, 1, 3).reshape(-1, 12)
    np.testing.assert_allclose(z, expected, atol=FLOAT32_TOL, rtol=FLOAT32_TOL)


@pytest.mark.parametrize("impl", ["keras", "reference"])
def test_the_whitening_kernel_is_not_trained(impl):
    images = _images(n=8)
    network = models.build_network(impl, "w2g-B4-gmp-lin9", (6, 6, 3), NUM_CLASSES)
    whitening.initialise_whitening(network, images)
    kernel = network.named_weights()["whiten1/conv/kernel"]
    assert not kernel.trainable
    assert all(v is not kernel for v in network.trainable_variables)
    before = {name: v.numpy().copy() for name, v in network.named_weights().items()}
    # One SGD step on every trainable variable, with weight decay, which a trainable kernel would feel too.
    optimizer = keras.optimizers.SGD(learning_rate=0.1, weight_decay=0.1)
    labels = tf.constant(np.arange(8) % NUM_CLASSES)
    with tf.GradientTape() as tape:
        logits = network(tf.constant(images, tf.float32), training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    optimizer.apply_gradients(zip(tape.gradient(loss, network.trainable_variables), network.trainable_variables))
    after = {name: v.numpy() for name, v in network.named_weights().items()}
    np.testing.assert_array_equal(after["whiten1/conv/kernel"], before["whiten1/conv/kernel"])
    assert not np.array_equal(after["block1/conv1/kernel"], before["block1/conv1/kernel"])  # the step happened


@pytest.mark.parametrize("images,size,message", [
    (np.zeros((4, 6, 6)), 2, "whitening_kernel: images must be a non-empty (N, H, W, C) batch, got shape (4, 6, 6)"),
    (np.zeros((0, 6, 6, 3)), 2, "whitening_kernel: images must be a non-empty (N, H, W, C) batch"),
    (np.zeros((4, 6, 6, 3)), 7, "whitening_kernel: patch size 7 does not fit images of shape (6, 6, 3) (H, W, C)"),
])
def test_whitening_kernel_refuses_what_it_cannot_whiten(images, size, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        whitening.whitening_kernel(images, size)


def test_initialise_whitening_refuses_images_with_other_channels():
    network = models.build_network("reference", "w2-gap", (6, 6, 3), NUM_CLASSES)
    with pytest.raises(ValueError, match=re.escape("initialise_whitening: layer 'whiten1' takes images of shape "
                                                   "(6, 6, 3) (H, W, C), got a batch of shape (4, 6, 6, 1)")):
        whitening.initialise_whitening(network, np.zeros((4, 6, 6, 1)))
