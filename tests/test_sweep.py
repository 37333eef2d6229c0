"""Sweeps: the named grids fit their datasets, the table formats exactly, a tiny sweep runs and is reused."""

import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import types

import pytest
from conftest import CLI_TIMEOUT_SECONDS, REPO_ROOT, TINY_TEST

from experiments import grids, racing, reuse, runner, seed_runs
from experiments import report as report_lib
from flags import race_flags, seeds_flags, sweep_flags
from models import analysis, architecture
from training import data as data_lib
from training import stopping
from training.config import TrainConfig
from training.errors import OneLineError
from training.rundir import RunDir

# The issue asks for MLPs "of similar parameter count": within 2% of the CNN's weights.
MLP_PARAMS_RTOL = 0.02


@pytest.mark.parametrize("dataset", list(data_lib.DATASETS))
@pytest.mark.parametrize("name", list(grids.GRIDS))
def test_every_named_grid_fits_every_dataset(name, dataset):
    grid = grids.make_grid(name, dataset)
    info = data_lib.DATASETS[dataset]
    for label, overrides in grid.points:
        architecture.plan(overrides["arch"], info.image_shape, info.num_classes)  # raises if it does not fit
        assert not set(overrides) & {"seed", "train_steps", "logdir", "dataset"}, label
    # A budget: steps for every run, or each point's own epochs.
    assert grid.description.strip() and (grid.train_steps > 0 or all(overrides["epochs"] > 0
                                                                     for _, overrides in grid.points))


# Section 1's table of the variants the main job was chosen from: what each changes in the main job's recipe.
POOL32, POOL16 = "c32k5b-m2-c64k5b-m2-d128", "c16k5b-m2-c32k5b-m2-d128"
MAIN_JOB_VARIANTS = {
    "pool32-e4": dict(arch=POOL32, augment=False, epochs=4.0),
    "pool16-e4": dict(arch=POOL16, augment=False, epochs=4.0),
    "pool32-drop0.3-nols-e5": dict(arch=f"{POOL32}-drop0.3", augment=False, label_smoothing=0.0, epochs=5.0),
    "pool16-b64-e3": dict(arch=POOL16, augment=False, batch_size=64, epochs=3.0),
    "pool16-aug-e5": dict(arch=POOL16, epochs=5.0),
    "main_job": {},
    "fast-aug-e4": dict(epochs=4.0),
}


def test_the_main_job_grid_trains_the_main_job_and_each_variant_changed_only_where_section_1_says():
    from training.config import MAIN_JOB, as_json
    from training.parts import steps_per_epoch

    grid = grids.make_grid("main_job", "mnist")
    assert grid.validation_split == 0.1 and not grid.budget_in_steps and grid.picks_a_point
    configs = {label: runner.run_config(grid, label, overrides, "mnist", 2, 0, "/runs")
               for label, overrides in grid.points}
    # The main job as `python3 -m training.train --validation_split=0.1 --seed=2` runs it (its flags default to
    # MAIN_JOB), in the sweep's run directory.
    main = TrainConfig(**MAIN_JOB, validation_split=0.1, seed=2, resume=True, logdir=configs["main_job"].logdir)
    assert configs["main_job"] == main
    changed = {label: {name: value for name, value in as_json(config).items()
                       if name != "logdir" and value != as_json(main)[name]} for label, config in configs.items()}
    assert changed == MAIN_JOB_VARIANTS
    # 9,000 of the bundled 10,000 images are trained on: 70 whole batches of 128 an epoch, 140 of 64.
    assert {label: config.epochs * steps_per_epoch(config.batch_size, 9_000) for label, config in configs.items()} \
        == {"pool32-e4": 280, "pool16-e4": 280, "pool32-drop0.3-nols-e5": 350, "pool16-b64-e3": 420,
            "pool16-aug-e5": 350, "main_job": 420, "fast-aug-e4": 280}


def test_filter_size_grid_follows_its_rule_on_mnist():
    points = dict(grids.make_grid("filter_size", "mnist").points)
    assert [label for label in points if label.startswith("same")] == [
        "same-k1", "same-k3", "same-k5", "same-k7", "same-k9", "same-k14", "same-k28"]
    assert points["same-k28"]["arch"] == "c32k28-m2-d128"
    assert points["valid-k14"]["arch"] == "c32k14v-m2-d128"  # 15x15 conv output, pooled to 7x7
    assert points["valid-k28"]["arch"] == "c32k28v-d128"  # 1x1 conv output: no pool
    assert "valid-k1" not in points


