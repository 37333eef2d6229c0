"""Two identities between convolutions and dense layers, checked on the Keras models of ``models/``.

(a) A valid convolution whose kernel covers the whole image is a dense layer on the flattened image.
(b) A 1x1 convolution is a dense layer applied to the channels of every pixel.
"""

import numpy as np
import pytest
import tensorflow as tf

import models

# TF32 would round float32 matmul/conv inputs to 10 mantissa bits on Ampere+ GPUs; the identities are exact only
# up to float32 summation order, so it stays off in this file.
tf.config.experimental.enable_tensor_float_32_execution(False)

# float32. (a): conv and matmul kernels sum the same 1,568 products of O(1) pixels and O(0.03) weights in
# different orders, giving logits of O(1); (b): a float32 conv against a float64 einsum over 3 channels. Only
# rounding differs, a few float32 ulps (2**-24 ~ 6e-8 relative) of O(1) values; measured over five seeds:
# (a) <= 1.5e-6, (b) <= 1.2e-7. 1e-5 leaves over 6x margin and is far below a real mismatch (the test checks that
# a wrong flatten order misses by more than WRONG_ORDER_MIN_DIFF; it misses by 0.9-1.7).
FLOAT32_ATOL = 1e-5
FLOAT32_RTOL = 1e-5
WRONG_ORDER_MIN_DIFF = 100 * FLOAT32_ATOL
BATCH = 8
NUM_CLASSES = 10


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _random_images(rng, shape):
    return rng.uniform(0.0, 1.0, size=(BATCH, *shape)).astype(np.float32)


def _seed_weights(named, rng):
    """Draws every weight from ``rng``: the test does not depend on Keras' unseeded initialisers, and the biases
    are not zero (Keras' default), so their transfer is tested too. Kernels get Glorot-like scales."""
    for name, variable in named.items():
        shape = tuple(variable.shape)
        scale = 0.1 if name.endswith("bias") else np.sqrt(2.0 / (np.prod(shape[:-1]) + shape[-1]))
        variable.assign(rng.normal(0.0, scale, size=shape).astype(np.float32))


def test_whole_image_valid_convolution_is_a_dense_layer(rng):
    shape = (28, 28, 2)
    conv_net = models.build_model("c6k28v", shape, NUM_CLASSES, dtype="float32")
    mlp = models.build_model("d6", shape, NUM_CLASSES, dtype="float32")
    conv_weights, mlp_weights = conv_net.named_weights(), mlp.named_weights()
    _seed_weights(conv_weights, rng)

    # The conv kernel is HWIO (28, 28, 2, 6); the flatten of an NHWC image is row-major over (H, W, C), so the
    # row-major reshape to (28*28*2, 6) puts weight (h, w, c, f) in row (h*28 + w)*2 + c: the dense layout.
    kernel = conv_weights["conv1/conv/kernel"].numpy()
    assert kernel.shape == (28, 28, 2, 6)
    mapping = {"dense1/kernel": kernel.reshape(28 * 28 * 2, 6), "dense1/bias": conv_weights["conv1/conv/bias"],
               "logits/kernel": conv_weights["logits/kernel"], "logits/bias": conv_weights["logits/bias"]}
    assert set(mapping) == set(mlp_weights)
    for name, value in mapping.items():
        value = np.asarray(value)
        assert tuple(mlp_weights[name].shape) == value.shape, name
        mlp_weights[name].assign(value)

    images = _random_images(rng, shape)
    conv_logits = conv_net(images, training=False).numpy()
    mlp_logits = mlp(images, training=False).numpy()
    assert conv_logits.dtype == mlp_logits.dtype == np.float32
    np.testing.assert_allclose(conv_logits, mlp_logits, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)
    # Not trivially equal: the kernel layout matters. Flattening (C, H, W) instead of (H, W, C) must miss.
    wrong = kernel.transpose(2, 0, 1, 3).reshape(28 * 28 * 2, 6)
    hidden = np.maximum(images.reshape(BATCH, -1) @ wrong + mapping["dense1/bias"].numpy(), 0.0)
    wrong_logits = hidden @ mapping["logits/kernel"].numpy() + mapping["logits/bias"].numpy()
    assert np.abs(wrong_logits - conv_logits).max() > WRONG_ORDER_MIN_DIFF


def test_one_by_one_convolution_is_a_dense_layer_at_every_pixel(rng):
    shape, filters = (7, 5, 3), 5
    model = models.build_model(f"c{filters}k1", shape, NUM_CLASSES, dtype="float32")
    weights = model.named_weights()
    _seed_weights(weights, rng)
    kernel = weights["conv1/conv/kernel"].numpy()
    bias = weights["conv1/conv/bias"].numpy()
    assert kernel.shape == (1, 1, shape[2], filters)

    images = _random_images(rng, shape)
    conv_block = model.stack[0]  # the ConvBlock conv1: conv + ReLU
    assert conv_block.name == "conv1"
    features = conv_block(images, training=False).numpy()
    # (B, H, W, C) @ (C, F) -> (B, H, W, F) at every pixel, in float64 so only the conv side rounds.
    dense_at_each_pixel = np.maximum(
        np.einsum("bhwc,cf->bhwf", images.astype(np.float64), kernel.reshape(shape[2], filters)) + bias, 0.0)
    assert features.shape == (BATCH, *shape[:2], filters)
    np.testing.assert_allclose(features, dense_at_each_pixel, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)
    assert (features > 0).mean() > 0.1  # the ReLU lets enough through for the comparison to mean something (0.275)
