"""The run directory's one owner: what it holds, who may write it, whether a run may resume in it.

| path | written by |
| --- | --- |
| ``config.json`` | ``prepare``: ``{"config": <TrainConfig>, "history": [one entry per start]}`` |
| ``flags.txt`` | ``prepare``: the flags as a flagfile that reruns (resumes) the run |
| ``checkpoints/`` | the loops, through ``checkpoint_manager`` |
| ``train/``, ``eval/`` | the loops, through ``summary_writers`` |
| ``results.json`` | ``write_results``, at the end of the run |

Under multi-worker training every worker must take part in saving checkpoints, but only the chief keeps what
it writes: other workers write into a temporary directory (``own_dir``) that ``close`` removes, and their
config, results and summaries are not written at all. That decision is made here and nowhere else.
"""

import datetime
import json
import os
import shutil
import tempfile

import tensorflow as tf
from absl import logging

from training import config as config_lib
from training.errors import RunError

CONFIG, RESULTS, FLAGFILE, CHECKPOINTS = "config.json", "results.json", "flags.txt", "checkpoints"
MAX_TO_KEEP = 3  # checkpoints kept; older ones are deleted as new ones are written


class RunDir:
    """The run directory ``path``; ``chief=False`` makes this process a worker that keeps nothing there."""

    def __init__(self, path, chief=True, worker_name="worker"):
        self.path, self.chief = path, chief
        self.own_dir = path if chief else tempfile.mkdtemp(prefix=f"{worker_name}-")

    def file(self, name):
        return os.path.join(self.path, name)

    # Before the run: may it start here? --------------------------------------------------------------------

    def holds_run(self):
        return os.path.isdir(self.path) and bool(os.listdir(self.path))

    def check(self, config):
        """Refuses a directory that holds a run unless resuming, and a resume that would change what the run
        computes (a FIXED field of ``TrainConfig``) unless ``config.allow_config_change``. Reads only."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise RunError(f"--logdir {self.path} is a file, not a directory; choose a new --logdir")
        if not self.holds_run():
            return
        if not config.resume:
            raise RunError(f"--logdir {self.path} already holds a run; resume it (--resume) or choose a new --logdir")
        if not os.path.exists(self.file(CONFIG)):
            return
        changes = config_lib.fixed_changes(self.read_saved()["config"], config)
        if changes and not config.allow_config_change:
            earlier = ", ".join(f"--{name}={old}" for name, (old, _) in changes.items())
            asked = ", ".join(f"--{name}={new}" for name, (_, new) in changes.items())
            raise RunError(f"--logdir {self.path} holds a run with {earlier}, not {asked}; resume with the run's "
                           f"own values, pass --allow_config_change, or choose a new --logdir")

    # config.json ----------------------------------------------------------------------------------------------

    def read_saved(self):
        """config.json as ``{"config": {...}, "history": [...]}`` (a run of older code held the config alone)."""
        path = self.file(CONFIG)
        try:
            with open(path) as file:
                saved = json.load(file)
        except OSError as error:
            raise RunError(f"{path}: cannot be read ({error.strerror})") from None
        except ValueError as error:
            raise RunError(f"{path}: not valid JSON ({error}); move it away or choose a new --logdir") from None
        if not isinstance(saved, dict):
            raise RunError(f"{path}: holds no run configuration; move it away or choose a new --logdir")
        return saved if "config" in saved else {"config": saved, "history": []}

    def read_config(self):
        """The run's ``TrainConfig``."""
        if not os.path.isdir(self.path):
            raise RunError(f"run directory {self.path} does not exist")
        if not os.path.exists(self.file(CONFIG)):
            raise RunError(f"{self.path} holds no {CONFIG}; pass a run directory written by training.train")
        config, unknown = config_lib.from_json(self.read_saved()["config"])
        if unknown:  # a run of another version of the code; what it computed is still described by the rest
            logging.warning("%s: ignoring fields TrainConfig does not know: %s", self.file(CONFIG), ", ".join(unknown))
        return config

    def prepare(self, config, flagfile=None, from_step=0):
        """Creates the directory and records this start in config.json (and flags.txt when ``flagfile`` text is
        given). Earlier starts stay in the history, with the fields this one changed."""
        if not self.chief:
            return
        os.makedirs(self.path, exist_ok=True)
        history, changed = [], {}
        if os.path.exists(self.file(CONFIG)):
            saved = self.read_saved()
            history = saved["history"]
            now = config_lib.as_json(config)
            changed = {name: [old, now[name]] for name, old in saved["config"].items()
                       if name in now and old != now[name]}
        history.append(dict(started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                            from_step=from_step, changed=changed))
        _write_atomically(self.file(CONFIG), json.dumps(dict(config=config_lib.as_json(config), history=history),
                                                        indent=2))
        if flagfile is not None:
            _write_atomically(self.file(FLAGFILE), flagfile)

    # Checkpoints and summaries -------------------------------------------------------------------------------

    def restore_latest(self, checkpoint, step):
        """Restores the newest checkpoint of the run (the chief's, which every worker reads) into ``checkpoint``.

        Every variable must find its value (else the run would go on from fresh weights) and every saved value
        its variable (else part of the saved run would be silently dropped); a mismatch is a one-line RunError.
        Returns the restored checkpoint's path, or None when there is none.
        """
        latest = tf.train.latest_checkpoint(self.file(CHECKPOINTS))
        if latest:
            try:
                checkpoint.restore(latest).assert_consumed()
            except AssertionError as error:
                reason = str(error).strip().splitlines()[0][:200]
                raise RunError(f"{latest} does not hold this run's state ({reason}); choose a new --logdir") from None
            logging.info("resumed from %s at step %d", latest, int(step))
        return latest

    def checkpoint_manager(self, checkpoint):
        return tf.train.CheckpointManager(checkpoint, os.path.join(self.own_dir, CHECKPOINTS), max_to_keep=MAX_TO_KEEP)

    def summary_writers(self):
        """``{"train", "eval"}`` TensorBoard writers; no-op writers on a worker that is not the chief."""
        if not self.chief:
            return {part: tf.summary.create_noop_writer() for part in ("train", "eval")}
        return {part: tf.summary.create_file_writer(self.file(part)) for part in ("train", "eval")}

    # After the run --------------------------------------------------------------------------------------------

    def write_results(self, results):
        if self.chief:
            _write_atomically(self.file(RESULTS), json.dumps(results, indent=2, sort_keys=True))
        logging.info("results: %s", json.dumps(results, sort_keys=True))

    def read_results(self):
        """results.json of a finished run, or None while there is none."""
        if not os.path.exists(self.file(RESULTS)):
            return None
        with open(self.file(RESULTS)) as file:
            return json.load(file)

    def close(self):
        """Removes a non-chief worker's temporary directory."""
        if self.own_dir != self.path:
            shutil.rmtree(self.own_dir, ignore_errors=True)
            logging.info("removed this worker's temporary run directory %s", self.own_dir)


def _write_atomically(path, text):
    with open(path + ".tmp", "w") as file:
        file.write(text)
    os.replace(path + ".tmp", path)  # a reader never sees half a file
