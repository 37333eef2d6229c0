"""The sweeps' questions as plots, drawn from their committed run files alone (``python3 -m experiments.plots``).

Each plot reads the runs of a grid on two or three datasets (``committed.read_sweep``: results.json and config.json
under ``sweeps/runs/sweeps``) and draws, per point, the mean accuracy over its seeds with the 95% t-interval of that
mean (``stats.summarize``) as error bars; the title says how many seeds. matplotlib (requirements-dev.txt) is
imported only when a plot is drawn: nothing else in the project needs it.
"""

import dataclasses
import io
import math
import os
import re

from experiments import committed, stats
from models import analysis
from training import run_files
from training.dataset_info import describe
from training.errors import OneLineError

DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
# Each bar is a point's own interval; two points' runs share seeds, so WORKSPACE.md section 7 judges a difference by
# its interval paired by seed, which two overlapping bars here do not decide.
BARS = "bars: 95% t-interval of each point's mean (not paired by seed)"
ACCURACY = "accuracy (%)"
TEST, VALIDATION = ("test_accuracy", "test"), ("validation_accuracy", "validation")
# A run whose test accuracy is below 1.5x chance diverged: a constant prediction scores its class's share of the
# test set (10.00% on CIFAR-10 and Fashion-MNIST, 11.35% for MNIST's "1"); the lowest other run of these grids is
# CIFAR-10's 14-unit MLP at 18.60%.
DIVERGED_BELOW_CHANCE_TIMES = 1.5
DPI = 100  # a 15 x 5 inch figure is 1500 x 500 pixels


class PlotError(OneLineError, RuntimeError):
    """A plot that cannot be drawn (matplotlib missing, no runs); the message says why."""


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotError("matplotlib is not installed; python3 -m pip install -r requirements-dev.txt installs "
                        "it") from None
    matplotlib.use("Agg")  # files only: no display is needed or opened
    from matplotlib import pyplot

    return pyplot


@dataclasses.dataclass(frozen=True)
class Mark:
    """A point's accuracy over its seeds, in percent: mean, the 95% interval of the mean, and each seed's."""

    mean: float
    low: float
    high: float
    values: tuple

    @property
    def error(self):
        """Below and above the mean, for an error bar (none for one seed)."""
        return (0.0, 0.0) if math.isnan(self.low) else (self.mean - self.low, self.high - self.mean)


def mark(point, key):
    values = tuple(100 * run.results[key] for run in point.runs)
    summary = stats.summarize(values)
    return Mark(summary.mean, summary.low, summary.high, values)


def read(runs_dir, grid_name, dataset_name):
    points = committed.read_sweep(runs_dir, grid_name, dataset_name)
    if not points:
        raise PlotError(f"no runs of grid {grid_name} on {dataset_name} under {os.path.join(runs_dir, 'sweeps')}")
    return points


def seeds_text(points_by_dataset):
    """``"mean of n=3 seeds (0-2) per point"``, from the seeds the runs record."""
    counts = {len(point.runs) for points in points_by_dataset for point in points}
    seeds = sorted({run.results.get("seed") for points in points_by_dataset for point in points
                    for run in point.runs} - {None})
    n = f"n={min(counts)}" if len(counts) == 1 else f"n={min(counts)}-{max(counts)}"
    named = f" ({seeds[0]}-{seeds[-1]})" if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)) else ""
    return f"mean of {n} seeds{named} per point"


def budget_text(dataset_name, points):
    """``"MNIST: 600 steps x 128 images"``, as the runs record them."""
    steps = sorted({run.results["train_steps"] for point in points for run in point.runs})
    batch = sorted({run.results.get("batch_size") for point in points for run in point.runs} - {None})
    return (f"{DATASET_NAMES.get(dataset_name, dataset_name)}: {'/'.join(f'{s:,}' for s in steps)} steps"
            + (f" x {'/'.join(map(str, batch))} images" if batch else ""))


