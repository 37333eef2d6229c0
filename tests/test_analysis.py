"""``models.analysis`` counts what Keras builds; the MLP of similar size is; ``python -m experiments.analyze`` works.

Parameter totals and per-layer counts are compared with the built Keras models exactly, multiply-adds are pinned
by hand for ``mnist_cnn`` and ``airbench94``, and the entry point runs as a subprocess (both commands at once:
each imports TensorFlow, which takes seconds).
"""

import collections
import concurrent.futures
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import models
from models import analysis
from models import architecture as A

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# Each command imports TensorFlow (3-10 s on a loaded 2-core machine) and prints a table; no training.
CLI_TIMEOUT_SECONDS = 120
MNIST_SHAPE, CIFAR_SHAPE = (28, 28, 1), (32, 32, 3)
# Parse-time errors exit with 2 (absl's usage-error status).
USAGE_ERROR = 2
# The relative parameter-count tolerance similar_mlp promises.
MLP_TOLERANCE = 0.02

# (arch, input shape): every token and suffix (with and without bias, BN and residual projections), and presets.
ARCHS = [
    ("mnist_cnn", MNIST_SHAPE),
    ("keras_convnet", MNIST_SHAPE),
    ("mlp", MNIST_SHAPE),
    ("resnet_small", CIFAR_SHAPE),
    ("airbench94", CIFAR_SHAPE),
    *A.COVERAGE_ARCHS,
]


def _params_by_layer(model):
    """Sum of the sizes of each top-level layer's variables, keyed by the layer name of the plan."""
    sizes = collections.Counter()
    for name, variable in model.named_weights().items():
        sizes[name.split("/")[0]] += int(np.prod(variable.shape))
    return sizes


@pytest.mark.parametrize("arch,shape", ARCHS, ids=[arch for arch, _ in ARCHS])
def test_table_counts_what_keras_builds(arch, shape):
    model = models.build_model(arch, shape, 10)
    rows = analysis.layer_table(arch, shape, 10)
    total, trainable, _ = analysis.totals(rows)
    assert total == model.count_params()
    assert trainable == sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    keras_sizes = _params_by_layer(model)
    assert {r.name: r.params for r in rows if r.params} == dict(keras_sizes)
    assert [r.name for r in rows] == [layer.name for layer in model.stack]
    assert sum(r.share for r in rows) == pytest.approx(1.0)


def test_mnist_cnn_multiply_adds_and_groups():
    rows = {r.name: r for r in analysis.layer_table("mnist_cnn", MNIST_SHAPE, 10)}
    # conv1  28*28 outputs * 5*5*1*32    =    627,200  ('same' padding keeps 28x28)
    # conv2  14*14 outputs * 5*5*32*64   = 10,035,200  (after the first 2x2 pool)
    # dense1 (7*7*64 = 3136) * 1024      =  3,211,264
    # logits 1024 * 10                   =     10,240
    #                              total = 13,883,904
    expected = {"conv1": 627_200, "conv2": 10_035_200, "dense1": 3_211_264, "logits": 10_240}
    assert {name: r.macs for name, r in rows.items() if r.macs} == expected
    assert analysis.totals(rows.values())[2] == 13_883_904
    # Two convs: the first half (rounded up) is conv1.
    assert {name: r.group for name, r in rows.items() if r.group} == {
        "conv1": analysis.EARLY, "conv2": analysis.LATE, "dense1": analysis.DENSE, "logits": analysis.DENSE}


def test_residual_multiply_adds_and_odd_conv_count():
    rows = {r.name: r for r in analysis.layer_table("c8k3b-r16-c16k1", (10, 10, 2), 10)}
    # conv1: 10*10 * 3*3*2*8 = 14,400.
    # res1 (8 -> 16, projection): 10*10 * (3*3*8*16 + 3*3*16*16 + 1*1*8*16) = 100 * 3,584 = 358,400.
    # conv2: 10*10 * 1*1*16*16 = 25,600.
    assert (rows["conv1"].macs, rows["res1"].macs, rows["conv2"].macs) == (14_400, 358_400, 25_600)
    # Three conv/residual layers: ceil(3 / 2) = 2 of them are early.
    assert [rows[n].group for n in ("conv1", "res1", "conv2")] == [analysis.EARLY, analysis.EARLY, analysis.LATE]


