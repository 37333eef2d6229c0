"""The ``training.train`` processes an experiment command (seeds, race) runs: their commands, where each run
lives, and running one as a child with the command's console."""

import os
import signal
import subprocess
import sys


def recipe_name(flagfile):
    """A flagfile's name without its folder and ``.cfg``: the prefix of its run directories."""
    return os.path.splitext(os.path.basename(flagfile))[0]


def run_dir(logdir, flagfile, seed):
    """``<logdir>/<recipe>-seed<seed>``: the run directory of one seed of a recipe."""
    return os.path.join(logdir, f"{recipe_name(flagfile)}-seed{seed}")


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
    process = subprocess.Popen(command)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signum))
    try:
        while True:
            try:
                return process.wait()
            except KeyboardInterrupt:
                continue  # the run got the Ctrl-C too; its exit code says how it ended
    finally:
        signal.signal(signal.SIGTERM, previous)
