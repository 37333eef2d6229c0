"""The architecture language: one string describes a network, e.g. ``c32k5-m2-c64k5-m2-d1024-drop0.5``.

Tokens are joined by ``-``. The final logits layer (``num_classes`` units, no activation) is implicit, and so is
a flatten before the first dense layer. Both the Keras models (``models/``) and the low-level reference
(``reference/``) are built from the parsed, shape-checked tuple of layer specs returned by ``plan``, and they
use the layer names it assigns, so weights transfer by name.

Each layer kind is declared once, as an entry of ``KINDS``: its spec record (what ``plan`` puts in a network's
plan), the tokens that make it (grammar, pattern, parser), what it counts (parameters and multiply-adds, tabulated
by ``models.analysis``) and what inspection shows of it (a convolution's feature maps and first kernel). Each
implementation builds a kind from its own table, keyed as ``KINDS`` is: ``models.keras_cnn.KERAS_LAYERS`` and
``reference.network.REFERENCE_LAYERS``. ``COVERAGE_ARCHS`` uses every token and suffix, and
``tests/test_layer_kinds.py`` fails when a kind lacks one of its parts or a token is not covered. A new kind is a
section here (record, parser, counts, ``Kind`` entry in ``KINDS``, a use in ``COVERAGE_ARCHS``), an entry in each
implementation's table, and a row in README's token table.

The tokens (this table is made from ``KINDS`` when the module loads: ``help(models.architecture)`` shows it):

{token_table}

GELU is the exact (erf) one, ``0.5 x (1 + erf(x / sqrt(2)))``, not the tanh approximation: both implementations
call ``tf.nn.gelu(x, approximate=False)`` (Keras' ``activations.gelu(x, approximate=False)`` does). In float64
that op rounds its 1/sqrt(2) to float32, a relative error of at most ~6e-7 for |x| <= 6 that both share.

The ``w``, ``B`` and ``lin`` tokens are pieces of airbench94 (Keller Jordan, "94% on CIFAR-10 in 3.29 Seconds on a
Single GPU", 2024); their records (``Whitening``, ``Block``, ``Dense``) say where they differ from ``airbench94.py``.
"""

import dataclasses
import math
import re
from typing import Callable, NamedTuple

# Batch norm settings shared by both implementations. Momentum 0.9 (moving = 0.9 * moving + 0.1 * batch) and
# epsilon 1e-5 are the usual ResNet values; Keras' own defaults (0.99, 1e-3) adapt too slowly for short runs.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
# The batch norms inside ``B{filters}`` blocks, as airbench94: momentum 0.6 (moving = 0.6 * moving + 0.4 * batch)
# and epsilon 1e-12.
BLOCK_BN_MOMENTUM = 0.6
BLOCK_BN_EPSILON = 1e-12
# Vectors per channel a batch norm layer holds: gamma and beta (trained), moving mean and variance (not).
BN_VECTORS, BN_TRAINED_VECTORS = 4, 2
# Without a scale (inside B{filters} blocks): beta (trained), moving mean and variance (not).
BN_NO_SCALE_VECTORS, BN_NO_SCALE_TRAINED_VECTORS = 3, 1

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
    # No hidden layer: logits straight from the pixels (softmax regression). The commands refuse an empty --arch,
    # which is more often an unset shell variable than this.
    "linear": "",
}
EMPTY_ARCH = "is empty: name a preset or an architecture string (a linear classifier is --arch=linear)"
DEFAULT_ARCH = "mnist_cnn"


@dataclasses.dataclass(frozen=True)
class PlannedLayer:
    """One layer of a network with the shapes (without batch) it maps between."""

    spec: object
    input_shape: tuple
    output_shape: tuple


class Counts(NamedTuple):
    """What one planned layer holds and computes, as ``models.analysis`` tabulates it."""

    description: str  # e.g. "conv 3x3 same + BN"
    params: int  # as Keras' count_params: batch-norm moving statistics and frozen kernels included
    trainable: int
    macs: int  # multiply-adds per image of its convolutions and matmuls; elementwise work counts as 0


@dataclasses.dataclass(frozen=True)
class Token:
    """One token of the language.

    ``pattern`` must match the whole token; each optional part is a named group, so that a test can check that
    ``COVERAGE_ARCHS`` uses it. ``parse(match, planner)`` adds the token's layer(s) to the ``_Planner`` or raises
    ``ValueError`` naming the token.
    """

    grammar: str  # as ``GRAMMAR`` and the token table show it, e.g. "c{filters}k{size}[s{stride}][v][b][g]"
    pattern: re.Pattern
    parse: Callable
    doc: str  # its row in the token table

    @property
    def prefix(self):
        """The literal start that names the token: ``c``, ``drop``, ``gap``."""
        return re.match(r"[^{\[]+", self.grammar)[0]