def _params(arch, input_shape):
    return analysis.totals(analysis.layer_table(arch, input_shape, 10))[0]


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_similar_mlps_are_within_two_percent_of_their_cnn_with_and_without_dropout(dataset):
    points = dict(grids.make_grid("cnn_vs_mlp", dataset).points)
    input_shape = data_lib.DATASETS[dataset].image_shape
    for label, overrides in points.items():
        if label.startswith("mlp"):
            cnn = points[label.split("_like_")[1].removesuffix("_drop0.5")]["arch"]
            target, got = _params(cnn, input_shape), _params(overrides["arch"], input_shape)
            assert abs(got - target) <= MLP_PARAMS_RTOL * target, (label, got, target)
    # Dropout changes no weight count: each variant is its twin without (or with) it.
    assert points["mnist_cnn_nodrop"]["arch"] == "c32k5-m2-c64k5-m2-d1024"
    assert points["keras_convnet_nodrop"]["arch"] == "c32k3v-m2-c64k3v-m2"
    assert "small_cnn_nodrop" not in points and "mlp1_like_small_cnn_drop0.5" not in points
    if dataset == "mnist":
        # The Keras example's 34,826 weights against 44 * (784 + 1 + 10) + 10 = 34,990 (+0.5%).
        assert points["mlp1_like_keras_convnet"]["arch"] == "d44"
        assert points["mlp2_like_mnist_cnn_drop0.5"]["arch"] == "d1455-drop0.5-d1455-drop0.5"
        assert len(points) == 15
    else:
        # On 3,072 inputs a unit of d{w}-d{w} is ~3k weights: none comes within 2% of keras_convnet's 42,442.
        assert "mlp2_like_keras_convnet" not in points and "mlp2_like_keras_convnet_drop0.5" not in points
        assert len(points) == 13


def _point(label, accuracies, **overrides):
    results = [dict(test_accuracy=a, params=12_770, images_per_second=1000.0 * (i + 1), wall_seconds=2.0 * (i + 1))
               for i, a in enumerate(accuracies)]
    return runner.PointResult(label, overrides, [runner.RunRecord(r, reused=False) for r in results])


def test_accuracy_spread_is_percent_mean_sample_std_and_range():
    assert report_lib.accuracy_spread([0.98, 0.99, 1.00]) == ("99.00 ± 1.00", "98.00–100.00")
    assert report_lib.accuracy_spread([0.9712]) == ("97.12", "97.12–97.12")  # one run: no spread to state


def test_table_rows_hold_every_figure():
    points = [_point("adam", [0.98, 0.99, 1.00], arch="c4k3-m2-d16", optimizer="adam"),
              _point("sgd", [0.5, 0.7], arch="mnist_cnn", optimizer="sgd", nesterov=True)]
    table = report_lib.make_table(["optimizer", "nesterov"], points).splitlines()
    assert table[0] == ("| point | arch | optimizer | nesterov | test accuracy % (mean ± std) | 95% interval | "
                        "min–max % | params | images/s | s per run |")
    # images/s: mean of 1000, 2000, 3000; s per run: mean of 2, 4, 6; nesterov not set by "adam". Interval:
    # 99 +- t(0.975, 2) x 1 / sqrt(3) = 99 +- 2.48.
    assert table[2] == ("| adam | `c4k3-m2-d16` | adam | — | 99.00 ± 1.00 | [96.52, 101.48] | 98.00–100.00 | 12,770 | "
                        "2,000 | 4.0 |")
    # Sample std of 50 and 70: sqrt(((-10)^2 + 10^2) / 1) = 14.14; 60 +- 12.706 x 14.14 / sqrt(2) = 60 +- 127.06.
    assert table[3] == ("| sgd | `c32k5-m2-c64k5-m2-d1024-drop0.5` | sgd | yes | 60.00 ± 14.14 | [-67.06, 187.06] | "
                        "50.00–70.00 | 12,770 | 1,500 | 3.0 |")


