"""The architecture language: one string describes a network, e.g. ``c32k5-m2-c64k5-m2-d1024-drop0.5``.

Tokens are joined by ``-``. The final logits layer (``num_classes`` units, no activation) is implicit, and so is
a flatten before the first dense layer. Both the Keras models (``models/``) and the low-level reference
(``reference/``) are built from the parsed, shape-checked tuple of layer specs returned by ``plan``, and they
use the layer names it assigns, so weights transfer by name.

| token | layer |
| --- | --- |
| ``c{filters}k{size}[s{stride}][v][b][g]`` | convolution, stride 1, ``same`` padding, ReLU; ``v`` valid padding, ``b`` no bias then batch norm then ReLU, ``g`` GELU instead of ReLU |
| ``w{size}[t][g]`` | frozen patch-whitening convolution (first token only), then ReLU, or GELU with ``g``; ``t`` adds a trained bias before the activation |
| ``m{size}`` / ``a{size}`` | max / average pooling, window = stride = size, valid |
| ``r{filters}`` | residual basic block: relu(skip(x) + bn(conv3x3(relu(bn(conv3x3(x)))))) |
| ``B{filters}`` | airbench block: gelu(bn(conv3x3(gelu(bn(maxpool2(conv3x3(x))))))), batch norm without scale |
| ``gap`` / ``gmp`` | global average / max pooling |
| ``d{units}`` | dense + ReLU |
| ``drop{rate}`` | dropout with rate in [0, 1) |
| ``lin{divisor}`` | last token only: the logits layer has no bias and its outputs are multiplied by 1 / ``divisor`` |

GELU is the exact (erf) one, ``0.5 x (1 + erf(x / sqrt(2)))``, not the tanh approximation: both implementations
call ``tf.nn.gelu(x, approximate=False)`` (Keras' ``activations.gelu(x, approximate=False)`` does). In float64
that op rounds its 1/sqrt(2) to float32, a relative error of at most ~6e-7 for |x| <= 6 that both share.

The airbench94 pieces (Keller Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", 2024), and where they
differ from ``airbench94.py``:

- ``w{size}`` is a ``size`` x ``size`` valid convolution with ``2 * C * size**2`` filters on a C-channel input;
  its kernel is a non-trainable variable that ``models.whitening.initialise_whitening`` sets to the whitening
  filters (the eigenvectors V of the second-moment matrix of the training images' patches, scaled by
  1 / sqrt(eigenvalue + eps), as +V then -V). Until then it holds a Glorot-uniform draw like any kernel. It must
  come first because its kernel is computed from the input images. ``w{size}t`` adds airbench94's bias (zeros
  at the start, trainable), which the training option ``--whitening_bias_epochs`` freezes after a few epochs
  (airbench94: 3); without ``t`` the layer has no trainable variable.
- ``B{filters}`` is airbench's ``ConvGroup``: conv3x3 (``same``, no bias) -> max pool 2 -> batch norm -> GELU
  -> conv3x3 (no bias) -> batch norm -> GELU. Its batch norms have no scale (gamma) at all, as Keras'
  ``BatchNormalization(scale=False)`` (airbench keeps a weight fixed at 1: the same function), and use
  airbench's momentum 0.6 and epsilon 1e-12 (``BLOCK_BN_MOMENTUM``, ``BLOCK_BN_EPSILON``). Kernels start as
  airbench's: PyTorch's fan-in uniform draw whose first ``min(in, out)`` filters are then set to the identity
  (``models.initializers``). The moving variance is updated with the biased batch variance, as Keras does
  (PyTorch uses the unbiased one).
- ``lin9`` gives airbench's output layer: a linear map without bias whose logits are multiplied by 1/9, drawn
  from PyTorch's fan-in uniform init as airbench's is.
"""

import dataclasses
import math
import re

# Batch norm settings shared by both implementations. Momentum 0.9 (moving = 0.9 * moving + 0.1 * batch) and
# epsilon 1e-5 are the usual ResNet values; Keras' own defaults (0.99, 1e-3) adapt too slowly for short runs.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
# The batch norms inside ``B{filters}`` blocks, as airbench94: momentum 0.6 (moving = 0.6 * moving + 0.4 * batch)
# and epsilon 1e-12.
BLOCK_BN_MOMENTUM = 0.6
BLOCK_BN_EPSILON = 1e-12

