"""``experiments.reuse``: the one rule by which sweep, seeds and race read a finished run instead of training it.

Run directories are written by hand here, as training leaves them (config.json, results.json); nothing trains.
"""

import dataclasses
import json

import pytest

from experiments import reuse
from experiments.launch import StateFileError
from training import config as config_lib
from training.config import TrainConfig

SETTINGS = TrainConfig(arch="c4k3-m2-d16", batch_size=64, train_steps=7)
RESULTS = dict(test_accuracy=0.9, test_loss=0.3, train_steps=7, wall_seconds=2.0, params=12770,
               images_per_second=900.0)


def _run(path, config=SETTINGS, results=RESULTS):
    """A run directory as training leaves it: config.json of ``config``, and results.json unless None."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps(dict(format="cnn-lab run 1", config=config_lib.as_json(config),
                                                      history=[])))
    if results is not None:
        (path / "results.json").write_text(json.dumps(results))
    return str(path)


@pytest.mark.parametrize("earlier, results, asked, reused", [
    (SETTINGS, RESULTS, SETTINGS, True),
    (SETTINGS, None, SETTINGS, False),  # unfinished: training resumes it
    # The budget was raised from 5 to 7 steps and the longer run has not finished: its results are the 5 steps'.
    (SETTINGS, dict(RESULTS, train_steps=5), SETTINGS, False),
    # A run that stops at its target finishes early.
    (dataclasses.replace(SETTINGS, target_accuracy=0.5, stop_at_target=True), dict(RESULTS, train_steps=3),
     dataclasses.replace(SETTINGS, target_accuracy=0.5, stop_at_target=True), True),
    # --precision=auto resumes with the numerics its first start chose, so a recorded choice is no change.
    (dataclasses.replace(SETTINGS, precision="float32", jit_compile=True), RESULTS,
     dataclasses.replace(SETTINGS, precision="auto"), True),
    # FREE settings (paths, intervals) may differ.
    (SETTINGS, RESULTS, dataclasses.replace(SETTINGS, data_dir="elsewhere", log_every=3), True),
], ids=["finished", "unfinished", "budget_raised", "stopped_at_target", "auto_precision", "free_settings"])
def test_a_finished_run_of_the_same_settings_and_budget_is_reused(tmp_path, earlier, results, asked, reused):
    path = _run(tmp_path / "run", earlier, results)
    assert reuse.reusable_results(path, ("test_accuracy",), settings=asked) == (results if reused else None)


@pytest.mark.parametrize("asked, message", [
    (dataclasses.replace(SETTINGS, learning_rate=0.01), "learning_rate=0.001, not learning_rate=0.01"),
    (dataclasses.replace(SETTINGS, train_steps=9), "train_steps=7, not train_steps=9"),
    (dataclasses.replace(SETTINGS, train_steps=0, epochs=3.0), "train_steps=7, epochs=10.0, not train_steps=0, "
                                                                "epochs=3.0"),
], ids=["fixed_setting", "step_budget", "epochs_budget"])
@pytest.mark.parametrize("finished", [True, False])
def test_a_run_of_other_settings_is_refused_finished_or_not(tmp_path, asked, message, finished):
    path = _run(tmp_path / "run", results=RESULTS if finished else None)
    with pytest.raises(reuse.ReuseError, match=f"^{path} holds a run with {message}; pass another --logdir"):
        reuse.reusable_results(path, settings=asked)


def test_without_settings_any_readable_results_are_reused_and_damaged_ones_named(tmp_path):
    # Seeds and race: the recipe's text, pinned by the command, stands for the settings.
    path = _run(tmp_path / "run", dataclasses.replace(SETTINGS, learning_rate=0.5))
    assert reuse.reusable_results(path, ("test_accuracy",)) == RESULTS
    with pytest.raises(StateFileError, match="results.json: lacks seconds_to_target; move it away"):
        reuse.reusable_results(path, ("seconds_to_target",))
    (tmp_path / "run" / "results.json").write_text("{")
    with pytest.raises(StateFileError, match="results.json: not valid JSON"):
        reuse.reusable_results(path)
