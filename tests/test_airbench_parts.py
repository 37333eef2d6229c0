"""airbench94's optimisation and initialisation pieces: identity-initialised block convs, the triangle schedule,
the batch-norm bias rate, weight decay of biases, the frozen whitening bias, lookahead, and a resumed run with
lookahead and a frozen bias (its clock included)."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from models.network import build_network
from training import data as data_lib
from training.config import TrainConfig
from training.freezing import FreezeAfter
from training.lookahead import DECAY_BASE, Lookahead
from training.loop import make_train_loop
from training.optimization import TRIANGLE_END, TRIANGLE_START, Schedule
from training.parts import bias_gradient_scales, make_optimizer
from training.trainer import train

ATOL = 1e-6  # float32 arithmetic on O(1) values


@pytest.mark.parametrize("impl", ["keras", "reference"])
def test_block_convs_start_with_identity_filters_and_fan_in_uniform_weights(impl):
    network = build_network(impl, "B8-gmp-lin9", (28, 28, 1), 10, seed=3)
    weights = {name: v.numpy() for name, v in network.named_weights().items()}
    conv1, conv2, logits = weights["block1/conv1/kernel"], weights["block1/conv2/kernel"], weights["logits/kernel"]
    # conv1 (3, 3, 1, 8): filter 0 is the identity of the one input channel; filters 1..7 are uniform draws
    # within 1/sqrt(3 * 3 * 1).
    identity = np.zeros((3, 3, 1))
    identity[1, 1, 0] = 1
    np.testing.assert_array_equal(conv1[..., 0], identity)
    assert np.abs(conv1[..., 1:]).max() <= 1 / 3 and np.abs(conv1[..., 1:]).max() > 0.8 / 3
    # conv2 (3, 3, 8, 8): in == out, so every filter is the identity.
    expected = np.zeros((3, 3, 8, 8))
    expected[1, 1, np.arange(8), np.arange(8)] = 1
    np.testing.assert_array_equal(conv2, expected)
    # Logits (8, 10): PyTorch's linear init, within 1/sqrt(8).
    assert 0.8 / math.sqrt(8) < np.abs(logits).max() <= 1 / math.sqrt(8)


def test_the_triangle_schedule_rises_from_a_fifth_to_the_peak_and_falls_to_seven_hundredths():
    schedule = Schedule("triangle", peak=2.0, total_steps=100, warmup_steps=20)
    values = {step: float(schedule(step)) for step in (0, 10, 20, 60, 100)}
    assert values[0] == pytest.approx(2.0 * TRIANGLE_START, abs=ATOL)
    assert values[10] == pytest.approx(2.0 * (TRIANGLE_START + 1) / 2, abs=ATOL)
    assert values[20] == pytest.approx(2.0, abs=ATOL)
    assert values[60] == pytest.approx(2.0 * (1 + TRIANGLE_END) / 2, abs=ATOL)
    assert values[100] == pytest.approx(2.0 * TRIANGLE_END, abs=ATOL)


@pytest.mark.slow
def test_batch_norm_biases_move_bias_scale_times_as_far_and_nothing_else_changes():
    images = tf.random.stateless_normal((16, 28, 28, 1), seed=(1, 2))
    labels = tf.constant(np.arange(16) % 10, tf.int32)
    strategy = tf.distribute.get_strategy()

    def one_step(scale):
        network = build_network("reference", "B4-gmp-lin9", (28, 28, 1), 10, seed=7)
        before = {name: v.numpy() for name, v in network.named_weights().items()}
        optimizer = tf.keras.optimizers.SGD(0.1)  # plain SGD: the step is rate x gradient
        optimizer.build(network.trainable_variables)
        metrics = (tf.keras.metrics.Mean(), tf.keras.metrics.SparseCategoricalAccuracy())
        loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
        loop = make_train_loop(network, optimizer, loss, metrics, strategy, 16,
                               gradient_scales=bias_gradient_scales(network, scale))
        loop(iter(tf.data.Dataset.from_tensors((images, labels)).repeat()), tf.constant(1))
        return {name: v.numpy() - before[name] for name, v in network.named_weights().items()}

    plain, scaled = one_step(1.0), one_step(64.0)
    for name in plain:
        factor = 64.0 if name.endswith("/beta") else 1.0
        np.testing.assert_allclose(scaled[name], factor * plain[name], rtol=1e-4, atol=1e-7, err_msg=name)
    assert np.abs(plain["block1/bn1/beta"]).max() > 1e-4  # the biases did move


@pytest.mark.parametrize("decay_biases", [False, True])
def test_weight_decay_reaches_biases_only_when_asked(decay_biases):
    network = build_network("reference", "c2k3b-c2k3-d3", (5, 5, 1), 3, seed=1)
    for variable in network.trainable_variables:
        variable.assign(tf.ones_like(variable))
    config = TrainConfig(optimizer="sgd", learning_rate=0.5, momentum=0.0, weight_decay=0.1, decay_biases=decay_biases)
    optimizer = make_optimizer(config, total_steps=10, variables=network.trainable_variables)
    # A zero gradient: only the decoupled decay moves a weight, from 1 to 1 - lr x wd = 0.95.
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in network.trainable_variables])
    after = {name: float(v.numpy().ravel()[0]) for name, v in network.named_weights().items()
             if name.endswith(("kernel", "bias", "beta", "gamma"))}
    decayed = {name for name, value in after.items() if value == pytest.approx(0.95, abs=ATOL)}
    kept = {name for name, value in after.items() if value == 1.0}
    kernels = {"conv1/conv/kernel", "conv2/conv/kernel", "dense1/kernel", "logits/kernel"}
    vectors = {"conv1/bn/gamma", "conv1/bn/beta", "conv2/conv/bias", "dense1/bias", "logits/bias"}
    assert (decayed, kept) == ((kernels | vectors, set()) if decay_biases else (kernels, vectors))


def test_a_frozen_variable_keeps_the_value_of_its_last_training_step():
    bias = tf.Variable([0.0, 0.0])
    freeze = FreezeAfter([bias], steps=2)
    seen = []
    for number, trained in enumerate(([1.0, 1.0], [2.0, 3.0], [5.0, 8.0], [9.0, 9.0]), start=1):
        bias.assign(trained)  # what the optimizer step would have done
        freeze.after_step(tf.constant(number, tf.int64))
        seen.append(bias.numpy().tolist())
    assert seen == [[1.0, 1.0], [2.0, 3.0], [2.0, 3.0], [2.0, 3.0]]


def test_lookahead_averages_from_its_start_and_ends_on_the_average():
    weight = tf.Variable(1.0)
    lookahead = Lookahead([weight], every=2, start_step=2, total_steps=7)

    def step(number, new_value):
        weight.assign(new_value)  # what the optimizer step would have done
        lookahead.after_step(tf.constant(number, tf.int64))
        return float(weight.numpy())

    assert step(1, 1.0) == 1.0  # before the start: nothing
    assert step(2, 1.0) == 1.0  # first sync: the average becomes the weight
    assert step(3, 3.0) == 3.0  # not a sync step
    decay = DECAY_BASE**2 * (4 / 7) ** 3
    average = decay * 1.0 + (1 - decay) * 3.0
    assert step(4, 3.0) == pytest.approx(average, abs=ATOL)
    assert step(5, 10.0) == 10.0  # between syncs the weights are the optimizer's (no reset at an epoch's end)
    decay = DECAY_BASE**2 * (6 / 7) ** 3
    average = decay * average + (1 - decay) * 12.0
    assert step(6, 12.0) == pytest.approx(average, abs=ATOL)
    assert step(7, 20.0) == pytest.approx(average, abs=ATOL)  # after the last step: the average as it is


def _small_mnist(bundled_mnist):
    return data_lib.Dataset("mnist", bundled_mnist["x_train"][:256, ..., np.newaxis],
                               bundled_mnist["y_train"][:256].astype(np.int32),
                               bundled_mnist["x_test"][:64, ..., np.newaxis],
                            bundled_mnist["y_test"][:64].astype(np.int32), source="first 256 bundled MNIST")


# 8 steps per epoch of 32 images: the whitening bias trains for steps 1-2 (0.25 epochs) and is frozen after.
FROZEN_BIAS_RUN = dict(dataset="mnist", arch="w2tg-B4-gmp-lin9", standardize=True, batch_size=32, steps_per_loop=2,
                       log_every=2, optimizer="sgd", learning_rate=0.2, momentum=0.85, nesterov=True,
                       weight_decay=0.01, decay_biases=True, whitening_bias_epochs=0.25, deterministic=True, seed=5)


@pytest.mark.slow
def test_the_whitening_bias_trains_for_its_epochs_then_keeps_its_value(tmp_path, bundled_mnist):
    dataset = _small_mnist(bundled_mnist)

    def run(steps, name):
        # A constant rate: the first two steps of both runs are the same computation.
        result = train(TrainConfig(**FROZEN_BIAS_RUN, train_steps=steps, logdir=str(tmp_path / name)),
                       dataset=dataset)
        return {name: v.numpy() for name, v in result.model.named_weights().items()}

    two, six = run(2, "two"), run(6, "six")
    assert np.abs(two["whiten1/bias"]).max() > 1e-3  # it trained (it starts at 0)
    np.testing.assert_array_equal(six["whiten1/bias"], two["whiten1/bias"])
    assert np.abs(six["block1/bn1/beta"] - two["block1/bn1/beta"]).max() > 1e-3  # the rest kept training


@pytest.mark.slow
def test_a_lookahead_run_resumed_from_a_checkpoint_ends_like_the_straight_run(tmp_path, bundled_mnist):
    dataset = _small_mnist(bundled_mnist)

    def run(logdir):
        # 8 steps per epoch; lookahead syncs every 2 steps from step 4, so the checkpoint at step 6 holds a
        # started average that the resumed run must continue, and the whitening bias frozen since step 2.
        config = TrainConfig(**FROZEN_BIAS_RUN, train_steps=12, checkpoint_every=6, bn_bias_lr_scale=64.0,
                             lookahead_every=2, lookahead_start_epochs=0.5, logdir=str(logdir))
        result = train(config, dataset=dataset)
        return {name: v.numpy() for name, v in result.model.named_weights().items()}, result.results

    straight, first = run(tmp_path / "run")
    # As if the process had stopped after the checkpoint at step 6: the one at step 12 is gone.
    for path in (tmp_path / "run" / "checkpoints").glob("ckpt-12.*"):
        path.unlink()
    clock = json.loads((tmp_path / "run" / "clock.json").read_text())
    resumed, second = run(tmp_path / "run")
    assert second["train_steps"] == 12
    for name, value in straight.items():
        np.testing.assert_allclose(resumed[name], value, atol=1e-6, err_msg=name)
    # The resumed run's clock continues from the first process's at step 6.
    assert 0 < clock["6"]["train_seconds"] < first["train_seconds"]
    assert second["train_seconds"] > clock["6"]["train_seconds"]