def test_the_point_is_picked_on_validation_accuracy_and_its_test_accuracy_reported_beside_it(tiny_mnist):
    def with_validation(point, accuracies):
        for run, accuracy in zip(point.runs, accuracies):
            run.results["validation_accuracy"] = accuracy
        return point

    # "b" has the better test accuracy, "a" the better validation accuracy: the pick is "a".
    points = [with_validation(_point("a", [0.90, 0.92], arch="d16"), [0.95, 0.97]),
              with_validation(_point("b", [0.99, 0.99], arch="d16"), [0.93, 0.93])]
    assert report_lib.picked_on_validation(points).label == "a"
    table = report_lib.make_table([], points).splitlines()
    assert table[0].startswith("| point | arch | validation accuracy % (mean ± std) | test accuracy % (mean ± std) |")
    assert table[2].startswith("| a | `d16` | 96.00 ± 1.41 | 91.00 ± 1.41 | [78.29, 103.71] | 90.00–92.00 |")
    # With the pick, each point's test accuracy minus the pick's, by seed: b - a = (9, 7) points.
    table = report_lib.make_table([], points, picked=points[0]).splitlines()
    assert "| test − pick, paired by seed (95%) |" in table[0]
    assert "| [78.29, 103.71] | 90.00–92.00 | — |" in table[2]
    # Mean 8, std 1.41: 8 +- 12.706 x 1.414 / sqrt(2) = 8 +- 12.71, which includes 0.
    assert "| +8.00 [-4.71, +20.71] (includes 0) |" in table[3]
    # Without a validation set in every run there is nothing to pick by, and no column.
    assert report_lib.picked_on_validation([_point("c", [0.9], arch="d16")]) is None
    # The report names the pick, unless the grid is an ablation; the validation column stays.
    record = dict(cpu_model="a CPU", machine="x86_64", cpus=2, tensorflow="2", keras="3", python="3", commit="abc")
    for grid, picks in ((grids.Grid("choice", "", (("a", {}), ("b", {}))), True),
                        (grids.make_grid("airbench_ablation", "cifar10"), False)):
        report = report_lib.make_report(grid, tiny_mnist, 5, 2, points, record, "the command", 0.0)
        assert ("Picked on validation accuracy" in report) is picks, grid.name
        assert "| validation accuracy % (mean ± std) |" in report
    # An ablation compares each point with its first, the whole recipe, by seed: b - a = (9, 7) points again.
    ablation = grids.Grid("ablation", "", (("a", {}), ("b", {})), picks_a_point=False)
    report = report_lib.make_report(ablation, tiny_mnist, 5, 2, points, record, "the command", 0.0)
    assert "| test − a, paired by seed (95%) |" in report and "| +8.00 [-4.71, +20.71] (includes 0) |" in report


def test_pooling_grid_follows_its_rule_on_mnist():
    points = dict(grids.make_grid("pooling", "mnist").points)
    assert {label: overrides["arch"] for label, overrides in points.items()} == {
        "max2": "c32k5-m2-d128", "max4": "c32k5-m4-d128", "max7": "c32k5-m7-d128",
        "global_max": "c32k5-gmp-d128", "global_avg": "c32k5-gap-d128", "none": "c32k5-d128"}
    # The dense layer's input: 28x28 pooled by 7 is 4x4 (floor), by a global pool 1 value per filter.
    widths = {label: architecture.plan(arch["arch"], (28, 28, 1), 10)[-2].input_shape[0]
              for label, arch in points.items()}
    assert widths == {"max2": 14 * 14 * 32, "max4": 7 * 7 * 32, "max7": 4 * 4 * 32, "global_max": 32,
                      "global_avg": 32, "none": 28 * 28 * 32}


def test_commit_label_marks_code_changes_but_not_markdown_or_run_files(tmp_path):
    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "model.py").write_text("x = 1\n")
    git("add", "model.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    head = git("rev-parse", "--short", "HEAD")
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "filter_size-mnist.md").write_text("# a table\n")
    (tmp_path / "NOTES.md").write_text("# notes\n")
    (tmp_path / "sweeps" / "runs" / "seeds" / "recipe-seed0").mkdir(parents=True)  # a finished run's files
    (tmp_path / "sweeps" / "runs" / "seeds" / "recipe-seed0" / "config.json").write_text("{}\n")
    assert report_lib.git_commit(tmp_path) == head
    (tmp_path / "model.py").write_text("x = 2\n")
    assert report_lib.git_commit(tmp_path) == f"{head} +uncommitted changes"


