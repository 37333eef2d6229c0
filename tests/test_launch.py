"""``experiments.launch``: the training process an experiment command waits for gets the command's stop signal,
its exit reads as stopped, killed or failed, the JSON files the commands read are checked, and a stop signal
taken by any handler is noted."""

import json
import os
import re
import signal
import sys
import threading
import time

import pytest

from experiments import launch
from training.errors import OneLineError


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
    before, tick, ended = signal.getsignal(signal.SIGTERM), time.time(), []
    # The command was asked to stop: once its run has ended, it stops too, and says nothing of a failure.
    with pytest.raises(KeyboardInterrupt):
        launch.run_all_in_console([[sys.executable, "-c", run]], on_exit=lambda index, code: ended.append(code))
    assert ended == [7]
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


@pytest.mark.parametrize("code, words", [
    (130, "was stopped by a signal (exit 130)"),  # 128 + SIGINT: what training.train exits with when stopped
    (-2, "was stopped by a signal (exit -2)"),  # ended by SIGINT itself
    (-15, "was stopped by a signal (exit -15)"),
    (-9, "was killed by SIGKILL (exit -9)"),
    (1, "failed (exit 1; its error is above)"),
])
def test_an_exit_reads_as_stopped_killed_or_failed(code, words):
    assert launch.how_it_ended(code) == words


def test_a_signal_taken_by_another_handler_is_still_noted():
    # As a run's stop_requests does during its last chunk: the signal is handled, the handler returns.
    taken = []
    before = signal.signal(signal.SIGTERM, lambda number, frame: taken.append(number))
    try:
        with launch.noting_stop_signals() as arrived:
            assert not arrived()
            signal.raise_signal(signal.SIGTERM)
            assert taken == [signal.SIGTERM] and arrived() and arrived()  # it stays noted
        assert signal.set_wakeup_fd(-1) == -1  # the wakeup descriptor was put back
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1)); "
                  "it should hold a run's results: move it away"),
    ("[0.99, 0.98]", "holds a JSON list, not a run's results: move it away"),
    ('{"test_accuracy": "99%", "train_steps": 5}', "test_accuracy is '99%', not a number in [0, 1]; move it away, "
                                                   "and the same command finishes the run again from its last "
                                                   "checkpoint"),
    # Before: read as a number, then a traceback in statistics.stdev (experiments.recheck --tables, seeds tables).
    ('{"test_accuracy": NaN, "train_steps": 5}', "test_accuracy is nan, not a number in [0, 1]; move it away, and "
                                                 "the same command finishes the run again from its last checkpoint"),
    ('{"test_accuracy": 0.99, "test_loss": Infinity, "train_steps": 5}',
     "test_loss is inf, not a finite number; move it away, and the same command finishes the run again from its "
     "last checkpoint"),
    ('{"test_accuracy": 0.99, "train_steps": true}', "train_steps is True, not an integer; move it away, and the "
                                                     "same command finishes the run again from its last checkpoint"),
    ('{"test_accuracy": 0.99}', "lacks train_steps; move it away, and the same command finishes the run again "
                                "from its last checkpoint"),
    # A learning curve whose evaluations go back in steps would draw a line doubling back on itself.
    ('{"test_accuracy": 0.99, "train_steps": 5, "evaluations": [{"step": 4, "images": 8, "test_accuracy": 0.9}, '
     '{"step": 2, "images": 4, "test_accuracy": 0.8}]}',
     "evaluations is [{'step': 4, 'images': 8, 'test_accuracy': 0.9}, {'step': 2, 'images': 4, 'test_accuracy': "
     "0.8}], not a list of evaluations in step order, each with an integer step and images and a test_accuracy in "
     "[0, 1], or null; move it away, and the same command finishes the run again from its last checkpoint"),
], ids=["not_json", "a_list", "a_string_accuracy", "a_nan_accuracy", "an_infinite_loss", "a_bool_step_count",
        "a_missing_field", "a_curve_out_of_order"])
def test_a_damaged_results_json_is_one_line_naming_it(tmp_path, content, message):
    (tmp_path / "results.json").write_text(content)
    with pytest.raises(OneLineError, match=f"^{re.escape(str(tmp_path / 'results.json'))}: {re.escape(message)}$"):
        launch.read_run(str(tmp_path), ("test_accuracy", "train_steps"))


@pytest.mark.parametrize("saved, message", [
    ("[]", "config.json: holds no run configuration"),
    (json.dumps(dict(config={}, history={"commit": "abc"})), "config.json: its history is not a list of starts"),
], ids=["a_list", "history_not_a_list"])
def test_a_damaged_config_json_is_one_line_naming_it(tmp_path, saved, message):
    (tmp_path / "config.json").write_text(saved)
    with pytest.raises(OneLineError, match=f"^{re.escape(str(tmp_path))}/{re.escape(message)}"):
        launch.read_run(str(tmp_path))


def test_a_long_command_says_how_many_runs_are_done_and_about_how_long_is_left():
    assert launch.progress_text(1, 5, 4 * 95.2) == "1 of 5 runs done; about 6:21 left"
    assert launch.progress_text(2, 10, 8 * 1800) == "2 of 10 runs done; about 4:00:00 left"
    assert launch.progress_text(5, 5, 0.0) == "5 of 5 runs done"
    assert launch.progress_text(0, 5, None) == "0 of 5 runs done"
