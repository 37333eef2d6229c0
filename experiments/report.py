"""The markdown report of a sweep: what was run, where and how, then a table of the points over seeds; and
``TableWriter``, which every experiment command's table goes through so that none replaces another's."""

import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import statistics

from absl import logging

from experiments import stats
from models import architecture
from training import run_files
from training.config import TrainConfig
from training.dataset_info import held_out_count
from training.errors import OneLineError
from training.provenance import REPO_DIR, cpu_description, cpu_model, git_commit


def installed_version(module):
    """The version of the installed package that provides ``module``, read from its metadata: importing
    TensorFlow to ask would cost the experiment commands that only start runs seconds and hundreds of MB."""
    distributions = importlib.metadata.packages_distributions().get(module)
    return importlib.metadata.version(distributions[0]) if distributions else "not installed"


def machine_record(repo_dir=REPO_DIR):
    """What made the numbers: machine, CPU count, library versions and the git commit of ``repo_dir``."""
    return dict(machine=platform.machine(), cpu_model=cpu_model(), cpu=cpu_description(), cpus=os.cpu_count(),
                python=platform.python_version(), tensorflow=installed_version("tensorflow"),
                keras=installed_version("keras"), commit=git_commit(repo_dir))


def write_report(path, text):
    """Writes ``text`` to ``path`` whole or not at all (``run_files.write_atomically``), making its folder: a
    report rewritten after every run is never seen half-written."""
    run_files.make_folder(os.path.dirname(path) or ".", "pass another --out")
    run_files.write_atomically(path, text, "a table is never written through a link: remove the link, or pass "
                               "another --out")


class TableError(OneLineError, RuntimeError):
    """A table that would replace one this command did not write on the same terms; the message names the file."""


STAMP_START, STAMP_END = "<!-- written by ", " -->"
STAMP_TAIL_BYTES = 4096  # the stamp is a table's last line, well under this


