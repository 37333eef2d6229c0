"""``experiments.seeds``: a recipe over seeds, continued across invocations, reported as mean ± std and min–max.

The bookkeeping is tested with a stand-in for the training process (it writes what a finished run leaves); the
command line is checked for its one-line refusal of a missing recipe.
"""

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import CLI_TIMEOUT_SECONDS, REPO_ROOT

from experiments import seed_runs
from experiments.report import TableError
from experiments.seed_runs import SeedsError
from training.errors import OneLineError

ACCURACIES = {0: 0.990, 1: 0.992, 2: 0.994}


def _fake_training(launched, jobs_seen=None, accuracies=ACCURACIES, data=None, validation=None):
    """A ``launch`` that records each seed (and in ``jobs_seen`` the ``jobs`` it was given) and writes the files
    of a finished run: results (test accuracy from ``accuracies``, validation accuracy from ``validation`` or
    none held out) and config.json (with ``data(seed)``, what training records of its data, when given). The pool
    itself is tested in tests/test_launch.py."""
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
        results = dict(test_accuracy=accuracies[seed], test_loss=0.02 + seed / 1000,
                       validation_accuracy=validation[seed] if validation else None,
                       train_steps=5616, train_seconds=1000.0 + seed, images_per_second=700.0)
        with open(os.path.join(path, "results.json"), "w") as file:
            json.dump(results, file)
        with open(os.path.join(path, "config.json"), "w") as file:
            json.dump(dict(config={}, history=[dict(from_step=0, commit="abc1234", cpu="Some CPU"),
                                               dict(from_step=100, commit="def5678", cpu="Some CPU")],
                           **(dict(data=data(seed)) if data else {})), file)
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
    assert "| 1 | 99.20 | 0.0210 | — | 5,616 | 1,001 | 700 | float32 | abc1234, def5678 | Some CPU |" in lines
    # Accuracies 99.0, 99.2, 99.4 %: mean 99.20, sample standard deviation 0.20; losses 0.020, 0.021, 0.022.
    assert "| mean ± std | 99.20 ± 0.20 | 0.0210 ± 0.0010 | | | | | | | |" in lines
    assert "| min–max | 99.00–99.40 | 0.0200–0.0220 | | | | | | | |" in lines
    # Half-width t(0.975, 2) x 0.20 / sqrt(3) = 4.303 x 0.1155 = 0.50.
    assert "| 95% interval of the mean | [98.70, 99.70] | | | | | | | | |" in lines


def test_another_version_of_the_recipe_is_refused(tmp_path, recipe):
    launched = []
    seed_runs.run_seeds(recipe, 1, str(tmp_path / "runs"), launch=_fake_training(launched))
    with open(recipe, "a") as file:
        file.write("--epochs=3\n")
    with pytest.raises(SeedsError, match=f"^{tmp_path / 'runs'} holds seeds of another version of {recipe} "):
        seed_runs.run_seeds(recipe, 2, str(tmp_path / "runs"), launch=_fake_training(launched))
    assert launched == [0]


def test_a_recipe_whose_included_flagfile_changed_is_refused_and_an_older_record_learns_it(tmp_path, recipe):
    base = tmp_path / "base.cfg"
    base.write_text("--learning_rate=0.003\n")
    with open(recipe, "a") as file:
        file.write(f"--flagfile={base}\n")
    runs, launched = tmp_path / "runs", []
    seed_runs.run_seeds(recipe, 1, str(runs), launch=_fake_training(launched))
    record = json.loads((runs / "recipe.seeds.json").read_text())
    assert record["resolved_flags"] == ["--dataset=mnist", "--arch=c4k3-m2-d16", "--learning_rate=0.003"]
    base.write_text("--learning_rate=0.5\n")  # before: read seed 0, trained seed 1 on the new rate, one table
    with pytest.raises(SeedsError, match=f"^{runs} holds seeds of another version of {recipe}: a flagfile it "
                                         f"includes has changed since "):
        seed_runs.run_seeds(recipe, 2, str(runs), launch=_fake_training(launched))
    assert launched == [0]
    # A record written by older code holds the recipe's own text only: it goes on, and pins the included files.
    del record["resolved_flags"]
    (runs / "recipe.seeds.json").write_text(json.dumps(record))
    seed_runs.run_seeds(recipe, 2, str(runs), launch=_fake_training(launched))
    assert launched == [0, 1]
    assert json.loads((runs / "recipe.seeds.json").read_text())["resolved_flags"][-1] == "--learning_rate=0.5"


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


