"""CNNs built from the architecture language, behind one ``Network`` protocol.

``models.architecture`` and ``models.network`` import without Keras (the low-level reference builds on them);
the Keras models load on first use of ``CNN``, ``build_model`` or ``keras_cnn``.
"""

import importlib

from models.architecture import DEFAULT_ARCH, PRESETS, plan, resolve
from models.network import CAPABILITIES, IMPLEMENTATIONS, PRECISIONS, Network, build_network

_KERAS_NAMES = ("CNN", "build_model")
__all__ = ["DEFAULT_ARCH", "PRESETS", "plan", "resolve", "CAPABILITIES", "IMPLEMENTATIONS", "PRECISIONS", "Network",
           "build_network", *_KERAS_NAMES, "keras_cnn"]


def __getattr__(name):
    if name == "keras_cnn" or name in _KERAS_NAMES:
        keras_cnn = importlib.import_module("models.keras_cnn")
        return keras_cnn if name == "keras_cnn" else getattr(keras_cnn, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
