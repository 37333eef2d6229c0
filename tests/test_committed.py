"""``experiments.committed`` (``python3 -m experiments.recheck --tables``): a table made again from its run files
catches a changed figure, in the table and in the notebook's quotes of it; and the committed tables hold."""

import json
import os
import subprocess
import sys

from conftest import CLI_TIMEOUT_SECONDS, REPO_ROOT

from experiments import committed, racing, report, seed_runs
from experiments.points import PointResult, RunRecord, run_dir

# Two points of the real `downsampling` grid on MNIST, two seeds each: (test, validation) accuracy per seed.
ACCURACIES = {"max": [(0.9811, 0.9790), (0.9827, 0.9802)], "none": [(0.9845, 0.9811), (0.9841, 0.9820)]}
ARCHS = {"max": "c32k3-m2-c64k3-m2-d128", "none": "c32k3-c64k3-d128"}
STEPS = 600


def _write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as file:
        json.dump(value, file)


def _sweep_runs(runs_dir):
    """Writes the runs' config.json and results.json as a sweep leaves them; returns the ``PointResult``s."""
    points = []
    for label, accuracies in ACCURACIES.items():
        runs = []
        for seed, (test, validation) in enumerate(accuracies):
            path = run_dir(os.path.join(runs_dir, "sweeps"), "downsampling", "mnist", label, seed)
            results = dict(test_accuracy=test, validation_accuracy=validation, params=1234 + len(label),
                           images_per_second=1000.0 + seed, wall_seconds=10.0 + seed, train_steps=STEPS)
            _write_json(os.path.join(path, "results.json"), results)
            _write_json(os.path.join(path, "config.json"), dict(config=dict(arch=ARCHS[label], seed=seed), history=[]))
            runs.append(RunRecord(results, reused=False))
        points.append(PointResult(label, dict(arch=ARCHS[label]), runs))
    return points


def _sweep_table(points, older_code=False):
    """The committed file: a report's header rows the check reads, the table, the pick's sentence and the paired
    differences; with ``older_code``, as older code wrote it: no interval column, no paired differences, a stamp."""
    picked = report.picked_on_validation(points)
    table = report.make_table([], points, picked)
    if older_code:  # drop the "95% interval" column (the fourth after point, arch, validation, test)
        table = "\n".join("|".join(cells[:5] + cells[6:]) for cells in (line.split("|") for line in table.splitlines()))
    return "\n".join(["# Sweep `downsampling` on mnist", "", "| | |", "| --- | --- |",
                      f"| step budget | {STEPS} steps per run at batch size 128: 76,800 images, 1.42 epochs |",
                      "| seeds | 0, 1 |", "", table, "", report.pick_sentence(picked, 0.1), "",
                      *([report.table_stamp("experiments.sweep", {}, 2, 2)] if older_code
                        else report.paired_differences(points))])


def test_a_table_made_from_its_own_runs_holds_and_a_changed_figure_is_caught(tmp_path):
    text = _sweep_table(_sweep_runs(str(tmp_path)))
    check = committed.check_table("sweeps/downsampling-mnist.md", text, str(tmp_path))
    # 2 rows x 9 columns after the point (arch, validation, test, interval, min–max, test − pick, params, images/s,
    # s per run), the pick's label, validation and test, and the one pair's n, validation and test.
    assert (check.kind, check.differences, check.compared) == ("sweep", [], 2 * 9 + 3 + 3)
    # none's test accuracy: mean of 98.45 and 98.41 = 98.43, std 0.03.
    assert "| 98.43 ± 0.03 |" in text
    # none − max per seed: validation +0.21, +0.18 (mean +0.195, std 0.0212: t(0.975, 1) = 12.706 x 0.015 = 0.191),
    # test +0.34, +0.14 (mean +0.24, std 0.141: half-width 1.271).
    assert "| none − max | 2 | +0.20 [+0.00, +0.39] | +0.24 [-1.03, +1.51] (includes 0) |" in text
    edited = text.replace("| +0.24 [-1.03, +1.51] (includes 0) |", "| +0.24 [+0.03, +1.51] |")
    assert [d.what for d in committed.check_table("x.md", edited, str(tmp_path)).differences] == [
        "none − max: test b − a (95%)"]
    edited = text.replace("| 98.43 ± 0.03 |", "| 98.45 ± 0.03 |")
    changed = committed.check_table("sweeps/downsampling-mnist.md", edited, str(tmp_path))
    assert [d.text() for d in changed.differences] == [
        "sweeps/downsampling-mnist.md: none: test accuracy % (mean ± std): stated '98.45 ± 0.03'; the run files give "
        "'98.43 ± 0.03'"]


