"""The run directory's one owner: what it holds, who may write it, whether a run may resume in it.

| path | written by |
| --- | --- |
| ``config.json`` | ``prepare``: ``{"format": "cnn-lab run 1", "config", "network", "data", "history"}`` |
| ``flags.txt`` | ``prepare``: the flags as a flagfile that reruns (resumes) the run |
| ``checkpoints/`` | the loops, through ``checkpoint_manager`` |
| ``train/``, ``eval/`` | the loops, through ``summary_writers`` |
| ``results.json`` | ``write_results``, at the end of the run |
| ``clock.json`` | ``write_clock``, with each checkpoint: training and evaluation seconds, evaluations, to its step |
| ``.lock`` | ``lock``: the pid and host of the run going on in it; ``close`` removes it |

What makes a folder a run directory is config.json's ``"format"`` field (or the exact shape of an older run's
config.json: ``run_files.is_run``), never the names of the files in it: a start refuses a folder that holds
anything else, so it never writes over someone's files. A run whose config.json is gone is such a folder too:
its checkpoints are not resumed, since nothing says which settings (or data) they were trained with.

A resume is checked against config.json: the FIXED settings (``check``), the network, and the data, by the
SHA-256 that ``data`` records (``check_data``; a run of code before the fingerprint resumes and gets one).

Every file is written through ``run_files.write_atomically`` (a fresh temporary name, then a rename), so a crash
leaves the old file or the new one, a full disk or read-only folder stops the run with one line, and no symbolic
link planted in the folder is written through; a start refuses a run whose own files (the table's names) are
symbolic links. TensorFlow writes the checkpoints and events files itself; a full disk or read-only folder
under those writes stops the run with one line too (``tensorflow_writes``).

What a killed process leaves is cleaned by the next start, which holds the lock, so nobody else is writing:
``write_atomically``'s temporary files, TensorFlow's unfinished checkpoint saves (``ckpt-N_temp/``,
``checkpoint.tmp<hex>``), and a dead worker's temporary directory (below). Damaged checkpoints set aside as
``*.unreadable`` are kept for the newest ``UNREADABLE_KEPT`` of them only, to look at; older ones are deleted.

Under multi-worker training every worker must take part in saving checkpoints, but only the chief keeps what
it writes: other workers write into a temporary directory (``own_dir``) that ``close`` removes, and their
config, results and summaries are not written at all. That decision is made here and nowhere else. A worker
holds a lock in its temporary directory too; one killed before ``close`` leaves a directory whose lock is free,
which the next start of a worker of the same name removes.
"""

import contextlib
import dataclasses
import datetime
import fcntl
import glob
import json
import os
import re
import shutil
import socket
import stat
import tempfile

import tensorflow as tf
from absl import logging

from models import architecture
from training import config as config_lib
from training import provenance, run_files
from training.errors import RunError, first_line
from training.run_files import CHECKPOINTS, CLOCK, CONFIG, FLAGFILE, LOCK, PREPROCESSING, RESULTS, RunFileError

STATE_FILE = "checkpoint"  # TensorFlow's list of the checkpoints in a folder, newest last
MAX_TO_KEEP = 3  # checkpoints kept; older ones are deleted as new ones are written
UNREADABLE_KEPT = 2  # damaged checkpoints whose set-aside files are kept to look at; older ones are deleted
# What TensorFlow's checkpoint writer leaves when killed mid-save: the folder it writes a save into before
# renaming the files into place (``ckpt-N_temp/``, functional_saver.py), and its state file's temporary copy
# (``checkpoint.tmp<hex>``, file_io.atomic_write_string_to_file). A finished save leaves neither.
KILLED_SAVE = re.compile(r"ckpt-\d+_temp.*|checkpoint\.tmp[0-9a-f]*")


class RunInUse(RunError):
    """The run directory is locked by a run that is still going (in this or another process)."""


