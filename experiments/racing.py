"""A race of training recipes to a target test accuracy, on one machine, with one version of the code.

Each recipe is a flagfile of ``python -m training.train``. Runs alternate (baseline seed 0, candidate seed 0,
..., baseline seed 1, ...), so a change in the machine's load touches every recipe alike, and each run is a
process of its own that records ``seconds_to_target`` (training time until the first evaluation at the target,
compilation included, evaluation excluded) in its results.json. The report is a markdown table of medians and
ranges per recipe, with each median's ratio to the baseline's (the first flagfile).

A race longer than a sitting continues: ``<logdir>/race.json`` keeps its terms (the flagfiles' text, the target,
the seeds, the evaluation settings, the commit and the CPU model), and the same command on the same terms reads
the finished runs and resumes the unfinished one from its last checkpoint, its clock restored with it. Other
terms (another recipe, code or CPU, where times would no longer compare) are refused.
"""

import dataclasses
import datetime
import json
import os
import statistics
import time

from absl import logging

from experiments import stats
from experiments.launch import (
    how_it_ended,
    progress_text,
    read_history,
    read_json_object,
    read_run,
    resolved_recipe,
    run_dir,
    run_in_console,
    train_command,
)
from experiments.report import TableWriter, machine_record, text_digest
from experiments.reuse import OneDataset, reusable_results
from training import run_files
from training.errors import OneLineError
from training.flagfiles import flag_lines

RACE_TERMS = "race.json"


class RaceError(OneLineError, RuntimeError):
    """A race that cannot go on (a run that failed, a folder holding another race); the message says which and
    why."""


@dataclasses.dataclass
class Entrant:
    name: str  # the flagfile's name without .cfg, with its folders when another flagfile has the same name
    flagfile: str
    runs: list = dataclasses.field(default_factory=list)  # results.json of each seed, in seed order
    starts: list = dataclasses.field(default_factory=list)  # how many times each seed's run was started


def race_flags(target, eval_every_epochs, stop_at_target):
    """What the race sets for every recipe, after the flagfile's own flags."""
    flags = [f"--target_accuracy={target}"]
    if eval_every_epochs:
        flags += ["--eval_every=0", f"--eval_every_epochs={eval_every_epochs}"]
    return flags + (["--stop_at_target"] if stop_at_target else [])


# The results.json fields the table reads.
TABLE_FIELDS = ("seconds_to_target", "images_to_target", "test_accuracy", "train_seconds", "images_per_second")


def entrant_names(flagfiles):
    """A distinct name per flagfile, which prefixes its run directories: the name without ``.cfg``
    (``flags/mnist_speed.cfg``: ``mnist_speed``), with as many of its folders as it takes to tell it from the
    others (``a/fast.cfg`` and ``b/fast.cfg``: ``a-fast`` and ``b-fast``). A flagfile given twice is refused:
    the race would compare a recipe with itself."""
    seen = {}  # real path -> the flagfile as given
    for flagfile in flagfiles:
        real = os.path.realpath(flagfile)
        if real in seen:
            same = "twice" if seen[real] == flagfile else f"as {seen[real]} and {flagfile}"
            raise RaceError(f"--flagfiles names {real} {same}; a race needs distinct recipes")
        seen[real] = flagfile
    parts = [os.path.splitext(os.path.abspath(flagfile))[0].split(os.sep)[1:] for flagfile in flagfiles]

    def name(path):
        others = [other for other in parts if other is not path]
        depth = next(depth for depth in range(1, len(path) + 1)
                     if all(other[-depth:] != path[-depth:] for other in others))
        return "-".join(path[-depth:])

    names = [name(path) for path in parts]
    if len(set(names)) < len(names):  # "a-b/c.cfg" beside "a/b-c.cfg": told apart by position
        names = [f"{name}-{index}" for index, name in enumerate(names)]
    return names


