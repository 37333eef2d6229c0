"""Seeds of one training recipe, and the spread of its results over them.

One run is one draw from what a recipe gives. ``run_seeds`` trains seeds 0..n-1 of a flagfile, each a fresh
``python -m training.train`` process in ``<logdir>/<recipe>-seed<k>``, and ``make_report`` gives mean ± standard
deviation and min–max of the results. Accuracy rather than time is the point (``experiments.race`` compares
times within one invocation), so a later invocation continues where one stopped: a finished run is read, not
trained again (``experiments.reuse``), and an unfinished one resumes from its last checkpoint.
``<logdir>/<recipe>.seeds.json`` keeps the flagfile's text; another version of it is refused, so one table never
mixes two recipes.
"""

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
    recipe_name,
    resolved_recipe,
    run_all_in_console,
    run_dir,
    train_command,
)
from experiments.report import (
    TableWriter,
    accuracy_interval,
    accuracy_spread,
    machine_record,
    text_digest,
)
from experiments.reuse import OneDataset, ReuseError, reusable_results
from training import run_files
from training.errors import OneLineError
from training.flagfiles import flag_lines


class SeedsError(OneLineError, RuntimeError):
    """Seeds that cannot be run (another version of the recipe in the folder, a run that failed)."""


def check_recipe(flagfile, logdir):
    """Records the flagfile's text and its resolved flags (``resolved_recipe``) in ``<logdir>/<recipe>.seeds.json``,
    or refuses when it records another; a record of older code, without the resolved flags, gets them."""
    with open(flagfile) as file:
        text = file.read()
    resolved = resolved_recipe(flagfile, SeedsError)
    manifest = os.path.join(logdir, f"{recipe_name(flagfile)}.seeds.json")
    record = dict(flagfile=flagfile, flagfile_text=text, resolved_flags=resolved)
    if os.path.lexists(manifest):
        recorded = read_json_object(manifest, "the recipe's text under flagfile_text")
        if not isinstance(recorded.get("flagfile_text"), str):
            raise SeedsError(f"{manifest}: holds no flagfile_text (the recipe's text); move it away")
        if flag_lines(recorded["flagfile_text"]) != flag_lines(text):
            raise SeedsError(f"{logdir} holds seeds of another version of {flagfile} ({manifest}); pass a new "
                             f"--logdir")
        if recorded.get("resolved_flags", resolved) != resolved:  # the same file, another base flagfile under it
            raise SeedsError(f"{logdir} holds seeds of another version of {flagfile}: a flagfile it includes has "
                             f"changed since ({manifest}); pass a new --logdir")
        if "resolved_flags" in recorded:
            return
    os.makedirs(logdir, exist_ok=True)
    run_files.write_atomically(manifest, json.dumps(record, indent=2))


# The results.json fields the table reads.
TABLE_FIELDS = ("test_accuracy", "test_loss", "train_steps", "train_seconds", "images_per_second")


def run_seeds(flagfile, seeds, logdir, data_dir="", launch=run_all_in_console, on_run=None, jobs=1):
    """Trains (or reads) seeds 0..seeds-1 of ``flagfile``; returns ``[(seed, results, history)]`` in seed order.

    Unfinished seeds train ``jobs`` at a time, side by side, the next starting as soon as one ends.
    ``launch(commands, jobs, on_exit)`` runs ``training.train`` commands that way and calls ``on_exit(index,
    code)`` as each ends (``launch.run_all_in_console``). ``on_run(done)`` is called with the list so far whenever
    it grows. A stop signal raises ``KeyboardInterrupt`` once the running seeds have stopped.
    """
    check_recipe(flagfile, logdir)
    name = recipe_name(flagfile)
    # The recipe's text is pinned by check_recipe: every run here was started by the same command.
    finished = {seed: _reused(run_dir(logdir, name, seed)) for seed in range(seeds)}
    pending = [seed for seed in range(seeds) if finished[seed][0] is None]
    one_dataset = OneDataset()
    for seed in sorted(set(range(seeds)) - set(pending)):
        one_dataset.check(run_dir(logdir, name, seed))  # before anything trains
        logging.info("seeds: %s seed %d: finished before (%s), read", name, seed, run_dir(logdir, name, seed))
    done, failures, other_data = [], [], []

    def report_in_order():
        while len(done) < seeds and finished[len(done)][0] is not None:
            done.append((len(done), *finished[len(done)]))
        if on_run:
            on_run(done)

    started, trained = time.monotonic(), []

    def ended(index, code):
        seed = pending[index]
        if code != 0:
            failures.append((seed, code))
            return
        try:  # a run of other data stays out of the table; the command fails once the others have ended
            one_dataset.check(run_dir(logdir, name, seed))
        except ReuseError as error:
            other_data.append(error)
            return
        finished[seed] = read_run(run_dir(logdir, name, seed), TABLE_FIELDS)
        trained.append(seed)
        # Wall time per run so far, ``jobs`` of them at once: the estimate for the ones not yet trained.
        per_run = (time.monotonic() - started) / len(trained)
        logging.info("seeds: %s: %s", name, progress_text(seeds - len(pending) + len(trained), seeds,
                                                          per_run * (len(pending) - len(trained))))
        report_in_order()

    report_in_order()
    commands = [train_command(flagfile, seed, run_dir(logdir, name, seed), data_dir) for seed in pending]
    for seed, command in zip(pending, commands):
        logging.info("seeds: %s seed %d: %s", name, seed, " ".join(command[1:]))
    launch(commands, jobs, ended)
    if other_data:
        raise other_data[0]
    if failures:
        seed, code = failures[0]
        raise SeedsError(f"{name} seed {seed} {how_it_ended(code)}; the same command resumes it")
    return done


