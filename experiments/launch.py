"""One ``training.train`` process run as a child of an experiment command, with the command's console."""

import signal
import subprocess


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