class RunDir:
    """The run directory ``path``; ``chief=False`` makes this process a worker that keeps nothing there."""

    def __init__(self, path, chief=True, worker_name="worker"):
        self.path, self.chief, self.worker_name = path, chief, worker_name
        self.own_dir = path if chief else tempfile.mkdtemp(prefix=f"{worker_name}-")
        self._lock = None  # the descriptor of the flock-ed lock file while this process holds it
        self._created = None  # "directory", "contents" (found empty) or None: what this start made

    def file(self, name):
        return os.path.join(self.path, name)

    # Before the run: may it start here? --------------------------------------------------------------------

    def contents(self):
        """What the directory holds: "nothing" (absent, or only a lock and killed writes' temporary files), "run"
        (a config.json that training.train wrote: ``run_files.is_run``) or "foreign" (anything else)."""
        if not os.path.isdir(self.path):
            return "nothing"
        if not set(os.listdir(self.path)) - {LOCK} - set(run_files.write_leftovers(self.path)):
            return "nothing"
        return "run" if run_files.is_run(self.path) else "foreign"

    def holds_run(self):
        return self.contents() == "run"

    def refuse_foreign(self):
        """Stops with one line when the directory holds files that are not a run's: a start never writes over
        them, and a failed start never deletes them."""
        if self.contents() == "foreign":
            names = sorted(set(os.listdir(self.path)) - {LOCK})
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise RunError(f"--logdir {self.path} holds files that are not a run of training.train ({shown}); "
                           f"choose a new --logdir")

    def lock(self):
        """Takes ``<logdir>/.lock`` for the life of the run, so a second run on the same directory is refused.

        An ``flock`` is released by the operating system when its process ends however it ends (kill -9
        included), so a lock left by a dead process never blocks a new run. The chief locks the run directory,
        after refusing a folder that is not a run and a run whose files are symbolic links; another worker
        locks its temporary directory and removes those of dead workers of its name.
        """
        if not self.chief:
            self._lock = _claim(self.own_dir)
            _remove_dead_workers_dirs(self.worker_name, self.own_dir)
            return
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise RunError(f"--logdir {self.path} is a file, not a directory; choose a new --logdir")
        if os.path.isdir(self.path):
            run_files.refuse_symlinks(self.path)
        self.refuse_foreign()
        # What a failed start may remove: the directory if it made it, its contents if it found it empty.
        created = "directory" if not os.path.exists(self.path) else "contents" if self.contents() == "nothing" \
            else None
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as error:
            raise RunError(f"--logdir {self.path} cannot be created ({error.strerror}); choose a new --logdir") \
                from None
        self._lock = _open_lock(self.file(LOCK))
        self._created = created
        for name in run_files.write_leftovers(self.path):  # only a killed process writes without the lock
            os.remove(self.file(name))

    def check(self, config):
        """Refuses a directory that holds a run unless resuming, and a resume that would change what the run
        computes (a FIXED field of ``TrainConfig``) unless ``config.allow_config_change``. Reads only."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise RunError(f"--logdir {self.path} is a file, not a directory; choose a new --logdir")
        self.refuse_foreign()
        if not self.holds_run():
            return
        if not config.resume:
            raise RunError(f"--logdir {self.path} already holds a run; resume it (--resume) or choose a new --logdir")
        saved = self.read_saved()
        network, asked = saved.get("network"), architecture.resolve(config.arch)
        if network and network != asked:
            # Weights trained for one network cannot continue in another, whatever --allow_config_change says.
            raise RunError(f"--logdir {self.path} holds a run of the network {network}, but --arch={config.arch} "
                           f"is {asked}; resume with --arch={network} or choose a new --logdir")
        changes = config_lib.fixed_changes(saved["config"], config)
        if network:  # the same network under another name (a preset or its string) is no change
            changes.pop("arch", None)
        if changes and not config.allow_config_change:
            earlier = ", ".join(f"--{name}={old}" for name, (old, _) in changes.items())
            asked = ", ".join(f"--{name}={new}" for name, (_, new) in changes.items())
            raise RunError(f"--logdir {self.path} holds a run with {earlier}, not {asked}; resume with the run's "
                           f"own values, pass --allow_config_change, or choose a new --logdir")

    def check_data(self, config, data):
        """Refuses a resume on other data than the run trained on (the SHA-256 of ``data``, a
        ``data.fingerprint``, differs from config.json's; a --data_dir whose mnist.npz holds Fashion-MNIST, say)
        unless ``config.allow_config_change``, as a changed FIXED setting is. A run of older code recorded no
        fingerprint: it resumes as before, and ``prepare`` records one from this start on. Chief only; reads only."""
        if not self.chief or not self.holds_run():
            return
        recorded = _recorded_data(self.read_saved())
        if recorded is None or recorded["sha256"] == data["sha256"] or config.allow_config_change:
            return
        raise RunError(f"--logdir {self.path} holds a run trained on other data ({_describe_data(recorded)}) than "
                       f"this start's ({_describe_data(data)}); resume with the run's data, pass "
                       f"--allow_config_change, or choose a new --logdir")

    # config.json ----------------------------------------------------------------------------------------------

    def read_saved(self):
        """config.json as ``{"config": {...}, "history": [...]}`` (``run_files.read_saved``)."""
        return run_files.read_saved(self.path)

    def read_config(self):
        """The run's ``TrainConfig``, whose ``arch`` is the network the run trained: the string config.json
        recorded it as, should a preset's definition have changed since."""
        if not os.path.isdir(self.path):
            raise RunError(f"run directory {self.path} does not exist")
        if not os.path.exists(self.file(CONFIG)):
            raise RunError(f"{self.path} holds no {CONFIG}; pass a run directory written by training.train")
        saved = self.read_saved()
        try:
            config, unknown = config_lib.from_json(saved["config"])
        except config_lib.ConfigError as error:  # a damaged file, or a run of code that allowed other settings
            raise RunError(f"{self.file(CONFIG)}: {error}") from None
        if unknown:  # a run of another version of the code; what it computed is still described by the rest
            logging.warning("%s: ignoring fields TrainConfig does not know: %s", self.file(CONFIG), ", ".join(unknown))
        network = saved.get("network")
        if network and network != architecture.resolve(config.arch):
            logging.warning("%s: --arch=%s now means %s; the run trained %s, which is used", self.file(CONFIG),
                            config.arch, architecture.resolve(config.arch), network)
            config = dataclasses.replace(config, arch=network)
        return config

    def prepare(self, config, flagfile=None, from_step=0, numerics=None, data=None, standardization=None):
        """Creates the directory and records this start in config.json (and flags.txt when ``flagfile`` text is
        given), with the fingerprint of the ``data`` it trains on (``data.fingerprint``; without one, the
        recorded one is kept). Earlier starts stay in the history, with the fields this one changed (``data``:
        the two SHA-256s) and, under ``--precision=auto``, the ``numerics`` it computed in and why
        (``training.numerics.Choice.record``). A standardised run's ``standardization`` (mean, std) goes to
        preprocessing.json, so that what opens the run later uses the statistics it trained with."""
        if not self.chief:
            return
        os.makedirs(self.path, exist_ok=True)
        history, changed, recorded = [], {}, None
        if os.path.exists(self.file(CONFIG)):
            saved = self.read_saved()
            history, recorded = saved["history"], _recorded_data(saved)
            now = config_lib.as_json(config)
            changed = {name: [old, now[name]] for name, old in saved["config"].items()
                       if name in now and old != now[name]}
        if data and recorded and recorded["sha256"] != data["sha256"]:  # allowed by --allow_config_change
            changed["data"] = [recorded["sha256"], data["sha256"]]
        data = data or recorded
        # Which code on which CPU: a run resumed across sessions may have had several of each.
        history.append(dict(started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                            from_step=from_step, changed=changed, commit=provenance.git_commit(),
                            cpu=provenance.cpu_model()))
        if numerics:
            history[-1]["numerics"] = numerics
        record = dict(format=run_files.RUN_FORMAT, config=config_lib.as_json(config),
                      network=architecture.resolve(config.arch), history=history)
        if data:
            record["data"] = data
        run_files.write_atomically(self.file(CONFIG), json.dumps(record, indent=2))
        if flagfile is not None:
            run_files.write_atomically(self.file(FLAGFILE), flagfile)
        if standardization is not None:
            mean, std = standardization
            run_files.write_atomically(self.file(PREPROCESSING), json.dumps(dict(
                mean=[float(v) for v in mean], std=[float(v) for v in std], source=(data or {}).get("source")),
                indent=2))

    # Checkpoints and summaries -------------------------------------------------------------------------------

    def restore_latest(self, checkpoint, step):
        """Restores the newest checkpoint of the run that restores completely (the chief's, which every worker
        reads) into ``checkpoint``; returns its path, or None when the run has none yet.

        A checkpoint that cannot be read (a missing, truncated or corrupted file) is skipped for the next older
        one, with a log line saying why, and set aside as ``*.unreadable`` so the run never writes over it or
        counts it among the kept ones. When checkpoint files exist but none restores, the run stops with one
        line and nothing is touched: a run never starts from step 0 over checkpoints. A checkpoint that reads
        but does not hold this run's variables (another architecture, say) is refused: every variable must find
        its value and every saved value its variable. The chief first removes what killed saves left
        (``KILLED_SAVE``): a run whose checkpoints folder held nothing else starts from step 0.
        """
        directory = self.file(CHECKPOINTS)
        if os.path.lexists(directory) and not os.path.isdir(directory):
            raise RunError(f"{directory} is not a folder of checkpoints; move it away or choose a new --logdir")
        if self.chief:
            _remove_killed_saves(directory)
        candidates = checkpoint_prefixes(directory)
        if not candidates:
            # A save killed before it finished is no checkpoint: a run that has only such leftovers starts afresh.
            leftovers = [name for name in os.listdir(directory) if not KILLED_SAVE.fullmatch(name)] \
                if os.path.isdir(directory) else []
            if leftovers:
                raise RunError(f"{directory} holds files ({', '.join(sorted(leftovers)[:3])}, ...) but no readable "
                               f"checkpoint; move them away or choose a new --logdir")
            return None
        prefix, skipped = _newest_restorable(
            candidates, lambda p: checkpoint.restore(p).assert_consumed(),
            lambda p, reason: f"{p} does not hold this run's state ({reason}); choose a new --logdir")
        if prefix is None:
            raise RunError(f"no checkpoint in {directory} can be restored ({_reasons(skipped)}); nothing was "
                           f"changed: move them away or choose a new --logdir")
        if self.chief:
            self._forget_newer_than(prefix, candidates)
            _prune_unreadable(directory)
        logging.info("resumed from %s at step %d%s", prefix, int(step),
                     f" (newer ones unreadable: {', '.join(os.path.basename(p) for p, _ in skipped)})"
                     if skipped else "")
        return prefix

    def restore_weights(self, network, arch=""):
        """Restores only ``network``'s weights (no optimizer or step) from the newest checkpoint that restores,
        for reading a run (inspection, export); returns ``(checkpoint prefix, its training step)``. Unreadable
        newer checkpoints are skipped with a log line, as a resumed run does; nothing is written."""
        directory = self.file(CHECKPOINTS)
        prefixes = checkpoint_prefixes(directory)
        if not prefixes:
            raise RunError(f"{directory} holds no checkpoint yet; wait for the run's first one (--checkpoint_every)")
        # The optimizer and step are not needed (expect_partial); every weight of the network must be found.
        state = tf.train.Checkpoint(model=network.checkpoint_state())
        prefix, skipped = _newest_restorable(
            prefixes, lambda p: state.restore(p).expect_partial().assert_existing_objects_matched(),
            lambda p, reason: f"{p} does not hold the weights of arch={arch} from {self.file(CONFIG)} ({reason})")
        if prefix is None:
            raise RunError(f"no checkpoint in {directory} can be restored ({_reasons(skipped)})")
        reader = tf.train.load_checkpoint(prefix)
        step_key = "step/.ATTRIBUTES/VARIABLE_VALUE"
        return prefix, int(reader.get_tensor(step_key)) if reader.has_tensor(step_key) else 0

    def _forget_newer_than(self, resumed, candidates):
        """Sets aside every file of a checkpoint newer than ``resumed`` (unreadable ones, or what is left of
        one whose index is gone) and rewrites the state file to list the intact checkpoints up to ``resumed``.

        The state file is written atomically here, as TensorFlow writes checkpoint files (a temporary name, then
        a rename), so a crash mid-save leaves the previous checkpoint intact.
        """
        directory = self.file(CHECKPOINTS)
        resumed_step = _step_of(resumed)
        newer = sorted({path.rsplit(".", 1)[0] if path.endswith(".index") else path.split(".data-")[0]
                        for path in glob.glob(os.path.join(glob.escape(directory), "ckpt-*"))
                        if not path.endswith(".unreadable") and (_step_of(path) or 0) > resumed_step})
        if newer:
            logging.warning("setting aside checkpoint files newer than %s: %s", os.path.basename(resumed),
                            ", ".join(os.path.basename(p) for p in newer))
            _set_aside(newer)
        kept = [p for p in candidates if _step_of(p) <= resumed_step]
        run_files.write_atomically(os.path.join(directory, STATE_FILE), checkpoint_state_text(resumed, kept[::-1]))

    def checkpoint_manager(self, checkpoint):
        return tf.train.CheckpointManager(checkpoint, os.path.join(self.own_dir, CHECKPOINTS), max_to_keep=MAX_TO_KEEP)

    def summary_writers(self):
        """``{"train", "eval"}`` TensorBoard writers; no-op writers on a worker that is not the chief."""
        if not self.chief:
            return {part: tf.summary.create_noop_writer() for part in ("train", "eval")}
        return {part: tf.summary.create_file_writer(self.file(part)) for part in ("train", "eval")}

    def tensorflow_writes(self):
        """A context in which a write that TensorFlow's own code fails (a checkpoint's files, the ``checkpoint``
        state file, a TensorBoard events file) for want of room or permission stops with one ``RunFileError``
        naming the folder, what to do, and where the same command will resume. Nothing is lost: a failed save
        leaves the checkpoints before it as they were (TensorFlow writes under temporary names, which the next
        start removes), and the steps since the last one are trained again to the same weights."""
        return run_files.failed_writes_stop(self._top_folder, self._resumes_from)

    def _resumes_from(self):
        newest = checkpoint_prefixes(os.path.join(self.own_dir, CHECKPOINTS))
        if newest:
            return f"run the same command again to resume from its last checkpoint, {newest[0]}, which is kept"
        return "run the same command again; no checkpoint had been saved, so it starts from step 0"

    def _top_folder(self, path):
        """The run's own entry (``<run>/checkpoints``, ``<run>/train``, or the run folder itself) that ``path`` is
        written in; the file's folder when it lies outside the run."""
        if path is None:
            return self.own_dir
        relative = os.path.relpath(path, self.own_dir)
        if relative.startswith(os.pardir):
            return os.path.dirname(path)
        return os.path.join(self.own_dir, relative.split(os.sep)[0]) if os.sep in relative else self.own_dir

    # After the run --------------------------------------------------------------------------------------------

    def write_results(self, results):
        if self.chief:
            run_files.write_atomically(self.file(RESULTS), json.dumps(results, indent=2, sort_keys=True))
        # The whole file as one line (~900 characters) at --verbosity=1: the run ends with a two-line summary of it.
        logging.vlog(1, "results: %s", json.dumps(results, sort_keys=True))

    def write_clock(self, step, state):
        """Records ``state`` (the run's clock, JSON-able) as of checkpoint ``step``, beside this process's
        checkpoints, so a resumed run keeps counting its time; entries after ``step`` (an abandoned later
        branch) are dropped."""
        clocks = {key: value for key, value in self._read_clocks().items() if int(key) < step}
        clocks[str(step)] = state
        run_files.write_atomically(os.path.join(self.own_dir, CLOCK), json.dumps(clocks, sort_keys=True))

    def read_clock(self, step):
        """The clock state recorded with checkpoint ``step``, or None (a run of older code)."""
        return self._read_clocks().get(str(step))

    def _read_clocks(self):
        path = os.path.join(self.own_dir, CLOCK)
        if not os.path.exists(path):
            return {}
        try:
            return run_files.read_json(path)
        except (OSError, ValueError):
            logging.warning("%s is unreadable; the time before this start is not counted", path)
            return {}

    def read_results(self):
        """results.json of a finished run, or None while there is none."""
        return run_files.read_results(self.path)

    def finished_results(self, step, total_steps):
        """results.json when the run had already trained all ``total_steps`` and written its results at that
        step, else None. A start that finds its run so finished changes nothing: rewriting results.json would
        record the no-op start's wall time and a throughput of 0."""
        if step < total_steps:
            return None
        with contextlib.suppress(OSError, ValueError):  # an unreadable results.json is written again
            results = self.read_results()
            if results and results.get("train_steps") == step:
                logging.info("the run in %s had already finished at step %d; its results are in %s, unchanged",
                             self.path, step, self.file(RESULTS))
                return results
        return None

    def close(self, failed=False):
        """Releases the lock and removes a non-chief worker's temporary directory. After a failed start that
        made the directory and saved no checkpoint, removes the directory too: a failed start leaves no run."""
        if self.own_dir != self.path:
            shutil.rmtree(self.own_dir, ignore_errors=True)
            logging.info("removed this worker's temporary run directory %s", self.own_dir)
        if self._lock is not None:
            if self.chief:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.file(LOCK))
            os.close(self._lock)  # closing releases the flock
            self._lock = None
        if failed and self._created and not checkpoint_prefixes(self.file(CHECKPOINTS)):
            if self._created == "directory":
                shutil.rmtree(self.path, ignore_errors=True)
            else:
                for name in os.listdir(self.path):
                    path = self.file(name)
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def checkpoint_state_text(newest, kept):
    """The ``checkpoint`` state file listing ``kept`` (oldest first) with ``newest`` as the one to restore.

    TensorFlow's text-format ``CheckpointState`` with names relative to the folder, as ``CheckpointManager``
    writes it (the run directory can move), and with each checkpoint's time (its index file's): a manager that
    reads the file rotates only checkpoints that carry a time, so without them the ones a resumed run started
    from would stay for good.
    """
    lines = [f'model_checkpoint_path: "{os.path.basename(newest)}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(path)}"' for path in kept]
    lines += [f"all_model_checkpoint_timestamps: {os.path.getmtime(path + '.index'):.6f}" for path in kept]
    return "\n".join(lines) + "\n"


