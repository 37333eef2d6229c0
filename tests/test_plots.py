"""``experiments.plots``: the points a plot draws, read from run files, and the PNGs drawn from the committed runs."""

import json
import os
import re
import sys

import pytest
from conftest import REPO_ROOT

from experiments import committed, plotting
from experiments.points import PointResult, RunRecord
from training import run_files

RUNS_DIR = os.path.join(REPO_ROOT, "sweeps", "runs")
PLOTS = ("sweep_filter_size.png", "sweep_downsampling.png", "sweep_cnn_vs_mlp_params.png", "sweep_cnn_vs_mlp_macs.png",
         "sweep_optimizer.png", "curves_cifar100_speed_curves.png", "curves_cifar10_speed_10epochs_curves.png",
         "curves_cifar10_speed_curves.png",
         "curves_main_job_curves.png", "curves_mnist_full_curves.png",
         "curves_mnist_onecycle_curves.png")


def _point(label, tests, validations=None, arch="d16"):
    validations = validations or tests
    return PointResult(label, dict(arch=arch), [RunRecord(dict(test_accuracy=t, validation_accuracy=v, seed=seed,
                                                               train_steps=600, batch_size=128), reused=True)
                                                for seed, (t, v) in enumerate(zip(tests, validations))])


def test_a_mark_is_the_percent_mean_with_its_t_interval():
    m = plotting.mark(_point("a", [0.98, 0.99, 1.00]), "test_accuracy")
    # 99 +- t(0.975, 2) x 1 / sqrt(3) = 99 +- 2.48 (as report.make_table's interval column).
    assert (round(m.mean, 2), round(m.low, 2), round(m.high, 2)) == (99.0, 96.52, 101.48)
    assert m.error == pytest.approx((2.484, 2.484), abs=1e-3)
    assert plotting.mark(_point("b", [0.9]), "test_accuracy").error == (0.0, 0.0)  # one seed: no bar


def test_kernel_series_split_padding_and_sort_by_kernel_size():
    points = [_point("same-k5", [0.97]), _point("same-k1", [0.93], [0.92]), _point("valid-k3", [0.96])]
    series = plotting.kernel_series(points)
    assert sorted(series) == [("same", "test"), ("same", "validation"), ("valid", "test"), ("valid", "validation")]
    assert [(k, round(m.mean, 2)) for k, m in series["same", "validation"]] == [(1, 92.0), (5, 97.0)]


def test_the_titles_count_seeds_and_budget_from_the_runs():
    points = [_point("a", [0.9, 0.91, 0.92]), _point("b", [0.9, 0.91, 0.92])]
    assert plotting.seeds_text([points]) == "mean of n=3 seeds (0-2) per point"
    assert plotting.budget_text("fashion_mnist", points) == "Fashion-MNIST: 600 steps x 128 images"


def test_a_point_with_diverged_runs_is_named_and_gets_no_mean():
    # CIFAR-10, SGD at 0.1: two seeds at chance (a constant prediction), one at 59.51%.
    point = _point("sgd-lr0.1", [0.1, 0.1, 0.5951])
    assert plotting._diverged(point, "cifar10") == pytest.approx([10.0, 10.0])
    assert plotting._row_label(point, "cifar10", False) == ("sgd-lr0.1\n2 of 3 seeds diverged\n(test 10.00%): no "
                                                            "mean")
    assert plotting._diverged(_point("d14", [0.186, 0.289]), "cifar10") == []  # poor, but above 1.5x chance


def test_cnn_and_mlp_are_two_series_with_depth_and_dropout_marked():
    assert plotting.network_kind("mnist_cnn", "c32k5-m2-c64k5-m2-d1024-drop0.5")[0] == "CNN"
    kind, style, _ = plotting.network_kind("mlp2_like_mnist_cnn_drop0.5", "d1455-drop0.5-d1455-drop0.5")
    assert (kind, style["marker"]) == ("MLP, 2 hidden layers", "v")
    # mnist_cnn on MNIST: 13,883,904 multiply-adds per image (WORKSPACE.md section 6).
    assert plotting.macs("mnist_cnn", "mnist") == 13_883_904


def test_a_sweep_is_read_in_grid_order_over_the_seeds_that_finished(tmp_path):
    for label, seeds in (("none", (0, 1)), ("max", (0,))):
        for seed in seeds:
            path = tmp_path / "sweeps" / "downsampling" / "mnist" / f"{label}-seed{seed}"
            path.mkdir(parents=True)
            (path / "results.json").write_text(json.dumps(dict(test_accuracy=0.98, wall_seconds=1.0, params=10,
                                                               images_per_second=1.0, train_steps=600)))
            (path / "config.json").write_text(json.dumps(dict(config=dict(arch=f"arch-of-{label}"), history=[])))
    (tmp_path / "sweeps" / "downsampling" / "mnist" / "avg-seed0").mkdir()  # started, never finished
    points = committed.read_sweep(str(tmp_path), "downsampling", "mnist")
    assert [(p.label, len(p.runs), p.overrides) for p in points] == [("max", 1, {"arch": "arch-of-max"}),
                                                                     ("none", 2, {"arch": "arch-of-none"})]


