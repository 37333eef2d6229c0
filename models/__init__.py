"""Keras CNNs built from the architecture language.

``models.architecture`` imports without Keras (the low-level reference builds on it); the Keras models load
on first use of ``CNN``, ``build_model``, ``named_weights`` or ``keras_cnn``.
"""

import importlib

from models.architecture import DEFAULT_ARCH, PRESETS, plan, resolve

_KERAS_NAMES = ("CNN", "build_model", "named_weights")


def __getattr__(name):
    if name == "keras_cnn" or name in _KERAS_NAMES:
        keras_cnn = importlib.import_module("models.keras_cnn")
        return keras_cnn if name == "keras_cnn" else getattr(keras_cnn, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
