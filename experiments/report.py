"""The markdown report of a sweep: what was run, where and how, then a table of the points over seeds."""

import datetime
import importlib.metadata
import os
import platform
import statistics

from models import architecture
from training.config import TrainConfig
from training.dataset_info import held_out_count
from training.provenance import REPO_DIR, cpu_model, git_commit


def installed_version(module):
    """The version of the installed package that provides ``module``, read from its metadata: importing
    TensorFlow to ask would cost the experiment commands that only start runs seconds and hundreds of MB."""
    distributions = importlib.metadata.packages_distributions().get(module)
    return importlib.metadata.version(distributions[0]) if distributions else "not installed"


def machine_record(repo_dir=REPO_DIR):
    """What made the numbers: machine, CPU count, library versions and the git commit of ``repo_dir``."""
    return dict(machine=platform.machine(), cpu_model=cpu_model(), cpus=os.cpu_count(),
                python=platform.python_version(), tensorflow=installed_version("tensorflow"),
                keras=installed_version("keras"), commit=git_commit(repo_dir))


def write_report(path, text):
    """Writes ``text`` to ``path`` whole or not at all (through a temporary file), making its folder: a report
    rewritten after every run is never seen half-written."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as file:
        file.write(text)
    os.replace(path + ".tmp", path)


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


def validation_accuracies(point):
    """The validation accuracies of a ``PointResult``'s runs, or None when a run held out no validation set."""
    values = [run.results.get("validation_accuracy") for run in point.runs]
    return None if any(value is None for value in values) else values


def picked_on_validation(points):
    """The ``PointResult`` of highest mean validation accuracy, or None when some point has none."""
    if not points or any(validation_accuracies(point) is None for point in points):
        return None
    return max(points, key=lambda point: statistics.fmean(validation_accuracies(point)))


def make_table(varied, points):
    """The markdown table: a row per ``PointResult``, with a column for each name in ``varied``; validation
    accuracy comes first when every run has one (it is what a point is picked by)."""
    with_validation = picked_on_validation(points) is not None
    columns = ["point", "arch", *varied, *(["validation accuracy % (mean ± std)"] if with_validation else []),
               "test accuracy % (mean ± std)", "min–max %", "params", "images/s", "s per run"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for point in points:
        results = [run.results for run in point.runs]
        spread, extremes = accuracy_spread([r["test_accuracy"] for r in results])
        validation = [accuracy_spread(validation_accuracies(point))[0]] if with_validation else []
        images_per_second = statistics.fmean(r["images_per_second"] for r in results)
        wall_seconds = statistics.fmean(r["wall_seconds"] for r in results)
        cells = [point.label, f"`{architecture.resolve(point.overrides.get('arch', TrainConfig.arch))}`",
                 *(_cell(point.overrides, name) for name in varied), *validation, spread, extremes,
                 f"{results[0]['params']:,}",
                 f"{images_per_second:,.0f}", f"{wall_seconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def make_report(grid, dataset, train_steps, seeds, points, record, command, elapsed_seconds, jobs=1):
    """The markdown file of a sweep: what was run, where and how, then the table (of the points done so far);
    ``jobs`` runs were trained at once."""
    images = train_steps * grid.batch_size
    held_out = held_out_count(len(dataset.x_train), grid.validation_split)  # the runs train on the rest
    trained_on = len(dataset.x_train) - held_out
    runs = [run for point in points for run in point.runs]
    reused = sum(run.reused for run in runs)
    lines = [
        f"# Sweep `{grid.name}` on {dataset.name}", "", grid.description, "",
        "| | |", "| --- | --- |",
        f"| grid | `{grid.name}`: {len(grid.points)} points x {seeds} seeds |",
        f"| dataset | {dataset.name} from {dataset.source}: {len(dataset.x_train):,} training images"
        + (f" ({trained_on:,} trained on, {held_out:,} held out for validation)" if held_out else "")
        + f", {len(dataset.x_test):,} test images |",
        f"| step budget | {train_steps:,} steps per run at batch size {grid.batch_size}: {images:,} images, "
        f"{images / trained_on:.2f} epochs |",
        f"| seeds | {', '.join(map(str, range(seeds)))} |",
        f"| machine | {record['cpu_model']} ({record['machine']}), {record['cpus']} CPUs |",
        f"| versions | TensorFlow {record['tensorflow']}, Keras {record['keras']}, Python {record['python']} |",
        f"| commit | {record['commit']} |",
        f"| command | `{command}` |",
        f"| runs | {len(runs) - reused} trained, {reused} reused from earlier results.json; {elapsed_seconds:.0f} s "
        f"of wall time in this command |",
        *([f"| jobs | {jobs} runs trained at once, each in a process of its own: the times of the runs trained "
           f"now are with the cores shared |"] if jobs > 1 else []),
        f"| written | {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC |", "",
    ]
    if len(points) < len(grid.points):
        lines += [f"**Incomplete: {len(points)} of {len(grid.points)} points done.** Running the command again "
                  "continues the sweep; finished runs are reused.", ""]
    picked = picked_on_validation(points) if grid.picks_a_point else None
    pick = []
    if picked is not None:
        pick = [f"Picked on validation accuracy ({grid.validation_split:.0%} of the training images, held out of "
                f"training): **{picked.label}**, validation {accuracy_spread(validation_accuracies(picked))[0]}%, "
                f"test {accuracy_spread([run.results['test_accuracy'] for run in picked.runs])[0]}%. The test "
                "column is reported, never used to choose.", ""]
    lines += [
        make_table(grid.varied, points), "", *pick,
        "Test accuracy is measured on the whole test set after the last step: mean ± sample standard deviation "
        "over the seeds, and min–max. images/s is training throughput (the first, compiling call left out), the "
        "mean over seeds; s per run is the mean wall time of a run, building, compiling and evaluating included "
        "(for a reused run, as measured when it was trained)." + (
            " — : the point leaves that setting at the `TrainConfig` default." if grid.varied else ""), ""]
    return "\n".join(lines)
