"""``experiments.race``: the table (medians, ranges, the ratio to the baseline) from runs' results, and a race
continued on its own terms. The bookkeeping uses a stand-in for the training process that writes what a finished
run leaves."""

import json
import os
import re

import pytest

from experiments import launch, racing
from experiments.report import TableError
from training.errors import OneLineError

SECONDS = {("slow", 0): 100.0, ("fast", 0): 20.0, ("slow", 1): 120.0, ("fast", 1): 25.0}


def _entrant(flagfile, seconds, accuracies):
    runs = [dict(seconds_to_target=s, images_to_target=None if s is None else 1024 * int(s), test_accuracy=a,
                 train_seconds=2 * (s or 500), images_per_second=100.0) for s, a in zip(seconds, accuracies)]
    return racing.Entrant(launch.recipe_name(flagfile), flagfile, runs)


def test_the_table_gives_medians_ranges_and_the_ratio_of_medians():
    baseline = _entrant("flags/slow.cfg", [100.0, 120.0, 110.0], [0.991, 0.992, 0.990])
    candidate = _entrant("flags/fast.cfg", [20.0, 25.0, 22.0], [0.990, 0.993, 0.991])
    rows = racing.make_table([baseline, candidate], 0.99).splitlines()[2:]
    assert rows[0] == ("| `flags/slow.cfg` | 3/3 | 110.0 (100.0–120.0) | 1.000 | 112,640 (102,400–122,880) | "
                       "99.10 (99.00–99.20) | 220.0 | 1.000 | 100 |")
    assert rows[1] == ("| `flags/fast.cfg` | 3/3 | 22.0 (20.0–25.0) | 0.200 | 22,528 (20,480–25,600) | "
                       "99.10 (99.00–99.30) | 44.0 | 0.200 | 100 |")
    # Seed by seed: 20/100, 25/120 and 22/110, a geometric mean of 0.203 (0.2 x 0.2083 x 0.2, cube root).
    assert racing.paired_ratios([baseline, candidate]) == [
        "`flags/fast.cfg` over the baseline, paired by seed: seconds to target: 0.203 [0.191, 0.215] (paired, n=3; "
        "geometric mean); training s per run: 0.203 [0.191, 0.215] (paired, n=3; geometric mean).", ""]


def test_no_ratio_when_a_seed_missed_the_target():
    baseline = _entrant("flags/slow.cfg", [100.0, 120.0], [0.991, 0.992])
    candidate = _entrant("flags/fast.cfg", [20.0, None], [0.990, 0.985])
    row = racing.make_table([baseline, candidate], 0.99).splitlines()[3]
    assert row.startswith("| `flags/fast.cfg` | 1/2 | 20.0 (20.0–20.0) | — |")
    # The whole runs' training times still compare: medians 520 (40 and 1000) against 220 (200 and 240).
    assert row.endswith("| 520.0 | 2.364 | 100 |")
    # Seed by seed only the whole runs compare (one seed reached the target in both, too few for an interval):
    # 40/200 and 1000/240, a geometric mean of sqrt(0.2 x 4.167) = 0.913, its two-seed interval very wide.
    assert racing.paired_ratios([baseline, candidate])[0].startswith(
        "`flags/fast.cfg` over the baseline, paired by seed: training s per run: 0.913 [0.000, ")


@pytest.fixture
def flagfiles(tmp_path):
    paths = [tmp_path / "slow.cfg", tmp_path / "fast.cfg"]
    for path in paths:
        path.write_text(f"--arch={path.stem}\n")
    return [str(path) for path in paths]


def _fake_training(launched, fail_at=None, data=None):
    """A ``launch`` that records (recipe, seed) and writes the results.json and config.json of a finished run
    (with ``data(key)``, what training records of its data, when given); the run ``fail_at`` instead stops after
    its first start, as a run stopped by a signal does (exit -15)."""
    def launch(command):
        recipe = next(arg for arg in command if arg.startswith("--flagfile=")).split("=")[1]
        key = (os.path.splitext(os.path.basename(recipe))[0],
               int(next(arg for arg in command if arg.startswith("--seed=")).split("=")[1]))
        path = next(arg for arg in command if arg.startswith("--logdir=")).split("=", 1)[1]
        launched.append(key)
        config = os.path.join(path, "config.json")
        history = json.load(open(config))["history"] if os.path.exists(config) else []
        os.makedirs(path, exist_ok=True)
        with open(config, "w") as file:
            json.dump(dict(config={}, history=[*history, dict(from_step=0, commit="abc1234", cpu="Some CPU")],
                           **(dict(data=data(key)) if data else {})), file)
        if key == fail_at and len(history) == 0:
            return -15
        results = dict(seconds_to_target=SECONDS[key], images_to_target=1000 * int(SECONDS[key]),
                       test_accuracy=0.99, train_seconds=2 * SECONDS[key], images_per_second=500.0)
        with open(os.path.join(path, "results.json"), "w") as file:
            json.dump(results, file)
        return 0
    return launch


