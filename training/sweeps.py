"""Named grids of training runs, the runner that trains each point over seeds, and the markdown report.

A grid is a list of points, each a label and the ``TrainConfig`` fields it overrides. Every point is trained
with seeds 0..n-1 at the grid's step budget, each run in its own directory
``<logdir>/<grid>/<dataset>/<label>-seed<k>``. A run whose directory already holds results.json of the same
configuration is reused instead of trained again, so an interrupted sweep continues where it stopped.
``python -m training.sweep`` is the command; everything here takes plain arguments.
"""

import dataclasses
import datetime
import inspect
import json
import os
import platform
import re
import statistics
import subprocess
import time

import keras
import tensorflow as tf
from absl import logging

from models import analysis, architecture
from training import data as data_lib
from training import trainer
from training.config import TrainConfig

# Optimizer steps per run: 76,800 images at batch 128 (1.28 MNIST epochs). A small net trains at 5-15k images/s
# on this project's 2-core machine (~10 s a run), the default mnist_cnn at ~2.5k images/s (~35 s a run).
DEFAULT_TRAIN_STEPS = 600
DEFAULT_BATCH_SIZE = 128  # global batch size, images per step
REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Labels name run directories: letters, digits and . _ + - only.
_LABEL = re.compile(r"[A-Za-z0-9._+-]+")
# The sweep sets these for every run; a point may not override them.
_SET_BY_SWEEP = ("dataset", "data_dir", "seed", "train_steps", "epochs", "batch_size", "logdir", "resume")
# Config fields that do not change what a run computes: an earlier run may differ from the sweep's only in these.
_BOOKKEEPING = ("data_dir", "allow_download", "logdir", "resume", "log_every", "eval_every", "checkpoint_every")
SMALL_CNN = "c16k5-m2-c32k5-m2-d128"  # 215,370 weights on MNIST; ~4x cheaper per image than mnist_cnn


class SweepError(RuntimeError):
    """A sweep that cannot go on (a run directory holding another configuration); the message says why."""


@dataclasses.dataclass(frozen=True)
class Grid:
    """Points to train, each ``(label, overrides)`` with ``overrides`` a dict of ``TrainConfig`` fields."""

    name: str
    description: str  # what the grid compares and the rule that makes its points
    points: tuple
    train_steps: int = DEFAULT_TRAIN_STEPS  # per run, unless the sweep is given another budget
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self):
        fields = {field.name for field in dataclasses.fields(TrainConfig)}
        labels = [label for label, _ in self.points]
        if not labels or len(set(labels)) != len(labels):
            raise ValueError(f"grid {self.name}: labels must be present and distinct, got {labels}")
        for label, overrides in self.points:
            if not _LABEL.fullmatch(label):
                raise ValueError(f"grid {self.name}: label '{label}' may hold only letters, digits and . _ + -")
            unknown = set(overrides) - fields
            reserved = set(overrides) & set(_SET_BY_SWEEP)
            if unknown or reserved:
                raise ValueError(f"grid {self.name}, point {label}: cannot override {sorted(unknown | reserved)}; "
                                 f"points set TrainConfig fields other than {', '.join(_SET_BY_SWEEP)}")

    @property
    def varied(self):
        """The settings the points override besides ``arch``, in order of first appearance: table columns."""
        names = []
        for _, overrides in self.points:
            names += [name for name in overrides if name != "arch" and name not in names]
        return names


# --- The named grids: each a function of the dataset's image shape (H, W, C) and class count. ---