PRESETS = {
    # Two 5x5 conv/pool stages and a wide dense layer: the classic TensorFlow MNIST tutorial network.
    "mnist_cnn": "c32k5-m2-c64k5-m2-d1024-drop0.5",
    # The Keras "simple MNIST convnet" example.
    "keras_convnet": "c32k3v-m2-c64k3v-m2-drop0.5",
    "mlp": "d512-d512",
    # A 9-layer residual net for CIFAR in the spirit of the CIFAR-10 speed-record ResNets.
    "resnet9": "c64k3b-c128k3b-m2-r128-c256k3b-m2-c512k3b-m2-r512-gmp",
    # A small residual net that trains in minutes on a CPU.
    "resnet_small": "c32k3b-r32-c64k3b-m2-r64-c128k3b-m2-r128-gap",
    # Two 5x5 stride-2 convolutions with batch norm and a small dense layer: 332,162 weights and 1.8M
    # multiply-adds per image (mnist_cnn: 3.3M and 13.9M); the main job's net and the MNIST speed recipe's.
    "mnist_fast": "c24k5s2b-c48k5s2b-d128",
    # airbench94's network (Keller Jordan, 2024): 2x2 patch whitening with a trained bias, three conv-pool-BN
    # blocks, global max pooling, logits without bias scaled by 1/9. 118,147,360 multiply-adds and 1,973,944
    # weights (1,971,352 trained) on a CIFAR image (python3 -m experiments.analyze --arch=airbench94
    # --dataset=cifar10).
    "airbench94": "w2tg-B64-B256-B256-gmp-lin9",
}
DEFAULT_ARCH = "mnist_cnn"


@dataclasses.dataclass(frozen=True)
class Conv:
    name: str
    filters: int
    kernel_size: int
    stride: int = 1
    padding: str = "same"  # "same" or "valid"
    batch_norm: bool = False  # conv without bias -> batch norm -> activation
    activation: str = "relu"  # "relu", or "gelu" with the `g` suffix


@dataclasses.dataclass(frozen=True)
class Whitening:
    """A frozen ``kernel_size`` x ``kernel_size`` valid convolution, an optional trained bias, an activation."""

    name: str
    kernel_size: int
    filters: int  # 2 * channels_in * kernel_size**2: every whitening filter with both signs
    activation: str = "relu"  # "relu", or "gelu" with the `g` suffix
    bias: bool = False  # a trained bias before the activation (the `t` suffix)


@dataclasses.dataclass(frozen=True)
class Pool:
    name: str
    kind: str  # "max" or "avg"
    size: int  # window = stride = size, valid padding


@dataclasses.dataclass(frozen=True)
class Residual:
    name: str
    filters: int
    projection: bool  # 1x1 conv + BN on the skip path, because the channel count changes


@dataclasses.dataclass(frozen=True)
class Block:
    """airbench's ConvGroup: conv3x3 -> max pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU, BN without scale."""

    name: str
    filters: int


@dataclasses.dataclass(frozen=True)
class GlobalPool:
    name: str
    kind: str  # "avg" or "max"


@dataclasses.dataclass(frozen=True)
class Flatten:
    name: str


@dataclasses.dataclass(frozen=True)
class Dense:
    name: str
    units: int
    activation: bool = True  # False only for the logits layer
    bias: bool = True  # False only for the logits layer after ``lin{divisor}``
    scale: float = 1.0  # outputs are multiplied by this (1 / divisor of ``lin{divisor}``)


@dataclasses.dataclass(frozen=True)
class Dropout:
    name: str
    rate: float


@dataclasses.dataclass(frozen=True)
class PlannedLayer:
    """One layer of a network with the shapes (without batch) it maps between."""

    spec: object
    input_shape: tuple
    output_shape: tuple


_CONV = re.compile(r"c(\d+)k(\d+)(?:s(\d+))?(v)?(b)?(g)?")
_WHITENING = re.compile(r"w(\d+)(t)?(g)?")
_POOL = re.compile(r"([ma])(\d+)")
_RESIDUAL = re.compile(r"r(\d+)")
_BLOCK = re.compile(r"B(\d+)")
_DENSE = re.compile(r"d(\d+)")
_DROPOUT = re.compile(r"drop(\d*\.?\d+)")
_LINEAR_LOGITS = re.compile(r"lin(\d*\.?\d+)")
GRAMMAR = ("c{filters}k{size}[s{stride}][v][b][g], w{size}[t][g], m{size}, a{size}, r{filters}, B{filters}, gap, "
           "gmp, d{units}, drop{rate}, lin{divisor}")


def resolve(arch):
    """Returns the architecture string for a preset name, or ``arch`` itself."""
    return PRESETS.get(arch, arch)


def has_whitening_bias(arch):
    """Whether ``arch`` (a string or preset name) starts with a whitening layer that has a trained bias."""
    match = _WHITENING.fullmatch(resolve(arch).split("-")[0])
    return bool(match and match[2])


def _positive(token, value, what):
    if value <= 0:
        raise ValueError(f"architecture token '{token}': {what} must be positive, got {value}")
    return value