def test_a_seed_stopped_by_a_signal_reads_as_stopped_not_failed(tmp_path, recipe):
    def stopped_alone(commands, jobs, on_exit):  # training.train stopped by a signal this command never got
        on_exit(0, 130)
        return [130] + [None] * (len(commands) - 1)

    with pytest.raises(SeedsError, match=r"^recipe seed 0 was stopped by a signal \(exit 130\); the same command "
                                         r"resumes it$"):
        seed_runs.run_seeds(recipe, 2, str(tmp_path / "runs"), launch=stopped_alone)

    def stopped_with_the_command(commands, jobs, on_exit):  # launch.run_all_in_console after a Ctrl-C
        on_exit(0, 1)  # the run's own stop: "train: error: stopped by a signal", exit 1
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        seed_runs.run_seeds(recipe, 2, str(tmp_path / "runs"), launch=stopped_with_the_command)


def test_a_finished_table_is_not_replaced_by_a_run_that_has_just_begun(tmp_path, recipe):
    # Before, the report was written at the start: Ctrl-C left "0 of 3 seeds" where the 3-seed table had been.
    out = tmp_path / "seeds-recipe.md"
    seed_runs.seeds_and_report(recipe, 3, str(tmp_path / "runs"), str(out), "c", launch=_fake_training([]))
    finished = out.read_text()

    def stopped_at_once(commands, jobs, on_exit):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        seed_runs.seeds_and_report(recipe, 3, str(tmp_path / "other_runs"), str(out), "c", launch=stopped_at_once)
    assert out.read_text() == finished and finished.startswith("# recipe: 3 of 3 seeds\n")
    assert (tmp_path / "seeds-recipe.incomplete.md").read_text().startswith("# recipe: 0 of 3 seeds\n")
    # Once the new table has as many seeds, it replaces the old one, and the progress file goes.
    seed_runs.seeds_and_report(recipe, 3, str(tmp_path / "other_runs"), str(out), "c", launch=_fake_training([]))
    assert out.read_text().startswith("# recipe: 3 of 3 seeds\n")
    assert not (tmp_path / "seeds-recipe.incomplete.md").exists()


def test_a_table_of_another_recipe_or_by_hand_is_refused_before_anything_runs(tmp_path, recipe):
    out = tmp_path / "table.md"
    out.write_text("# mnist_full: 3 of 3 seeds\n\ncommitted to the repository\n")
    launched = []
    with pytest.raises(TableError, match=f"^{re.escape(str(out))} holds a table that this command did not write on "
                                         "these terms"):
        seed_runs.seeds_and_report(recipe, 1, str(tmp_path / "runs"), str(out), "c", launch=_fake_training(launched))
    assert launched == [] and "committed" in out.read_text()
    out.unlink()
    seed_runs.seeds_and_report(recipe, 1, str(tmp_path / "runs"), str(out), "c", launch=_fake_training(launched))
    with open(recipe, "a") as file:
        file.write("--epochs=3\n")
    with pytest.raises(TableError, match=r"did not write on these terms: other recipe_text \("):
        seed_runs.seeds_and_report(recipe, 1, str(tmp_path / "runs2"), str(out), "c", launch=_fake_training(launched))
    assert launched == [0]


@pytest.mark.parametrize("manifest, message", [
    ("not json", "not valid JSON (Expecting value: line 1 column 1 (char 0)); it should hold the recipe's text "
                 "under flagfile_text: move it away"),
    ('["--arch=d16"]', "holds a JSON list, not the recipe's text under flagfile_text: move it away"),
    ('{"flagfile_text": 3}', "holds no flagfile_text (the recipe's text); move it away"),
], ids=["not_json", "a_list", "a_number"])
def test_a_damaged_seeds_json_is_one_line_naming_it(tmp_path, recipe, manifest, message):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "recipe.seeds.json").write_text(manifest)
    with pytest.raises(OneLineError, match=f"^{re.escape(str(tmp_path / 'runs' / 'recipe.seeds.json'))}: "
                                           f"{re.escape(message)}$"):
        seed_runs.run_seeds(recipe, 1, str(tmp_path / "runs"), launch=_fake_training([]))


def test_a_finished_seed_whose_results_json_is_damaged_is_one_line_naming_it(tmp_path, recipe):
    seed_runs.run_seeds(recipe, 1, str(tmp_path / "runs"), launch=_fake_training([]))
    results = tmp_path / "runs" / "recipe-seed0" / "results.json"
    results.write_text("[0.99]")
    with pytest.raises(OneLineError, match=f"^{re.escape(str(results))}: holds a JSON list, not a run's results"):
        seed_runs.run_seeds(recipe, 1, str(tmp_path / "runs"), launch=_fake_training([]))


