"""The processes an experiment command waits for: the ``training.train`` command of one seed of a recipe (seeds,
race) and where that run lives, running children with the command's console (one, or a pool of several side
by side, as ``experiments.seeds --jobs`` and ``experiments.sweep --jobs`` use), how their exits read, and the
checked reading of the JSON files those commands keep and read."""

import contextlib
import math
import numbers
import os
import signal
import subprocess
import sys
import threading
import time

from training import flagfiles, run_files
from training.errors import OneLineError
from training.stopping import handling_stop_signals


class StateFileError(OneLineError, ValueError):
    """A JSON file an experiment command reads (a run's results.json or config.json, race.json, seeds.json) that
    is damaged; the message names the file."""


def recipe_name(flagfile):
    """A flagfile's name without its folder and ``.cfg``: the prefix of its run directories."""
    return os.path.splitext(os.path.basename(flagfile))[0]


def progress_text(done, total, remaining_seconds):
    """``"k of N runs done; about T left"``: what a long command says as each of its runs ends.
    ``remaining_seconds`` is the estimate from the runs it trained so far (None: no estimate yet)."""
    left = "" if remaining_seconds is None or done == total else f"; about {_clock(remaining_seconds)} left"
    return f"{done} of {total} runs done{left}"


def _clock(seconds):
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


def resolved_recipe(flagfile, error_type):
    """``flagfiles.resolved_flags`` of ``flagfile``: what it trains, the flagfiles it includes expanded; a nested
    flagfile that cannot be read raises ``error_type`` in one line."""
    try:
        return flagfiles.resolved_flags(flagfile)
    except OSError as error:
        raise error_type(f"{flagfile} includes {error.filename}, which cannot be read ({error.strerror})") from None
    except ValueError as error:
        raise error_type(str(error)) from None


def run_dir(logdir, name, seed):
    """``<logdir>/<name>-seed<seed>``: the run directory of one seed of a recipe called ``name``."""
    return os.path.join(logdir, f"{name}-seed{seed}")


def read_json_object(path, what):
    """The JSON object in ``path``, which holds ``what``; a file that cannot be read, is not JSON or holds
    something else than an object raises ``StateFileError`` naming it."""
    try:
        value = run_files.read_json(path)
    except OSError as error:
        raise StateFileError(f"{path}: cannot be read ({error.strerror})") from None
    except ValueError as error:
        raise StateFileError(f"{path}: not valid JSON ({error}); it should hold {what}: move it away") from None
    if not isinstance(value, dict):
        raise StateFileError(f"{path}: holds a JSON {type(value).__name__}, not {what}: move it away")
    return value


def _is_number(value):
    """A finite number: JSON's NaN and Infinity (which Python writes and reads) would make a table's mean and
    interval NaN, or stop statistics.stdev with a traceback."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_fraction(value):
    return _is_number(value) and 0 <= value <= 1


# The results.json fields the experiment tables read, and what each must be. None is allowed where a run may
# have no value: no validation set, or a target never reached.
RESULT_FIELDS = {
    "test_accuracy": (_is_fraction, "a number in [0, 1]"), "test_loss": (_is_number, "a finite number"),
    "train_steps": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "train_seconds": (_is_number, "a finite number"), "wall_seconds": (_is_number, "a finite number"),
    "images_per_second": (_is_number, "a finite number"),
    "params": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "validation_accuracy": (lambda v: v is None or _is_fraction(v), "a number in [0, 1] or null"),
    "seconds_to_target": (lambda v: v is None or _is_number(v), "a finite number or null"),
    "images_to_target": (lambda v: v is None or _is_number(v), "a finite number or null"),
    "evaluations": (lambda v: v is None or _is_curve(v), "a list of evaluations in step order, each with an integer "
                    "step and images and a test_accuracy in [0, 1], or null"),
}


def _is_curve(evaluations):
    """results.json's ``evaluations`` (``training.progress.evaluation_records``): what a learning curve reads."""
    if not isinstance(evaluations, list):
        return False
    steps = []
    for record in evaluations:
        if not (isinstance(record, dict) and all(type(record.get(key)) is int for key in ("step", "images"))
                and _is_fraction(record.get("test_accuracy"))
                and (record.get("validation_accuracy") is None or _is_fraction(record["validation_accuracy"]))):
            return False
        steps.append(record["step"])
    return steps == sorted(set(steps))


def read_results(path, required=()):
    """results.json of the run directory ``path`` (None while the run has not finished), checked: an object whose
    ``RESULT_FIELDS`` have their types, holding every field of ``required``. Damage raises ``StateFileError``."""
    results_path = os.path.join(path, run_files.RESULTS)
    if not os.path.lexists(results_path):
        return None
    results = read_json_object(results_path, "a run's results")
    missing = [field for field in required if field not in results]
    if missing:
        raise StateFileError(f"{results_path}: lacks {', '.join(missing)}; move it away, and the same command "
                             "finishes the run again from its last checkpoint")
    for field, (is_valid, meant) in RESULT_FIELDS.items():
        if field in results and not is_valid(results[field]):
            raise StateFileError(f"{results_path}: {field} is {results[field]!r}, not {meant}; move it away, and "
                                 "the same command finishes the run again from its last checkpoint")
    return results


