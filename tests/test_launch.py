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


def _python(code):
    return [sys.executable, "-c", code]


def test_a_pool_of_two_starts_the_third_command_as_soon_as_one_ends(tmp_path):
    third_started, short_done = tmp_path / "third_started", tmp_path / "short_done"
    # The long command waits (up to 30 s) for the third to start: run in batches of two, the third would start
    # only after the long one ended, which would then give up with exit 3.
    long = _python(f"import os, sys, time\nfor _ in range(300):\n    if os.path.exists({str(third_started)!r}): "
                   f"sys.exit(0)\n    time.sleep(0.1)\nsys.exit(3)")
    short = _python(f"import pathlib, time; time.sleep(0.5); pathlib.Path({str(short_done)!r}).touch()")
    # Started with the other two (no pool), the third would look before the short one is done: exit 4.
    third = _python(f"import os, pathlib, sys\npathlib.Path({str(third_started)!r}).touch()\n"
                    f"sys.exit(0 if os.path.exists({str(short_done)!r}) else 4)")
    ended = []
    codes = launch.run_all_in_console([long, short, third], jobs=2, on_exit=lambda index, code: ended.append(index))
    assert codes == [0, 0, 0]
    assert ended[0] == 1 and sorted(ended) == [0, 1, 2]


def test_after_a_failure_the_pool_starts_nothing_more(tmp_path):
    never = tmp_path / "never"
    ended = []
    codes = launch.run_all_in_console([_python("raise SystemExit(5)"),
                                       _python(f"import pathlib; pathlib.Path({str(never)!r}).touch()")],
                                      jobs=1, on_exit=lambda index, code: ended.append((index, code)))
    assert codes == [5, None]
    assert ended == [(0, 5)]
    assert not never.exists()