def run_race(flagfiles, target, seeds, logdir, data_dir="", eval_every_epochs=0.0, stop_at_target=False,
             on_run=None, launch=run_in_console):
    """Runs every flagfile with seeds 0..seeds-1, alternating; returns the ``Entrant``s with their results.

    Each run lives in ``<logdir>/<name>-seed<k>`` (``entrant_names``); a run that has finished there is read, not
    trained again. ``launch(command)`` runs one ``training.train`` command and returns its exit code (or raises
    ``KeyboardInterrupt`` when this command is asked to stop); ``on_run(entrants)`` is called after every run.
    """
    entrants = [Entrant(name, flagfile) for name, flagfile in zip(entrant_names(flagfiles), flagfiles)]
    seconds = {entrant.name: [] for entrant in entrants}  # wall time of each run this command trained
    # A race compares recipes on one dataset: every run already here (config.json's record) is checked before any
    # trains.
    one_dataset = OneDataset()
    for seed in range(seeds):
        for entrant in entrants:
            one_dataset.check(run_dir(logdir, entrant.name, seed))
    for seed in range(seeds):
        for entrant in entrants:
            path = run_dir(logdir, entrant.name, seed)
            # The race's terms (check_terms) pin every recipe's text: a run here was started by this command.
            results, history = reusable_results(path, TABLE_FIELDS), read_history(path)
            if results is None:
                command = train_command(entrant.flagfile, seed, path, data_dir,
                                        race_flags(target, eval_every_epochs, stop_at_target))
                logging.info("race: %s seed %d: %s", entrant.name, seed, " ".join(command[1:]))
                tick = time.time()
                code = launch(command)
                if code != 0:
                    raise RaceError(f"{entrant.name} seed {seed} {how_it_ended(code)}; the same command continues "
                                    "the race")
                one_dataset.check(path)
                results, history = read_run(path, TABLE_FIELDS)
                seconds[entrant.name].append(time.time() - tick)
                logging.info("race: %s seed %d: %s to target, test accuracy %.2f%%, %.0f s in all", entrant.name,
                             seed, _seconds(results["seconds_to_target"]), 100 * results["test_accuracy"],
                             seconds[entrant.name][-1])
                done = seed * len(entrants) + entrants.index(entrant) + 1
                logging.info("race: %s", progress_text(done, seeds * len(entrants),
                                                       _time_left(entrants, seconds, seed, entrant, seeds)))
            else:
                logging.info("race: %s seed %d: finished before (%s), read", entrant.name, seed, path)
            entrant.runs.append(results)
            entrant.starts.append(len(history))
            if on_run:
                on_run(entrants)
    return entrants


def _seconds(value):
    return "not reached" if value is None else f"{value:.1f} s"