def test_airbench94_multiply_adds_parameters_and_groups():
    rows = {r.name: r for r in analysis.layer_table("airbench94", CIFAR_SHAPE, 10)}
    # Spatial sizes: 32 -> 31 (2x2 valid whitening) -> 15 -> 7 -> 3 (each block's pool, after its first conv).
    # whiten1 31*31 * 2*2*3*24                              =     276,768
    # block1  31*31 * 3*3*24*64  + 15*15 * 3*3*64*64        =  21,579,264  (13,284,864 + 8,294,400)
    # block2  15*15 * 3*3*64*256 + 7*7 * 3*3*256*256        =  62,078,976  (33,177,600 + 28,901,376)
    # block3  7*7 * 3*3*256*256  + 3*3 * 3*3*256*256        =  34,209,792  (28,901,376 + 5,308,416)
    # logits  256 * 10                                      =       2,560
    #                                                 total = 118,147,360  (airbench94's ~0.12 G per image)
    expected = {"whiten1": 276_768, "block1": 21_579_264, "block2": 62_078_976, "block3": 34_209_792,
                "logits": 2_560}
    assert {name: r.macs for name, r in rows.items() if r.macs} == expected
    # Parameters: whiten1 2*2*3*24 = 288 frozen + 24 bias (trained). Each block: two 3x3 kernels and 3 BN
    # vectors per channel after each (beta trained; moving mean and variance not).
    # block1 3*3*24*64 + 3*64 + 3*3*64*64 + 3*64         =    51,072  (50,816 trained)
    # block2 3*3*64*256 + 3*256 + 3*3*256*256 + 3*256    =   738,816  (737,792 trained)
    # block3 3*3*256*256 + 3*256 + 3*3*256*256 + 3*256   = 1,181,184  (1,180,160 trained)
    # logits 256*10, no bias                             =     2,560
    #                                              total = 1,973,944  (1,971,352 trained)
    assert analysis.totals(rows.values()) == (1_973_944, 1_971_352, 118_147_360)
    assert (rows["whiten1"].params, rows["whiten1"].trainable_params) == (312, 24)
    # Four conv layers: whiten1 and block1 early, block2 and block3 late.
    assert {name: r.group for name, r in rows.items() if r.group} == {
        "whiten1": analysis.EARLY, "block1": analysis.EARLY, "block2": analysis.LATE, "block3": analysis.LATE,
        "logits": analysis.DENSE}


def test_format_table_has_every_layer_subtotals_and_total():
    rows = analysis.layer_table("resnet_small", CIFAR_SHAPE, 10)
    text = analysis.format_table(rows, title="resnet_small")
    lines = text.splitlines()
    for row in rows:
        assert any(line.startswith(f"| {row.name} |") for line in lines)
    total_line = next(line for line in lines if line.startswith("| **total** |"))
    assert f"| {analysis.totals(rows)[0]:,} |" in total_line
    for group in analysis.GROUPS:
        assert any(line.startswith(f"| *{group}* |") for line in lines)
    # Early plus late convolutions plus dense layers cover every parameter.
    assert sum(analysis.totals([r for r in rows if r.group == g])[0] for g in analysis.GROUPS) == \
        analysis.totals(rows)[0]


@pytest.mark.parametrize("arch,shape,expected_depth", [
    ("mnist_cnn", MNIST_SHAPE, 1),  # one dense layer before the logits
    ("keras_convnet", MNIST_SHAPE, 1),  # none: at least 1
    ("resnet_small", CIFAR_SHAPE, 1),
])
def test_similar_mlp_is_within_two_percent(arch, shape, expected_depth):
    mlp = analysis.similar_mlp(arch, shape, 10)
    assert len(mlp.split("-")) == expected_depth
    target = models.build_model(arch, shape, 10).count_params()
    assert abs(models.build_model(mlp, shape, 10).count_params() - target) <= MLP_TOLERANCE * target


def test_similar_mlp_of_given_depth_has_equal_widths():
    mlp = analysis.similar_mlp("mnist_cnn", MNIST_SHAPE, 10, depth=3)
    tokens = mlp.split("-")
    assert len(tokens) == 3 and len(set(tokens)) == 1
    target = analysis.totals(analysis.layer_table("mnist_cnn", MNIST_SHAPE, 10))[0]
    got = analysis.totals(analysis.layer_table(mlp, MNIST_SHAPE, 10))[0]
    assert abs(got - target) <= MLP_TOLERANCE * target
    # The MLP preset is its own MLP of similar size.
    assert analysis.similar_mlp("mlp", MNIST_SHAPE, 10) == "d512-d512"