def text_digest(text):
    """A short digest of a flagfile's text, for a stamp: the text itself may hold anything, "-->" included."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def table_stamp(command, terms, done, total):
    """A table's last line: an HTML comment (not shown when the markdown is rendered) saying which command wrote
    it, on which terms (grid, budget, seeds, recipe, ...), and how many of its ``total`` items had finished."""
    record = json.dumps(dict(command=command, terms=terms, done=done, total=total), sort_keys=True)
    return f"{STAMP_START}{record}{STAMP_END}\n"


def read_stamp(path):
    """The stamp of the table at ``path`` as a dict, or None when it has none (written by hand or by older code)
    or the stamp is damaged."""
    with open(path, "rb") as file:
        file.seek(max(0, os.fstat(file.fileno()).st_size - STAMP_TAIL_BYTES))
        lines = file.read().decode("utf-8", "replace").rstrip("\n").splitlines()
    last = lines[-1] if lines else ""
    if not (last.startswith(STAMP_START) and last.endswith(STAMP_END)):
        return None
    try:
        stamp = json.loads(last[len(STAMP_START):-len(STAMP_END)])
    except ValueError:
        return None
    if not (isinstance(stamp, dict) and isinstance(stamp.get("terms"), dict) and type(stamp.get("done")) is int):
        return None
    return stamp


def _difference(key, old, new):
    """``"seeds (3; here 5)"``, or the key alone for values too long for a line (recipes)."""
    return f"{key} ({old}; here {new})" if not isinstance(new, (dict, list)) else key


class TableWriter:
    """Writes one command's markdown table to ``path`` as its items finish, never losing another table.

    A file already at ``path`` is replaced only when its stamp (``table_stamp``) says this command wrote it on
    the same ``terms``, and then only by a table with at least as many finished items: a command started again
    over a finished table writes its progress to ``<path>.incomplete.md`` until it has caught up. ``overwrite``
    (the commands' ``--overwrite_table``) replaces whatever is there, from the first write.
    """

    def __init__(self, path, command, terms, overwrite=False):
        self.path, self.command, self.overwrite = path, command, overwrite
        self.terms = json.loads(json.dumps(terms))  # as a stamp reads back: tuples as lists
        self.beside = os.path.splitext(path)[0] + ".incomplete.md"
        self.kept = 0  # finished items of the table in place
        if os.path.lexists(path) and not overwrite:
            self.kept = self._owned_table_done()

    def _owned_table_done(self):
        if not os.path.isfile(self.path):
            raise TableError(f"{self.path} exists and is not a regular file; pass --out=<a new file>")
        stamp = read_stamp(self.path)
        if stamp is None:
            why = "it has no stamp of the command that wrote it, so was written by hand or by older code"
        elif stamp.get("command") != self.command:
            why = f"{stamp.get('command')} wrote it"
        elif stamp["terms"] != self.terms:
            why = "other " + ", ".join(_difference(key, stamp["terms"].get(key), value)
                                       for key, value in self.terms.items() if stamp["terms"].get(key) != value)
        else:
            return stamp["done"]
        raise TableError(f"{self.path} holds a table that this command did not write on these terms: {why}; "
                         "pass --out=<another file>, or --overwrite_table to replace it")

    def write(self, text, done, total):
        """Writes ``text`` (a table of ``done`` of ``total`` finished items) with its stamp; returns the path."""
        text = text.rstrip("\n") + "\n\n" + table_stamp(self.command, self.terms, done, total)
        if self.overwrite or done >= self.kept:
            write_report(self.path, text)
            self.kept = done
            if os.path.lexists(self.beside):
                os.remove(self.beside)
            return self.path
        if not os.path.lexists(self.beside):
            logging.warning("%s keeps its table of %d finished; this one (%d so far) is written to %s until it has "
                            "as many (--overwrite_table replaces it at once)", self.path, self.kept, done,
                            self.beside)
        write_report(self.beside, text)
        return self.beside


def accuracy_spread(accuracies):
    """``("99.00 ± 1.00", "98.00–100.00")`` for accuracies 0.98, 0.99, 1.00: percent mean ± sample standard
    deviation (the mean alone for one run), and min–max."""
    percents = [100 * accuracy for accuracy in accuracies]
    mean = f"{statistics.fmean(percents):.2f}"
    spread = f"{mean} ± {statistics.stdev(percents):.2f}" if len(percents) > 1 else mean
    return spread, f"{min(percents):.2f}–{max(percents):.2f}"


def accuracy_interval(accuracies):
    """``[low, high]`` in percent: the 95% t-interval of the mean accuracy (``experiments.stats``); "—" for one run."""
    summary = stats.summarize(accuracies)
    return "—" if summary.n < 2 else f"[{100 * summary.low:.2f}, {100 * summary.high:.2f}]"


def paired_to(point, reference, key="test_accuracy"):
    """``key`` (an accuracy) of ``point`` minus ``reference``'s, paired by seed, with its 95% interval, in points;
    "—" for the reference itself or when the two do not hold the same seeds."""
    if point is reference or len(point.runs) != len(reference.runs) or len(point.runs) < 2:
        return "—"
    difference = stats.paired_difference([run.results[key] for run in reference.runs],
                                         [run.results[key] for run in point.runs])
    verdict = "" if difference.is_finding else " (includes 0)"
    return f"{100 * difference.mean:+.2f} [{100 * difference.low:+.2f}, {100 * difference.high:+.2f}]{verdict}"


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


def _steps(results):
    """The runs' step count, or "min–max" should a point's seeds differ (a run stopped at its target)."""
    steps = sorted({r["train_steps"] for r in results})
    return f"{steps[0]:,}" if len(steps) == 1 else f"{steps[0]:,}–{steps[-1]:,}"


def validation_accuracies(point):
    """The validation accuracies of a ``PointResult``'s runs, or None when a run held out no validation set."""
    values = [run.results.get("validation_accuracy") for run in point.runs]
    return None if any(value is None for value in values) else values


def picked_on_validation(points):
    """The ``PointResult`` of highest mean validation accuracy, or None when some point has none."""
    if not points or any(validation_accuracies(point) is None for point in points):
        return None
    return max(points, key=lambda point: statistics.fmean(validation_accuracies(point)))


def pick_sentence(picked, validation_split):
    """The report's line naming the ``PointResult`` picked on validation, with its validation and test accuracy."""
    return (f"Picked on validation accuracy ({validation_split:.0%} of the training images, held out of training): "
            f"**{picked.label}**, validation {accuracy_spread(validation_accuracies(picked))[0]}%, "
            f"test {accuracy_spread([run.results['test_accuracy'] for run in picked.runs])[0]}%. The test column "
            "is reported, never used to choose.")


def make_table(varied, points, picked=None, picked_name="pick"):
    """The markdown table: a row per ``PointResult``, with a column for each name in ``varied`` and, when points
    trained for different numbers of steps (a budget in epochs), one of their steps; validation accuracy comes
    first when every run has one (it is what a point is picked by); the test accuracy's 95% interval; and, with a
    ``picked`` point (an ablation's recipe: ``picked_name``), each point's test accuracy minus its, paired by
    seed."""
    with_validation = picked_on_validation(points) is not None
    steps_differ = len({run.results.get("train_steps") for point in points for run in point.runs}) > 1
    columns = ["point", "arch", *varied, *(["steps"] if steps_differ else []),
               *(["validation accuracy % (mean ± std)"] if with_validation else []),
               "test accuracy % (mean ± std)", "95% interval", "min–max %",
               *([f"test − {picked_name}, paired by seed (95%)"] if picked else []), "params", "images/s", "s per run"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for point in points:
        results = [run.results for run in point.runs]
        accuracies = [r["test_accuracy"] for r in results]
        spread, extremes = accuracy_spread(accuracies)
        validation = [accuracy_spread(validation_accuracies(point))[0]] if with_validation else []
        images_per_second = statistics.fmean(r["images_per_second"] for r in results)
        wall_seconds = statistics.fmean(r["wall_seconds"] for r in results)
        cells = [point.label, f"`{architecture.resolve(point.overrides.get('arch', TrainConfig.arch))}`",
                 *(_cell(point.overrides, name) for name in varied), *([_steps(results)] if steps_differ else []),
                 *validation, spread,
                 accuracy_interval(accuracies), extremes, *([paired_to(point, picked)] if picked else []),
                 f"{results[0]['params']:,}",
                 f"{images_per_second:,.0f}", f"{wall_seconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


PAIRS_HEADING = "Paired differences"


def paired_differences(points):
    """The lines of the section giving every pair of ``points`` (each point minus each one above it in the
    table) its validation and test accuracy difference, paired by seed, with its 95% interval and n: what a
    sentence comparing two points cites. Empty for fewer than two points."""
    if len(points) < 2:
        return []
    with_validation = picked_on_validation(points) is not None
    lines = [f"{PAIRS_HEADING} (b − a, in points; seed k of both trained on the same batches in the same order, "
             "so the interval is that of the mean per-seed difference; one whose interval includes 0 is not a "
             "finding):", "",
             "| pair | n | validation b − a (95%) | test b − a (95%) |", "| --- | --- | --- | --- |"]
    for index, a in enumerate(points):
        for b in points[index + 1:]:
            n = len(b.runs) if len(b.runs) == len(a.runs) else "—"
            validation = paired_to(b, a, "validation_accuracy") if with_validation else "—"
            lines.append(f"| {b.label} − {a.label} | {n} | {validation} | {paired_to(b, a)} |")
    return lines + [""]


def _mean_validation(point):
    return statistics.fmean(validation_accuracies(point))


def tuned_picks(points, base_label):
    """``[(base label, the PointResult of its best mean validation accuracy, rates tried)]`` in first-appearance
    order, for the points of a tuned grid (each base point trained at several rates; ``base_label(label)`` names
    the base point of a label). Empty when some run has no validation accuracy."""
    if any(validation_accuracies(point) is None for point in points):
        return []
    groups = {}
    for point in points:
        groups.setdefault(base_label(point.label), []).append(point)
    return [(label, max(group, key=_mean_validation), sorted(p.overrides["learning_rate"] for p in group))
            for label, group in groups.items()]


def tuned_section(points, base_label, rates):
    """The table of a tuned grid: each base point at the rate validation picks for it (of ``rates``, the grid's),
    with its validation and test accuracy, and the best point's validation accuracy minus its own, paired by seed.
    A pick at the end of the rate grid is marked: a rate beyond it might do better."""
    picks = tuned_picks(points, base_label)
    if not picks:
        return []
    best = max((picked for _, picked, _ in picks), key=_mean_validation)
    columns = ["point", "arch", "rate picked on validation", "validation accuracy % (mean ± std) [95%]",
               "best − point, validation, paired by seed (95%)", "test accuracy % (mean ± std) [95%]",
               "validation gain since the evaluation before (points)"]
    lines = ["## Each point at its own rate", "",
             f"Each point's learning rate is the one of {', '.join(f'{r:g}' for r in rates)} with its best mean "
             "validation accuracy; the points are compared at their picks, on validation. A rate at an end of that "
             "list is marked *(end)*: a rate beyond it might do better. A difference whose interval includes 0 is "
             "not a finding; the test column is reported, never used to choose.", "",
             "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for label, picked, tried in picks:
        rate = picked.overrides["learning_rate"]
        end = " *(end)*" if len(rates) > 1 and rate in (min(rates), max(rates)) else ""
        partial = f" ({len(tried)} of {len(rates)} rates done)" if len(tried) < len(rates) else ""
        validation, tests = validation_accuracies(picked), [run.results["test_accuracy"] for run in picked.runs]
        cells = [f"**{label}**" if picked is best else label,
                 f"`{architecture.resolve(picked.overrides.get('arch', TrainConfig.arch))}`",
                 f"{rate:g}{end}{partial}", f"{accuracy_spread(validation)[0]} {accuracy_interval(validation)}",
                 paired_to(best, picked, "validation_accuracy"),
                 f"{accuracy_spread(tests)[0]} {accuracy_interval(tests)}", last_gain(picked)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + ["The last column shows whether the budget was long enough: the mean over seeds of the pick's "
                    "validation accuracy at the end minus at the evaluation before (an epoch earlier, where the "
                    "runs evaluate every epoch; from results.json's `evaluations`). Near zero, the curve has "
                    "flattened; the rate's decay to 0 flattens it too.", ""]


def last_gain(point):
    """The mean over ``point``'s runs of the validation accuracy at the last evaluation minus the one before, in
    points (``+0.12``), or "—" when a run recorded fewer than two validation evaluations."""
    gains = []
    for run in point.runs:
        curve = [record["validation_accuracy"] for record in run.results.get("evaluations") or ()
                 if record.get("validation_accuracy") is not None]
        if len(curve) < 2:
            return "—"
        gains.append(100 * (curve[-1] - curve[-2]))
    return f"{statistics.fmean(gains):+.2f}"


def budget_line(train_steps, batch_size, trained_on):
    """The header row of a sweep's budget: ``train_steps`` for every run, or (0) each point's own epochs."""
    if not train_steps:
        return (f"| epoch budget | each point's epochs (column) of the {trained_on:,} images trained on, in whole "
                f"batches (the steps column); batch size {batch_size} unless the point sets its own |")
    images = train_steps * batch_size
    return (f"| step budget | {train_steps:,} steps per run at batch size {batch_size}: {images:,} images, "
            f"{images / trained_on:.2f} epochs |")


def make_report(grid, dataset, train_steps, seeds, points, record, command, elapsed_seconds, jobs=1):
    """The markdown file of a sweep: what was run, where and how, then the table (of the points done so far);
    ``jobs`` runs were trained at once."""
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
        budget_line(train_steps, grid.batch_size, trained_on),
        f"| seeds | {', '.join(map(str, range(seeds)))} |",
        f"| machine | {record.get('cpu', record['cpu_model'])} ({record['machine']}), {record['cpus']} CPUs |",
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
    pick = [] if picked is None else [pick_sentence(picked, grid.validation_split), ""]
    # An ablation picks nothing: each point is compared with its first, the whole recipe.
    reference, reference_name = picked, "pick"
    if not grid.picks_a_point and points and points[0].label == grid.points[0][0]:
        reference, reference_name = points[0], points[0].label
    lines += [
        make_table(grid.varied, points, reference, reference_name), "", *pick,
        "Test accuracy is measured on the whole test set after the last step: mean ± sample standard deviation "
        "over the seeds, the 95% t-interval of the mean, and min–max; with a pick (an ablation: its first point), "
        "each point's difference from it over the same seeds, with its 95% interval (a difference whose interval "
        "includes 0 is not a finding). images/s is training throughput (the first, compiling call left out), the "
        "mean over seeds; s per run is the mean wall time of a run, building, compiling and evaluating included "
        "(for a reused run, as measured when it was trained)." + (
            " — : the point leaves that setting at the `TrainConfig` default." if grid.varied else ""), ""]
    if grid.tuned:  # after the table of every run, which experiments.recheck remakes as the table's first
        from experiments.grids import base_label

        lines += tuned_section(points, base_label, sorted({o["learning_rate"] for _, o in grid.points}))
    else:  # a tuned grid compares its points at their picked rates instead
        lines += paired_differences(points)
    return "\n".join(lines)