def _median_range(values, fmt):
    """``"median (min–max)"`` of the non-None ``values``, or "—" when none."""
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def make_table(entrants, target):
    columns = ["recipe", "reached", "seconds to target, median (min–max)", "ratio to baseline",
               "images to target, median (min–max)", "final test accuracy %, median (min–max)",
               "training s per run, median", "its ratio to baseline", "images/s, median"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    baseline = baseline_run_seconds = None
    for index, entrant in enumerate(entrants):
        runs = entrant.runs
        seconds = [r["seconds_to_target"] for r in runs]
        reached = [s for s in seconds if s is not None]
        median = statistics.median(reached) if reached and len(reached) == len(runs) else None
        run_seconds = statistics.median(r["train_seconds"] for r in runs) if runs else None
        if index == 0:
            baseline, baseline_run_seconds = median, run_seconds
        cells = [f"`{entrant.flagfile}`", f"{len(reached)}/{len(runs)}",
                 _median_range(seconds, lambda v: f"{v:.1f}"), _ratio(median, baseline),
                 _median_range([r["images_to_target"] for r in runs], lambda v: f"{v:,.0f}"),
                 _median_range([100 * r["test_accuracy"] for r in runs], lambda v: f"{v:.2f}"),
                 "—" if run_seconds is None else f"{run_seconds:.1f}", _ratio(run_seconds, baseline_run_seconds),
                 f"{statistics.median(r['images_per_second'] for r in runs):,.0f}" if runs else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ratio(value, baseline):
    return f"{value / baseline:.3f}" if value is not None and baseline else "—"


PAIRED_RATIOS = " over the baseline, paired by seed: "  # what a race table's paired ratios say (committed reads)


def paired_ratios(entrants):
    """The lines saying, for each recipe after the baseline, its time over the baseline's seed by seed: the
    geometric mean of the per-seed ratios with its 95% interval, of the seconds to target (over the seeds both
    reached it in) and of the whole runs' training time. Empty with fewer than two seeds of a pair."""
    baseline, lines = entrants[0], []
    for entrant in entrants[1:]:
        pairs = list(zip(baseline.runs, entrant.runs))
        to_target = [(ours["seconds_to_target"], theirs["seconds_to_target"]) for ours, theirs in pairs
                     if ours["seconds_to_target"] and theirs["seconds_to_target"]]
        parts = [f"{what}: {stats.paired_ratio(*zip(*values)).text()}"
                 for what, values in (("seconds to target", to_target),
                                      ("training s per run", [(a["train_seconds"], b["train_seconds"])
                                                              for a, b in pairs]))
                 if len(values) >= 2]
        if parts:
            lines += [f"`{entrant.flagfile}`{PAIRED_RATIOS}{'; '.join(parts)}.", ""]
    return lines


def make_report(entrants, target, seeds, command, record, elapsed_seconds):
    done = sum(len(e.runs) for e in entrants)
    resumed = sum(starts > 1 for e in entrants for starts in e.starts)
    lines = [
        f"# Race to {100 * target:.2f}% test accuracy", "",
        "| | |", "| --- | --- |",
        f"| recipes | {', '.join(f'`{e.flagfile}`' for e in entrants)} (the first is the baseline) |",
        f"| seeds | {', '.join(map(str, range(seeds)))}, run alternately |",
        f"| machine | {record.get('cpu', record['cpu_model'])} ({record['machine']}), {record['cpus']} CPUs |",
        f"| versions | TensorFlow {record['tensorflow']}, Keras {record['keras']}, Python {record['python']} |",
        f"| commit | {record['commit']} |",
        f"| command | `{command}` |",
        f"| runs | {done} of {len(entrants) * seeds}, {resumed} of them resumed after a stop; "
        f"{elapsed_seconds:.0f} s of wall time in this command |",
        f"| written | {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC |", "",
        make_table(entrants, target), "",
        "Seconds to target: training time of a run until its first evaluation at or above the target, the first "
        "(compiling) call included, evaluations excluded (results.json `seconds_to_target`). The ratio compares "
        "medians with the baseline's and is shown only when every seed of both reached the target. Images to "
        "target: optimizer steps until that evaluation times the batch size. Final test accuracy: at the end of "
        "each run. Training s per run: the whole run's training time (evaluations excluded), whether or not it "
        "reached the target. images/s: training throughput without the compiling call. A resumed run's training "
        "time is summed over its starts, from the checkpoint it resumed at (each start compiles again).", "",
        *paired_ratios(entrants)]
    return "\n".join(lines)


def _time_left(entrants, seconds, seed, entrant, seeds):
    """Seconds the race's remaining runs should take, each recipe's at its mean so far (another recipe's mean
    for one not yet trained by this command)."""
    means = {name: sum(times) / len(times) for name, times in seconds.items() if times}
    if not means:
        return None
    fallback = sum(means.values()) / len(means)
    position = entrants.index(entrant)
    remaining = [other for index, other in enumerate(entrants) if index > position]
    remaining += [other for _ in range(seed + 1, seeds) for other in entrants]
    return sum(means.get(other.name, fallback) for other in remaining)


def race_terms(flagfiles, target, seeds, eval_every_epochs, stop_at_target, record):
    """What a race's times depend on, as ``race.json`` keeps it: a continued race must bring the same. The data
    folder is left out: it only says where the flagfiles' dataset is."""
    recipes = {}
    for flagfile in flagfiles:
        with open(flagfile) as file:
            recipes[flagfile] = file.read()
    resolved = {flagfile: resolved_recipe(flagfile, RaceError) for flagfile in flagfiles}
    return dict(recipes=recipes, resolved_flags=resolved, target_accuracy=target, seeds=seeds,
                eval_every_epochs=eval_every_epochs, stop_at_target=stop_at_target, commit=record["commit"],
                cpu_model=record["cpu_model"])


def check_terms(logdir, terms):
    """Refuses a race in ``logdir`` whose ``race.json`` holds other terms, or whose runs are there without one;
    returns whether the race is new (its terms are then for ``record_terms``)."""
    path = os.path.join(logdir, RACE_TERMS)
    if os.path.lexists(path):
        recorded = read_json_object(path, "a race's terms")
        for key, value in terms.items():
            earlier = recorded.get(key)
            if key == "recipes" and isinstance(earlier, dict):  # what they train, not their comments
                earlier = {name: flag_lines(text) for name, text in earlier.items() if isinstance(text, str)}
                value = {name: flag_lines(text) for name, text in value.items()}
            if earlier != value:
                shown = {"recipes": "recipes", "resolved_flags": "recipes (a flagfile they include has changed)"}.get(
                    key, f"{key} ({earlier}; here {value})")
                raise RaceError(f"{logdir} holds a race with other {shown}; a race continues only on its own terms "
                                f"({path}), so pass a new --logdir")
        return False
    for name in entrant_names(list(terms["recipes"])):
        if os.path.exists(run_dir(logdir, name, 0)):
            raise RaceError(f"{logdir} already holds runs of {name} but no {RACE_TERMS}; a race's times compare "
                            f"only on its own terms, so pass a new --logdir")
    return True


def record_terms(logdir, terms):
    """Writes ``terms`` to ``<logdir>/race.json``, whole or not at all."""
    path = os.path.join(logdir, RACE_TERMS)
    os.makedirs(logdir, exist_ok=True)
    run_files.write_atomically(path, json.dumps(terms, indent=2))


def table_path(out, logdir):
    """Where a race writes its table: ``out``, else ``<logdir>/race.md`` beside its runs."""
    return out or os.path.join(logdir, "race.md")


def table_terms(terms):
    """A race's terms as its table's stamp keeps them: the flagfiles' text as a digest."""
    return dict(terms, recipes={flagfile: text_digest(text) for flagfile, text in terms["recipes"].items()})


def race_and_report(flagfiles, target, seeds, logdir, out, command, data_dir="", eval_every_epochs=0.0,
                    stop_at_target=False, launch=run_in_console, overwrite_table=False):
    """``run_race`` on terms checked against ``<logdir>/race.json``, rewriting the markdown report ``out``
    after every run; returns the ``Entrant``s. ``out`` is written through a ``TableWriter``: a table there of
    another race is refused before anything runs, unless ``overwrite_table``."""
    entrant_names(flagfiles)  # refuses a flagfile given twice, before anything is written
    record, started = machine_record(), time.time()
    terms = race_terms(flagfiles, target, seeds, eval_every_epochs, stop_at_target, record)
    new_race = check_terms(logdir, terms)
    table = TableWriter(out, "experiments.race", table_terms(terms), overwrite_table)
    if new_race:
        record_terms(logdir, terms)

    def write(entrants):
        table.write(make_report(entrants, target, seeds, command, record, time.time() - started),
                    sum(len(entrant.runs) for entrant in entrants), len(entrants) * seeds)

    return run_race(flagfiles, target, seeds, logdir, data_dir, eval_every_epochs, stop_at_target, on_run=write,
                    launch=launch)