def test_a_stopped_race_continues_with_the_unfinished_run_and_reads_the_finished(tmp_path, flagfiles):
    logdir, out, launched = str(tmp_path / "race"), str(tmp_path / "race.md"), []
    with pytest.raises(racing.RaceError, match=r"^fast seed 0 was stopped by a signal \(exit -15\); the same "
                                               r"command continues the race$"):
        racing.race_and_report(flagfiles, 0.99, 2, logdir, out, "the command",
                               launch=_fake_training(launched, fail_at=("fast", 0)))
    entrants = racing.race_and_report(flagfiles, 0.99, 2, logdir, out, "the command",
                                      launch=_fake_training(launched, fail_at=("fast", 0)))
    assert launched == [("slow", 0), ("fast", 0), ("fast", 0), ("slow", 1), ("fast", 1)]
    assert [entrant.starts for entrant in entrants] == [[1, 1], [2, 1]]
    text = open(out).read()
    assert "| runs | 4 of 4, 1 of them resumed after a stop; " in text
    assert f"| `{flagfiles[1]}` | 2/2 | 22.5 (20.0–25.0) | 0.205 |" in text  # medians 22.5 / 110.0


def test_a_race_whose_runs_were_trained_on_other_data_is_refused(tmp_path, flagfiles):
    # A race reads finished runs without loading data: their records must agree. The second recipe's run here was
    # trained on other data, as a continued race with another --data_dir would leave it.
    logdir, out, launched = str(tmp_path / "race"), str(tmp_path / "race.md"), []
    sha256 = {"slow": "a" * 64, "fast": "b" * 64}
    with pytest.raises(OneLineError, match=r"fast-seed0 was trained on other data \(b.npz, SHA-256 bbbbbbbbbbbb\) "
                                           r"than .*slow-seed0 \(a.npz, SHA-256 aaaaaaaaaaaa\)"):
        racing.race_and_report(flagfiles, 0.99, 2, logdir, out, "the command", launch=_fake_training(
            launched, data=lambda key: dict(sha256=sha256[key[0]], source=f"{'ab'[key[0] == 'fast']}.npz")))
    assert launched == [("slow", 0), ("fast", 0)]
    with pytest.raises(OneLineError, match="was trained on other data"):  # before anything trains
        racing.race_and_report(flagfiles, 0.99, 2, logdir, out, "the command", launch=_fake_training(launched))
    assert launched == [("slow", 0), ("fast", 0)]


@pytest.mark.parametrize("change, named", [
    (dict(target=0.98), "target_accuracy (0.99; here 0.98)"),
    (dict(seeds=3), "seeds (2; here 3)"),
    (dict(recipe_text="--arch=other\n"), "recipes"),
])
def test_a_race_continued_on_other_terms_is_refused(tmp_path, flagfiles, change, named):
    logdir, launched = str(tmp_path / "race"), []
    racing.race_and_report(flagfiles, 0.99, 2, logdir, str(tmp_path / "r.md"), "c", launch=_fake_training(launched))
    if "recipe_text" in change:
        with open(flagfiles[1], "w") as file:
            file.write(change["recipe_text"])
    message = (f"{logdir} holds a race with other {named}; a race continues only on its own terms "
               f"({logdir}/race.json), so pass a new --logdir")
    with pytest.raises(racing.RaceError, match=f"^{re.escape(message)}$"):
        racing.race_and_report(flagfiles, change.get("target", 0.99), change.get("seeds", 2), logdir,
                               str(tmp_path / "r.md"), "c", launch=_fake_training(launched))
    assert len(launched) == 4  # the refused invocation launched nothing


def test_a_race_on_another_cpu_is_refused(tmp_path, flagfiles):
    logdir, launched = tmp_path / "race", []
    racing.race_and_report(flagfiles, 0.99, 1, str(logdir), str(tmp_path / "r.md"), "c",
                           launch=_fake_training(launched))
    terms = json.loads((logdir / "race.json").read_text())
    (logdir / "race.json").write_text(json.dumps(dict(terms, cpu_model="Another CPU")))
    with pytest.raises(racing.RaceError, match=r"holds a race with other cpu_model \(Another CPU; here "):
        racing.race_and_report(flagfiles, 0.99, 1, str(logdir), str(tmp_path / "r.md"), "c",
                               launch=_fake_training(launched))