def _figure(pyplot, panels, title, width_per_panel=6.0, height=5.0):
    figure, axes = pyplot.subplots(1, panels, figsize=(width_per_panel * panels, height), squeeze=False)
    figure.suptitle(title, fontsize=11)
    return figure, axes[0]


def _save(pyplot, figure, out_dir, name, legend_rows=1, sort_legend=False):
    """Writes ``figure`` with one legend below its panels: each label any panel drew, once (in order of name with
    ``sort_legend``, else of first drawing)."""
    unique = {}
    for axis in figure.axes:
        handles, labels = axis.get_legend_handles_labels()
        unique.update((label, handle) for label, handle in zip(labels, handles) if label not in unique)
    unique = dict(sorted(unique.items(), key=lambda item: item[0])) if sort_legend else unique
    figure.legend(unique.values(), unique.keys(), loc="lower center", fontsize=9,
                  ncol=math.ceil(len(unique) / legend_rows))
    figure.tight_layout(rect=(0, 0.05 * legend_rows + 0.02, 1, 1))
    run_files.make_folder(out_dir, "pass another --out")
    path = os.path.join(out_dir, name)
    picture = io.BytesIO()
    figure.savefig(picture, dpi=DPI, format="png")
    pyplot.close(figure)
    # Whole or not at all, and never through a link planted at the name (savefig followed one).
    run_files.write_atomically(path, picture.getvalue(), "a plot is never written through a link: remove the "
                               "link, or pass another --out")
    return path


# --- (1) Kernel size: test and validation accuracy, `same` and `valid` padding. ---

KERNEL_LABEL = re.compile(r"(same|valid)-k(\d+)")


def kernel_series(points):
    """``{(padding, split name): [(kernel size, Mark)]}`` of a filter_size sweep's points, by kernel size."""
    series = {}
    for point in points:
        padding, size = KERNEL_LABEL.fullmatch(point.label).groups()
        for key, split in (TEST, VALIDATION):
            series.setdefault((padding, split), []).append((int(size), mark(point, key)))
    return {name: sorted(marks) for name, marks in series.items()}


def plot_kernel_size(runs_dir, out_dir, datasets=("mnist", "fashion_mnist")):
    pyplot = _pyplot()
    points = {name: read(runs_dir, "filter_size", name) for name in datasets}
    figure, axes = _figure(pyplot, len(datasets), "Accuracy against kernel size: one conv layer of 32 k x k filters, "
                           "2x2 max pool (none after valid k = H: a 1x1 map), 128 dense units\n"
                           f"{seeds_text(points.values())}; {BARS}")
    styles = {"same": dict(color="tab:blue", marker="o"), "valid": dict(color="tab:orange", marker="s")}
    shifts = {("same", "test"): 0.96, ("same", "validation"): 0.98, ("valid", "test"): 1.02,
              ("valid", "validation"): 1.04}  # apart on the log axis, so that the bars do not cover each other
    for axis, (name, dataset_points) in zip(axes, points.items()):
        sizes = set()
        for (padding, split), marks in sorted(kernel_series(dataset_points).items()):
            sizes |= {size for size, _ in marks}
            hollow = split == "validation"
            axis.errorbar([size * shifts[padding, split] for size, _ in marks], [m.mean for _, m in marks],
                          yerr=list(zip(*(m.error for _, m in marks))), capsize=3, linestyle="--" if hollow else "-",
                          markerfacecolor="white" if hollow else styles[padding]["color"],
                          label=f"{padding} padding, {split}", **styles[padding])
        axis.set_xscale("log", base=2)
        axis.set_xticks(sorted(sizes), [str(size) for size in sorted(sizes)])
        axis.minorticks_off()
        axis.set_xlabel("kernel size k (pixels; a k x k kernel, log scale)")
        axis.set_ylabel(ACCURACY)
        axis.set_title(budget_text(name, dataset_points), fontsize=10)
        axis.grid(alpha=0.3)
    return _save(pyplot, figure, out_dir, "sweep_filter_size.png")


