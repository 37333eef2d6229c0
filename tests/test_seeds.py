"""``experiments.seeds``: a recipe over seeds, continued across invocations, reported as mean ± std and min–max.

The bookkeeping is tested with a stand-in for the training process (it writes what a finished run leaves); the
command line is checked for its one-line refusal of a missing recipe.
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import CLI_TIMEOUT_SECONDS, REPO_ROOT

from experiments import seed_runs
from experiments.seed_runs import SeedsError

ACCURACIES = {0: 0.990, 1: 0.992, 2: 0.994}


def _fake_training(launched, jobs_seen=None):
    """A ``launch`` that records each seed (and in ``jobs_seen`` the ``jobs`` it was given) and writes the files
    of a finished run: results and config.json. The pool itself is tested in tests/test_launch.py."""
    def launch(commands, jobs, on_exit):
        if jobs_seen is not None:
            jobs_seen.append(jobs)
        codes = [launch_one(command) for command in commands]
        for index, code in enumerate(codes):
            on_exit(index, code)
        return codes

    def launch_one(command):
        seed = int(next(arg for arg in command if arg.startswith("--seed=")).split("=")[1])
        path = next(arg for arg in command if arg.startswith("--logdir=")).split("=", 1)[1]
        launched.append(seed)
        os.makedirs(path)
        results = dict(test_accuracy=ACCURACIES[seed], test_loss=0.02 + seed / 1000, validation_accuracy=None,
                       train_steps=5616, train_seconds=1000.0 + seed, images_per_second=700.0)
        with open(os.path.join(path, "results.json"), "w") as file:
            json.dump(results, file)
        with open(os.path.join(path, "config.json"), "w") as file:
            json.dump(dict(config={}, history=[dict(from_step=0, commit="abc1234", cpu="Some CPU"),
                                               dict(from_step=100, commit="def5678", cpu="Some CPU")]), file)
        return 0
    return launch


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "recipe.cfg"
    path.write_text("--dataset=mnist\n--arch=c4k3-m2-d16\n")
    return str(path)


def test_seeds_run_once_continue_later_and_report_mean_std_and_range(tmp_path, recipe):
    launched, out = [], str(tmp_path / "report.md")
    seed_runs.seeds_and_report(recipe, 2, str(tmp_path / "runs"), out, "the command",
                               launch=_fake_training(launched))
    done = seed_runs.seeds_and_report(recipe, 3, str(tmp_path / "runs"), out, "the command",
                                      launch=_fake_training(launched))
    assert launched == [0, 1, 2]  # the second invocation read seeds 0 and 1
    assert [seed for seed, _, _ in done] == [0, 1, 2]
    lines = open(out).read().splitlines()
    assert lines[0] == "# recipe: 3 of 3 seeds"
    assert "| 1 | 99.20 | 0.0210 | — | 5,616 | 1,001 | 700 | abc1234, def5678 | Some CPU |" in lines
    # Accuracies 99.0, 99.2, 99.4 %: mean 99.20, sample standard deviation 0.20; losses 0.020, 0.021, 0.022.
    assert "| mean ± std | 99.20 ± 0.20 | 0.0210 ± 0.0010 | | | | | | |" in lines
    assert "| min–max | 99.00–99.40 | 0.0200–0.0220 | | | | | | |" in lines


def test_another_version_of_the_recipe_is_refused(tmp_path, recipe):
    launched = []
    seed_runs.run_seeds(recipe, 1, str(tmp_path / "runs"), launch=_fake_training(launched))
    with open(recipe, "a") as file:
        file.write("--epochs=3\n")
    with pytest.raises(SeedsError, match=f"^{tmp_path / 'runs'} holds seeds of another version of {recipe} "):
        seed_runs.run_seeds(recipe, 2, str(tmp_path / "runs"), launch=_fake_training(launched))
    assert launched == [0]


def test_a_failed_seed_stops_the_command_in_one_line(tmp_path, recipe):
    def first_fails(commands, jobs, on_exit):  # as the pool does: nothing starts after a failure
        on_exit(0, 2)
        return [2] + [None] * (len(commands) - 1)

    with pytest.raises(SeedsError, match=r"^recipe seed 0 failed \(exit 2; its error is above\); the same command "
                                         r"resumes it$"):
        seed_runs.run_seeds(recipe, 2, str(tmp_path / "runs"), launch=first_fails)


def test_the_command_refuses_a_missing_recipe_in_one_line(tmp_path):
    # The real training path of the command was exercised by the CIFAR-10 seeds of WORKSPACE.md section 12; a
    # tiny end-to-end run here would cost ~15 s of the suite for what the stand-in above already checks.
    process = subprocess.run([sys.executable, "-m", "experiments.seeds", f"--recipe={tmp_path / 'missing.cfg'}"],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS)
    assert process.returncode == 2
    assert process.stderr.strip().splitlines()[-1] == (
        f"seeds.py: error: flag --recipe={tmp_path / 'missing.cfg'}: --recipe must name an existing flagfile")


def test_jobs_reach_the_pool_and_the_table_says_the_cores_were_shared(tmp_path, recipe):
    launched, jobs_seen, out = [], [], str(tmp_path / "report.md")
    done = seed_runs.seeds_and_report(recipe, 3, str(tmp_path / "runs"), out, "the command",
                                      launch=_fake_training(launched, jobs_seen), jobs=2)
    assert jobs_seen == [2]
    assert [seed for seed, _, _ in done] == [0, 1, 2]
    assert ("| jobs | 2 seeds trained at once: the training times of the seeds trained by this command are with "
            "the cores shared |") in open(out).read().splitlines()