def test_grid_refuses_reserved_overrides_and_repeated_labels():
    with pytest.raises(ValueError, match="cannot override"):
        grids.Grid("bad", "", (("a", dict(seed=3)),))
    with pytest.raises(ValueError, match="distinct"):
        grids.Grid("bad", "", (("a", {}), ("a", {})))
    # A point's epochs and batch size are its own only where the budget is each point's epochs.
    with pytest.raises(ValueError, match=r"cannot override \['epochs'\]"):
        grids.Grid("bad", "", (("a", dict(epochs=2.0)),))
    with pytest.raises(ValueError, match="point b: the grid's budget is each point's epochs"):
        grids.Grid("bad", "", (("a", dict(epochs=2.0, batch_size=64)), ("b", {})), train_steps=0)
    with pytest.raises(ValueError, match=r"cannot override \['train_steps'\]"):
        grids.Grid("bad", "", (("a", dict(epochs=2.0, train_steps=9)),), train_steps=0)


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory, tiny_mnist):
    """A 2-point x 2-seed grid of 5-step runs on tiny MNIST, run twice into the same run directories."""
    root = tmp_path_factory.mktemp("sweep")
    grid = grids.Grid("tiny", "Two tiny nets.", (
        ("conv", dict(arch="c4k3-m2-d16", learning_rate=1e-3)),
        ("mlp", dict(arch="d16", learning_rate=3e-3, deterministic=True))), train_steps=5, batch_size=64)
    args = dict(grid=grid, dataset=tiny_mnist, seeds=2, logdir=str(root / "runs"), out=str(root / "tiny.md"),
                command="python3 -m experiments.sweep --grid=tiny")
    lines = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner.logging, "info", lambda text, *values: lines.append(text % values))
        first = runner.run_and_report(**args)
    results_files = sorted((root / "runs").glob("tiny/mnist/*/results.json"))
    mtimes = [os.stat(path).st_mtime_ns for path in results_files]
    first_report = (root / "tiny.md").read_text()
    second = runner.run_and_report(**args)
    return dict(root=root, grid=grid, first=first, second=second, results_files=results_files, mtimes=mtimes,
                first_report=first_report, report=(root / "tiny.md").read_text(), lines=lines)


def test_tiny_sweep_trains_each_point_and_seed_in_its_own_run_directory(tiny_sweep):
    assert [path.parent.name for path in tiny_sweep["results_files"]] == [
        "conv-seed0", "conv-seed1", "mlp-seed0", "mlp-seed1"]
    assert not any(run.reused for point in tiny_sweep["first"] for run in point.runs)
    for path in tiny_sweep["results_files"]:
        results = json.loads(path.read_text())
        assert results["train_steps"] == 5 and results["batch_size"] == 64
        assert results["seed"] == int(path.parent.name[-1])
        assert 0 <= results["validation_accuracy"] <= 1  # every sweep run holds out a validation set


def test_after_each_run_the_sweep_says_how_many_are_done_and_about_how_long_is_left(tiny_sweep):
    progress = [line for line in tiny_sweep["lines"] if line.startswith("sweep: ") and "runs done" in line]
    assert [line.split(";")[0] for line in progress] == [f"sweep: {k} of 4 runs done" for k in range(1, 5)]
    assert all("left" in line for line in progress[:3]) and "left" not in progress[3]


def test_each_run_shows_its_settings_in_the_hparams_dashboard_once_grouped_with_its_seeds(tiny_sweep):
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import metadata

    runs = tiny_sweep["root"] / "runs" / "tiny" / "mnist"
    groups = {}
    for run_dir in sorted(runs.iterdir()):
        accumulator = event_accumulator.EventAccumulator(str(run_dir), size_guidance={event_accumulator.TENSORS: 0})
        accumulator.Reload()
        content = accumulator.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG]
        start = metadata.parse_session_start_info_plugin_data(content)
        hparams = {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
                   for name, value in start.hparams.items()}
        label, seed = run_dir.name.rsplit("-seed", 1)
        assert hparams["arch"] == {"conv": "c4k3-m2-d16", "mlp": "d16"}[label] and "seed" not in hparams
        groups.setdefault(label, set()).add(start.group_name)
        # One session a run: before, a sweep wrote a second one into <run>/hparams.
        assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == ["checkpoints", "eval", "train",
                                                                          "validation"]
    # The seeds of a point share a group; the two points do not.
    assert [len(names) for names in groups.values()] == [1, 1] and groups["conv"] != groups["mlp"]