def stopped_message(path):
    """What a run stopped by a signal says: where its checkpoints are, or that it had none yet (a start that made
    its directory then leaves nothing behind, and the same command starts over)."""
    if checkpoint_prefixes(os.path.join(path, CHECKPOINTS)):
        return (f"stopped by a signal; checkpoints already saved in {path} are kept, and the same command resumes "
                f"from the last one")
    return "stopped by a signal before the run's first checkpoint; the same command starts it from step 0"


def checkpoint_prefixes(directory):
    """Prefixes of the checkpoints in ``directory`` that have an index file, newest (highest step) first.

    Read from the files themselves rather than from the ``checkpoint`` state file, which may be damaged.
    """
    prefixes = [path[:-len(".index")] for path in glob.glob(os.path.join(glob.escape(directory), "ckpt-*.index"))]
    return sorted((p for p in prefixes if _step_of(p) is not None), key=_step_of, reverse=True)


def _newest_restorable(prefixes, restore, mismatch):
    """``(the first of prefixes that restore(prefix) reads, [(prefix, reason) of the unreadable ones before
    it])``, or ``(None, all of them)``. Prefixes go newest first. A checkpoint that reads but does not match what
    it is restored into (an ``AssertionError``) stops with ``RunError(mismatch(prefix, reason))``."""
    skipped = []
    for prefix in prefixes:
        try:
            restore(prefix)
        except AssertionError as error:
            raise RunError(mismatch(prefix, first_line(error))) from None
        except (tf.errors.OpError, ValueError, IndexError, KeyError) as error:
            skipped.append((prefix, first_line(error)))
            logging.warning("checkpoint %s cannot be restored (%s); trying the next older one", prefix,
                            skipped[-1][1])
            continue
        return prefix, skipped
    return None, skipped