# What inspection and analysis make of a layer kind: a convolution's output is a stack of feature maps
# (inspection draws them, and the first kernel as filters; analysis counts it among the early or late
# convolutions); a dense layer counts among the dense layers; a layer of neither role only reshapes or reduces.
CONV, DENSE, OTHER = "convolution", "dense", ""
ROLES = (CONV, DENSE, OTHER)


@dataclasses.dataclass(frozen=True)
class Kind:
    """Everything one layer kind declares, once (see the module docstring)."""

    spec: type  # its frozen record in a plan
    tokens: tuple  # the Tokens that make it; () for a layer ``plan`` adds by itself (the flatten)
    count: Callable  # (PlannedLayer) -> Counts
    role: str = OTHER  # one of ROLES
    kernel: str = None  # CONV only: the variable, under the layer's name, that inspection draws as its filters


def _activation(match):
    return "gelu" if match["gelu"] else "relu"


def _conv_counts(kernel_size, in_channels, filters, out_hw, bias, batch_norm, bn_scale=True, trainable=True):
    """(params, trainable params, MACs per image) of one convolution, with its bias or batch norm."""
    weights = kernel_size * kernel_size * in_channels * filters
    params, trained = weights, weights if trainable else 0
    if bias:
        params, trained = params + filters, trained + filters
    if batch_norm:
        vectors, trained_vectors = ((BN_VECTORS, BN_TRAINED_VECTORS) if bn_scale else
                                    (BN_NO_SCALE_VECTORS, BN_NO_SCALE_TRAINED_VECTORS))
        params, trained = params + vectors * filters, trained + trained_vectors * filters
    return params, trained, out_hw[0] * out_hw[1] * weights


def _summed(description, parts):
    """Counts of a layer made of several convolutions: ``parts`` are their (params, trainable, MACs)."""
    return Counts(description, *(sum(column) for column in zip(*parts)))


# Convolution: c{filters}k{size}[s{stride}][v][b][g] ----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Conv:
    name: str
    filters: int
    kernel_size: int
    stride: int = 1
    padding: str = "same"  # "same" or "valid"
    batch_norm: bool = False  # conv without bias -> batch norm -> activation
    activation: str = "relu"  # "relu", or "gelu" with the `g` suffix


def _parse_conv(match, p):
    filters, kernel = int(match["filters"]), int(match["size"])
    stride = int(match["stride"]) if match["stride"] else 1
    for value, what in ((filters, "filters"), (kernel, "kernel size"), (stride, "stride")):
        p.positive(value, what)
    p.require_image()
    padding = "valid" if match["valid"] else "same"
    h, w = p.window_output(kernel, stride, padding, "kernel size")
    p.add(Conv(p.name("conv"), filters, kernel, stride, padding, batch_norm=bool(match["bn"]),
               activation=_activation(match)), (h, w, filters))


def _count_conv(layer):
    spec = layer.spec
    stride = f" stride {spec.stride}" if spec.stride != 1 else ""
    norm = " + BN" if spec.batch_norm else ""
    gelu = " + GELU" if spec.activation == "gelu" else ""
    return Counts(f"conv {spec.kernel_size}x{spec.kernel_size}{stride} {spec.padding}{norm}{gelu}",
                  *_conv_counts(spec.kernel_size, layer.input_shape[2], spec.filters, layer.output_shape[:2],
                                bias=not spec.batch_norm, batch_norm=spec.batch_norm))


CONV_KIND = Kind(Conv, tokens=(
    Token("c{filters}k{size}[s{stride}][v][b][g]",
          re.compile(r"c(?P<filters>\d+)k(?P<size>\d+)(?:s(?P<stride>\d+))?(?P<valid>v)?(?P<bn>b)?(?P<gelu>g)?"),
          _parse_conv, "convolution, stride 1, ``same`` padding, ReLU; ``s`` a stride, ``v`` valid padding, ``b`` no "
          "bias then batch norm then the activation, ``g`` GELU instead of ReLU"),
), count=_count_conv, role=CONV, kernel="conv/kernel")


