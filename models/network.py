"""The ``Network`` protocol both implementations follow, and the one factory that builds either by name."""

from typing import Protocol, runtime_checkable

# --precision -> the compute dtype of the forward pass; variables stay float32 in every case.
PRECISIONS = {"float32": "float32", "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}


@runtime_checkable
class Network(Protocol):
    """What the training loop, checkpoints, analysis and export need of a CNN, whichever implementation."""

    trainable_variables: tuple

    def __call__(self, images, training=False):
        """(B, H, W, C) images -> (B, num_classes) logits."""

    def named_weights(self):
        """``{"<layer>/<sublayer>/<variable>": variable}``, BN moving statistics included, in plan order."""

    def checkpoint_state(self):
        """The trackable object(s) ``tf.train.Checkpoint`` should hold for this network."""

    def count_params(self):
        """Number of weights, batch-norm moving statistics included."""


def _build_keras(arch, input_shape, num_classes, seed, precision):
    del seed  # Keras draws initial weights from the global seed (keras.utils.set_random_seed).
    from models.keras_cnn import build_model
    return build_model(arch, input_shape, num_classes, dtype=precision)


def _build_reference(arch, input_shape, num_classes, seed, precision):
    import tensorflow as tf

    from reference import build_reference
    return build_reference(arch, input_shape, num_classes, seed=seed, compute_dtype=tf.as_dtype(PRECISIONS[precision]))


# --impl -> builder. Both are imported on first use: the reference never loads Keras.
IMPLEMENTATIONS = {"keras": _build_keras, "reference": _build_reference}


def build_network(impl, arch, input_shape, num_classes, seed=0, precision="float32"):
    """The ``Network`` called ``impl`` for ``arch`` on images of ``input_shape`` (H, W, C), variables built.

    ``precision`` is a key of ``PRECISIONS``. Raises ``ValueError`` for an unknown ``impl`` and, naming the
    token and the shapes, for an ``arch`` that is malformed or does not fit the input.
    """
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation '{impl}'; choose one of {', '.join(IMPLEMENTATIONS)}")
    return IMPLEMENTATIONS[impl](arch, tuple(input_shape), num_classes, seed, precision)
