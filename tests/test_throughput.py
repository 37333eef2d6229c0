"""The benchmark's arithmetic: training FLOPs per image, the share of the peak, and a tiny real measurement."""

import dataclasses
import subprocess
import sys

import pytest
from conftest import CLI_TIMEOUT_SECONDS, REPO_ROOT

from experiments import throughput
from training.config import TrainConfig


def test_training_flops_are_six_times_the_multiply_adds(tiny_mnist):
    # c4k3-m2-d16 on 28x28x1: conv1 28*28*3*3*1*4 = 28,224; dense1 (14*14*4)*16 = 12,544; logits 16*10 = 160.
    macs = 28_224 + 12_544 + 160
    assert throughput.training_flops_per_image("c4k3-m2-d16", tiny_mnist) == 6 * macs


def test_the_table_states_achieved_flops_and_the_share_of_the_conv_peak():
    config = TrainConfig(arch="c4k3-m2-d16", batch_size=64)
    text = throughput.table({"custom": [900.0, 1000.0, 1200.0], "fit": [500.0, 450.0, 520.0]}, config, steps=10,
                            rounds=3, flops_per_image=2e6, peaks={"matmul": 8e9, "conv": 10e9})
    assert "peak probes in this process, GFLOP/s: matmul 8.0, conv 10.0;" in text
    # Medians 1000 and 500 images/s, x 2 MFLOP per image.
    assert "| custom | keras | custom | no | float32 | no | 1000 | 900–1200 | 1.000 | 2.0 | 20% |" in text
    assert "| fit | keras | fit | no | float32 | no | 500 | 450–520 | 0.500 | 1.0 | 10% |" in text
    assert "augmented:" not in text


def test_an_augmented_variant_is_its_plain_variant_with_augmentation_and_says_how():
    config = TrainConfig(arch="c4k3-m2-d16", batch_size=64, crop_padding=2, flip="alternating")
    augmented = throughput.variant_config(config, "fit_xla_augmented")
    assert (augmented.impl, augmented.loop, augmented.jit_compile, augmented.augment) == ("keras", "fit", True, True)
    assert (augmented.crop_padding, augmented.flip) == (2, "alternating")
    assert throughput.variant_config(config, "fit_xla") == dataclasses.replace(augmented, augment=False)
    text = throughput.table({"custom": [1000.0], "custom_augmented": [800.0]}, config, steps=10, rounds=1)
    assert "augmented: crop with 2 pixels of padding, flip alternating" in text
    assert "| custom_augmented | keras | custom | no | float32 | yes | 800 | 800–800 | 0.800 | - | - |" in text
    # Without the custom loop among them, ratios are to the first variant measured.
    text = throughput.table({"fit_xla": [500.0], "fit_xla_augmented": [450.0]}, config, steps=10, rounds=1)
    assert "| images/s (median) | min–max over rounds | ratio to fit_xla |" in text
    assert "| fit_xla_augmented | keras | fit | yes | float32 | yes | 450 | 450–450 | 0.900 | - | - |" in text


def test_a_bfloat16_variant_computes_in_bfloat16_and_is_compared_with_its_own_peak():
    config = TrainConfig(arch="c4k3-m2-d16", batch_size=64)
    assert throughput.variant_config(config, "custom_xla_bf16").precision == "mixed_bfloat16"
    assert throughput.variant_config(config, "custom_xla").precision == "float32"
    text = throughput.table({"custom": [1000.0], "custom_bf16": [1500.0]}, config, steps=10, rounds=1,
                            flops_per_image=2e6, peaks={"conv": 10e9, "conv_bf16": 30e9})
    assert "| custom_bf16 | keras | custom | no | mixed_bfloat16 | no | 1500 | 1500–1500 | 1.500 | 3.0 | 10% |" in text


def test_an_unfusedbn_variant_trains_batch_norm_with_keras_own_call():
    import tensorflow as tf

    from experiments import variants
    from models.network import build_network

    assert variants.parse("custom_bf16_unfusedbn_augmented") == (
        "keras", "custom", False, True, "mixed_bfloat16", False)
    assert variants.parse("custom_bf16")[5] and "reference_unfusedbn" not in variants.VARIANT_NAMES
    network = build_network("keras", "c4k3b-m2-d16", (8, 8, 1), 10)
    throughput._unfuse_batch_norm(network)
    graph = tf.function(lambda x: network(x, training=True)).get_concrete_function(tf.zeros((2, 8, 8, 1))).graph
    assert "FusedBatchNormV3" not in {op.type for op in graph.get_operations()}
    text = throughput.table({"custom": [1000.0], "custom_unfusedbn": [800.0]}, TrainConfig(arch="c4k3b-m2-d16"),
                            steps=10, rounds=1)
    row = "| custom_unfusedbn | keras, batch norm unfused | custom | no | float32 | no | 800 | 800–800 | 0.800 |"
    assert row in text


def test_a_recipe_keeps_its_augmentation_and_fit_drops_what_only_the_custom_loop_applies():
    recipe = TrainConfig(arch="c4k3-m2-d16", batch_size=64, augment=True, lookahead_every=5, bn_bias_lr_scale=64)
    assert throughput.variant_config(recipe, "custom").augment
    fit = throughput.variant_config(recipe, "fit")
    assert (fit.augment, fit.lookahead_every, fit.bn_bias_lr_scale) == (True, 0, 1.0)


@pytest.mark.slow
def test_a_tiny_measurement_and_the_probes_give_positive_rates(tiny_mnist):
    config = TrainConfig(arch="c4k3-m2-d16", batch_size=32, steps_per_loop=5)
    # The reference network, and a pipeline that crops and flips: every kind of runner but fit's.
    rates = throughput.measure(config, tiny_mnist, ["custom", "reference_augmented"], steps=5, rounds=1)
    assert set(rates) == {"custom", "reference_augmented"} and all(len(r) == 1 and r[0] > 0 for r in rates.values())
    peaks = throughput.peak_probes(seconds=0.2)
    assert peaks["matmul"] > 1e8 and peaks["conv"] > 1e8  # any CPU of this century does 0.1 GFLOP/s


@pytest.mark.parametrize("flag,message", [
    ("--steps=1000000000000", "--steps must be a positive integer, at most 10000"),
    ("--rounds=1000", "--rounds must be a positive integer, at most 100"),
    ("--variants=custom,custom", "--variants must be distinct names from custom,"),
])
def test_the_benchmark_refuses_unbounded_sizes_in_one_line(flag, message):
    process = subprocess.run([sys.executable, "-m", "experiments.benchmark", flag], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS)
    assert process.returncode == 2 and message in process.stderr.strip().splitlines()[-1]
    assert "Traceback" not in process.stderr
