"""A low-level TensorFlow CNN (explicit variables, ``tf.nn`` ops, no Keras) that mirrors ``models/``."""

from reference.network import ReferenceCNN, build_reference, copy_weights

__all__ = ["ReferenceCNN", "build_reference", "copy_weights"]