def test_a_changed_run_file_another_pick_and_a_missing_run_are_caught(tmp_path):
    points = _sweep_runs(str(tmp_path))
    text = _sweep_table(points)
    max_seed1 = run_dir(os.path.join(tmp_path, "sweeps"), "downsampling", "mnist", "max", 1)
    # max's validation accuracy of seed 1 raised so far that validation now picks max, not none.
    _write_json(os.path.join(max_seed1, "results.json"), dict(points[0].runs[1].results, validation_accuracy=0.99))
    whats = [d.what for d in committed.check_table("x.md", text, str(tmp_path)).differences]
    assert "max: validation accuracy % (mean ± std)" in whats and "pick on validation: point" in whats
    os.remove(os.path.join(max_seed1, "results.json"))
    check = committed.check_table("x.md", text, str(tmp_path))
    assert [d.text() for d in check.differences] == ["x.md: max: stated 'a row'; no run files of seed(s) 1"]


def test_a_table_of_older_code_is_compared_on_the_columns_it_has_and_add_pairs_mends_it(tmp_path):
    text = _sweep_table(_sweep_runs(str(tmp_path)), older_code=True)
    assert "95% interval" not in text
    check = committed.check_table("x.md", text, str(tmp_path))
    assert ([d.text() for d in check.differences], check.compared) == ([
        "x.md: paired differences: stated 'no such section'; the run files give 1 pairs (--add_pairs writes them)"],
        2 * 8 + 3)
    path = tmp_path / "downsampling-mnist.md"
    path.write_text(text)
    assert committed.add_pairs(str(path), str(tmp_path))
    mended = path.read_text()
    # The section goes before the stamp, which stays the last line; the rest of the table is as it was.
    assert mended.startswith(text[:text.index("<!--")].rstrip("\n"))
    assert report.read_stamp(str(path)) == dict(command="experiments.sweep", terms={}, done=2, total=2)
    assert "| none − max | 2 | +0.20 [+0.00, +0.39] | +0.24 [-1.03, +1.51] (includes 0) |" in mended
    assert committed.PAIRS_NOTE in mended
    check = committed.check_table("x.md", mended, str(tmp_path))
    assert (check.differences, check.compared) == ([], 2 * 8 + 3 + 3)
    assert not committed.add_pairs(str(path), str(tmp_path))  # once only
    assert path.read_text() == mended


def test_a_seeds_table_is_remade_from_its_runs(tmp_path):
    done = []
    for seed, accuracy in enumerate((0.9946, 0.9937)):
        path = os.path.join(tmp_path, "seeds", f"mnist_full-seed{seed}")
        results = dict(test_accuracy=accuracy, test_loss=0.02, train_steps=5616, train_seconds=546.0,
                       images_per_second=1319.0, validation_accuracy=None)
        history = [dict(commit="f0a2432", cpu="a CPU")]
        _write_json(os.path.join(path, "results.json"), results)
        _write_json(os.path.join(path, "config.json"), dict(config=dict(seed=seed), history=history))
        done.append((seed, results, history))
    text = "# mnist_full: 2 of 2 seeds\n\n" + seed_runs.make_table(done) + "\n"
    assert committed.check_table("s.md", text, str(tmp_path)).differences == []
    assert "| mean ± std | 99.42 ± 0.06 |" in text  # of 99.46 and 99.37
    changed = committed.check_table("s.md", text.replace("| 99.42 ± 0.06 |", "| 99.43 ± 0.06 |"), str(tmp_path))
    assert [(d.what, d.stated) for d in changed.differences] == [("mean ± std: test accuracy %", "99.43 ± 0.06")]


def test_a_quote_in_the_notebook_that_no_figure_of_its_table_holds_is_caught(tmp_path):
    table = committed.parse_table(_sweep_table(_sweep_runs(str(tmp_path))))
    sources = {"downsampling-mnist.md": (table, True)}
    notebook = ("# 7. Sweeps\n\n- [Downsampling](sweeps/downsampling-mnist.md): none 98.43 ± 0.03%, max 98.19 ±\n"
                "  0.11%; seeds of max 98.11% and 98.27%.\n\nUnrelated: 12.34 ± 0.56%.\n")
    differences, checked = committed.quoted_differences("W.md", notebook, sources)
    # max: mean of 98.11 and 98.27 = 98.19, std 0.11; the quote across a line break counts, the last line names no
    # table and is not checked.
    assert (differences, checked) == ([], 4)
    differences, _ = committed.quoted_differences("W.md", notebook.replace("98.27%", "98.72%"), sources)
    assert [d.text() for d in differences] == [
        "W.md:4: a quote of downsampling-mnist.md: stated '98.72%'; no figure of downsampling-mnist.md is that"]
    # A difference with its interval must be a pair's, either way round, even across a line break.
    quoted = notebook.replace("0.11%; seeds", "0.11%; none − max on validation +0.20 [+0.00,\n  +0.39], max − none "
                              "-0.24 [-1.51, +1.03]; seeds")
    assert committed.quoted_differences("W.md", quoted, sources) == ([], 6)
    differences, _ = committed.quoted_differences("W.md", quoted.replace("[-1.51,", "[-1.50,"), sources)
    assert [d.text() for d in differences] == [
        "W.md:5: a quote of downsampling-mnist.md: stated '-0.24 [-1.50, +1.03]'; no paired difference of "
        "downsampling-mnist.md is that"]
    sources = {"downsampling-mnist.md": (table, False)}  # a table without run files: its figures as committed
    differences, _ = committed.quoted_differences("W.md", notebook.replace("98.27%", "98.72%"), sources)
    assert differences[0].found == "no figure of downsampling-mnist.md (as committed: no run files) is that"


