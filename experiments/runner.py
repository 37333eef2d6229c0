"""Trains every point of a grid over seeds, each run in ``<logdir>/<grid>/<dataset>/<label>-seed<k>``.

A run whose directory already holds results.json of the same configuration is reused instead of trained
again (``experiments.reuse``), so an interrupted sweep continues where it stopped. Processes that each call
``train_free_runs`` share a sweep's runs between them (a run being trained is locked, and the others pass it by);
``run_and_report`` then reads them all into the table. Everything here takes plain arguments.
"""

import dataclasses
import os
import time

import keras
from absl import logging

from experiments import reuse
from experiments.launch import noting_stop_signals, progress_text
from experiments.points import TABLE_FIELDS, PointResult, RunRecord, run_dir
from experiments.report import TableWriter, machine_record, make_report
from training import data as data_lib
from training import trainer
from training.config import TrainConfig
from training.errors import OneLineError
from training.rundir import RunInUse


class SweepError(OneLineError, RuntimeError):
    """A sweep that cannot go on (a training process that failed); the message says why. A run directory holding
    another configuration is a ``reuse.ReuseError``."""


def run_config(grid, label, overrides, dataset_name, seed, train_steps, logdir, data_dir=""):
    """The ``TrainConfig`` of one run of one point. A point of a grid whose budget is in epochs sets its epochs and
    may set its batch size (``Grid``); no other point overrides what the sweep sets."""
    sweep_sets = dict(dataset=dataset_name, data_dir=data_dir, batch_size=grid.batch_size, train_steps=train_steps,
                      seed=seed, validation_split=grid.validation_split,
                      logdir=run_dir(logdir, grid.name, dataset_name, label, seed), resume=True)
    return dataclasses.replace(TrainConfig(), **{**sweep_sets, **overrides})


def reusable_results(config, data_sha256=None):
    """The results of an earlier, finished run of ``config`` in its run directory, or None when it must train
    (``reuse.reusable_results``: the policy sweeps share with seeds and races; ``data_sha256``: the SHA-256 of the
    data the sweep loaded, which a reused run must have trained on)."""
    return reuse.reusable_results(config.logdir, TABLE_FIELDS, settings=config, data_sha256=data_sha256)


def run_once(config, dataset, name, finished_before=None, data_sha256=None):
    """One run: reused from its run directory when it finished before, else trained. Logs one progress line.

    ``finished_before``: the run directories that had finished before this command began; a run read from its
    directory but not among them was trained by this command's other processes (``--jobs``), not reused.
    ``data_sha256``: ``dataset``'s fingerprint hash, computed once per sweep (``data_fingerprint``).
    """
    results = reusable_results(config, data_sha256 or data_fingerprint(dataset))
    if results is not None:
        logging.info("sweep: %s: test accuracy %.2f%%, %.1f s when trained; read %s/results.json", name,
                     100 * results["test_accuracy"], results["wall_seconds"], config.logdir)
        return RunRecord(results, reused=finished_before is None or config.logdir in finished_before)
    # The run writes its own HParams session (its recipe, grouped over seeds; training.progress.write_hparams).
    results = trainer.train(config, dataset=dataset).results
    keras.utils.clear_session()  # drop the finished model's graph state before the next run builds its own
    logging.info("sweep: %s: test accuracy %.2f%%, %.1f s, trained in %s", name, 100 * results["test_accuracy"],
                 results["wall_seconds"], config.logdir)
    return RunRecord(results, reused=False)


def data_fingerprint(dataset):
    """The SHA-256 training records for ``dataset`` (``data.fingerprint``), which a reused run must match."""
    return data_lib.fingerprint(dataset)["sha256"]


def sweep_runs(grid, dataset_name, seeds, logdir, train_steps=None, data_dir=""):
    """Every run of the sweep in table order, as ``(label, overrides, name, config)``."""
    steps = train_steps or grid.train_steps
    total = len(grid.points) * seeds
    return [(label, overrides, f"run {index * seeds + seed + 1}/{total}, point {label}, seed {seed}",
             run_config(grid, label, overrides, dataset_name, seed, steps, logdir, data_dir))
            for index, (label, overrides) in enumerate(grid.points) for seed in range(seeds)]