def test_tiny_sweep_writes_the_header_and_one_row_per_point(tiny_sweep):
    report = tiny_sweep["first_report"]
    for line in ("# Sweep `tiny` on mnist", "| grid | `tiny`: 2 points x 2 seeds |",
                 # The runs hold 10% of the 512 training images out for validation: 320 / 461 = 0.69 epochs.
                 "| step budget | 5 steps per run at batch size 64: 320 images, 0.69 epochs |",
                 "| seeds | 0, 1 |",
                 f"| machine | {report_lib.cpu_description()} ({os.uname().machine}), {os.cpu_count()} CPUs |",
                 "| command | `python3 -m experiments.sweep --grid=tiny` |",
                 "| runs | 4 trained, 0 reused from earlier results.json;"):
        assert line in report, line
    assert f": 512 training images (461 trained on, 51 held out for validation), {TINY_TEST:,} test images |" in report
    assert "| commit | " in report and "Incomplete" not in report
    rows = [line for line in report.splitlines() if line.startswith("| conv |") or line.startswith("| mlp |")]
    assert len(rows) == 2
    assert rows[0].startswith("| conv | `c4k3-m2-d16` | 0.001 | — | ")  # columns: learning_rate, deterministic
    assert rows[1].startswith("| mlp | `d16` | 0.003 | yes | ")
    # The one pair's differences, over the two seeds: its test difference is the table's conv − pick turned round.
    from experiments import committed

    table = committed.parse_table(report)
    pair, conv = table.pairs["mlp − conv"], table.rows["conv"]
    assert pair["n"] == "2" and table.rows["mlp"]["test − pick, paired by seed (95%)"] == "—"
    mean, low, high = committed._interval(committed.INTERVAL.search(conv["test − pick, paired by seed (95%)"]))
    assert committed._interval(committed.INTERVAL.search(pair["test b − a (95%)"])) == (-mean, -high, -low)


def test_a_sweep_whose_budget_is_each_points_epochs_trains_each_as_long_as_it_says(tmp_path, tiny_mnist,
                                                                                    monkeypatch):
    from experiments import committed

    # 461 of the 512 tiny images are trained on: 1 epoch is 7 batches of 64, 2 epochs of 32 are 28 batches.
    grid = grids.Grid("epochs", "Two budgets.", (("short", dict(arch="d16", epochs=1.0, batch_size=64)),
                                                  ("long", dict(arch="d16", epochs=2.0, batch_size=32))),
                      train_steps=0)
    runs = tmp_path / "runs"
    runner.run_and_report(grid, tiny_mnist, 1, str(runs / "sweeps"), str(tmp_path / "epochs-mnist.md"), "the command")
    assert [(json.loads((runs / "sweeps" / "epochs" / "mnist" / f"{label}-seed0" / "results.json").read_text())
             [key]) for label in ("short", "long") for key in ("train_steps", "batch_size")] == [7, 64, 28, 32]
    report = (tmp_path / "epochs-mnist.md").read_text()
    assert ("| epoch budget | each point's epochs (column) of the 461 images trained on, in whole batches (the steps "
            "column); batch size 128 unless the point sets its own |") in report
    assert report.count("| point | arch | epochs | batch_size | steps | validation accuracy") == 1
    assert "| short | `d16` | 1 | 64 | 7 | " in report and "| long | `d16` | 2 | 32 | 28 | " in report
    # The table made again from its run files holds, its steps column included (there is no step budget to check).
    monkeypatch.setattr(grids, "make_grid", lambda name, dataset: grid)
    check = committed.check_table("epochs-mnist.md", report, str(runs))
    assert check.differences == [] and check.compared > 0 and "steps" in check.remade.columns


def test_a_second_sweep_reuses_every_finished_run(tiny_sweep):
    assert all(run.reused for point in tiny_sweep["second"] for run in point.runs)
    assert [os.stat(path).st_mtime_ns for path in tiny_sweep["results_files"]] == tiny_sweep["mtimes"]
    assert "| runs | 0 trained, 4 reused from earlier results.json;" in tiny_sweep["report"]
    first_rows = [line for line in tiny_sweep["first_report"].splitlines() if line.startswith("| conv ")]
    assert first_rows == [line for line in tiny_sweep["report"].splitlines() if line.startswith("| conv ")]


@pytest.mark.slow
def test_processes_sharing_a_sweep_pass_by_a_run_in_training_and_the_table_counts_what_they_trained(
        tmp_path, tiny_mnist):
    grid = grids.Grid("one", "One tiny net.", (("conv", dict(arch="c4k3-m2-d16")),), train_steps=5, batch_size=64)
    logdir = str(tmp_path / "runs")
    busy = RunDir(str(tmp_path / "runs" / "one" / "mnist" / "conv-seed0"))
    busy.lock()  # as another process training seed 0 would hold it
    try:
        assert runner.train_free_runs(grid, tiny_mnist, 2, logdir) == 1  # seed 1 only
    finally:
        busy.close()
    assert not (tmp_path / "runs" / "one" / "mnist" / "conv-seed0" / "results.json").exists()
    # What --jobs=2 does: the other processes train (here: this one, for the run left), then the table is read.
    runner.run_and_report(grid, tiny_mnist, 2, logdir, str(tmp_path / "one.md"), "the command",
                          train_elsewhere=lambda: runner.train_free_runs(grid, tiny_mnist, 2, logdir), jobs=2)
    report = (tmp_path / "one.md").read_text()
    assert "| runs | 1 trained, 1 reused from earlier results.json;" in report
    assert "| jobs | 2 runs trained at once, each in a process of its own: the times of the runs trained now are " \
           "with the cores shared |" in report


