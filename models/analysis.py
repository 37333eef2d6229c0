"""Where the parameters and the multiply-adds of a network sit, and the MLP with as many parameters.

Pure Python on top of ``architecture.plan``: no Keras, so a table costs nothing to make. Parameter counts are
those of Keras' ``count_params`` (batch norm holds 4 vectors per channel: gamma and beta, trained, and the
moving mean and variance, not trained; 3 in ``B{filters}`` blocks, which have no gamma); the frozen whitening
kernel counts as a parameter but not a trained one. ``tests/test_analysis.py`` checks them against the built
models.

Multiply-adds (MACs) are counted per image for convolutions and dense layers only: a conv computes
``H_out * W_out * k * k * C_in * C_out`` of them, a dense layer ``in * out``. The first conv of a ``B{filters}``
block runs before its pool, at the block's input size. Biases, batch norm, ReLU, GELU, pooling, dropout, the
residual addition and the logits' scaling are elementwise or comparisons and count as 0.
"""

import dataclasses
import math

from models import architecture as A

EARLY, LATE, DENSE = "early convolutions", "late convolutions", "dense layers"
GROUPS = (EARLY, LATE, DENSE)
# Vectors per channel a batch norm layer holds: gamma and beta (trained), moving mean and variance (not).
BN_VECTORS, BN_TRAINED_VECTORS = 4, 2
# Without a scale (inside B{filters} blocks): beta (trained), moving mean and variance (not).
BN_NO_SCALE_VECTORS, BN_NO_SCALE_TRAINED_VECTORS = 3, 1
# Layers that count as convolutions in the early/late groups.
CONV_SPECS = (A.Conv, A.Whitening, A.Residual, A.Block)


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One planned layer: its parameters (all, and trained ones), multiply-adds per image and group."""

    name: str
    kind: str
    output_shape: tuple
    params: int
    trainable_params: int
    macs: int
    group: str  # one of GROUPS, or "" for a layer without weights outside the dense part (pooling, ...)
    share: float  # of the network's parameters, in [0, 1]


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


def _counts(layer):
    """(kind, params, trainable params, MACs per image) of one ``PlannedLayer``."""
    spec, in_shape, out_shape = layer.spec, layer.input_shape, layer.output_shape
    if isinstance(spec, A.Conv):
        counts = _conv_counts(spec.kernel_size, in_shape[2], spec.filters, out_shape[:2], bias=not spec.batch_norm,
                              batch_norm=spec.batch_norm)
        stride = f" stride {spec.stride}" if spec.stride != 1 else ""
        norm = " + BN" if spec.batch_norm else ""
        gelu = " + GELU" if spec.activation == "gelu" else ""
        return (f"conv {spec.kernel_size}x{spec.kernel_size}{stride} {spec.padding}{norm}{gelu}", *counts)
    if isinstance(spec, A.Whitening):
        counts = _conv_counts(spec.kernel_size, in_shape[2], spec.filters, out_shape[:2], bias=spec.bias,
                              batch_norm=False, trainable=False)
        bias = " + trained bias" if spec.bias else ""
        gelu = " + GELU" if spec.activation == "gelu" else ""
        return (f"frozen whitening conv {spec.kernel_size}x{spec.kernel_size} valid{bias}{gelu}", *counts)
    if isinstance(spec, A.Block):
        # conv1 at the input size, then the pool halves it for conv2; both 3x3 `same` without bias.
        parts = [_conv_counts(3, channels, spec.filters, hw, bias=False, batch_norm=True, bn_scale=False)
                 for channels, hw in ((in_shape[2], in_shape[:2]), (spec.filters, out_shape[:2]))]
        kind = "block: conv 3x3, max pool 2, BN, GELU, conv 3x3, BN, GELU"
        return (kind, *(sum(column) for column in zip(*parts)))
    if isinstance(spec, A.Residual):
        # Both 3x3 convs and the 1x1 projection keep the spatial size (stride 1, `same`); none has a bias.
        convs = [(3, in_shape[2]), (3, spec.filters)] + ([(1, in_shape[2])] if spec.projection else [])
        parts = [_conv_counts(size, channels, spec.filters, out_shape[:2], bias=False, batch_norm=True)
                 for size, channels in convs]
        kind = "residual: 2 conv 3x3 + BN" + (", 1x1 conv + BN skip" if spec.projection else "")
        return (kind, *(sum(column) for column in zip(*parts)))
    if isinstance(spec, A.Dense):
        params = in_shape[0] * spec.units + (spec.units if spec.bias else 0)
        kind = "dense" if spec.activation else "logits"
        if not spec.bias:
            kind += ", no bias"
        if spec.scale != 1.0:
            kind += f", x {spec.scale:.4g}"
        return (kind, params, params, in_shape[0] * spec.units)
    if isinstance(spec, A.Pool):
        return (f"{spec.kind} pool {spec.size}", 0, 0, 0)
    if isinstance(spec, A.GlobalPool):
        return (f"global {spec.kind} pool", 0, 0, 0)
    if isinstance(spec, A.Dropout):
        return (f"dropout {spec.rate:g}", 0, 0, 0)
    if isinstance(spec, A.Flatten):
        return ("flatten", 0, 0, 0)
    raise TypeError(f"no parameter count for {spec!r}")


def layer_table(arch, input_shape, num_classes):
    """One ``LayerRow`` per layer of ``architecture.plan(arch, input_shape, num_classes)``, in order.

    Groups: the first half of the conv, whitening, residual and block layers (rounded up) are the early
    convolutions, the rest the late ones; dense layers and the logits are the dense layers. Raises
    ``ValueError`` as ``plan`` does.
    """
    planned = A.plan(arch, input_shape, num_classes)
    convs = [layer.spec.name for layer in planned if isinstance(layer.spec, CONV_SPECS)]
    early = set(convs[:math.ceil(len(convs) / 2)])
    counted = [(layer, *_counts(layer)) for layer in planned]
    total = sum(params for _, _, params, _, _ in counted)
    rows = []
    for layer, kind, params, trainable, macs in counted:
        spec = layer.spec
        if isinstance(spec, A.Dense):
            group = DENSE
        elif isinstance(spec, CONV_SPECS):
            group = EARLY if spec.name in early else LATE
        else:
            group = ""
        rows.append(LayerRow(spec.name, kind, layer.output_shape, params, trainable, macs, group,
                             share=params / total))
    return rows


def totals(rows):
    """(params, trainable params, MACs per image) summed over ``rows``."""
    return (sum(r.params for r in rows), sum(r.trainable_params for r in rows), sum(r.macs for r in rows))


def _shape(shape):
    return "x".join(str(d) for d in shape)


def _percent(part, whole):
    return f"{100 * part / whole:.2f}%" if whole else "-"


def format_table(rows, title=None):
    """A markdown table of ``rows`` (from ``layer_table``), then one subtotal row per group and a total row."""
    params, _, macs = totals(rows)
    header = ["layer", "kind", "output", "params", "trainable", "share of params", "MACs / image",
              "share of MACs"]

    def line(name, kind, output, p, t, m):
        return [name, kind, output, f"{p:,}", f"{t:,}", _percent(p, params), f"{m:,}", _percent(m, macs)]

    body = [line(r.name, r.kind, _shape(r.output_shape), r.params, r.trainable_params, r.macs) for r in rows]
    for group in GROUPS:
        members = [r for r in rows if r.group == group]
        if members:
            count = f"{len(members)} layer{'s' if len(members) > 1 else ''}"
            body.append(line(f"*{group}*", count, "", *totals(members)))
    body.append(line("**total**", "", "", *totals(rows)))
    lines = [f"### {title}", ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    lines += ["", ("MACs: multiply-adds per image of convolutions and dense layers; biases, batch norm, "
                   "activations, pooling and residual additions are counted as 0.")]
    return "\n".join(lines)


def _mlp(width, depth):
    return "-".join([f"d{width}"] * depth)


def _mlp_params(width, depth, inputs, num_classes):
    """Parameters of ``depth`` dense layers of ``width`` units on ``inputs`` features, plus the logits."""
    return (inputs + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * num_classes


def similar_mlp(arch, input_shape, num_classes, depth=None, tolerance=0.02):
    """The MLP ``d{u}-...-d{u}`` (``depth`` equal hidden layers) whose parameter count is within ``tolerance``
    (relative) of that of ``arch``.

    ``depth`` defaults to the number of dense layers of ``arch`` before the logits, at least 1. The width solves
    ``params(u) = target`` (linear for one hidden layer, quadratic otherwise), rounded to the nearest integer
    that fits. Raises ``ValueError`` when no width is within the tolerance, e.g. when ``arch`` has fewer
    parameters than the 1-unit MLP.
    """
    target = totals(layer_table(arch, input_shape, num_classes))[0]
    if depth is None:
        planned = A.plan(arch, input_shape, num_classes)
        depth = max(1, sum(isinstance(layer.spec, A.Dense) for layer in planned) - 1)
    if depth < 1:
        raise ValueError(f"MLP depth must be at least 1, got {depth}")
    inputs = math.prod(input_shape)
    # params(u) = a u^2 + b u + c, with a = depth - 1.
    a, b, c = depth - 1, inputs + 1 + (depth - 1) + num_classes, num_classes
    if a == 0:
        width = (target - c) / b
    else:
        width = (-b + math.sqrt(b * b + 4 * a * (target - c))) / (2 * a) if target > c else 0.0
    candidates = {max(1, math.floor(width)), max(1, math.ceil(width))}
    best = min(candidates, key=lambda u: abs(_mlp_params(u, depth, inputs, num_classes) - target))
    closest = _mlp_params(best, depth, inputs, num_classes)
    if abs(closest - target) > tolerance * target:
        why = (f"even the smallest, '{_mlp(1, depth)}', has {closest:,}" if target < closest and best == 1 else
               f"the closest, '{_mlp(best, depth)}', has {closest:,}")
        raise ValueError(f"no MLP of {depth} equal hidden layer(s) on {_shape(input_shape)} images has its "
                         f"parameter count within {tolerance:.0%} of the {target:,} of '{A.resolve(arch)}': {why}")
    return _mlp(best, depth)


def report(arch, input_shape, num_classes, compare_mlp=True, mlp_depth=None):
    """The text ``python -m experiments.analyze`` prints: the table of ``arch``, and optionally that of the MLP
    with as many parameters and a one-line comparison. Raises ``ValueError`` as ``similar_mlp`` does."""
    arch = A.resolve(arch)
    where = f"on {_shape(input_shape)} images, {num_classes} classes"
    rows = layer_table(arch, input_shape, num_classes)
    parts = [format_table(rows, title=f"{arch} {where}")]
    if compare_mlp:
        mlp = similar_mlp(arch, input_shape, num_classes, depth=mlp_depth)
        mlp_rows = layer_table(mlp, input_shape, num_classes)
        parts.append(format_table(mlp_rows, title=f"MLP of similar size: {mlp} {where}"))
        (params, _, macs), (mlp_params, _, mlp_macs) = totals(rows), totals(mlp_rows)
        parts.append(f"{arch}: {params:,} params, {macs:,} MACs/image; {mlp}: {mlp_params:,} params "
                     f"({mlp_params / params:.3f}x), {mlp_macs:,} MACs/image ({mlp_macs / macs:.3f}x)")
    return "\n\n".join(parts)