def run_sweep(grid, dataset, seeds, logdir, train_steps=None, data_dir="", on_point=None, finished_before=None):
    """Trains every point of ``grid`` with seeds 0..seeds-1 on ``dataset`` (a ``data.Dataset``), in-process.

    ``train_steps`` replaces the grid's budget. ``on_point(done)`` is called with the ``PointResult``s so far
    after each point. Returns them all. A stop signal that a run finished despite (it came during its last
    chunk) raises ``KeyboardInterrupt`` once that run is kept.
    """
    done, runs = [], []
    every_run = sweep_runs(grid, dataset.name, seeds, logdir, train_steps, data_dir)
    started, trained, data_sha256 = time.monotonic(), 0, data_fingerprint(dataset)
    with noting_stop_signals() as stop_arrived:
        for index, (label, overrides, name, config) in enumerate(every_run, 1):
            runs.append(run_once(config, dataset, name, finished_before, data_sha256))
            trained += not runs[-1].reused
            # The runs trained so far (reused ones cost nothing) say how long the rest will take.
            left = (time.monotonic() - started) / trained * (len(every_run) - index) if trained else None
            logging.info("sweep: %s", progress_text(index, len(every_run), left))
            if len(runs) == seeds:
                done.append(PointResult(label, dict(overrides), runs))
                runs = []
                if on_point:
                    on_point(done)
            stop_if_asked(stop_arrived, name)
    return done


def stop_if_asked(stop_arrived, name):
    """Raises ``KeyboardInterrupt`` when a stop signal arrived while the run ``name`` trained: the run finished
    and is kept, and no other starts."""
    if stop_arrived():
        logging.warning("sweep: a stop signal came while %s finished; it is kept, and the sweep stops", name)
        raise KeyboardInterrupt


def train_free_runs(grid, dataset, seeds, logdir, train_steps=None, data_dir=""):
    """Trains every run of the sweep that has not finished and that no other process is training (its directory
    is locked: passed by); writes no table. Returns how many runs this process trained."""
    trained, data_sha256 = 0, data_fingerprint(dataset)
    with noting_stop_signals() as stop_arrived:
        for label, overrides, name, config in sweep_runs(grid, dataset.name, seeds, logdir, train_steps, data_dir):
            try:
                trained += not run_once(config, dataset, name, data_sha256=data_sha256).reused
            except RunInUse:
                logging.info("sweep: %s: another process is training it; passed by", name)
            stop_if_asked(stop_arrived, name)
    return trained


def table_path(out, logdir, grid_name, dataset_name):
    """Where a sweep writes its table: ``out``, else ``<logdir>/<grid>-<dataset>.md`` beside its runs (never a
    table in sweeps/ that the repository keeps, unless asked)."""
    return out or os.path.join(logdir, f"{grid_name}-{dataset_name}.md")


def sweep_terms(grid, dataset_name, seeds, train_steps):
    """What a sweep's table depends on, as its stamp keeps it: another grid, budget or seed count is another
    table."""
    return dict(grid=grid.name, dataset=dataset_name, train_steps=train_steps, batch_size=grid.batch_size,
                seeds=seeds)


def run_and_report(grid, dataset, seeds, logdir, out, command, train_steps=None, data_dir="", train_elsewhere=None,
                   jobs=1, overwrite_table=False):
    """``run_sweep``, rewriting the markdown report ``out`` after every point; returns the ``PointResult``s.

    ``train_elsewhere()``, when given, first trains the runs in other processes (``jobs`` of them at once);
    this process then reads them, and trains any they left. ``out`` is written through a ``TableWriter``: a table
    there that another command or another sweep wrote is refused before anything trains, unless
    ``overwrite_table``.
    """
    record = machine_record()
    steps = train_steps or grid.train_steps
    table = TableWriter(out, "experiments.sweep", sweep_terms(grid, dataset.name, seeds, steps), overwrite_table)
    started = time.time()
    finished_before = {config.logdir for *_, config in sweep_runs(grid, dataset.name, seeds, logdir, train_steps,
                                                                  data_dir) if reusable_results(config) is not None}
    written = out

    def write(done):
        nonlocal written
        written = table.write(make_report(grid, dataset, steps, seeds, done, record, command,
                                          time.time() - started, jobs), len(done), len(grid.points))

    write([])
    if train_elsewhere:
        train_elsewhere()
    done = run_sweep(grid, dataset, seeds, logdir, train_steps, data_dir, on_point=write,
                     finished_before=finished_before)
    logging.info("sweep: %d points x %d seeds done in %.0f s; table in %s", len(done), seeds,
                 time.time() - started, written)
    return done
