"""``experiments.launch``: the training process an experiment command waits for gets the command's stop signal."""

import os
import signal
import sys
import threading
import time

from experiments import launch


def test_a_sigterm_to_the_command_reaches_the_run_it_waits_for(tmp_path):
    # The run stands in for training.train: it ends with exit 7 on SIGTERM, after writing that it is ready.
    ready = tmp_path / "ready"
    run = (f"import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(7)); "
           f"pathlib.Path({str(ready)!r}).touch(); time.sleep(60)")

    def terminate_this_process_once_the_run_is_ready():
        deadline = time.time() + 30
        while not ready.exists() and time.time() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_this_process_once_the_run_is_ready, daemon=True).start()
    before, tick = signal.getsignal(signal.SIGTERM), time.time()
    assert launch.run_in_console([sys.executable, "-c", run]) == 7
    assert time.time() - tick < 30
    assert signal.getsignal(signal.SIGTERM) == before  # this process's own handling is back