@pytest.mark.parametrize("command", ["seeds", "race", "sweep"])
def test_a_seed_count_past_the_bound_is_refused_at_once_in_one_line(tmp_path, recipe, command):
    # --seeds=10000000 to the sweep printed nothing for minutes while it planned 60 million runs.
    target = {"seeds": [f"--recipe={recipe}"], "race": [f"--flagfiles={recipe},{recipe}", "--target_accuracy=0.9"],
              "sweep": ["--grid=pooling"]}[command]
    process = subprocess.run([sys.executable, "-m", f"experiments.{command}", *target, "--seeds=10000000"],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS)
    assert process.returncode == 2 and "Traceback" not in process.stderr
    assert process.stderr.strip().splitlines()[-1] == (
        f"{command}.py: error: flag --seeds=10000000: --seeds must be a positive integer, at most 100")


def test_a_recipe_whose_comments_changed_is_the_same_recipe(tmp_path):
    from experiments import seed_runs

    recipe = tmp_path / "recipe.cfg"
    recipe.write_text("# 93.59% over seeds\n--arch=d8\n--epochs=1\n")
    seed_runs.check_recipe(str(recipe), str(tmp_path / "seeds"))
    recipe.write_text("# 93.47 ± 0.07% over seeds 0-2\n\n--arch=d8\n--epochs=1\n")
    seed_runs.check_recipe(str(recipe), str(tmp_path / "seeds"))  # accepted: the same flags
    recipe.write_text("# 93.47 ± 0.07% over seeds 0-2\n--arch=d16\n--epochs=1\n")
    with pytest.raises(seed_runs.SeedsError, match="holds seeds of another version of"):
        seed_runs.check_recipe(str(recipe), str(tmp_path / "seeds"))


def test_the_recipe_record_and_the_table_are_never_written_through_a_planted_link(tmp_path, recipe):
    # Both were written through a fixed "<name>.tmp", which a link planted there redirected; now each write takes
    # a fresh temporary name (run_files.write_atomically).
    victim = tmp_path / "victim.txt"
    victim.write_text("someone's file\n")
    runs, out = tmp_path / "runs", tmp_path / "report.md"
    runs.mkdir()
    for planted in (runs / "recipe.seeds.json.tmp", tmp_path / "report.md.tmp"):
        planted.symlink_to(victim)
    seed_runs.seeds_and_report(recipe, 1, str(runs), str(out), "the command", launch=_fake_training([]))
    assert victim.read_text() == "someone's file\n"
    assert json.loads((runs / "recipe.seeds.json").read_text())["flagfile"] == recipe
    assert out.read_text().startswith("# recipe: 1 of 1 seeds\n")


def test_each_finished_seed_says_how_many_are_done_and_about_how_long_is_left(tmp_path, recipe, monkeypatch):
    lines = []
    monkeypatch.setattr(seed_runs.logging, "info", lambda text, *args: lines.append(text % args))
    seed_runs.run_seeds(recipe, 3, str(tmp_path / "runs"), launch=_fake_training([]))
    progress = [line for line in lines if " of 3 runs done" in line]
    assert [line.rsplit(": ", 1)[1].split(";")[0] for line in progress] == ["1 of 3 runs done", "2 of 3 runs done",
                                                                           "3 of 3 runs done"]
    assert "left" in progress[0] and "left" not in progress[-1]


def test_a_table_paired_with_another_recipe_gives_each_seeds_difference_and_its_interval(tmp_path, recipe):
    other = tmp_path / "other.cfg"
    other.write_text("--dataset=mnist\n--arch=d16\n")
    runs, out = str(tmp_path / "runs"), tmp_path / "report.md"
    seed_runs.run_seeds(str(other), 2, runs, launch=_fake_training([]))  # seeds 0 and 1: 99.0 and 99.2 %
    seed_runs.seeds_and_report(recipe, 3, runs, str(out), "c", paired_with=str(other),
                               launch=_fake_training([], accuracies={0: 0.993, 1: 0.994, 2: 0.995}))
    lines = out.read_text().splitlines()
    section = lines[lines.index(f"## Paired with `{other}`"):]
    assert "| 0 | 99.30 | 99.00 | +0.30 | 1,000 | 1,000 |" in section
    assert "| 1 | 99.40 | 99.20 | +0.20 | 1,001 | 1,001 |" in section
    assert not any(line.startswith("| 2 |") for line in section)  # seed 2 of the other recipe never ran
    # Differences 0.30 and 0.20: mean 0.25, sample std 0.0707; half-width t(0.975, 1) x 0.0707 / sqrt(2)
    # = 12.706 x 0.05 = 0.64.
    assert ("This recipe minus other, test accuracy in points over 2 paired seeds: +0.25 [-0.39, +0.89] "
            "(paired, n=2; includes 0).") in " ".join(section)
    assert "validation" not in " ".join(section)  # neither held images out