def read_history(path):
    """The history of starts in the config.json of the run directory ``path`` (``[]`` before its first start),
    checked: a list of objects. Damage raises a one-line error naming the file."""
    if not os.path.lexists(os.path.join(path, run_files.CONFIG)):
        return []
    return run_files.read_saved(path)["history"]  # checked there: a list of objects


def read_run(path, required=()):
    """``(results.json, the history of starts in config.json)`` of a run directory, each checked; results is
    None until the run has finished."""
    return read_results(path, required), read_history(path)


def train_command(flagfile, seed, run_path, data_dir="", extra=()):
    """The ``training.train`` command of one seed of a recipe in the run directory ``run_path``, with ``extra``
    flags after the flagfile's. It resumes the run there when there is one."""
    command = [sys.executable, "-m", "training.train", f"--flagfile={flagfile}", f"--seed={seed}",
               f"--logdir={run_path}", *extra]
    return command + ([f"--data_dir={data_dir}"] if data_dir else [])


# Exit statuses of a run stopped by a signal: 130 (128 + SIGINT, what a shell reports and training.train is to
# exit with when stopped), or the negative signal number Popen gives a process the signal ended.
STOPPED_STATUSES = {128 + signal.SIGINT, -signal.SIGINT, -signal.SIGTERM}


def how_it_ended(code):
    """A run's exit status in words, for a command's one-line error: stopped, killed or failed."""
    if code in STOPPED_STATUSES:
        return f"was stopped by a signal (exit {code})"
    if code < 0:
        return f"was killed by {signal.Signals(-code).name} (exit {code})"
    return f"failed (exit {code}; its error is above)"


def run_in_console(command):
    """Runs ``command`` with this process's console, so a long run shows its progress; returns its exit code.

    Ctrl-C reaches the whole process group, so the run stops through its own cleanup (its checkpoints kept) while
    this waits for it; a SIGTERM sent to this process is passed on to the run, which then does the same. Either
    raises ``KeyboardInterrupt`` here once the run has ended.
    """
    return run_all_in_console([command])[0]


POLL_SECONDS = 0.2  # how soon a free slot is noticed; nothing here is timed finer than a run takes


def run_all_in_console(commands, jobs=None, on_exit=None):
    """``run_in_console`` for several commands, at most ``jobs`` side by side (all at once by default): a pool,
    where the next command starts as soon as any running one ends. ``on_exit(index, code)`` is called as each
    ends. After a non-zero exit or a stop signal no further command starts, and the running ones are waited for.
    Returns the exit codes in command order, None for a command never started; raises ``KeyboardInterrupt``
    after the wait when this process was asked to stop, so that a run stopped on request is never reported as
    failed.
    """
    jobs = jobs or len(commands)
    codes, running, waiting = [None] * len(commands), {}, list(range(len(commands)))
    asked_to_stop = stopping = False  # stopping: after a failure or a stop request, nothing more starts

    def note_stop(signum, frame):
        nonlocal asked_to_stop, stopping
        del frame
        asked_to_stop = stopping = True
        if signum == signal.SIGTERM:  # Ctrl-C reached the runs already, through the process group
            for process in running.values():
                if process.poll() is None:
                    process.send_signal(signum)

    with handling_stop_signals(note_stop):
        while running or (waiting and not stopping):
            while waiting and not stopping and len(running) < jobs:
                index = waiting.pop(0)
                running[index] = subprocess.Popen(commands[index])
            time.sleep(POLL_SECONDS)
            for index in [index for index, process in running.items() if process.poll() is not None]:
                codes[index] = running.pop(index).returncode
                stopping = stopping or codes[index] != 0
                if on_exit:
                    on_exit(index, codes[index])
    if asked_to_stop:
        raise KeyboardInterrupt
    return codes


@contextlib.contextmanager
def noting_stop_signals():
    """Yields ``arrived()``: whether SIGINT or SIGTERM has reached this process since the block began, whichever
    handler took it.

    A run that a signal reaches during its last chunk or final evaluation notes the stop request and finishes
    (``training.stopping``; nothing is left to stop early), and the next run installs fresh handlers: a command
    running several in one process would run on. Python writes every signal it handles to the wakeup file
    descriptor, whoever's handler then runs, so the command asks ``arrived()`` between runs. Outside the main
    thread (where Python sets no handlers) ``arrived()`` is always False.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    seen = set()

    def arrived():
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(read_end, 512):
                seen.update(chunk)
        return bool(seen & {signal.SIGINT, signal.SIGTERM})

    try:
        yield arrived
    finally:
        signal.set_wakeup_fd(previous)
        os.close(read_end)
        os.close(write_end)