# Frozen patch whitening: w{size}[t][g] -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Whitening:
    """A frozen ``kernel_size`` x ``kernel_size`` valid convolution, an optional trained bias, an activation.

    airbench94's whitening layer: ``2 * C * size**2`` filters on a C-channel input, whose kernel is a non-trainable
    variable that ``models.whitening.initialise_whitening`` sets to the whitening filters (the eigenvectors V of
    the second-moment matrix of the training images' patches, scaled by 1 / sqrt(eigenvalue + eps), as +V then
    -V). Until then it holds a Glorot-uniform draw like any kernel. It must come first because its kernel is
    computed from the input images. ``w{size}t`` adds airbench94's bias (zeros at the start, trainable), which the
    training option ``--whitening_bias_epochs`` freezes after a few epochs (airbench94: 3); without ``t`` the
    layer has no trainable variable.
    """

    name: str
    kernel_size: int
    filters: int  # 2 * channels_in * kernel_size**2: every whitening filter with both signs
    activation: str = "relu"  # "relu", or "gelu" with the `g` suffix
    bias: bool = False  # a trained bias before the activation (the `t` suffix)


def _parse_whitening(match, p):
    kernel = p.positive(int(match["size"]), "kernel size")
    if p.index != 0:
        raise ValueError(f"architecture token '{p.token}' must be the first token: its kernel is computed from "
                         f"patches of the input images, but it follows '{p.tokens[p.index - 1]}'")
    h, w = p.window_output(kernel, 1, "valid", "kernel size")
    filters = 2 * p.shape[2] * kernel * kernel
    p.add(Whitening(p.name("whiten"), kernel, filters, activation=_activation(match), bias=bool(match["bias"])),
          (h, w, filters))


def _count_whitening(layer):
    spec = layer.spec
    bias = " + trained bias" if spec.bias else ""
    gelu = " + GELU" if spec.activation == "gelu" else ""
    return Counts(f"frozen whitening conv {spec.kernel_size}x{spec.kernel_size} valid{bias}{gelu}",
                  *_conv_counts(spec.kernel_size, layer.input_shape[2], spec.filters, layer.output_shape[:2],
                                bias=spec.bias, batch_norm=False, trainable=False))


WHITENING_KIND = Kind(Whitening, tokens=(
    Token("w{size}[t][g]", re.compile(r"w(?P<size>\d+)(?P<bias>t)?(?P<gelu>g)?"), _parse_whitening,
          "frozen patch-whitening convolution (first token only), then ReLU, or GELU with ``g``; ``t`` adds a trained "
          "bias before the activation"),
), count=_count_whitening, role=CONV, kernel="conv/kernel")


# Pooling: m{size}, a{size} -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Pool:
    name: str
    kind: str  # "max" or "avg"
    size: int  # window = stride = size, valid padding


def _parse_pool(kind):
    def parse(match, p):
        size = p.positive(int(match["size"]), "pool size")
        p.require_image()
        h, w = p.window_output(size, size, "valid", "pool size")
        p.add(Pool(p.name(f"{kind}pool"), kind, size), (h, w, p.shape[2]))
    return parse


def _count_pool(layer):
    return Counts(f"{layer.spec.kind} pool {layer.spec.size}", 0, 0, 0)


POOL_KIND = Kind(Pool, tokens=(
    Token("m{size}", re.compile(r"m(?P<size>\d+)"), _parse_pool("max"), "max pooling, window = stride = size, valid"),
    Token("a{size}", re.compile(r"a(?P<size>\d+)"), _parse_pool("avg"),
          "average pooling, window = stride = size, valid"),
), count=_count_pool)


# Residual block: r{filters} ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Residual:
    name: str
    filters: int
    projection: bool  # 1x1 conv + BN on the skip path, because the channel count changes


def _parse_residual(match, p):
    filters = p.positive(int(match["filters"]), "filters")
    p.require_image()
    p.add(Residual(p.name("res"), filters, projection=filters != p.shape[2]), (p.shape[0], p.shape[1], filters))


def _count_residual(layer):
    spec, channels = layer.spec, layer.input_shape[2]
    # Both 3x3 convs and the 1x1 projection keep the spatial size (stride 1, `same`); none has a bias.
    convs = [(3, channels), (3, spec.filters)] + ([(1, channels)] if spec.projection else [])
    return _summed("residual: 2 conv 3x3 + BN" + (", 1x1 conv + BN skip" if spec.projection else ""),
                   [_conv_counts(size, inputs, spec.filters, layer.output_shape[:2], bias=False, batch_norm=True)
                    for size, inputs in convs])