def filter_size(image_shape, num_classes):
    """One conv stage with kernel sizes from 1 to the whole image, with `same` and with `valid` padding.

    Kernel sizes k = 1, 3, 5, 7, 9, H/2 and H for H x H images (H = 28 on MNIST: up to 14 and 28).
    `same-k{k}` is `c32k{k}-m2-d128`: 32 filters, a 2x2 max pool, 128 dense units; the conv output stays
    H x H, so every k feeds the same dense layer. `valid-k{k}` is `c32k{k}v-m2-d128`: the conv output shrinks
    to (H-k+1) x (H-k+1), and so does the dense layer's input; when it is smaller than 2x2 the pool is dropped
    (k = H: `c32k{H}v-d128`, a 1x1 output, i.e. a dense layer of 32 ReLU units in disguise). k = 1 has no
    valid point: a 1x1 kernel pads nothing, so it is `same-k1`.
    """
    del num_classes  # The same networks for any class count.
    height = min(image_shape[:2])
    kernels = sorted({1, 3, 5, 7, 9, height // 2, height})
    points = [(f"same-k{k}", {"arch": f"c32k{k}-m2-d128"}) for k in kernels]
    for k in kernels[1:]:
        pool = "-m2" if height - k + 1 >= 2 else ""
        points.append((f"valid-k{k}", {"arch": f"c32k{k}v{pool}-d128"}))
    return points


def downsampling(image_shape, num_classes):
    """Two 3x3 conv stages (32, 64 filters) downsampled by max pooling, average pooling, stride 2, or not at all.

    `max`: `c32k3-m2-c64k3-m2-d128`; `avg`: `c32k3-a2-c64k3-a2-d128`; `stride2`: `c32k3s2-c64k3s2-d128` (each
    halves H and W twice, so the dense layer sees (H/4) x (W/4) x 64 in all three). `none`: `c32k3-c64k3-d128`
    keeps H x W, so its dense layer is 16x larger (6.4M weights on MNIST) and its second conv, at H x W instead
    of H/2 x W/2 positions, 4x costlier.
    """
    del image_shape, num_classes  # Every dataset here is at least 28x28: all four fit.
    return [("max", {"arch": "c32k3-m2-c64k3-m2-d128"}), ("avg", {"arch": "c32k3-a2-c64k3-a2-d128"}),
            ("stride2", {"arch": "c32k3s2-c64k3s2-d128"}), ("none", {"arch": "c32k3-c64k3-d128"})]


def cnn_vs_mlp(image_shape, num_classes):
    """CNNs against MLPs of about the same number of weights (within 2%), with 1 and with 2 hidden layers.

    CNNs: `mnist_cnn` (the default), `keras_convnet` (the Keras example) and `small_cnn`
    (`c16k5-m2-c32k5-m2-d128`). For each, `mlp1_like_<cnn>` is `d{w}` and `mlp2_like_<cnn>` is `d{w}-d{w}`,
    with the width w whose weight count (biases included) is closest to the CNN's (`models.analysis.similar_mlp`).
    An MLP that no width brings within 2% is left out (2 hidden layers like `keras_convnet` on 32x32x3 images,
    where one more unit adds ~3k weights to its 42k). The CNN presets keep their dropout (`drop0.5`); the MLPs
    have none.
    """
    points = []
    for label, arch in (("mnist_cnn", "mnist_cnn"), ("keras_convnet", "keras_convnet"), ("small_cnn", SMALL_CNN)):
        points.append((label, {"arch": architecture.resolve(arch)}))
        for depth in (1, 2):
            try:
                mlp = analysis.similar_mlp(arch, image_shape, num_classes, depth)
            except ValueError:  # no width within 2%
                continue
            points.append((f"mlp{depth}_like_{label}", {"arch": mlp}))
    return points


def optimizer(image_shape, num_classes):
    """Adam at its usual constant rate against SGD with Nesterov momentum and cosine decay at tuned rates.

    All points train `small_cnn` (`c16k5-m2-c32k5-m2-d128`). `adam-constant`: Adam, learning rate 1e-3,
    constant. `adam-cosine`: the same with cosine decay to 0, to separate the optimizer from the schedule.
    `sgd-lr{r}`: SGD, momentum 0.9, Nesterov, cosine decay from r to 0, for r in 0.01, 0.03, 0.1, 0.3
    (a grid by factors of ~3; its best point should not sit at an end).
    """
    del image_shape, num_classes
    adam = dict(arch=SMALL_CNN, optimizer="adam", learning_rate=1e-3)
    points = [("adam-constant", dict(adam, lr_schedule="constant")), ("adam-cosine", dict(adam, lr_schedule="cosine"))]
    for rate in (0.01, 0.03, 0.1, 0.3):
        points.append((f"sgd-lr{rate:g}", dict(arch=SMALL_CNN, optimizer="sgd", learning_rate=rate,
                                                lr_schedule="cosine", momentum=0.9, nesterov=True)))
    return points


# name -> (function making the points, default optimizer steps per run)
GRIDS = {
    "filter_size": (filter_size, DEFAULT_TRAIN_STEPS),
    "downsampling": (downsampling, DEFAULT_TRAIN_STEPS),
    "cnn_vs_mlp": (cnn_vs_mlp, DEFAULT_TRAIN_STEPS),
    "optimizer": (optimizer, DEFAULT_TRAIN_STEPS),
}


def make_grid(name, dataset_name):
    """The named grid for ``dataset_name`` (a key of ``data.DATASETS``); its description is its docstring."""
    make_points, train_steps = GRIDS[name]
    info = data_lib.DATASETS[dataset_name]
    points = tuple(make_points(info.image_shape, info.num_classes))
    return Grid(name, inspect.getdoc(make_points), points, train_steps=train_steps)


# --- Running a grid. ---

@dataclasses.dataclass
class Run:
    results: dict  # what the run's results.json holds
    reused: bool  # read from an earlier run's results.json instead of trained now


@dataclasses.dataclass
class PointResult:
    label: str
    overrides: dict
    runs: list  # one Run per seed


def run_dir(logdir, grid_name, dataset_name, label, seed):
    return os.path.join(logdir, grid_name, dataset_name, f"{label}-seed{seed}")


def run_config(grid, label, overrides, dataset_name, seed, train_steps, logdir, data_dir=""):
    """The ``TrainConfig`` of one run of one point."""
    return dataclasses.replace(
        TrainConfig(), dataset=dataset_name, data_dir=data_dir, batch_size=grid.batch_size, train_steps=train_steps,
        seed=seed, logdir=run_dir(logdir, grid.name, dataset_name, label, seed), resume=True, **overrides)


def reusable_results(config):
    """The results of an earlier, finished run of ``config`` in its run directory, or None when it must train.

    An unfinished run of the same configuration is left for ``train`` to resume. A directory holding a run of
    another configuration (another step budget, a point changed since) raises ``SweepError``.
    """
    config_path = os.path.join(config.logdir, "config.json")
    if not os.path.exists(config_path):
        return None
    with open(config_path) as file:
        earlier = json.load(file)
    wanted = json.loads(json.dumps(dataclasses.asdict(config)))  # tuples -> lists, as config.json holds them
    differ = [name for name in wanted if name not in _BOOKKEEPING and earlier.get(name, wanted[name]) != wanted[name]]
    if differ:
        found = ", ".join(f"{name}={earlier[name]}" for name in differ)
        asked = ", ".join(f"{name}={wanted[name]}" for name in differ)
        raise SweepError(f"{config.logdir} holds a run with {found}, not {asked}; pass another --logdir or remove "
                         f"that directory")
    results_path = os.path.join(config.logdir, "results.json")
    if not os.path.exists(results_path):
        return None
    with open(results_path) as file:
        results = json.load(file)
    return results if results.get("train_steps") == config.train_steps else None


def run_once(config, dataset, name):
    """One run: reused from its run directory when it finished before, else trained. Logs one progress line."""
    results = reusable_results(config)
    if results is not None:
        logging.info("sweep: %s: test accuracy %.2f%%, %.1f s when trained; reused %s/results.json, not trained "
                     "again", name, 100 * results["test_accuracy"], results["wall_seconds"], config.logdir)
        return Run(results, reused=True)
    results = trainer.train(config, dataset=dataset).results
    keras.utils.clear_session()  # drop the finished model's graph state before the next run builds its own
    logging.info("sweep: %s: test accuracy %.2f%%, %.1f s, trained in %s", name, 100 * results["test_accuracy"],
                 results["wall_seconds"], config.logdir)
    return Run(results, reused=False)


def run_sweep(grid, dataset, seeds, logdir, train_steps=None, data_dir="", on_point=None):
    """Trains every point of ``grid`` with seeds 0..seeds-1 on ``dataset`` (a ``data.Dataset``), in-process.

    ``train_steps`` replaces the grid's budget. ``on_point(done)`` is called with the ``PointResult``s so far
    after each point. Returns them all.
    """
    steps = train_steps or grid.train_steps
    done, total = [], len(grid.points) * seeds
    for label, overrides in grid.points:
        runs = []
        for seed in range(seeds):
            config = run_config(grid, label, overrides, dataset.name, seed, steps, logdir, data_dir)
            name = f"run {len(done) * seeds + seed + 1}/{total}, point {label}, seed {seed}"
            runs.append(run_once(config, dataset, name))
        done.append(PointResult(label, dict(overrides), runs))
        if on_point:
            on_point(done)
    return done


def run_and_report(grid, dataset, seeds, logdir, out, command, train_steps=None, data_dir=""):
    """``run_sweep``, rewriting the markdown report ``out`` after every point; returns the ``PointResult``s."""
    record = machine_record()
    steps = train_steps or grid.train_steps
    started = time.time()

    def write(done):
        text = make_report(grid, dataset, steps, seeds, done, record, command, time.time() - started)
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out + ".tmp", "w") as file:
            file.write(text)
        os.replace(out + ".tmp", out)

    write([])
    done = run_sweep(grid, dataset, seeds, logdir, train_steps, data_dir, on_point=write)
    logging.info("sweep: %d points x %d seeds done in %.0f s; table in %s", len(done), seeds,
                 time.time() - started, out)
    return done


# --- The report. ---

def machine_record(repo_dir=REPO_DIR):
    """What made the numbers: machine, CPU count, library versions and the git commit of ``repo_dir``."""
    return dict(machine=platform.machine(), cpus=os.cpu_count(), python=platform.python_version(),
                tensorflow=tf.__version__, keras=keras.__version__, commit=git_commit(repo_dir))


def git_commit(repo_dir):
    """``git rev-parse --short HEAD``, marked "+uncommitted changes" when ``git status --porcelain`` lists any.

    Markdown files do not count: they cannot change a result, and the sweep tables in ``sweeps/`` are this
    command's own output (one sweep's new table would otherwise mark every sweep run after it).
    """
    def git(*args):
        return subprocess.run(["git", *args], cwd=repo_dir, capture_output=True, text=True, check=True).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        changes = git("status", "--porcelain", "--", ".", ":(exclude,glob)**/*.md")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head} +uncommitted changes" if changes else head