def _reused(path):
    """``(results, history)`` of the finished seed in ``path``, as ``reuse.reusable_results`` decides, or ``(None,
    history)`` while it must train."""
    return reusable_results(path, TABLE_FIELDS), read_history(path)


def _distinct(history, key):
    return ", ".join(dict.fromkeys(str(start.get(key, "not recorded")) for start in history)) or "not recorded"


def make_table(done):
    columns = ["seed", "test accuracy %", "test loss", "validation accuracy %", "steps", "training s", "images/s",
               "precision", "code (commit of each start)", "CPU"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for seed, results, history in done:
        validation = results.get("validation_accuracy")
        lines.append("| " + " | ".join([
            str(seed), f"{100 * results['test_accuracy']:.2f}", f"{results['test_loss']:.4f}",
            "—" if validation is None else f"{100 * validation:.2f}", f"{results['train_steps']:,}",
            f"{results['train_seconds']:,.0f}", f"{results['images_per_second']:,.0f}",
            str(results.get("precision", "float32")), _distinct(history, "commit"), _distinct(history, "cpu")]) + " |")
    mean, extremes = accuracy_spread([results["test_accuracy"] for _, results, _ in done])
    losses = [results["test_loss"] for _, results, _ in done]
    loss_spread = f"{statistics.fmean(losses):.4f}" + (f" ± {statistics.stdev(losses):.4f}" if len(losses) > 1 else "")
    lines.append(f"| mean ± std | {mean} | {loss_spread} |" + " |" * (len(columns) - 3))
    lines.append(f"| min–max | {extremes} | {min(losses):.4f}–{max(losses):.4f} |" + " |" * (len(columns) - 3))
    interval = accuracy_interval([results["test_accuracy"] for _, results, _ in done])
    lines.append(f"| 95% interval of the mean | {interval} |" + " |" * (len(columns) - 2))
    return "\n".join(lines)


PAIRED_SENTENCE = "This recipe minus "  # how the paired section's summary begins (experiments.committed reads it)


def paired_section(done, flagfile, other_flagfile, logdir):
    """The seed-by-seed comparison of ``done`` (of ``flagfile``) with the finished seeds of ``other_flagfile`` under
    ``logdir`` (from its own ``experiments.seeds``): each seed's test accuracies and their difference, and the
    paired 95% interval of the mean difference; ``ReuseError`` when a pair was trained on other data. The same
    seed gives both recipes the same initial weights, data order and augmentation, so the pairing removes the
    seed-to-seed spread the two share."""
    other = recipe_name(other_flagfile)
    pairs = [(seed, results, reusable_results(run_dir(logdir, other, seed), TABLE_FIELDS))
             for seed, results, _ in done]
    pairs = [(seed, ours, theirs) for seed, ours, theirs in pairs if theirs is not None]
    one_dataset = OneDataset()  # a pair compares recipes on one dataset
    for seed, _, _ in pairs:
        one_dataset.check(run_dir(logdir, recipe_name(flagfile), seed))
        one_dataset.check(run_dir(logdir, other, seed))
    lines = [f"## Paired with `{other_flagfile}`", ""]
    if not pairs:
        return lines + [f"No seed of {other} has finished under {logdir} yet.", ""]
    columns = ["seed", "test accuracy % (this)", f"test accuracy % ({other})", "this − other (points)",
               "training s (this)", f"training s ({other})"]
    lines += ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for seed, ours, theirs in pairs:
        lines.append(f"| {seed} | {100 * ours['test_accuracy']:.2f} | {100 * theirs['test_accuracy']:.2f} | "
                     f"{100 * (ours['test_accuracy'] - theirs['test_accuracy']):+.2f} | "
                     f"{ours['train_seconds']:,.0f} | {theirs['train_seconds']:,.0f} |")
    difference = stats.paired_difference([theirs["test_accuracy"] for _, _, theirs in pairs],
                                         [ours["test_accuracy"] for _, ours, _ in pairs])
    lines += ["", f"{PAIRED_SENTENCE}{other}, test accuracy in points over {len(pairs)} paired seeds: "
              f"{difference.text(scale=100)}. A difference counts as a finding only when its interval excludes "
              f"0. Seeds without a finished twin are left out.", ""]
    if all(run.get("validation_accuracy") is not None for _, ours, theirs in pairs for run in (ours, theirs)):
        validation = stats.paired_difference([theirs["validation_accuracy"] for _, _, theirs in pairs],
                                             [ours["validation_accuracy"] for _, ours, _ in pairs])
        # What a choice between the two recipes is made on: the held-out images, not the test set.
        lines += [f"{PAIRED_SENTENCE}{other}, validation accuracy in points over the same seeds: "
                  f"{validation.text(scale=100)}.", ""]
    return lines


def make_report(flagfile, seeds, done, command, record, jobs=1, paired_with=None, logdir=None):
    lines = [
        f"# {recipe_name(flagfile)}: {len(done)} of {seeds} seeds", "",
        "| | |", "| --- | --- |",
        f"| recipe | `{flagfile}` |",
        f"| this report | {record.get('cpu', record['cpu_model'])} ({record['machine']}), {record['cpus']} CPUs; "
        f"TensorFlow {record['tensorflow']}, Keras {record['keras']}, Python {record['python']}; commit "
        f"{record['commit']} |",
        f"| command | `{command}` |",
        *([f"| jobs | {jobs} seeds trained at once: the training times of the seeds trained by this command are "
           f"with the cores shared |"] if jobs > 1 else []),
        f"| written | {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC |", "",
        make_table(done) if done else "No seed has finished yet.", "",
        "Standard deviations are sample standard deviations over the seeds. Training s: training time of the "
        "run, summed over its starts when it was resumed (evaluation excluded); images/s: the throughput of its "
        "last start without the compiling call. Code and CPU: the commit and CPU model that each start of the "
        "run recorded (a run resumed in another session may have several).", ""]
    if paired_with and done:
        lines += paired_section(done, flagfile, paired_with, logdir)
    return "\n".join(lines)


def table_path(out, logdir, flagfile):
    """Where the seeds of a recipe write their table: ``out``, else ``<logdir>/<recipe>.md`` beside the runs."""
    return out or os.path.join(logdir, f"{recipe_name(flagfile)}.md")


def seeds_and_report(flagfile, seeds, logdir, out, command, data_dir="", launch=run_all_in_console, jobs=1,
                     overwrite_table=False, paired_with=None):
    """``run_seeds``, rewriting the markdown report ``out`` after every seed; returns what ``run_seeds`` does.
    With ``paired_with`` (another flagfile) the report ends with ``paired_section``.

    ``out`` is written through a ``TableWriter``: a table there of another recipe (or another version of it) is
    refused before anything runs, unless ``overwrite_table``; one of more finished seeds is kept until this
    command has as many.
    """
    record = machine_record()
    with open(flagfile) as file:
        terms = dict(recipe=recipe_name(flagfile), recipe_text=text_digest(file.read()))
    table = TableWriter(out, "experiments.seeds", terms, overwrite_table)

    def write(done):
        table.write(make_report(flagfile, seeds, done, command, record, jobs, paired_with, logdir), len(done),
                    seeds)

    return run_seeds(flagfile, seeds, logdir, data_dir, launch, on_run=write, jobs=jobs)