RESIDUAL_KIND = Kind(Residual, tokens=(
    Token("r{filters}", re.compile(r"r(?P<filters>\d+)"), _parse_residual,
          "residual basic block: relu(skip(x) + bn(conv3x3(relu(bn(conv3x3(x)))))); skip is a 1x1 conv + BN when the "
          "channel count changes"),
), count=_count_residual, role=CONV, kernel="conv1/kernel")


# airbench block: B{filters} ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Block:
    """airbench's ConvGroup: conv3x3 -> max pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU, BN without scale.

    Convs are ``same`` and have no bias. The batch norms have no scale (gamma) at all, as Keras'
    ``BatchNormalization(scale=False)`` (airbench keeps a weight fixed at 1: the same function), and use
    airbench's momentum 0.6 and epsilon 1e-12 (``BLOCK_BN_MOMENTUM``, ``BLOCK_BN_EPSILON``). Kernels start as
    airbench's: PyTorch's fan-in uniform draw whose first ``min(in, out)`` filters are then set to the identity
    (``models.initializers``). The moving variance is updated with the biased batch variance, as Keras does
    (PyTorch uses the unbiased one).
    """

    name: str
    filters: int


def _parse_block(match, p):
    filters = p.positive(int(match["filters"]), "filters")
    p.require_image()
    # The `same` conv keeps (H, W); the pool inside the block halves it.
    h, w = p.window_output(2, 2, "valid", "pool size")
    p.add(Block(p.name("block"), filters), (h, w, filters))


def _count_block(layer):
    spec, in_shape = layer.spec, layer.input_shape
    # conv1 at the input size, then the pool halves it for conv2; both 3x3 `same` without bias.
    return _summed("block: conv 3x3, max pool 2, BN, GELU, conv 3x3, BN, GELU",
                   [_conv_counts(3, channels, spec.filters, hw, bias=False, batch_norm=True, bn_scale=False)
                    for channels, hw in ((in_shape[2], in_shape[:2]), (spec.filters, layer.output_shape[:2]))])


BLOCK_KIND = Kind(Block, tokens=(
    Token("B{filters}", re.compile(r"B(?P<filters>\d+)"), _parse_block,
          "airbench block: gelu(bn(conv3x3(gelu(bn(maxpool2(conv3x3(x))))))), batch norm without scale"),
), count=_count_block, role=CONV, kernel="conv1/kernel")


# Global pooling: gap, gmp ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GlobalPool:
    name: str
    kind: str  # "avg" or "max"


def _parse_global_pool(kind):
    def parse(match, p):
        p.require_image()
        p.add(GlobalPool(p.name(f"global_{kind}pool"), kind), (p.shape[2],))
    return parse


def _count_global_pool(layer):
    return Counts(f"global {layer.spec.kind} pool", 0, 0, 0)


GLOBAL_POOL_KIND = Kind(GlobalPool, tokens=(
    Token("gap", re.compile("gap"), _parse_global_pool("avg"), "global average pooling"),
    Token("gmp", re.compile("gmp"), _parse_global_pool("max"), "global max pooling"),
), count=_count_global_pool)


# Flatten: added by plan before the first dense layer (or the logits) of an image ----------------------------

@dataclasses.dataclass(frozen=True)
class Flatten:
    name: str


def _count_flatten(layer):
    return Counts("flatten", 0, 0, 0)


FLATTEN_KIND = Kind(Flatten, tokens=(), count=_count_flatten)


# Dense: d{units}, and the logits layer that lin{divisor} changes ---------------------------------------------

@dataclasses.dataclass(frozen=True)
class Dense:
    """A dense layer; the logits layer is one too. ``lin{divisor}`` gives airbench's output layer: a linear map
    without bias whose logits are multiplied by 1/divisor, drawn from PyTorch's fan-in uniform init as
    airbench's is."""

    name: str
    units: int
    activation: bool = True  # False only for the logits layer
    bias: bool = True  # False only for the logits layer after ``lin{divisor}``
    scale: float = 1.0  # outputs are multiplied by this (1 / divisor of ``lin{divisor}``)


def _parse_dense(match, p):
    units = p.positive(int(match["units"]), "units")
    p.flatten()
    p.add(Dense(p.name("dense"), units), (units,))