def test_a_run_directory_of_another_budget_is_refused(tiny_sweep):
    config = TrainConfig(arch="c4k3-m2-d16", learning_rate=1e-3, batch_size=64, train_steps=7,
                         validation_split=grids.SWEEP_VALIDATION_SPLIT,
                         logdir=str(tiny_sweep["root"] / "runs" / "tiny" / "mnist" / "conv-seed0"))
    with pytest.raises(reuse.ReuseError, match="holds a run with train_steps=5, not train_steps=7"):
        runner.reusable_results(config)


def test_a_finished_run_trained_on_other_data_is_refused_not_read(tiny_sweep, tiny_mnist):
    # The same settings on other images (one label changed): reading the run would put other data in the table.
    labels = tiny_mnist.y_train.copy()
    labels[0] = (labels[0] + 1) % 10
    other = dataclasses.replace(tiny_mnist, y_train=labels)
    config = runner.sweep_runs(tiny_sweep["grid"], "mnist", 1, str(tiny_sweep["root"] / "runs"))[0][-1]
    assert runner.reusable_results(config, runner.data_fingerprint(tiny_mnist)) is not None
    with pytest.raises(reuse.ReuseError, match=r"conv-seed0 holds a run trained on other data \(.*, SHA-256 "
                       r"[0-9a-f]{12}\), not the data this command loaded \(SHA-256 [0-9a-f]{12}\); pass another "
                       r"--logdir or remove that directory$"):
        runner.reusable_results(config, runner.data_fingerprint(other))


def test_cli_rejects_an_unknown_grid_in_one_line():
    completed = subprocess.run(
        [sys.executable, "-m", "experiments.sweep", "--grid=bogus"], cwd=REPO_ROOT, capture_output=True, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=CLI_TIMEOUT_SECONDS)
    assert completed.returncode == 2, completed.stderr
    # TensorFlow's C++ start-up lines may come first whatever TF_CPP_MIN_LOG_LEVEL says; the error is the last.
    assert "Traceback" not in completed.stderr and completed.stdout == ""
    assert completed.stderr.splitlines()[-1] == ("sweep.py: error: flag --grid=bogus: value should be one of "
                                                 f"<{'|'.join(grids.GRIDS)}>")


def test_cli_takes_the_bundled_subset_only_as_mnist_without_a_data_dir():
    completed = subprocess.run(
        [sys.executable, "-m", "experiments.sweep", "--grid=main_job", "--bundled_mnist", "--dataset=fashion_mnist"],
        cwd=REPO_ROOT, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        timeout=CLI_TIMEOUT_SECONDS)
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.splitlines()[-1] == (
        "sweep.py: error: flags bundled_mnist=True, dataset=fashion_mnist, data_dir=: --bundled_mnist is MNIST's "
        "subset in bundled_data/: give it with --dataset=mnist and without --data_dir")


def _tiny_grid():
    """The grid of the ``tiny_sweep`` fixture (equal by name, budget and batch size: the table's terms)."""
    return grids.Grid("tiny", "Two tiny nets.", (
        ("conv", dict(arch="c4k3-m2-d16", learning_rate=1e-3)),
        ("mlp", dict(arch="d16", learning_rate=3e-3, deterministic=True))), train_steps=5, batch_size=64)


def test_a_finished_table_is_not_replaced_when_a_sweep_is_stopped_at_its_start(tiny_sweep, tmp_path, tiny_mnist,
                                                                               monkeypatch):
    # Before, the table was written at the start: Ctrl-C after 8 s left "0 of 6 points done" in sweeps/.
    out = tmp_path / "tiny-mnist.md"
    out.write_text(tiny_sweep["report"])

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_once", stopped)
    with pytest.raises(KeyboardInterrupt):
        runner.run_and_report(_tiny_grid(), tiny_mnist, 2, str(tmp_path / "new_runs"), str(out), "the command")
    assert out.read_text() == tiny_sweep["report"]
    assert "**Incomplete: 0 of 2 points done.**" in (tmp_path / "tiny-mnist.incomplete.md").read_text()


