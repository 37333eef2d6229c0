"""The processes an experiment command waits for: the ``training.train`` command of one seed of a recipe (seeds,
race) and where that run lives, and running children with the command's console (one, or several side by side
as ``experiments.sweep --jobs`` does)."""

import os
import signal
import subprocess
import sys

from training.rundir import CONFIG, RunDir


def recipe_name(flagfile):
    """A flagfile's name without its folder and ``.cfg``: the prefix of its run directories."""
    return os.path.splitext(os.path.basename(flagfile))[0]


def run_dir(logdir, flagfile, seed):
    """``<logdir>/<recipe>-seed<seed>``: the run directory of one seed of a recipe."""
    return os.path.join(logdir, f"{recipe_name(flagfile)}-seed{seed}")


def read_run(path):
    """``(results.json, the history of starts in config.json)`` of a run directory; results is None until the
    run has finished."""
    run = RunDir(path)
    return run.read_results(), run.read_saved()["history"] if os.path.exists(run.file(CONFIG)) else []


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


def run_all_in_console(commands):
    """``run_in_console`` for several commands at once: they run side by side; returns their exit codes."""
    processes = [subprocess.Popen(command) for command in commands]

    def pass_on(signum, frame):
        del frame
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, pass_on)
    try:
        codes = []
        for process in processes:
            while True:
                try:
                    codes.append(process.wait())
                    break
                except KeyboardInterrupt:
                    continue  # the runs got the Ctrl-C too; their exit codes say how they ended
        return codes
    finally:
        signal.signal(signal.SIGTERM, previous)
