"""The ``Network`` protocol both implementations follow, what each can do, and the one factory that builds either
by name."""

import dataclasses
from typing import Callable, NamedTuple, Protocol, runtime_checkable

# --precision -> the compute dtype of the forward pass; variables stay float32 in every case.
PRECISIONS = {"float32": "float32", "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}


@runtime_checkable
class Network(Protocol):
    """What the training loop, checkpoints, analysis, export and inspection need of a CNN, whichever
    implementation."""

    arch: str  # the architecture string, presets resolved
    plan: tuple  # architecture.plan(arch, ...): the PlannedLayers, their names and shapes
    trainable_variables: tuple

    def __call__(self, images, training=False):
        """(B, H, W, C) images -> (B, num_classes) logits."""

    def layer_outputs(self, images, names):
        """``{name: (B, ...) output}`` of the layers of the plan called ``names``, for (B, H, W, C) images in
        inference mode. Raises ``ValueError`` for a name the plan does not have."""

    def named_weights(self):
        """``{"<layer>/<sublayer>/<variable>": variable}``, BN moving statistics included, in plan order."""

    def checkpoint_state(self):
        """The trackable object(s) ``tf.train.Checkpoint`` should hold for this network."""

    def count_params(self):
        """Number of weights, batch-norm moving statistics included."""


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What an implementation's networks can do beyond the ``Network`` protocol."""

    saves_keras_file: bool  # ``network.save("x.keras")`` writes a file ``keras.saving.load_model`` reopens
    runs_under_fit: bool  # Keras ``compile``/``fit`` can train it (``--loop=fit``)


class Implementation(NamedTuple):
    build: Callable  # (arch, input_shape, num_classes, seed, precision) -> a built Network
    capabilities: Capabilities


def _build_keras(arch, input_shape, num_classes, seed, precision):
    del seed  # Keras draws initial weights from the global seed (keras.utils.set_random_seed).
    from models.keras_cnn import build_model
    return build_model(arch, input_shape, num_classes, dtype=precision)


def _build_reference(arch, input_shape, num_classes, seed, precision):
    import tensorflow as tf

    from reference import build_reference
    return build_reference(arch, input_shape, num_classes, seed=seed, compute_dtype=tf.as_dtype(PRECISIONS[precision]))


# --impl -> its builder and capabilities. Both builders import on first use: the reference never loads Keras.
IMPLEMENTATIONS = {
    "keras": Implementation(_build_keras, Capabilities(saves_keras_file=True, runs_under_fit=True)),
    "reference": Implementation(_build_reference, Capabilities(saves_keras_file=False, runs_under_fit=False)),
}
# --impl -> Capabilities, for a check that needs no network (a flag validator, an export's file list).
CAPABILITIES = {name: implementation.capabilities for name, implementation in IMPLEMENTATIONS.items()}


def build_network(impl, arch, input_shape, num_classes, seed=0, precision="float32"):
    """The ``Network`` called ``impl`` for ``arch`` on images of ``input_shape`` (H, W, C), variables built.

    ``precision`` is a key of ``PRECISIONS``. Raises ``ValueError`` for an unknown ``impl`` and, naming the
    token and the shapes, for an ``arch`` that is malformed or does not fit the input.
    """
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation '{impl}'; choose one of {', '.join(IMPLEMENTATIONS)}")
    return IMPLEMENTATIONS[impl].build(arch, tuple(input_shape), num_classes, seed, precision)