def _recorded_data(saved):
    """The data fingerprint config.json recorded (``{"sha256", "source", "images"}``), or None: a run of code
    before fingerprints, or a record without a hash, which the next start replaces."""
    data = saved.get("data")
    return data if isinstance(data, dict) and isinstance(data.get("sha256"), str) else None


def _describe_data(data):
    """``<source>, 60,000 + 10,000 images, SHA-256 0123456789ab``: enough to tell two datasets apart by eye."""
    images = data.get("images")
    counts = f"{images[0]:,} + {images[1]:,} images, " \
        if isinstance(images, list) and len(images) == 2 and all(isinstance(n, int) for n in images) else ""
    return f"{data.get('source', 'unknown source')}, {counts}SHA-256 {data['sha256'][:12]}"


def _reasons(skipped):
    return "; ".join(f"{os.path.basename(prefix)}: {reason}" for prefix, reason in skipped)[:300]


def _step_of(path):
    """N of a ``.../ckpt-N[.suffix]`` path, or None."""
    number = os.path.basename(path)[len("ckpt-"):].split(".")[0]
    return int(number) if number.isdigit() else None


def _set_aside(prefixes):
    for prefix in prefixes:
        for path in glob.glob(glob.escape(prefix) + ".*"):
            if not path.endswith(".unreadable"):
                os.replace(path, path + ".unreadable")