def test_a_race_table_is_remade_from_the_runs_its_command_wrote(tmp_path):
    logdir = tmp_path / "races" / "r"
    for name, seconds in (("slow", (100.0, 120.0)), ("fast", (20.0, 30.0))):
        for seed, second in enumerate(seconds):
            _write_json(str(logdir / f"{name}-seed{seed}" / "results.json"), dict(
                seconds_to_target=second, images_to_target=1024 * int(second), test_accuracy=0.991,
                train_seconds=second + 100, images_per_second=100.0))
    entrants = [racing.Entrant(name, f"flags/{name}.cfg", [
        json.loads((logdir / f"{name}-seed{seed}" / "results.json").read_text()) for seed in (0, 1)])
        for name in ("slow", "fast")]
    command = "python3 -m experiments.race --flagfiles=flags/slow.cfg,flags/fast.cfg --logdir=sweeps/runs/races/r"
    text = "\n".join(["# Race to 99.00% test accuracy", "", "| | |", "| --- | --- |",
                      "| recipes | `flags/slow.cfg`, `flags/fast.cfg` (the first is the baseline) |",
                      "| seeds | 0, 1, run alternately |", f"| command | `{command}` |", "",
                      racing.make_table(entrants, 0.99), "", *racing.paired_ratios(entrants)])
    check = committed.check_table("sweeps/race-r.md", text, str(tmp_path))
    # 2 recipes x 8 columns after the recipe, and the paired ratios' sentence.
    assert (check.kind, check.differences, check.compared) == ("race", [], 2 * 8 + 1)
    # 20/100 and 30/120: a geometric mean of sqrt(0.2 x 0.25) = 0.224.
    assert "| `flags/fast.cfg` | 2/2 | 25.0 (20.0–30.0) | 0.227 |" in text and " 0.224 [" in text
    changed = committed.check_table("sweeps/race-r.md", text.replace("30.0) | 0.227 |", "30.0) | 0.207 |"),
                                    str(tmp_path))
    assert [(d.what, d.stated) for d in changed.differences] == [("`flags/fast.cfg`: ratio to baseline", "0.207")]
    elsewhere = committed.check_table("sweeps/race-r.md", text.replace("sweeps/runs/races/r", "/tmp/r"), str(tmp_path))
    assert elsewhere.unchecked == "its runs were written outside the repository (its command's --logdir)"


def test_a_seeds_table_is_remade_from_the_logdir_its_command_names():
    def command(arguments):
        return f"| command | `python3 -m experiments.seeds --recipe=flags/r.cfg {arguments}` |\n"

    assert committed._seeds_logdir(command("--logdir=sweeps/runs/seeds_10epochs --seeds=5"), "R") == "R/seeds_10epochs"
    # Without one, or with one outside sweeps/runs, the runs are where the seeds command puts them by default.
    assert committed._seeds_logdir(command("--seeds=5"), "R") == "R/seeds"
    assert committed._seeds_logdir(command("--logdir=/tmp/runs"), "R") == "R/seeds"
    assert committed._seeds_logdir(command("--logdir=sweeps/runs/../../etc"), "R") == "R/seeds"


def test_the_committed_tables_hold_against_their_run_files(monkeypatch):
    sweeps = os.path.join(REPO_ROOT, "sweeps")
    checks, quotes, quotes_checked = committed.check_all(sweeps, os.path.join(sweeps, "runs"),
                                                         os.path.join(REPO_ROOT, "WORKSPACE.md"))
    assert [d.text() for check in checks for d in check.differences] + [d.text() for d in quotes] == []
    # Tables whose runs were written outside the repository.
    assert sorted(check.path for check in checks if check.unchecked) == sorted([
        "sweeps/pooling-fashion_mnist.md", "sweeps/pooling-mnist.md", "sweeps/race-cifar10.md", "sweeps/race-mnist.md",
        "sweeps/seeds-cifar10_speed.md"])
    assert "race" in {check.kind for check in checks if not check.unchecked}
    assert all(check.compared > 0 for check in checks if not check.unchecked)
    assert quotes_checked > 100
    # Each quote the check leaves out is in the notebook and is no figure of its table: none is stale.
    known = committed.NOT_FROM_THE_TABLE
    monkeypatch.setattr(committed, "NOT_FROM_THE_TABLE", {})
    _, quotes, _ = committed.check_all(sweeps, os.path.join(sweeps, "runs"), os.path.join(REPO_ROOT, "WORKSPACE.md"))
    assert sorted(d.stated for d in quotes) == sorted(quote for _, quote in known)


def test_recheck_tables_exits_zero_over_the_committed_tables():
    completed = subprocess.run([sys.executable, "-m", "experiments.recheck", "--tables"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS)
    assert completed.returncode == 0, completed.stderr
    assert "| sweeps/filter_size-mnist.md | sweep | 328 | 0 | — |" in completed.stdout