# --- (2) and (4): a dot plot of every point of a grid, test and validation. ---

def _diverged(point, dataset_name):
    """The test accuracies (%) of the point's runs that diverged (``DIVERGED_BELOW_CHANCE_TIMES``)."""
    below = 100 * DIVERGED_BELOW_CHANCE_TIMES / describe(dataset_name).num_classes
    return [value for value in mark(point, TEST[0]).values if value < below]


def _row_label(point, dataset_name, show_arch):
    label = point.label + (f"\n{point.overrides['arch']}" if show_arch else "")
    diverged = _diverged(point, dataset_name)
    if diverged:
        values = sorted({f"{value:.2f}%" for value in diverged})
        label += f"\n{len(diverged)} of {len(point.runs)} seeds diverged\n(test {', '.join(values)}): no mean"
    return label


def dot_panel(axis, points, dataset_name, show_arch=False, seeds=False):
    """One row per point, top to bottom: validation (hollow) and test (filled) mean with the 95% interval as a
    horizontal bar, and with ``seeds`` each run's test accuracy as a gray cross below them. A point some of whose
    runs diverged gets no mean: its row's label says so, and its other runs are drawn as crosses."""
    for row, point in enumerate(points):
        y = len(points) - 1 - row
        diverged = _diverged(point, dataset_name)
        if seeds or diverged:
            kept = [value for value in mark(point, TEST[0]).values if value not in diverged]
            axis.plot(kept, [y - 0.28] * len(kept), "x", color="gray", markersize=5, label="test, each seed")
        if diverged:
            continue
        for (key, split), shift, face in ((VALIDATION, 0.2, "white"), (TEST, -0.05, "tab:blue")):
            m = mark(point, key)
            axis.errorbar([m.mean], [y + shift], xerr=[[m.error[0]], [m.error[1]]], fmt="o", color="tab:blue",
                          markerfacecolor=face, capsize=3, label=f"{split}: mean and 95% interval")
    axis.set_yticks(range(len(points)), [_row_label(point, dataset_name, show_arch) for point in reversed(points)],
                    fontsize=8)
    axis.set_ylim(-0.6, len(points) - 0.4)
    axis.set_xlabel(ACCURACY)
    axis.grid(axis="x", alpha=0.3)


def plot_downsampling(runs_dir, out_dir, datasets=("mnist", "fashion_mnist")):
    pyplot = _pyplot()
    points = {name: read(runs_dir, "downsampling", name) for name in datasets}
    figure, axes = _figure(pyplot, len(datasets), "Accuracy by downsampling: two 3x3 conv layers (32, 64 filters) "
                           f"and 128 dense units\n{seeds_text(points.values())}; {BARS}", height=4.5)
    for axis, (name, dataset_points) in zip(axes, points.items()):
        dot_panel(axis, dataset_points, name, show_arch=True)
        axis.set_title(budget_text(name, dataset_points), fontsize=10)
    return _save(pyplot, figure, out_dir, "sweep_downsampling.png")


def plot_optimizer(runs_dir, out_dir, datasets=("mnist", "fashion_mnist", "cifar10")):
    pyplot = _pyplot()
    points = {name: read(runs_dir, "optimizer", name) for name in datasets}
    figure, axes = _figure(pyplot, len(datasets), "Optimizers on small_cnn (c16k5-m2-c32k5-m2-d128): Adam 1e-3 "
                           "(constant, cosine) against SGD, Nesterov momentum 0.9, cosine decay from lr\n"
                           f"{seeds_text(points.values())}; {BARS}", width_per_panel=5.5)
    for axis, (name, dataset_points) in zip(axes, points.items()):
        dot_panel(axis, dataset_points, name, seeds=True)
        axis.set_title(budget_text(name, dataset_points), fontsize=10)
    return _save(pyplot, figure, out_dir, "sweep_optimizer.png")


# --- (3) CNN against MLP, by parameters and by multiply-adds. ---

