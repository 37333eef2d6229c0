"""Learning-rate schedules and optimizers, built from plain arguments."""

import keras
import tensorflow as tf

from training.choices import OPTIMIZERS, SCHEDULES

# airbench94's triangle: from this fraction of the peak up to the peak at the end of the warmup, then down to
# TRIANGLE_END of the peak at the last step.
TRIANGLE_START, TRIANGLE_END = 0.2, 0.07


@keras.saving.register_keras_serializable("cnn_lab")
class Schedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to ``peak`` over ``warmup_steps``, then one of the decays in ``SCHEDULES``.

    The decay runs over the steps after the warmup: cosine and linear go to 0 at ``total_steps``; triangle rises
    linearly from ``TRIANGLE_START`` x peak (no warmup from 0) and falls linearly to ``TRIANGLE_END`` x peak at
    ``total_steps``, as airbench94's schedule; exponential multiplies
    by ``decay_rate`` every ``decay_steps``; piecewise multiplies by ``decay_rate`` at each of ``boundaries``
    (fractions of ``total_steps``).
    """

    def __init__(self, kind, peak, total_steps, warmup_steps=0, decay_rate=0.1, decay_steps=1000,
                 boundaries=()):
        if kind not in SCHEDULES:
            raise ValueError(f"unknown schedule '{kind}'; choose one of {', '.join(SCHEDULES)}")
        self.kind, self.peak, self.total_steps, self.warmup_steps = kind, peak, total_steps, warmup_steps
        self.decay_rate, self.decay_steps, self.boundaries = decay_rate, decay_steps, tuple(boundaries)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = tf.cast(self.warmup_steps, tf.float32)
        after = tf.maximum(step - warmup, 0.0)
        decay_span = tf.maximum(tf.cast(self.total_steps, tf.float32) - warmup, 1.0)
        if self.kind == "triangle":
            rise = TRIANGLE_START + (1.0 - TRIANGLE_START) * step / tf.maximum(warmup, 1.0)
            fall = 1.0 - (1.0 - TRIANGLE_END) * tf.minimum(after / decay_span, 1.0)
            return self.peak * tf.where(step < warmup, rise, fall)
        if self.kind == "cosine":
            factor = 0.5 * (1.0 + tf.cos(3.141592653589793 * tf.minimum(after / decay_span, 1.0)))
        elif self.kind == "linear":
            factor = tf.maximum(1.0 - after / decay_span, 0.0)
        elif self.kind == "exponential":
            factor = tf.pow(tf.cast(self.decay_rate, tf.float32), after / self.decay_steps)
        elif self.kind == "piecewise":
            passed = tf.add_n([tf.cast(step >= b * self.total_steps, tf.float32) for b in self.boundaries]
                              or [tf.constant(0.0)])
            factor = tf.pow(tf.cast(self.decay_rate, tf.float32), passed)
        else:
            factor = tf.constant(1.0)
        if self.warmup_steps > 0:
            factor *= tf.minimum((step + 1.0) / warmup, 1.0)
        return self.peak * factor

    def get_config(self):
        return dict(kind=self.kind, peak=self.peak, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                    decay_rate=self.decay_rate, decay_steps=self.decay_steps, boundaries=self.boundaries)


def build_optimizer(name, learning_rate, momentum=0.9, nesterov=False, weight_decay=0.0, adam_betas=(0.9, 0.999)):
    """A Keras optimizer; ``learning_rate`` is a float or a ``Schedule``.

    Weight decay is Keras' decoupled decay (``w -= lr * weight_decay * w`` per update); callers exclude biases
    and batch-norm parameters with ``exclude_from_decay``.
    """
    decay = weight_decay or None
    if name == "adam":
        beta_1, beta_2 = adam_betas
        return keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2, weight_decay=decay)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=nesterov, weight_decay=decay)
    raise ValueError(f"unknown optimizer '{name}'; choose one of {', '.join(OPTIMIZERS)}")


def exclude_from_decay(optimizer, variables):
    """Leaves every variable but conv and dense kernels out of the optimizer's weight decay."""
    if optimizer.weight_decay:
        optimizer.exclude_from_weight_decay(var_list=[v for v in variables if v.shape.rank <= 1])