def test_a_table_written_by_hand_or_for_another_budget_is_refused_before_anything_trains(tiny_sweep, tmp_path,
                                                                                         tiny_mnist):
    out = tmp_path / "pooling-mnist.md"
    out.write_text("# Sweep `pooling` on mnist\n\n| a table committed to the repository |\n")
    with pytest.raises(report_lib.TableError, match=f"^{re.escape(str(out))} holds a table that this command did "
                                                    "not write on these terms"):
        runner.run_and_report(_tiny_grid(), tiny_mnist, 2, str(tmp_path / "runs"), str(out), "the command")
    assert "committed" in out.read_text() and not (tmp_path / "runs").exists()
    out.write_text(tiny_sweep["report"])
    with pytest.raises(report_lib.TableError, match=r": other train_steps \(5; here 7\); pass --out=<another "
                                                    r"file>, or --overwrite_table to replace it$"):
        runner.run_and_report(_tiny_grid(), tiny_mnist, 2, str(tmp_path / "runs"), str(out), "the command",
                              train_steps=7)
    assert out.read_text() == tiny_sweep["report"] and not (tmp_path / "runs").exists()


@pytest.fixture
def signals_land_here():
    """Handlers of this test's own for both signals (a pytest-xdist worker ignores SIGINT, and SIGTERM's default
    would end the process): a signal that reaches one of them got past the code under test."""
    def escaped(number, frame):
        raise AssertionError(f"{signal.Signals(number).name} reached the handler from before the test")

    before = {number: signal.signal(number, escaped) for number in (signal.SIGINT, signal.SIGTERM)}
    yield
    for number, handler in before.items():
        signal.signal(number, handler)


def test_a_stop_signal_during_a_runs_last_chunk_stops_the_sweep_after_that_run(tmp_path, tiny_mnist, monkeypatch,
                                                                              signals_land_here):
    # A signal during the last chunk is noted by the run's stop_requests and left (nothing is left to stop
    # early); the next run's fresh handlers forgot it, and the sweep ran on.
    trained = []

    def train_through_a_signal_in_the_last_chunk(config, dataset):
        with stopping.stop_requests() as request:
            signal.raise_signal(signal.SIGTERM)
            assert request.signal_name == "SIGTERM"
        trained.append(os.path.basename(config.logdir))
        results = dict(test_accuracy=0.5, test_loss=1.0, wall_seconds=1.0, train_steps=config.train_steps,
                       params=12_770, images_per_second=100.0)
        return types.SimpleNamespace(results=results)

    monkeypatch.setattr(runner.trainer, "train", train_through_a_signal_in_the_last_chunk)
    with pytest.raises(KeyboardInterrupt):
        runner.run_sweep(_tiny_grid(), tiny_mnist, 1, str(tmp_path / "runs"))
    assert trained == ["conv-seed0"]


README = (REPO_ROOT / "README.md").read_text()


def _readme_commands():
    """``(command, flags)`` of every experiments.sweep, .seeds and .race example in README.md."""
    found = re.findall(r"python3 -m experiments\.(sweep|seeds|race) ([^`\n]*)", README)
    return [(command, dict(arg.removeprefix("--").split("=", 1) for arg in shlex.split(rest))) for command, rest
            in found]


def test_the_readme_commands_write_only_where_git_ignores(tmp_path):
    # Their tables and runs must leave a fresh clone's tracked files (the tables in sweeps/ among them) as they are.
    commands = _readme_commands()
    assert sorted({command for command, _ in commands}) == ["race", "seeds", "sweep"]
    for command, flags in commands:
        assert "overwrite_table" not in flags, command
        logdir = flags.get("logdir", {"sweep": sweep_flags, "seeds": seeds_flags, "race": race_flags}[command]
                           .DEFAULT_LOGDIR)
        if command == "sweep":
            table = runner.table_path(flags.get("out"), logdir, flags["grid"], flags.get("dataset", "mnist"))
        elif command == "seeds":
            table = seed_runs.table_path(flags.get("out"), logdir, flags["recipe"])
        else:
            table = racing.table_path(flags.get("out"), logdir)
        for path in (table, os.path.join(logdir, "some-run-seed0", "results.json")):
            ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO_ROOT)
            assert ignored.returncode == 0, f"{command} writes {path}, which git does not ignore"