def macs(arch, dataset_name):
    """Multiply-adds per image of ``arch`` on the dataset's images (``models.analysis``)."""
    info = describe(dataset_name)
    return analysis.totals(analysis.layer_table(arch, info.image_shape, info.num_classes))[2]


def network_kind(label, arch):
    """``(series name, marker style, x factor)`` of a cnn_vs_mlp point: CNNs in blue circles, MLPs in red triangles
    (up: one hidden layer, down: two); points of one size are drawn a few percent apart along x (the factor), so
    that their bars stay apart; in the order CNN, CNN with dropout, MLPs."""
    dropout = "drop" in arch
    if not label.startswith("mlp"):
        return "CNN", dict(color="tab:blue", marker="o"), (0.84 if not dropout else 0.9)
    depth = sum(token.startswith("d") and not token.startswith("drop") for token in arch.split("-"))
    marker = "^" if depth == 1 else "v"
    return (f"MLP, {depth} hidden layer{'s' if depth > 1 else ''}", dict(color="tab:red", marker=marker),
            {(1, False): 0.96, (1, True): 1.02, (2, False): 1.08, (2, True): 1.14}[depth, dropout])


def plot_cnn_vs_mlp(runs_dir, out_dir, by, datasets=("mnist", "fashion_mnist", "cifar10")):
    """Test accuracy against parameters (``by="params"``) or multiply-adds per image (``by="macs"``), log scale."""
    pyplot = _pyplot()
    points = {name: read(runs_dir, "cnn_vs_mlp", name) for name in datasets}
    what = {"params": "parameters (weights and biases, log scale)",
            "macs": "multiply-adds per image (convolutions and dense layers, log scale)"}[by]
    figure, axes = _figure(pyplot, len(datasets), f"CNN against MLP of about the same parameters: test accuracy "
                           f"against {what.split(' (')[0]}\n{seeds_text(points.values())}; {BARS}; hollow: dropout "
                           "0.5 after each hidden dense layer; points of one size drawn a few percent apart along "
                           "x", width_per_panel=5.5)
    for axis, (name, dataset_points) in zip(axes, points.items()):
        for point in dataset_points:
            arch = point.overrides["arch"]
            kind, style, apart = network_kind(point.label, arch)
            x = point.runs[0].results["params"] if by == "params" else macs(arch, name)
            m = mark(point, TEST[0])
            dropout = "drop" in arch
            axis.errorbar([x * apart], [m.mean], yerr=[[m.error[0]], [m.error[1]]], capsize=3, linestyle="none",
                          markerfacecolor="white" if dropout else style["color"],
                          label=kind + (", dropout 0.5" if dropout else ""), **style)
            if kind == "CNN" and not dropout:
                axis.annotate(point.label.removesuffix("_nodrop"), (x * apart, m.high), textcoords="offset points",
                              xytext=(0, 4), ha="center", va="bottom", fontsize=7)
        axis.set_xscale("log")
        axis.set_xlabel(what)
        axis.set_ylabel(f"test {ACCURACY}")
        axis.set_title(budget_text(name, dataset_points), fontsize=10)
        axis.grid(alpha=0.3)
        axis.margins(x=0.12, y=0.1)  # room for the CNNs' names above their bars
    return _save(pyplot, figure, out_dir, f"sweep_cnn_vs_mlp_{by}.png", legend_rows=2, sort_legend=True)


def draw_all(runs_dir, out_dir):
    """Every plot, from the runs under ``<runs_dir>/sweeps`` and the learning curves of those under
    ``<runs_dir>/seeds`` (``experiments.curves``), into ``out_dir``; returns their paths."""
    from experiments import curves

    return [plot_kernel_size(runs_dir, out_dir), plot_downsampling(runs_dir, out_dir),
            plot_cnn_vs_mlp(runs_dir, out_dir, "params"), plot_cnn_vs_mlp(runs_dir, out_dir, "macs"),
            plot_optimizer(runs_dir, out_dir),
            *curves.draw_curves(_pyplot(), os.path.join(runs_dir, "seeds"), out_dir, _save)]