def _parse_linear_logits(match, p):
    divisor = p.positive(float(match["divisor"]), "divisor")
    if p.index != len(p.tokens) - 1:
        raise ValueError(f"architecture token '{p.token}' must be the last token: it sets the logits layer, but "
                         f"'{p.tokens[p.index + 1]}' follows it")
    p.logits = dataclasses.replace(p.logits, bias=False, scale=1.0 / divisor)


def _count_dense(layer):
    spec, inputs = layer.spec, layer.input_shape[0]
    params = inputs * spec.units + (spec.units if spec.bias else 0)
    description = "dense" if spec.activation else "logits"
    if not spec.bias:
        description += ", no bias"
    if spec.scale != 1.0:
        description += f", x {spec.scale:.4g}"
    return Counts(description, params, params, inputs * spec.units)


DENSE_KIND = Kind(Dense, tokens=(
    Token("d{units}", re.compile(r"d(?P<units>\d+)"), _parse_dense, "dense + ReLU"),
    Token("lin{divisor}", re.compile(r"lin(?P<divisor>\d*\.?\d+)"), _parse_linear_logits,
          "last token only: the logits layer has no bias and its outputs are multiplied by 1 / ``divisor``"),
), count=_count_dense, role=DENSE)


# Dropout: drop{rate} -----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Dropout:
    name: str
    rate: float


def _parse_dropout(match, p):
    rate = float(match["rate"])
    if not 0 <= rate < 1:
        raise ValueError(f"architecture token '{p.token}': dropout rate must be in [0, 1), got {rate}")
    p.add(Dropout(p.name("dropout"), rate), p.shape)


def _count_dropout(layer):
    return Counts(f"dropout {layer.spec.rate:g}", 0, 0, 0)


DROPOUT_KIND = Kind(Dropout, tokens=(
    Token("drop{rate}", re.compile(r"drop(?P<rate>\d*\.?\d+)"), _parse_dropout, "dropout with rate in [0, 1)"),
), count=_count_dropout)


# The table -----------------------------------------------------------------------------------------------------

KINDS = {kind.spec: kind for kind in (CONV_KIND, WHITENING_KIND, POOL_KIND, RESIDUAL_KIND, BLOCK_KIND,
                                      GLOBAL_POOL_KIND, FLATTEN_KIND, DENSE_KIND, DROPOUT_KIND)}
TOKENS = tuple(token for kind in KINDS.values() for token in kind.tokens)
GRAMMAR = ", ".join(token.grammar for token in TOKENS)


def kind_of(spec):
    """The ``Kind`` entry of a planned layer's spec."""
    return KINDS[type(spec)]


def layers_of_role(planned, role):
    """Names of the layers of ``planned`` (a plan) whose kind has ``role``, in order."""
    return [layer.spec.name for layer in planned if kind_of(layer.spec).role == role]


def token_table():
    """The markdown table of every token and what it makes, as the module docstring shows it."""
    rows = [f"| ``{token.grammar}`` | {token.doc} |" for token in TOKENS]
    return "\n".join(["| token | layer |", "| --- | --- |", *rows])


# Every token and every suffix, both paddings, odd sizes and both dataset shapes, as (arch, input shape (H, W, C)).
# Tests that claim to cover every token run these; tests/test_layer_kinds.py checks that they do.
COVERAGE_ARCHS = (
    # 1x1 and even (2x2, `same`: the extra padding column goes right) kernels, max and average pooling,
    # a valid conv, dropout with a non-zero rate.
    ("c4k1-c4k2-m2-c4k3v-a2-d8-drop0.3", (9, 9, 3)),
    # Kernel as large as the image: valid padding leaves a 1x1 output.
    ("c16k28v", (28, 28, 1)),
    # Strided convs instead of pooling: `same` on an odd size (11 -> 6) and valid (6 -> 2).
    ("c4k3s2-c6k4s2v-d6", (11, 11, 2)),
    # 4x4 stride 2 `same` on 7x7: 3 padding rows, 1 on top and 2 at the bottom.
    ("c3k4s2-a2-drop0-d4", (7, 7, 2)),
    # BN conv, residual blocks with identity (4 -> 4) and projection (4 -> 6) skips, global average pooling.
    ("c4k3b-r4-r6-gap", (7, 7, 3)),
    # CIFAR-shaped input, strided BN conv, global max pooling, dense and dropout after it.
    ("c4k3s2b-r6-m2-gmp-d5-drop0.5", (32, 32, 3)),
    # An MLP on MNIST-shaped input (implicit flatten).
    ("d32-d16", (28, 28, 1)),
    # The airbench94 tokens: GELU whitening (2*2*2*2 = 16 frozen filters) with its trained bias, GELU convs with
    # and without BN, airbench blocks keeping (4 -> 4) and changing (3 -> 6) the channel count, and logits without
    # bias scaled by 1/9.
    ("w2tg-c4k3g-B4-c3k2bg-B6-gmp-lin9", (9, 9, 2)),
    # ReLU whitening with a 3x3 kernel, a block whose pool drops a row and a column (5 -> 2), dense after it.
    ("w3-B5-d4", (7, 7, 1)),
)


