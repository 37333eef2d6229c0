"""The processes an experiment command waits for: the ``training.train`` command of one seed of a recipe (seeds,
race) and where that run lives, and running children with the command's console (one, or a pool of several side
by side, as ``experiments.seeds --jobs`` and ``experiments.sweep --jobs`` use)."""

import os
import signal
import subprocess
import sys
import time

from training import run_files


def recipe_name(flagfile):
    """A flagfile's name without its folder and ``.cfg``: the prefix of its run directories."""
    return os.path.splitext(os.path.basename(flagfile))[0]


def run_dir(logdir, flagfile, seed):
    """``<logdir>/<recipe>-seed<seed>``: the run directory of one seed of a recipe."""
    return os.path.join(logdir, f"{recipe_name(flagfile)}-seed{seed}")


def read_run(path):
    """``(results.json, the history of starts in config.json)`` of a run directory; results is None until the
    run has finished."""
    has_config = os.path.exists(os.path.join(path, run_files.CONFIG))
    return run_files.read_results(path), run_files.read_saved(path)["history"] if has_config else []


def train_command(flagfile, seed, logdir, data_dir="", extra=()):
    """The ``training.train`` command of one seed of a recipe, with ``extra`` flags after the flagfile's. It
    resumes the run in its directory when there is one."""
    command = [sys.executable, "-m", "training.train", f"--flagfile={flagfile}", f"--seed={seed}",
               f"--logdir={run_dir(logdir, flagfile, seed)}", *extra]
    return command + ([f"--data_dir={data_dir}"] if data_dir else [])


def run_in_console(command):
    """Runs ``command`` with this process's console, so a long run shows its progress; returns its exit code.

    Ctrl-C reaches the whole process group, so the run stops through its own cleanup (its checkpoints kept) while
    this waits for it; a SIGTERM sent to this process is passed on to the run, which then does the same.
    """
    return run_all_in_console([command])[0]


POLL_SECONDS = 0.2  # how soon a free slot is noticed; nothing here is timed finer than a run takes


def run_all_in_console(commands, jobs=None, on_exit=None):
    """``run_in_console`` for several commands, at most ``jobs`` side by side (all at once by default): a pool,
    where the next command starts as soon as any running one ends. ``on_exit(index, code)`` is called as each
    ends. After a non-zero exit or a stop signal no further command starts, and the running ones are waited for.
    Returns the exit codes in command order, None for a command never started.
    """
    jobs = jobs or len(commands)
    codes, running, waiting = [None] * len(commands), {}, list(range(len(commands)))
    stopping = False

    def pass_on(signum, frame):
        nonlocal stopping
        del frame
        stopping = True
        for process in running.values():
            if process.poll() is None:
                process.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, pass_on)
    try:
        while running or (waiting and not stopping):
            while waiting and not stopping and len(running) < jobs:
                index = waiting.pop(0)
                running[index] = subprocess.Popen(commands[index])
            try:
                time.sleep(POLL_SECONDS)
            except KeyboardInterrupt:
                stopping = True  # the runs got the Ctrl-C too; their exit codes say how they ended
            for index in [index for index, process in running.items() if process.poll() is not None]:
                codes[index] = running.pop(index).returncode
                stopping = stopping or codes[index] != 0
                if on_exit:
                    on_exit(index, codes[index])
        return codes
    finally:
        signal.signal(signal.SIGTERM, previous)
