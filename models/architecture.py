"""The architecture language: one string describes a network, e.g. ``c32k5-m2-c64k5-m2-d1024-drop0.5``.

Tokens are joined by ``-``. The final logits layer (``num_classes`` units, no activation) is implicit, and so is
a flatten before the first dense layer. Both the Keras models (``models/``) and the low-level reference
(``reference/``) are built from the parsed, shape-checked tuple of layer specs returned by ``plan``, and they
use the layer names it assigns, so weights transfer by name.

| token | layer |
| --- | --- |
| ``c{filters}k{size}[s{stride}][v][b]`` | convolution, stride 1, ``same`` padding, ReLU; ``v`` valid padding, ``b`` no bias then batch norm then ReLU |
| ``m{size}`` / ``a{size}`` | max / average pooling, window = stride = size, valid |
| ``r{filters}`` | residual basic block: relu(skip(x) + bn(conv3x3(relu(bn(conv3x3(x)))))) |
| ``gap`` / ``gmp`` | global average / max pooling |
| ``d{units}`` | dense + ReLU |
| ``drop{rate}`` | dropout with rate in [0, 1) |
"""

import dataclasses
import math
import re

# Batch norm settings shared by both implementations. Momentum 0.9 (moving = 0.9 * moving + 0.1 * batch) and
# epsilon 1e-5 are the usual ResNet values; Keras' own defaults (0.99, 1e-3) adapt too slowly for short runs.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

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
}
DEFAULT_ARCH = "mnist_cnn"


@dataclasses.dataclass(frozen=True)
class Conv:
    name: str
    filters: int
    kernel_size: int
    stride: int = 1
    padding: str = "same"  # "same" or "valid"
    batch_norm: bool = False  # conv without bias -> batch norm -> ReLU


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


_CONV = re.compile(r"c(\d+)k(\d+)(?:s(\d+))?(v)?(b)?")
_POOL = re.compile(r"([ma])(\d+)")
_RESIDUAL = re.compile(r"r(\d+)")
_DENSE = re.compile(r"d(\d+)")
_DROPOUT = re.compile(r"drop(\d*\.?\d+)")
GRAMMAR = "c{filters}k{size}[s{stride}][v][b], m{size}, a{size}, r{filters}, gap, gmp, d{units}, drop{rate}"


def resolve(arch):
    """Returns the architecture string for a preset name, or ``arch`` itself."""
    return PRESETS.get(arch, arch)


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

    for token in tokens:
        spatial = len(shape) == 3
        if match := _CONV.fullmatch(token):
            filters, kernel = int(match[1]), int(match[2])
            stride = int(match[3]) if match[3] else 1
            padding = "valid" if match[4] else "same"
            for value, what in ((filters, "filters"), (kernel, "kernel size"), (stride, "stride")):
                _positive(token, value, what)
            _require_spatial(token, shape, spatial)
            h, w = _spatial_output(token, shape, kernel, stride, padding, "kernel size")
            spec = Conv(name("conv"), filters, kernel, stride, padding, batch_norm=bool(match[5]))
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
        else:
            raise ValueError(f"architecture token '{token}' in '{arch}' is not one of: {GRAMMAR}")
    if len(shape) == 3:
        shape = add(Flatten("flatten"), (math.prod(shape),))
    add(Dense("logits", num_classes, activation=False), (num_classes,))
    return tuple(layers)


def _require_spatial(token, shape, spatial):
    if not spatial:
        raise ValueError(f"architecture token '{token}' needs an image input (H, W, C) but follows a flat "
                         f"layer of shape {shape}")