def test_a_folder_holding_runs_but_no_race_terms_is_refused(tmp_path, flagfiles):
    (tmp_path / "fast-seed0").mkdir()
    with pytest.raises(racing.RaceError, match=f"^{tmp_path} already holds runs of fast but no race.json; a race's "
                                               "times compare only on its own terms, so pass a new --logdir$"):
        racing.race_and_report(flagfiles, 0.99, 1, str(tmp_path), str(tmp_path / "r.md"), "the command",
                               launch=_fake_training([]))


def test_every_recipe_runs_with_the_race_target_and_evaluation_interval(tmp_path, flagfiles):
    commands = []

    def launch(command):
        commands.append(command)
        return _fake_training([])(command)

    racing.run_race(flagfiles, 0.99, 1, str(tmp_path), data_dir="/data", eval_every_epochs=0.25,
                    stop_at_target=True, launch=launch)
    assert [command[3:] for command in commands] == [
        [f"--flagfile={flagfile}", "--seed=0", f"--logdir={tmp_path / name}-seed0", "--target_accuracy=0.99",
         "--eval_every=0", "--eval_every_epochs=0.25", "--stop_at_target", "--data_dir=/data"]
        for flagfile, name in zip(flagfiles, ["slow", "fast"])]


def test_flagfiles_of_one_name_in_two_folders_each_run_in_their_own_directories(tmp_path):
    # Before, both ran in <logdir>/fast-seed0: the second was "read" from the first's run, at a ratio of 1.000.
    flagfiles = []
    for folder, arch in (("old", "slow"), ("new", "fast")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "fast.cfg").write_text(f"--arch={arch}\n")
        flagfiles.append(str(tmp_path / folder / "fast.cfg"))
    seconds = {"slow": 100.0, "fast": 20.0}
    launched = []

    def launch_run(command):
        arch = open(next(arg for arg in command if arg.startswith("--flagfile=")).split("=", 1)[1]).read()
        path = next(arg for arg in command if arg.startswith("--logdir=")).split("=", 1)[1]
        launched.append(os.path.basename(path))
        key = ("slow" if "slow" in arch else "fast", 0)
        return _fake_training([])(command[:3] + [f"--flagfile={key[0]}.cfg"] + command[4:])

    entrants = racing.race_and_report(flagfiles, 0.99, 1, str(tmp_path / "race"), str(tmp_path / "race.md"), "c",
                                      launch=launch_run)
    assert launched == ["old-fast-seed0", "new-fast-seed0"]
    assert [entrant.name for entrant in entrants] == ["old-fast", "new-fast"]
    assert [entrant.runs[0]["seconds_to_target"] for entrant in entrants] == [seconds["slow"], seconds["fast"]]
    assert f"| `{flagfiles[1]}` | 1/1 | 20.0 (20.0–20.0) | 0.200 |" in open(tmp_path / "race.md").read()


def test_entrant_names_take_as_many_folders_as_tell_the_flagfiles_apart():
    assert racing.entrant_names(["flags/a.cfg", "flags/b.cfg"]) == ["a", "b"]
    assert racing.entrant_names(["x/y/fast.cfg", "z/y/fast.cfg", "flags/slow.cfg"]) == [
        "x-y-fast", "z-y-fast", "slow"]


def test_a_race_whose_recipe_includes_a_flagfile_that_changed_is_refused(tmp_path, flagfiles):
    base = tmp_path / "base.cfg"
    base.write_text("--learning_rate=0.003\n")
    with open(flagfiles[1], "a") as file:
        file.write(f"--flagfile={base}\n")
    logdir, launched = str(tmp_path / "race"), []
    racing.race_and_report(flagfiles, 0.99, 2, logdir, str(tmp_path / "r.md"), "c", launch=_fake_training(launched))
    base.write_text("# a comment is not another recipe\n--learning_rate=0.003\n")
    racing.race_and_report(flagfiles, 0.99, 2, logdir, str(tmp_path / "r.md"), "c", launch=_fake_training(launched))
    base.write_text("--learning_rate=0.5\n")  # before: the race went on, its later runs another recipe
    message = (f"{logdir} holds a race with other recipes (a flagfile they include has changed); a race continues "
               f"only on its own terms ({logdir}/race.json), so pass a new --logdir")
    with pytest.raises(racing.RaceError, match=f"^{re.escape(message)}$"):
        racing.race_and_report(flagfiles, 0.99, 2, logdir, str(tmp_path / "r.md"), "c", launch=_fake_training(launched))
    assert len(launched) == 4


def test_the_same_flagfile_twice_is_refused_in_one_line(tmp_path, flagfiles):
    for twice, named in ((flagfiles[0], "twice"),
                         (os.path.join(os.path.dirname(flagfiles[0]), ".", "slow.cfg"),
                          f"as {flagfiles[0]} and {os.path.join(os.path.dirname(flagfiles[0]), '.', 'slow.cfg')}")):
        launched = []
        with pytest.raises(racing.RaceError, match=f"^--flagfiles names {re.escape(flagfiles[0])} "
                                                   f"{re.escape(named)}; a race needs distinct recipes$"):
            racing.race_and_report([flagfiles[0], twice], 0.99, 1, str(tmp_path / "race"), str(tmp_path / "r.md"),
                                   "c", launch=_fake_training(launched))
        assert launched == [] and not (tmp_path / "race").exists()


