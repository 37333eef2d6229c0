"""The fused batch norm of one replica against Keras' own: the same outputs, gradients and moving statistics."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.batch_norm import BatchNormalization
from models.network import build_network


def _train_call(fused, dtype, images, scale=True):
    """One training call of a fresh layer on ``images``: its outputs, the gradients of a fixed projection of them
    with respect to the images and the layer's weights, the moving statistics after the call, and the graph's
    op types."""
    layer = BatchNormalization(fused=fused, momentum=0.6, epsilon=1e-5, scale=scale, dtype=dtype)
    layer.build(images.shape)
    projection = tf.constant(np.random.default_rng(1).normal(size=images.shape), tf.float32)

    @tf.function
    def call(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * projection)
        return y, tape.gradient(loss, [x, *layer.trainable_weights])

    x = tf.cast(images, keras.mixed_precision.Policy(dtype).compute_dtype)
    y, gradients = call(x)
    ops = {op.type for op in call.get_concrete_function(x).graph.get_operations()}
    moving = [layer.moving_mean.numpy(), layer.moving_variance.numpy()]
    return [np.asarray(tf.cast(t, tf.float32)) for t in (y, *gradients)], moving, ops


# Activations as a conv layer makes them: a mean far from zero, which is where E[x^2] - E[x]^2 loses digits.
IMAGES = tf.constant(np.random.default_rng(0).normal(3.0, 2.0, size=(16, 5, 5, 4)), tf.float32)


@pytest.mark.parametrize("dtype, atol", [("float32", 2e-5), ("mixed_bfloat16", 1e-2)])
@pytest.mark.parametrize("scale", [True, False])
def test_the_fused_training_call_computes_what_keras_does(dtype, atol, scale):
    (fused_outputs, fused_moving, fused_ops) = _train_call(True, dtype, IMAGES, scale)
    (keras_outputs, keras_moving, keras_ops) = _train_call(False, dtype, IMAGES, scale)
    assert "FusedBatchNormV3" in fused_ops and "FusedBatchNormV3" not in keras_ops
    # Outputs are O(1) and gradients up to about 50: measured, float32 differs by 8e-5 at most (the scale's
    # gradient, 49), bfloat16 by 4e-5, its outputs not at all. The bound allows float32 a few more roundings, and
    # bfloat16 a flipped last bit (2^-8, 0.4%) of an output or an image gradient on another CPU.
    for fused, unfused in zip(fused_outputs, keras_outputs):
        np.testing.assert_allclose(fused, unfused, atol=atol, rtol=atol)
    # The moving statistics are float32 variables under either policy, updated from float32 batch moments: the
    # biased variance (about 4 here, so momentum 0.6 moves the moving variance from 1 to 0.6 + 0.4 x 4).
    np.testing.assert_allclose(fused_moving, keras_moving, rtol=1e-5, atol=1e-6)
    given = tf.cast(tf.cast(IMAGES, keras.mixed_precision.Policy(dtype).compute_dtype), tf.float32).numpy()
    np.testing.assert_allclose(fused_moving[1], 0.6 + 0.4 * np.var(given, axis=(0, 1, 2)), rtol=1e-5)


def _op_types(function, *args):
    return [op.type for op in tf.function(function).get_concrete_function(*args).graph.get_operations()]


def test_the_networks_training_call_takes_the_fused_kernel_for_each_batch_norm():
    # airbench94's pieces in small: a block of two batch norms (conv-pool-BN-GELU, conv-BN-GELU).
    network = build_network("keras", "w2t-B8-gmp-lin9", (12, 12, 1), 10)
    images = tf.zeros((4, 12, 12, 1))
    assert _op_types(lambda x: network(x, training=True), images).count("FusedBatchNormV3") == 2
    assert _op_types(lambda x: network(x, training=False), images).count("FusedBatchNormV3") == 0


def test_inference_float64_and_several_replicas_keep_the_keras_call():
    layer = BatchNormalization()
    layer.build(IMAGES.shape)
    assert "FusedBatchNormV3" not in _op_types(lambda x: layer(x, training=False), IMAGES)
    wide = BatchNormalization(dtype="float64")
    wide.build(IMAGES.shape)
    assert "FusedBatchNormV3" not in _op_types(lambda x: wide(x, training=True), tf.cast(IMAGES, tf.float64))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        synced = BatchNormalization()
        synced.build(IMAGES.shape)

    @tf.function
    def replicated(x):
        return strategy.run(lambda: synced(x, training=True))

    ops = {op.type for op in replicated.get_concrete_function(IMAGES).graph.get_operations()}
    # Two replicas all-reduce their sums (synchronized statistics) and normalize with them, unfused.
    assert "FusedBatchNormV3" not in ops and "CollectiveReduceV2" in ops, sorted(ops)