def accuracy_spread(accuracies):
    """``("99.00 ± 1.00", "98.00–100.00")`` for accuracies 0.98, 0.99, 1.00: percent mean ± sample standard
    deviation (the mean alone for one run), and min–max."""
    percents = [100 * accuracy for accuracy in accuracies]
    mean = f"{statistics.fmean(percents):.2f}"
    spread = f"{mean} ± {statistics.stdev(percents):.2f}" if len(percents) > 1 else mean
    return spread, f"{min(percents):.2f}–{max(percents):.2f}"


def _cell(overrides, name):
    if name not in overrides:
        return "—"
    value = overrides[name]
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def make_table(varied, points):
    """The markdown table: a row per ``PointResult``, with a column for each name in ``varied``."""
    columns = ["point", "arch", *varied, "test accuracy % (mean ± std)", "min–max %", "params", "images/s",
               "s per run"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for point in points:
        results = [run.results for run in point.runs]
        spread, extremes = accuracy_spread([r["test_accuracy"] for r in results])
        images_per_second = statistics.fmean(r["images_per_second"] for r in results)
        wall_seconds = statistics.fmean(r["wall_seconds"] for r in results)
        cells = [point.label, f"`{architecture.resolve(point.overrides.get('arch', TrainConfig.arch))}`",
                 *(_cell(point.overrides, name) for name in varied), spread, extremes, f"{results[0]['params']:,}",
                 f"{images_per_second:,.0f}", f"{wall_seconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def make_report(grid, dataset, train_steps, seeds, points, record, command, elapsed_seconds):
    """The markdown file of a sweep: what was run, where and how, then the table (of the points done so far)."""
    images = train_steps * grid.batch_size
    runs = [run for point in points for run in point.runs]
    reused = sum(run.reused for run in runs)
    lines = [
        f"# Sweep `{grid.name}` on {dataset.name}", "", grid.description, "",
        "| | |", "| --- | --- |",
        f"| grid | `{grid.name}`: {len(grid.points)} points x {seeds} seeds |",
        f"| dataset | {dataset.name} from {dataset.source}: {len(dataset.x_train):,} training, "
        f"{len(dataset.x_test):,} test images |",
        f"| step budget | {train_steps:,} steps per run at batch size {grid.batch_size}: {images:,} images, "
        f"{images / len(dataset.x_train):.2f} epochs |",
        f"| seeds | {', '.join(map(str, range(seeds)))} |",
        f"| machine | {record['machine']}, {record['cpus']} CPUs |",
        f"| versions | TensorFlow {record['tensorflow']}, Keras {record['keras']}, Python {record['python']} |",
        f"| commit | {record['commit']} |",
        f"| command | `{command}` |",
        f"| runs | {len(runs) - reused} trained, {reused} reused from earlier results.json; {elapsed_seconds:.0f} s "
        f"of wall time in this command |",
        f"| written | {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC |", "",
    ]
    if len(points) < len(grid.points):
        lines += [f"**Incomplete: {len(points)} of {len(grid.points)} points done.** Running the command again "
                  "continues the sweep; finished runs are reused.", ""]
    lines += [
        make_table(grid.varied, points), "",
        "Test accuracy is measured on the whole test set after the last step: mean ± sample standard deviation "
        "over the seeds, and min–max. images/s is training throughput (the first, compiling call left out), the "
        "mean over seeds; s per run is the mean wall time of a run, building, compiling and evaluating included "
        "(for a reused run, as measured when it was trained)." + (
            " — : the point leaves that setting at the `TrainConfig` default." if grid.varied else ""), ""]
    return "\n".join(lines)
