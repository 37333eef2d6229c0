"""When an experiment command reads a finished run instead of training it again: one policy for
``experiments.sweep``, ``seeds`` and ``race`` (``reusable_results``). Without TensorFlow, as seeds and race are."""

import dataclasses
import os

from experiments.launch import read_results
from training import config as config_lib
from training import run_files
from training.errors import OneLineError


class ReuseError(OneLineError, RuntimeError):
    """A run directory holding a run of other settings, which can be neither reused nor resumed; the message
    names them."""


def reusable_results(run_path, required=(), settings=None, data_sha256=None):
    """results.json of the finished run in ``run_path`` that the command reads instead of training the run again,
    or None when the run must train (afresh, or resumed by ``training.train`` from its last checkpoint).

    The policy, the same for every command:

    1. Same settings: the run computes what is asked. Its config.json holds the FIXED settings of ``settings`` (a
       ``TrainConfig``), by training's resume rule (``config.fixed_changes``: a field an older run did not record
       had the default), and the same step budget (``train_steps``; ``epochs`` when that is 0). Otherwise
       ``ReuseError``, finished or not: training would refuse to resume it, and reading it would put another
       run in the table. ``settings=None`` (seeds, race): the command has already pinned the settings of every
       run in its folder, by the recipe flags it records (``<recipe>.seeds.json``, ``race.json``) and refuses
       to see change.
    2. Finished: results.json is present and readable, with the ``required`` fields and every field of
       ``launch.RESULT_FIELDS`` of its type (``launch.read_results``; a damaged one raises ``StateFileError``
       naming it, rather than being trained over).
    3. Of that budget: with ``settings`` whose budget is in steps, results.json's ``train_steps`` is that budget,
       unless the run stops at its target; a run whose budget was raised and that has not finished again holds
       the shorter run's results, and is resumed.
    4. Same data: with ``data_sha256`` (the SHA-256 of ``data.fingerprint`` of what the command loaded), a run
       whose config.json records other data is a ``ReuseError``, as training refuses to resume it; a run of code
       before fingerprints recorded none and is judged by its settings alone.
    """
    if settings is not None and os.path.lexists(os.path.join(run_path, run_files.CONFIG)):
        _refuse_other_settings(run_path, settings)
        if data_sha256 is not None:
            _refuse_other_data(run_path, data_sha256)
    results = read_results(run_path, required)
    if results is None or settings is None or not settings.train_steps or settings.stop_at_target:
        return results
    return results if results.get("train_steps") == settings.train_steps else None


def _refuse_other_data(run_path, data_sha256):
    """``ReuseError`` when the run in ``run_path`` recorded a data fingerprint other than ``data_sha256``."""
    record = data_record(run_path)
    if record is not None and record[0] != data_sha256:
        raise ReuseError(f"{run_path} holds a run trained on other data ({record[1]}, SHA-256 {record[0][:12]}), not "
                         f"the data this command loaded (SHA-256 {data_sha256[:12]}); pass another --logdir or remove "
                         "that directory")


def data_record(run_path):
    """``(sha256, source)`` of the data the run in ``run_path`` recorded in its config.json, or None (a run of code
    before fingerprints, or not yet started)."""
    if not os.path.lexists(os.path.join(run_path, run_files.CONFIG)):
        return None
    data = run_files.read_saved(run_path).get("data")
    recorded = data.get("sha256") if isinstance(data, dict) else None
    return (recorded, str(data.get("source", "unknown source"))) if isinstance(recorded, str) else None


class OneDataset:
    """The data the runs of one table were trained on. Seeds and races read runs without loading data (they run
    without TensorFlow), so they cannot ask, as a sweep does, whether a finished run is of the data this command
    loads; they refuse a table whose runs disagree: the first run that recorded a fingerprint sets it."""

    def __init__(self):
        self.first = None  # (run path, (sha256, source))

    def check(self, run_path):
        """``ReuseError`` when the run in ``run_path`` recorded other data than the first run checked."""
        record = data_record(run_path)
        if record is None:
            return
        if self.first is None:
            self.first = (run_path, record)
            return
        first_path, (sha256, source) = self.first
        if record[0] != sha256:
            raise ReuseError(f"{run_path} was trained on other data ({record[1]}, SHA-256 {record[0][:12]}) than "
                             f"{first_path} ({source}, SHA-256 {sha256[:12]}); one table compares runs of one "
                             "dataset: pass another --logdir, or the --data_dir those runs were trained on")


def _refuse_other_settings(run_path, settings):
    """``ReuseError`` naming the settings on which the run in ``run_path`` and ``settings`` differ, if any."""
    earlier = run_files.read_saved(run_path)["config"]  # checked there: an object
    auto = config_lib.AUTO_PRECISION
    if settings.precision == auto and earlier.get("precision", auto) != auto:
        # As training resumes it (numerics.from_saved_run): with the numerics the run's first start chose.
        settings = dataclasses.replace(settings, precision=earlier["precision"],
                                       jit_compile=bool(earlier.get("jit_compile", False)))
    differ = dict(config_lib.fixed_changes(earlier, settings))
    # The budget is FREE for training (a run may be extended), but a table compares one budget. A run that did
    # not record it (older code) is judged by its results.json alone.
    for name in ("train_steps",) if settings.train_steps else ("train_steps", "epochs"):
        if name in earlier and earlier[name] != getattr(settings, name):
            differ[name] = (earlier[name], getattr(settings, name))
    if differ:
        found = ", ".join(f"{name}={old}" for name, (old, _) in differ.items())
        asked = ", ".join(f"{name}={new}" for name, (_, new) in differ.items())
        raise ReuseError(f"{run_path} holds a run with {found}, not {asked}; pass another --logdir or remove that "
                         f"directory")
