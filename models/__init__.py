"""Keras CNNs built from the architecture language."""

from models.architecture import DEFAULT_ARCH, PRESETS, plan, resolve
from models.keras_cnn import CNN, build_model, named_weights