def _spatial_output(token, shape, window, stride, padding, what):
    """Output (H, W) of a sliding window over ``shape`` (H, W, C), as TensorFlow computes it."""
    if padding == "same":
        return tuple(math.ceil(size / stride) for size in shape[:2])
    if window > min(shape[:2]):
        raise ValueError(f"architecture token '{token}': {what} {window} does not fit its input of shape "
                         f"{shape} (H, W, C) with valid padding")
    return tuple((size - window) // stride + 1 for size in shape[:2])


def plan(arch, input_shape, num_classes):
    """Parses ``arch`` (a string or preset name) for images of ``input_shape`` (H, W, C).

    Returns a tuple of ``PlannedLayer`` ending with the logits layer. Raises ``ValueError`` naming the token and
    the shapes when the string is malformed or a layer does not fit its input.
    """
    arch = resolve(arch)
    if len(input_shape) != 3 or min(input_shape) <= 0:
        raise ValueError(f"input shape must be (height, width, channels), got {tuple(input_shape)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    tokens = arch.split("-") if arch else []
    if arch and not all(tokens):
        raise ValueError(f"architecture '{arch}' has an empty token; tokens are joined by single '-'")
    shape = tuple(int(d) for d in input_shape)
    counts = {}
    layers = []

    def name(kind):
        counts[kind] = counts.get(kind, 0) + 1
        return f"{kind}{counts[kind]}"

    def add(spec, out_shape):
        layers.append(PlannedLayer(spec, shape, tuple(out_shape)))
        return tuple(out_shape)

    logits = Dense("logits", num_classes, activation=False)
    for index, token in enumerate(tokens):
        spatial = len(shape) == 3
        if match := _CONV.fullmatch(token):
            filters, kernel = int(match[1]), int(match[2])
            stride = int(match[3]) if match[3] else 1
            padding = "valid" if match[4] else "same"
            for value, what in ((filters, "filters"), (kernel, "kernel size"), (stride, "stride")):
                _positive(token, value, what)
            _require_spatial(token, shape, spatial)
            h, w = _spatial_output(token, shape, kernel, stride, padding, "kernel size")
            spec = Conv(name("conv"), filters, kernel, stride, padding, batch_norm=bool(match[5]),
                        activation="gelu" if match[6] else "relu")
            shape = add(spec, (h, w, filters))
        elif match := _WHITENING.fullmatch(token):
            kernel = _positive(token, int(match[1]), "kernel size")
            if index != 0:
                raise ValueError(f"architecture token '{token}' must be the first token: its kernel is computed from "
                                 f"patches of the input images, but it follows '{tokens[index - 1]}'")
            h, w = _spatial_output(token, shape, kernel, 1, "valid", "kernel size")
            filters = 2 * shape[2] * kernel * kernel
            spec = Whitening(name("whiten"), kernel, filters, activation="gelu" if match[3] else "relu",
                             bias=bool(match[2]))
            shape = add(spec, (h, w, filters))
        elif match := _POOL.fullmatch(token):
            size = _positive(token, int(match[2]), "pool size")
            _require_spatial(token, shape, spatial)
            kind = "max" if match[1] == "m" else "avg"
            h, w = _spatial_output(token, shape, size, size, "valid", "pool size")
            shape = add(Pool(name(f"{kind}pool"), kind, size), (h, w, shape[2]))
        elif match := _RESIDUAL.fullmatch(token):
            filters = _positive(token, int(match[1]), "filters")
            _require_spatial(token, shape, spatial)
            spec = Residual(name("res"), filters, projection=filters != shape[2])
            shape = add(spec, (shape[0], shape[1], filters))
        elif match := _BLOCK.fullmatch(token):
            filters = _positive(token, int(match[1]), "filters")
            _require_spatial(token, shape, spatial)
            # The `same` conv keeps (H, W); the pool inside the block halves it.
            h, w = _spatial_output(token, shape, 2, 2, "valid", "pool size")
            shape = add(Block(name("block"), filters), (h, w, filters))
        elif token in ("gap", "gmp"):
            _require_spatial(token, shape, spatial)
            kind = "avg" if token == "gap" else "max"
            shape = add(GlobalPool(name(f"global_{kind}pool"), kind), (shape[2],))
        elif match := _DENSE.fullmatch(token):
            units = _positive(token, int(match[1]), "units")
            if spatial:
                shape = add(Flatten("flatten"), (math.prod(shape),))
            shape = add(Dense(name("dense"), units), (units,))
        elif match := _DROPOUT.fullmatch(token):
            rate = float(match[1])
            if not 0 <= rate < 1:
                raise ValueError(f"architecture token '{token}': dropout rate must be in [0, 1), got {rate}")
            shape = add(Dropout(name("dropout"), rate), shape)
        elif match := _LINEAR_LOGITS.fullmatch(token):
            divisor = float(match[1])
            _positive(token, divisor, "divisor")
            if index != len(tokens) - 1:
                raise ValueError(f"architecture token '{token}' must be the last token: it sets the logits layer, "
                                 f"but '{tokens[index + 1]}' follows it")
            logits = Dense("logits", num_classes, activation=False, bias=False, scale=1.0 / divisor)
        else:
            raise ValueError(f"architecture token '{token}' in '{arch}' is not one of: {GRAMMAR}")
    if len(shape) == 3:
        shape = add(Flatten("flatten"), (math.prod(shape),))
    add(logits, (num_classes,))
    return tuple(layers)


def _require_spatial(token, shape, spatial):
    if not spatial:
        raise ValueError(f"architecture token '{token}' needs an image input (H, W, C) but follows a flat "
                         f"layer of shape {shape}")