def test_without_matplotlib_a_plot_is_refused_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an absent package looks like to import
    with pytest.raises(plotting.PlotError, match="matplotlib is not installed; python3 -m pip install -r "
                                                 "requirements-dev.txt"):
        plotting.plot_optimizer(RUNS_DIR, "/nonexistent")


@pytest.mark.slow
def test_every_plot_is_drawn_from_the_committed_runs(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed here (requirements-dev.txt pins it)")
    from PIL import Image

    paths = plotting.draw_all(RUNS_DIR, str(tmp_path))
    assert [os.path.basename(path) for path in paths] == list(PLOTS)
    for path in paths:
        with Image.open(path) as image:
            # Width: 6 inches a panel (5.5 for three panels) at plotting.DPI = 100.
            assert image.format == "PNG" and image.size[0] in (1200, 1650) and image.size[1] >= 450, path


def test_the_committed_plots_are_in_the_notebook_with_their_command():
    notebook = (REPO_ROOT / "WORKSPACE.md").read_text()
    for name in PLOTS:
        assert (REPO_ROOT / "docs" / "images" / name).is_file(), name
        assert re.search(rf"!\[[^\]]+\]\(docs/images/{re.escape(name)}\)", notebook), name
    assert "`python3 -m experiments.plots --out=docs/images`" in notebook


def test_a_plot_is_never_written_through_a_link(tmp_path):
    # Before: savefig wrote through a link planted at the plot's name. (An --out that is a file, or under a
    # read-only folder, was a traceback from os.makedirs: now refused at parse time, or by run_files.make_folder
    # as tests/test_seeds.py checks for a table.)
    pytest.importorskip("matplotlib", reason="matplotlib is not installed here (requirements-dev.txt pins it)")
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "sweep_optimizer.png").symlink_to(victim)
    with pytest.raises(run_files.RunFileError, match="sweep_optimizer.png is a symbolic link .*; a plot is never "
                                                     "written through a link: remove the link, or pass another --out"):
        plotting.plot_optimizer(RUNS_DIR, str(tmp_path / "plots"))
    assert victim.read_text() == "precious\n"


def _seed_run(folder, seed, curve, batch_size=64):
    """A finished seeds run whose results.json records ``curve``: ``[(step, test accuracy, validation accuracy)]``."""
    folder.mkdir(parents=True)
    evaluations = [dict(step=step, images=step * batch_size, test_accuracy=test, validation_accuracy=validation,
                        test_loss=1.0, validation_loss=None if validation is None else 1.0)
                   for step, test, validation in curve]
    (folder / "results.json").write_text(json.dumps(dict(test_accuracy=curve[-1][1], train_steps=curve[-1][0],
                                                         evaluations=evaluations, dataset="mnist",
                                                         batch_size=batch_size)))
    (folder / "config.json").write_text(json.dumps(dict(config={}, history=[dict(from_step=0, commit="abc1234")])))


def test_a_learning_curve_is_the_seeds_mean_with_its_interval_at_the_steps_all_evaluated(tmp_path):
    from experiments import curves

    _seed_run(tmp_path / "r-seed0", 0, [(10, 0.5, 0.4), (20, 0.8, 0.7), (30, 0.9, 0.85)])
    _seed_run(tmp_path / "r-seed1", 1, [(10, 0.7, 0.6), (20, 0.9, 0.8), (25, 0.9, 0.9), (30, 0.95, 0.9)])
    _seed_run(tmp_path / "old-seed0", 0, [(30, 0.9, None)])  # one evaluation: no curve to draw
    (tmp_path / "unfinished-seed0").mkdir()
    runs = curves.recipes_with_curves(str(tmp_path))
    assert list(runs) == ["r"] and [(seed, results["train_steps"]) for seed, results, _ in runs["r"]] == [(0, 30),
                                                                                                          (1, 30)]
    drawn = curves.read_recipe("r", runs["r"])
    assert (drawn.dataset, drawn.seeds, drawn.batch_size, drawn.commits) == ("mnist", (0, 1), 64, ("abc1234",))
    test, validation = drawn.curves
    assert (test.split, validation.split) == ("test", "validation")
    assert test.images == (640, 1280, 1920)  # step 25 is seed 1's only
    assert test.means == pytest.approx((60.0, 85.0, 92.5))
    # Two seeds: mean ± t(0.975, 1) x sd / sqrt(2) = 60 ± 12.706 x 14.142 / 1.414.
    assert test.lows[0] == pytest.approx(60.0 - 127.06, abs=0.01)
    assert validation.means == pytest.approx((50.0, 75.0, 87.5))
    assert curves.seeds_text((0, 1, 2)) == "n=3 seeds (0-2)" and curves.seeds_text((4,)) == "n=1 seed (4)"