@pytest.mark.parametrize("file, content, message", [
    ("results.json", "{\"test_accuracy\": 0.9", "results.json: not valid JSON (Expecting ',' delimiter: line 1 column "
                                                "22 (char 21)); it should hold a run's results: move it away"),
    ("results.json", "[]", "results.json: holds a JSON list, not a run's results: move it away"),
    ("results.json", None, "results.json: params is '12k', not an integer; move it away, and the same command "
                           "finishes the run again from its last checkpoint"),
    ("config.json", json.dumps(dict(config=[], history=[])), "config.json: its config is a JSON list, not an "
                                                             "object; move the run directory away"),
], ids=["results_not_json", "results_a_list", "a_field_of_the_wrong_type", "config_a_list"])
def test_a_damaged_state_file_of_a_finished_run_is_one_line_naming_it(tiny_sweep, tmp_path, file, content, message):
    config = runner.sweep_runs(_tiny_grid(), "mnist", 1, str(tmp_path))[0][-1]
    finished = tiny_sweep["root"] / "runs" / "tiny" / "mnist" / "conv-seed0"
    os.makedirs(config.logdir)
    for name in ("config.json", "results.json"):
        (tmp_path / config.logdir / name).write_text((finished / name).read_text())
    assert runner.reusable_results(config)["train_steps"] == 5  # as copied: read
    if content is None:
        content = json.dumps(dict(json.loads((finished / file).read_text()), params="12k"))
    (tmp_path / config.logdir / file).write_text(content)
    with pytest.raises(OneLineError, match=f"^{re.escape(os.path.join(config.logdir, message))}$"):
        runner.reusable_results(config)


def test_a_tuned_grid_trains_every_point_at_each_rate_and_compares_the_points_at_their_picks(tiny_mnist):
    grid = grids.make_grid("downsampling_tuned", "mnist")
    assert grid.tuned and grid.train_steps == grids.TUNED_TRAIN_STEPS
    assert [label for label, _ in grid.points[:3]] == ["max-lr0.0003", "max-lr0.001", "max-lr0.003"]
    assert grid.points[1][1] == dict(arch="c32k3-m2-c64k3-m2-d128", optimizer="adam", lr_schedule="cosine",
                                     warmup_steps=100, learning_rate=1e-3)
    assert grids.base_label("stride2-lr0.003") == "stride2"

    def point(label, rate, validation, test):
        made = _point(f"{label}-lr{rate:g}", test, arch="d16", learning_rate=rate)
        for run, accuracy in zip(made.runs, validation):
            run.results["validation_accuracy"] = accuracy
            if label == "a":  # a curve whose last evaluation is 0.5 points above the one before
                run.results["evaluations"] = [dict(step=1, validation_accuracy=accuracy - 0.005),
                                              dict(step=2, validation_accuracy=None),
                                              dict(step=3, validation_accuracy=accuracy)]
        return made

    # "a" is best at 1e-3 (inside the rates), "b" at 3e-3 (the end); "b"'s pick is below "a"'s on both seeds.
    points = [point("a", 3e-4, [0.90, 0.91], [0.9, 0.9]), point("a", 1e-3, [0.97, 0.96], [0.95, 0.96]),
              point("a", 3e-3, [0.95, 0.95], [0.9, 0.9]),
              point("b", 3e-4, [0.80, 0.80], [0.8, 0.8]), point("b", 1e-3, [0.90, 0.92], [0.9, 0.9])]
    section = report_lib.tuned_section(points, grids.base_label, [3e-4, 1e-3, 3e-3])
    rows = [line for line in section if line.startswith("| ") and not line.startswith(("| point", "| ---"))]
    assert rows[0] == ("| **a** | `d16` | 0.001 | 96.50 ± 0.71 [90.15, 102.85] | — | 95.50 ± 0.71 [89.15, 101.85] "
                       "| +0.50 |")
    # b: 3e-3 not trained yet; its pick 1e-3 of the two done. a - b = 7 and 4 points: 5.5 +- 12.706 x 2.12 / 1.41.
    assert rows[1] == ("| b | `d16` | 0.001 (2 of 3 rates done) | 91.00 ± 1.41 [78.29, 103.71] | +5.50 [-13.56, "
                       "+24.56] (includes 0) | 90.00 ± 0.00 [90.00, 90.00] | — |")  # no curve recorded
    ended = report_lib.tuned_section(points + [point("b", 3e-3, [0.93, 0.93], [0.9, 0.9])], grids.base_label,
                                     [3e-4, 1e-3, 3e-3])
    assert "| b | `d16` | 0.003 *(end)* | 93.00 ± 0.00 [93.00, 93.00] | +3.50 [-2.85, +9.85]" in "\n".join(ended)
    record = dict(cpu_model="a CPU", machine="x86_64", cpus=2, tensorflow="2", keras="3", python="3", commit="abc")
    report = report_lib.make_report(grid, tiny_mnist, 5, 2, points, record, "the command", 0.0)
    assert report.index("| point | arch | learning_rate |") < report.index("## Each point at its own rate")