def test_a_paired_table_of_recipes_that_hold_out_images_gives_the_validation_difference_too(tmp_path, recipe):
    other = tmp_path / "other.cfg"
    other.write_text("--dataset=mnist\n--arch=d16\n")
    runs, out = str(tmp_path / "runs"), tmp_path / "report.md"
    seed_runs.run_seeds(str(other), 2, runs, launch=_fake_training([], validation={0: 0.980, 1: 0.981}))
    seed_runs.seeds_and_report(recipe, 2, runs, str(out), "c", paired_with=str(other),
                               launch=_fake_training([], validation={0: 0.9835, 1: 0.9855}))
    # Differences 0.35 and 0.45: mean 0.40, sample std 0.0707, half-width 12.706 x 0.05 = 0.64; the choice
    # between the two is read from this line, not from the test accuracy's.
    assert ("This recipe minus other, validation accuracy in points over the same seeds: +0.40 [-0.24, +1.04] "
            "(paired, n=2; includes 0).") in out.read_text().splitlines()


@pytest.mark.parametrize("kind", ["directory", "link"])
def test_an_out_that_is_a_directory_or_a_link_is_refused_at_parse_time(tmp_path, recipe, kind):
    # Before, with --overwrite_table: a directory got "cannot write ... (Is a directory): fix the cause, then
    # run the same command again to resume from the last checkpoint", and a link "choose a new --logdir".
    out = tmp_path / "out.md"
    out.mkdir() if kind == "directory" else out.symlink_to(tmp_path / "victim.md")
    process = subprocess.run([sys.executable, "-m", "experiments.seeds", f"--recipe={recipe}", f"--out={out}",
                              "--overwrite_table", f"--logdir={tmp_path / 'runs'}"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS)
    why = ("must name a file, not a directory" if kind == "directory" else
           "is a symbolic link; a table is never written through one: remove the link, or pass another --out")
    assert (process.returncode, process.stderr) == (2, f"seeds.py: error: flag --out={out}: --out {why}\n")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "victim.md").exists()


def test_a_table_whose_folder_cannot_be_made_is_refused_in_one_line(tmp_path):
    from experiments import report
    (tmp_path / "notes.txt").write_text("a file where the table's folder would go\n")
    out = tmp_path / "notes.txt" / "tables" / "t.md"
    with pytest.raises(OneLineError, match=f"^cannot make {re.escape(str(out.parent))} "
                                           r"\(Not a directory\): fix the cause, or pass another --out$"):
        report.write_report(str(out), "| table |\n")  # before: a traceback (NotADirectoryError)


def _data(sha256, source):
    return dict(sha256=sha256 * 64, source=source, images=[60000, 10000])


def test_seeds_trained_on_other_data_never_share_a_table(tmp_path, recipe):
    # Seeds read finished runs without loading data; the runs' own records must agree. Before: a second command
    # with another --data_dir put its seeds beside the first's in one mean.
    runs, out = str(tmp_path / "runs"), tmp_path / "report.md"
    seed_runs.run_seeds(recipe, 1, runs, launch=_fake_training([], data=lambda seed: _data("a", "/data/a.npz")))
    launched = []
    with pytest.raises(OneLineError, match=r"/recipe-seed1 was trained on other data \(/data/b.npz, SHA-256 "
                                           r"bbbbbbbbbbbb\) than .*/recipe-seed0 \(/data/a.npz, SHA-256 "
                                           r"aaaaaaaaaaaa\); one table compares runs of one dataset: pass another "
                                           r"--logdir, or the --data_dir those runs were trained on$"):
        seed_runs.seeds_and_report(recipe, 2, runs, str(out), "c",
                                   launch=_fake_training(launched, data=lambda seed: _data("b", "/data/b.npz")))
    assert launched == [1] and "| 1 |" not in out.read_text()  # the table kept seed 0 alone
    # Now both are finished: the next command refuses before anything trains.
    with pytest.raises(OneLineError, match="was trained on other data"):
        seed_runs.run_seeds(recipe, 3, runs, launch=_fake_training(launched))
    assert launched == [1]


def test_a_pair_trained_on_other_data_is_refused(tmp_path, recipe):
    other = tmp_path / "other.cfg"
    other.write_text("--dataset=mnist\n--arch=d16\n")
    runs = str(tmp_path / "runs")
    seed_runs.run_seeds(str(other), 1, runs, launch=_fake_training([], data=lambda seed: _data("a", "a.npz")))
    with pytest.raises(OneLineError, match=r"other-seed0 was trained on other data \(a.npz"):
        seed_runs.seeds_and_report(recipe, 1, runs, str(tmp_path / "report.md"), "c", paired_with=str(other),
                                   launch=_fake_training([], data=lambda seed: _data("b", "b.npz")))
