"""Where the parameters and the multiply-adds of a network sit, and the MLP with as many parameters.

Pure Python on top of ``architecture.plan`` and the counts each layer kind declares (``architecture.KINDS``): no
Keras, so a table costs nothing to make. Parameter counts are those of Keras' ``count_params`` (batch norm holds
4 vectors per channel: gamma and beta, trained, and the moving mean and variance, not trained; 3 in
``B{filters}`` blocks, which have no gamma); the frozen whitening kernel counts as a parameter but not a trained
one. ``tests/test_analysis.py`` checks them against the built models.

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


def layer_table(arch, input_shape, num_classes):
    """One ``LayerRow`` per layer of ``architecture.plan(arch, input_shape, num_classes)``, in order.

    Groups: the first half (rounded up) of the layers whose kind is a convolution (``architecture.CONV``: conv,
    whitening, residual and block layers) are the early convolutions, the rest the late ones; dense layers and
    the logits are the dense layers. Raises ``ValueError`` as ``plan`` does.
    """
    planned = A.plan(arch, input_shape, num_classes)
    convs = A.layers_of_role(planned, A.CONV)
    early = set(convs[:math.ceil(len(convs) / 2)])
    counted = [(layer, A.kind_of(layer.spec).count(layer)) for layer in planned]
    total = sum(counts.params for _, counts in counted)
    return [LayerRow(layer.spec.name, counts.description, layer.output_shape, counts.params, counts.trainable,
                     counts.macs, _group(layer.spec, early), share=counts.params / total)
            for layer, counts in counted]


def _group(spec, early):
    role = A.kind_of(spec).role
    if role == A.CONV:
        return EARLY if spec.name in early else LATE
    return DENSE if role == A.DENSE else ""


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


def _quoted_mlp(width, depth):
    """That MLP as an error message names it: in full up to 4 layers, else its ends and depth (--mlp_depth goes to
    1,000, and the message stays one readable line)."""
    return f"'{_mlp(width, depth)}'" if depth <= 4 else f"'d{width}-...-d{width}' ({depth} layers)"


def _mlp_params(width, depth, inputs, num_classes):
    """Parameters of ``depth`` dense layers of ``width`` units on ``inputs`` features, plus the logits."""
    return (inputs + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * num_classes


def _mlp_macs(width, depth, inputs, num_classes):
    """Multiply-adds per image of that MLP: one per weight, none for the biases."""
    return inputs * width + (depth - 1) * width * width + width * num_classes


MATCHED = {"params": 0, "macs": 2}  # what similar_mlp matches: the index of that count in ``totals``


def similar_mlp(arch, input_shape, num_classes, depth=None, tolerance=0.02, by="params"):
    """The MLP ``d{u}-...-d{u}`` (``depth`` equal hidden layers) whose parameter count (``by="params"``) or
    multiply-adds per image (``by="macs"``) is within ``tolerance`` (relative) of that of ``arch``.

    ``depth`` defaults to the number of dense layers of ``arch`` before the logits, at least 1. The width solves
    ``count(u) = target`` (linear for one hidden layer, quadratic otherwise), rounded to the nearest integer
    that fits. Raises ``ValueError`` when no width is within the tolerance, e.g. when ``arch`` has fewer
    parameters than the 1-unit MLP.
    """
    target = totals(layer_table(arch, input_shape, num_classes))[MATCHED[by]]
    if depth is None:
        planned = A.plan(arch, input_shape, num_classes)
        depth = max(1, len(A.layers_of_role(planned, A.DENSE)) - 1)
    if depth < 1:
        raise ValueError(f"MLP depth must be at least 1, got {depth}")
    inputs = math.prod(input_shape)
    # count(u) = a u^2 + b u + c, with a = depth - 1.
    if by == "params":
        count, a, b, c = _mlp_params, depth - 1, inputs + 1 + (depth - 1) + num_classes, num_classes
    else:
        count, a, b, c = _mlp_macs, depth - 1, inputs + num_classes, 0
    if a == 0:
        width = (target - c) / b
    else:
        width = (-b + math.sqrt(b * b + 4 * a * (target - c))) / (2 * a) if target > c else 0.0
    candidates = {max(1, math.floor(width)), max(1, math.ceil(width))}
    best = min(candidates, key=lambda u: abs(count(u, depth, inputs, num_classes) - target))
    closest = count(best, depth, inputs, num_classes)
    what = "parameter count" if by == "params" else "multiply-adds per image"
    if abs(closest - target) > tolerance * target:
        why = (f"even the smallest, {_quoted_mlp(1, depth)}, has {closest:,}" if target < closest and best == 1 else
               f"the closest, {_quoted_mlp(best, depth)}, has {closest:,}")
        raise ValueError(f"no MLP of {depth} equal hidden layer(s) on {_shape(input_shape)} images has its "
                         f"{what} within {tolerance:.0%} of the {target:,} of '{A.resolve(arch)}': {why}")
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
