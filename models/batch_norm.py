"""Batch normalization whose training call runs TensorFlow's fused kernel where that computes the same function."""

import keras
import tensorflow as tf

# The kernel's input types on CPU and GPU; float64 (the equivalence tests' dtype) has none.
_FUSED_DTYPES = ("float32", "bfloat16", "float16")


@keras.saving.register_keras_serializable("cnn_lab")
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization(synchronized=True)`` whose training call on one replica is one
    ``FusedBatchNormV3`` op instead of Keras' casts, moments and element-wise normalization.

    The function is the same: on one replica the synchronized statistics are the batch's own, and the moving
    statistics take the biased batch variance, as Keras' do. What differs is rounding: the kernel computes the
    variance around the mean rather than as E[x^2] - E[x]^2. On the AMD EPYC of WORKSPACE.md §12 it made the
    airbench94 recipe's bfloat16 step 1.09x and its float32 step 1.05x as fast; other machines may differ.
    Everywhere else (inference, several replicas, float64, a mask) the Keras call runs unchanged.
    """

    def __init__(self, *, fused=True, **kwargs):
        super().__init__(synchronized=True, **kwargs)
        self.fused = fused

    def get_config(self):
        config = super().get_config()
        config.pop("synchronized", None)
        return dict(config, fused=self.fused)

    def call(self, inputs, training=None, mask=None):
        if not self._fuses(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        scale = self.gamma if self.scale else tf.ones([channels])
        offset = self.beta if self.center else tf.zeros([channels])
        outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=scale, offset=offset, mean=tf.zeros([0]), variance=tf.zeros([0]),
            epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
        # The kernel returns the variance with Bessel's correction, for running statistics; Keras averages the
        # biased one, which is also what the outputs were normalized by.
        count = tf.cast(tf.size(inputs, out_type=tf.int64) // channels, tf.float32)
        variance = variance * ((count - 1.0) / count)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs

    def _fuses(self, inputs, training, mask):
        replica = tf.distribute.get_replica_context()
        return (self.fused and training is True and self.trainable and mask is None and not self.renorm
                and len(inputs.shape) == 4 and self._reduction_axes == [0, 1, 2]
                and keras.backend.standardize_dtype(inputs.dtype) in _FUSED_DTYPES
                and self.variable_dtype == "float32"
                and (replica is None or replica.num_replicas_in_sync == 1))