def _open_lock(path):
    """The descriptor of ``path`` (created if need be), flock-ed for this process, with this process named in it.

    Opened without following a symbolic link and without truncating, then checked to be a plain file of its
    own (a hard link would share its content with a file elsewhere): only a file this run owns is emptied.
    """
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as error:
        raise RunFileError(run_files.cannot_write(path, error)) from None
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode) or status.st_nlink != 1:
        os.close(descriptor)
        raise RunFileError(f"{path} is not a plain file of this run (a hard link or a special file); remove it, "
                           f"or choose a new --logdir")
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(descriptor, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(descriptor)
        raise RunInUse(f"--logdir {os.path.dirname(path)} is in use by a run that is still going ({holder}); "
                       f"wait for it to end or choose a new --logdir") from None
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    except OSError as error:
        os.close(descriptor)
        raise RunFileError(run_files.cannot_write(path, error)) from None
    return descriptor


def _claim(folder):
    """A flock-ed ``folder/.lock`` for a worker's temporary directory: locked before it has its name, so a lock
    file that another process finds free was left by a worker that died."""
    descriptor, temporary = tempfile.mkstemp(prefix=f"{LOCK}.", dir=folder)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else knows the fresh name: never refused
    os.replace(temporary, os.path.join(folder, LOCK))
    return descriptor


WORKER_DIR_NAMES = {LOCK, CHECKPOINTS, CLOCK}  # what a worker writes into its temporary directory


def _remove_dead_workers_dirs(worker_name, own_dir):
    """Removes the temporary directories of killed workers named ``worker_name`` beside ``own_dir``: those whose
    lock is free and that hold nothing but what a worker writes. A live worker's lock is held; a folder without
    a lock (a worker of older code, or another program's) is left alone."""
    pattern = os.path.join(glob.escape(os.path.dirname(own_dir)), f"{glob.escape(worker_name)}-*")
    for folder in glob.glob(pattern):
        lock = os.path.join(folder, LOCK)
        if folder == own_dir or os.path.islink(folder) or not os.path.isfile(lock) \
                or set(os.listdir(folder)) - WORKER_DIR_NAMES:
            continue
        try:
            descriptor = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a worker that is still going
        finally:
            os.close(descriptor)
        shutil.rmtree(folder, ignore_errors=True)
        logging.info("removed %s, the temporary run directory of a worker that was killed", folder)


def _remove_killed_saves(directory):
    """Removes what killed checkpoint saves left in ``directory`` (``KILLED_SAVE``): the run holds its lock, so
    no save is going on, and a finished save leaves none of them."""
    if not os.path.isdir(directory):
        return
    names = sorted(name for name in os.listdir(directory) if KILLED_SAVE.fullmatch(name)) + \
        run_files.write_leftovers(directory, [STATE_FILE])
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    if names:
        logging.warning("removed what killed checkpoint saves left in %s: %s", directory, ", ".join(names))


def _prune_unreadable(directory):
    """Deletes the files set aside as ``*.unreadable`` but those of the newest ``UNREADABLE_KEPT`` checkpoints:
    a run that resumes many times over damaged saves does not fill its disk with them."""
    paths = glob.glob(os.path.join(glob.escape(directory), "ckpt-*.unreadable"))
    steps = sorted({_step_of(path) for path in paths if _step_of(path) is not None}, reverse=True)
    dropped = steps[UNREADABLE_KEPT:]
    for path in paths:
        if _step_of(path) in dropped:
            os.remove(path)
    if dropped:
        logging.info("deleted the unreadable files set aside of checkpoints %s; those of the newest %d damaged "
                     "checkpoints are kept in %s", ", ".join(f"ckpt-{step}" for step in sorted(dropped)),
                     UNREADABLE_KEPT, directory)