@pytest.mark.parametrize("depth, expected", [(1, "d3809"), (2, "d1387-d1387")])
def test_an_mlp_can_match_a_cnns_multiply_adds_instead_of_its_weights(depth, expected):
    # small_cnn: 215,370 weights but 3,024,384 multiply-adds an image on MNIST, each weight used at every position.
    # d3809: 784 x 3809 + 3809 x 10 = 3,024,346 multiply-adds (one per weight), 3,028,165 weights with the biases.
    mlp = analysis.similar_mlp("c16k5-m2-c32k5-m2-d128", MNIST_SHAPE, 10, depth=depth, by="macs")
    assert mlp == expected
    macs = analysis.totals(analysis.layer_table(mlp, MNIST_SHAPE, 10))[2]
    assert abs(macs - 3_024_384) <= MLP_TOLERANCE * 3_024_384
    with pytest.raises(ValueError, match="multiply-adds per image within 2%"):
        analysis.similar_mlp("a2-d1", MNIST_SHAPE, 10, by="macs")  # 206 multiply-adds: below any MLP's


def test_similar_mlp_refuses_a_cnn_smaller_than_the_smallest_mlp():
    # c1k3-gap: conv 3*3*1*1 + 1 = 10, logits 1*10 + 10 = 20: 30 parameters, while the 1-unit MLP on MNIST has
    # (784 + 1)*1 + (1 + 1)*10 = 805.
    with pytest.raises(ValueError, match=r"30 of 'c1k3-gap': even the smallest, 'd1', has 805"):
        analysis.similar_mlp("c1k3-gap", MNIST_SHAPE, 10)


def _analyze(*args):
    return subprocess.run([sys.executable, "-m", "experiments.analyze", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=CLI_TIMEOUT_SECONDS, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                          check=False)


@pytest.fixture(scope="module")
def commands():
    """The default command and a bad architecture, run at the same time (one per core)."""
    runs = {"default": (), "bad_arch": ("--arch=c32k5-x7",)}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        return dict(zip(runs, pool.map(lambda args: _analyze(*args), runs.values())))


def test_entry_point_prints_both_tables_and_the_comparison(commands):
    process = commands["default"]
    assert process.returncode == 0, process.stderr
    mlp = analysis.similar_mlp("mnist_cnn", MNIST_SHAPE, 10)
    mlp_total = analysis.totals(analysis.layer_table(mlp, MNIST_SHAPE, 10))[0]
    totals = [line for line in process.stdout.splitlines() if line.startswith("| **total** |")]
    assert len(totals) == 2
    assert "| 3,274,634 |" in totals[0]  # mnist_cnn, as pinned in tests/test_models.py
    assert f"| {mlp_total:,} |" in totals[1]
    assert f"MLP of similar size: {mlp} " in process.stdout
    assert process.stdout.rstrip().splitlines()[-1].startswith(
        f"{models.resolve('mnist_cnn')}: 3,274,634 params, 13,883,904 MACs/image; {mlp}: {mlp_total:,} params")


def test_entry_point_refuses_a_bad_arch_in_one_line(commands):
    process = commands["bad_arch"]
    assert process.returncode == USAGE_ERROR
    assert "Traceback" not in process.stderr
    assert process.stdout == ""
    assert process.stderr.splitlines()[-1] == (
        "analyze.py: error: flags arch=c32k5-x7, dataset=mnist: --arch architecture token 'x7' in 'c32k5-x7' is "
        "not one of: " + models.architecture.GRAMMAR)


def test_entry_point_refuses_an_mlp_depth_beyond_the_bound_in_one_line():
    # A depth of 10^9 once built a string of 10^9 tokens (gigabytes) before anything was printed.
    process = _analyze("--mlp_depth=1000000000")
    assert process.returncode == USAGE_ERROR and "Traceback" not in process.stderr
    assert process.stdout == ""
    assert process.stderr.splitlines()[-1] == (
        "analyze.py: error: flag --mlp_depth=1000000000: --mlp_depth must be a positive integer, at most 1000")


def test_similar_mlp_names_a_deep_mlp_by_its_ends_and_depth():
    # d10-d10 on MNIST: 785*10 + 11*10 + 11*10 = 8,070 parameters; 1,000 layers of 2 units:
    # 785*2 + 999*3*2 + 3*10 = 7,594, 6% off. The message names that MLP in 13 characters, not 2,999.
    with pytest.raises(ValueError, match=r"the closest, 'd2-\.\.\.-d2' \(1000 layers\), has 7,594$"):
        analysis.similar_mlp("d10-d10", MNIST_SHAPE, 10, depth=1000)