def test_a_stop_signal_to_the_race_stops_it_without_calling_the_run_failed(tmp_path, flagfiles):
    def stopped(command):  # what launch.run_in_console does once the run it waits for has stopped
        _fake_training([], fail_at=("slow", 0))(command)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        racing.race_and_report(flagfiles, 0.99, 1, str(tmp_path / "race"), str(tmp_path / "r.md"), "c",
                               launch=stopped)


def test_a_table_this_command_did_not_write_is_refused_before_anything_runs(tmp_path, flagfiles):
    out = tmp_path / "race-mnist.md"
    out.write_text("# Race to 99.00% test accuracy\n\na table committed to the repository\n")
    launched = []
    with pytest.raises(TableError, match=f"^{re.escape(str(out))} holds a table that this command did not write on "
                                         "these terms: it has no stamp of the command that wrote it, so was written "
                                         "by hand or by older code; pass --out=<another file>, or --overwrite_table "
                                         "to replace it$"):
        racing.race_and_report(flagfiles, 0.99, 1, str(tmp_path / "race"), str(out), "c",
                               launch=_fake_training(launched))
    assert launched == [] and "committed" in out.read_text() and not (tmp_path / "race").exists()
    racing.race_and_report(flagfiles, 0.99, 1, str(tmp_path / "race"), str(out), "c",
                           launch=_fake_training(launched), overwrite_table=True)
    assert out.read_text().startswith("# Race to 99.00% test accuracy\n") and len(launched) == 2


def test_another_race_into_the_same_table_is_refused(tmp_path, flagfiles):
    out = str(tmp_path / "r.md")
    racing.race_and_report(flagfiles, 0.99, 1, str(tmp_path / "race1"), out, "c", launch=_fake_training([]))
    with pytest.raises(TableError, match=r"this command did not write on these terms: other target_accuracy "
                                         r"\(0\.99; here 0\.98\); pass"):
        racing.race_and_report(flagfiles, 0.98, 1, str(tmp_path / "race2"), out, "c", launch=_fake_training([]))


@pytest.mark.parametrize("content, message", [
    ("{", "race.json: not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1)); "
          "it should hold a race's terms: move it away"),
    ('["slow.cfg", "fast.cfg"]', "race.json: holds a JSON list, not a race's terms: move it away"),
], ids=["not_json", "a_list"])
def test_a_damaged_race_json_is_one_line_naming_it(tmp_path, flagfiles, content, message):
    (tmp_path / "race").mkdir()
    (tmp_path / "race" / "race.json").write_text(content)
    with pytest.raises(launch.StateFileError, match=f"^{re.escape(str(tmp_path / 'race'))}/{re.escape(message)}$"):
        racing.race_and_report(flagfiles, 0.99, 1, str(tmp_path / "race"), str(tmp_path / "r.md"), "c",
                               launch=_fake_training([]))


def test_a_finished_run_with_a_damaged_results_json_is_one_line_naming_it(tmp_path, flagfiles):
    racing.race_and_report(flagfiles, 0.99, 1, str(tmp_path / "race"), str(tmp_path / "r.md"), "c",
                           launch=_fake_training([]))
    results = tmp_path / "race" / "fast-seed0" / "results.json"
    results.write_text(json.dumps(dict(json.loads(results.read_text()), seconds_to_target="20 s")))
    with pytest.raises(launch.StateFileError, match=f"^{re.escape(str(results))}: seconds_to_target is '20 s', not "
                                                    "a finite number or null;"):
        racing.race_and_report(flagfiles, 0.99, 1, str(tmp_path / "race"), str(tmp_path / "r.md"), "c",
                               launch=_fake_training([]))


def test_the_race_terms_are_never_written_through_a_planted_link(tmp_path, flagfiles):
    # race.json was written through a fixed "race.json.tmp", which a link planted there redirected.
    victim = tmp_path / "victim.txt"
    victim.write_text("someone's file\n")
    (tmp_path / "race").mkdir()
    (tmp_path / "race" / "race.json.tmp").symlink_to(victim)
    racing.race_and_report(flagfiles, 0.99, 1, str(tmp_path / "race"), str(tmp_path / "r.md"), "c",
                           launch=_fake_training([]))
    assert victim.read_text() == "someone's file\n"
    assert json.loads((tmp_path / "race" / "race.json").read_text())["target_accuracy"] == 0.99