class _Planner:
    """``plan``'s state as it reads the tokens left to right; each token's parser reads and extends it."""

    def __init__(self, tokens, input_shape, num_classes):
        self.tokens, self.index, self.token = tokens, 0, ""
        self.shape = input_shape  # the output shape of the layers so far: (H, W, C), or (features,) once flat
        self.layers = []
        self.logits = Dense("logits", num_classes, activation=False)
        self._numbers = {}

    def name(self, prefix):
        """The next layer name for ``prefix``: conv1, conv2, ..."""
        self._numbers[prefix] = self._numbers.get(prefix, 0) + 1
        return f"{prefix}{self._numbers[prefix]}"

    def add(self, spec, output_shape):
        self.layers.append(PlannedLayer(spec, self.shape, tuple(output_shape)))
        self.shape = tuple(output_shape)

    def flatten(self):
        """Adds the flatten, when the layers so far end in an image."""
        if len(self.shape) == 3:
            self.add(Flatten("flatten"), (math.prod(self.shape),))

    def positive(self, value, what):
        if value <= 0:
            raise ValueError(f"architecture token '{self.token}': {what} must be positive, got {value}")
        return value

    def require_image(self):
        if len(self.shape) != 3:
            raise ValueError(f"architecture token '{self.token}' needs an image input (H, W, C) but follows a flat "
                             f"layer of shape {self.shape}")

    def window_output(self, window, stride, padding, what):
        """Output (H, W) of a sliding window over the current (H, W, C), as TensorFlow computes it."""
        if padding == "same":
            return tuple(math.ceil(size / stride) for size in self.shape[:2])
        if window > min(self.shape[:2]):
            raise ValueError(f"architecture token '{self.token}': {what} {window} does not fit its input of shape "
                             f"{self.shape} (H, W, C) with valid padding")
        return tuple((size - window) // stride + 1 for size in self.shape[:2])


def resolve(arch):
    """Returns the architecture string for a preset name, or ``arch`` itself."""
    return PRESETS.get(arch, arch)


def has_whitening_bias(arch):
    """Whether ``arch`` (a string or preset name) starts with a whitening layer that has a trained bias."""
    match = WHITENING_KIND.tokens[0].pattern.fullmatch(resolve(arch).split("-")[0])
    return bool(match and match["bias"])


def _read(text):
    """``(Token, match)`` of the token ``text`` is, or ``(None, None)``."""
    for token in TOKENS:
        if match := token.pattern.fullmatch(text):
            return token, match
    return None, None


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
    planner = _Planner(tokens, tuple(int(d) for d in input_shape), num_classes)
    for index, text in enumerate(tokens):
        planner.index, planner.token = index, text
        token, match = _read(text)
        if token is None:
            raise ValueError(f"architecture token '{text}' in '{arch}' is not one of: {GRAMMAR}")
        token.parse(match, planner)
    planner.flatten()
    planner.add(planner.logits, (num_classes,))
    return tuple(planner.layers)


def outputs_of_layers(planned, names, step, x):
    """``{name: output}`` of the layers of ``planned`` (a plan) called ``names``, in plan order.

    Feeds ``x`` through the layers with ``step(index, x) -> x`` (an implementation runs its own layer
    ``planned[index]``), and stops after the last layer named. Raises ``ValueError`` for a name the plan does not
    have, listing the names it has.
    """
    wanted = set(names)
    missing = wanted - {layer.spec.name for layer in planned}
    if missing:
        raise ValueError(f"the network has no layer named {', '.join(sorted(missing))}; its layers are "
                         f"{', '.join(layer.spec.name for layer in planned)}")
    outputs = {}
    for index, layer in enumerate(planned):
        if len(outputs) == len(wanted):
            break
        x = step(index, x)
        if layer.spec.name in wanted:
            outputs[layer.spec.name] = x
    return outputs


if __doc__:  # None under python -OO
    __doc__ = __doc__.replace("{token_table}", token_table())
