"""A run directory's file names, and reading its JSON files, without TensorFlow: commands that only start runs
and read what they left (``experiments.seeds``, ``experiments.race``) then never import it, which spares each
such command TensorFlow's start-up and, for the hours it waits, the ~600 MiB TensorFlow holds (WORKSPACE.md
section 14). ``training/rundir.py`` owns everything else a run directory is: its lock, its writing, its
checkpoints.
"""

import json
import os

from training.errors import RunError

CONFIG, RESULTS, FLAGFILE, CHECKPOINTS, LOCK = "config.json", "results.json", "flags.txt", "checkpoints", ".lock"
CLOCK = "clock.json"


def read_saved(run_path):
    """config.json as ``{"config": {...}, "history": [...]}`` (a run of older code held the config alone)."""
    path = os.path.join(run_path, CONFIG)
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


def read_results(run_path):
    """results.json of a finished run, or None while there is none."""
    path = os.path.join(run_path, RESULTS)
    if not os.path.exists(path):
        return None
    with open(path) as file:
        return json.load(file)
