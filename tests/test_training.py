"""``train(config, dataset=...)`` on tiny MNIST: summaries, resuming, divergence, refusals; schedules and loss."""

import dataclasses
import json
import logging
import math
import re
import signal
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.event_files import read_scalars
from training import config as config_lib
from training import stopping
from training.losses import classification_loss
from training.optimization import Schedule, build_optimizer, exclude_from_decay
from training.progress import Bookkeeper, CallLength
from training.rundir import RunDir
from training.trainer import RunError, train

# With deterministic kernels a resumed run repeats the uninterrupted one bit for bit; 1e-6 only allows for
# float32 rounding of the O(0.1) weights should a kernel ever change.
RESUME_ATOL = 1e-6
# Learning rates are float32 arithmetic on values <= 0.1: rounding errors are ~1e-8.
SCHEDULE_ATOL = 1e-6
# A cross-entropy of O(1) computed by Keras in float32 against float64 NumPy.
LOSS_ATOL = 1e-6
# One float32 update of weights equal to 2: rounding is ~2e-7.
WEIGHT_DECAY_ATOL = 1e-6
# How long the killed run may take to write its first checkpoint (it imports TensorFlow first).
FIRST_CHECKPOINT_TIMEOUT_SECONDS = 120
KILLED_RUN_STEPS = 60


def _numpy_weights(model):
    return {name: variable.numpy() for name, variable in model.named_weights().items()}


def _checkpoint_numbers(logdir):
    return sorted(int(re.search(r"ckpt-(\d+)\.index", p.name)[1]) for p in (logdir / "checkpoints").glob("*.index"))


def test_summaries_hold_the_expected_scalars_at_the_expected_steps(tmp_path, tiny_config, tiny_mnist):
    peak = 1e-2
    # Calls of --steps_per_loop=10 steps throughout (no time limit), so the first call is steps 1-10.
    config = tiny_config(tmp_path, learning_rate=peak, lr_schedule="cosine", eval_every=10, max_seconds_per_loop=0)
    result = train(config, dataset=tiny_mnist)

    train_scalars = read_scalars(tmp_path / "train")
    assert {tag: sorted(steps) for tag, steps in train_scalars.items()} == {
        "loss": [10, 20], "accuracy": [10, 20], "learning_rate": [10, 20], "images_per_second": [10, 20]}
    # The rate the next update would use: cosine from the peak to 0 over 20 steps.
    assert train_scalars["learning_rate"][10] == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * 10 / 20)),
                                                               abs=SCHEDULE_ATOL)
    assert train_scalars["learning_rate"][20] == pytest.approx(0.0, abs=SCHEDULE_ATOL)
    # The first loop call (tracing) is left out of the throughput; the second is timed.
    assert train_scalars["images_per_second"][10] == 0.0
    assert train_scalars["images_per_second"][20] > 0.0
    # Ten untrained steps of 10 classes start near the uniform guess's loss, ln 10 = 2.303; then it falls.
    assert 1.5 < train_scalars["loss"][10] < math.log(10) + 0.2
    assert train_scalars["loss"][20] < train_scalars["loss"][10]
    assert 0.0 <= train_scalars["accuracy"][10] <= 1.0

    eval_scalars = read_scalars(tmp_path / "eval")
    assert {tag: sorted(steps) for tag, steps in eval_scalars.items()} == {"loss": [10, 20], "accuracy": [10, 20]}
    assert eval_scalars["loss"][20] == pytest.approx(result.results["test_loss"], abs=LOSS_ATOL)
    assert eval_scalars["accuracy"][20] == pytest.approx(result.results["test_accuracy"], abs=LOSS_ATOL)
    # Accuracy over all 256 test images: k / 256, which float32 holds exactly.
    assert (result.results["test_accuracy"] * len(tiny_mnist.y_test)).is_integer()
    assert json.loads((tmp_path / "results.json").read_text()) == result.results


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path, tiny_mnist_dir, start_cli, caplog):
    # Killed at its first checkpoint (step 10): 50 steps and 5 checkpoints, about a second, before its end, while
    # the kill follows the checkpoint's state file within 10 ms.
    args = ["--arch=c4k3-m2-d16", f"--train_steps={KILLED_RUN_STEPS}", "--checkpoint_every=10", "--deterministic",
            f"--data_dir={tiny_mnist_dir}"]
    interrupted_dir, straight_dir = tmp_path / "interrupted", tmp_path / "straight"
    interrupted = start_cli(*args, f"--logdir={interrupted_dir}")
    try:
        _kill_after_first_checkpoint(interrupted, interrupted_dir / "checkpoints")
    finally:
        if interrupted.poll() is None:
            interrupted.kill()
            interrupted.communicate()
    assert not (interrupted_dir / "results.json").exists(), "the run finished before it was killed"
    # The uninterrupted run and the resumed one, in this process (two TensorFlow starts fewer; the command line's
    # own resume is the console test's rerun from flags.txt): the config the killed command wrote before its first
    # step, once in another directory, once in its own.
    saved, unknown = config_lib.from_json(json.loads((interrupted_dir / "config.json").read_text())["config"])
    assert not unknown
    train(dataclasses.replace(saved, logdir=str(straight_dir)))
    caplog.set_level(logging.INFO, logger="absl")
    train(saved)
    match = re.search(r"resumed from (\S+)/ckpt-(\d+) at step (\d+)$", caplog.text, re.MULTILINE)
    assert match, caplog.text
    assert match[1] == str(interrupted_dir / "checkpoints") and match[2] == match[3]
    assert 0 < int(match[3]) < KILLED_RUN_STEPS and int(match[3]) % 10 == 0
    resumed_results = json.loads((interrupted_dir / "results.json").read_text())
    straight_results = json.loads((straight_dir / "results.json").read_text())
    assert resumed_results["train_steps"] == straight_results["train_steps"] == KILLED_RUN_STEPS
    assert resumed_results["test_loss"] == pytest.approx(straight_results["test_loss"], abs=RESUME_ATOL)
    # Every saved value (weights, optimizer slots, step counters) of the final checkpoints.
    resumed_ckpt = tf.train.load_checkpoint(str(interrupted_dir / "checkpoints" / f"ckpt-{KILLED_RUN_STEPS}"))
    straight_ckpt = tf.train.load_checkpoint(str(straight_dir / "checkpoints" / f"ckpt-{KILLED_RUN_STEPS}"))
    names = sorted(set(straight_ckpt.get_variable_to_shape_map()) - {"_CHECKPOINTABLE_OBJECT_GRAPH"})
    assert names == sorted(set(resumed_ckpt.get_variable_to_shape_map()) - {"_CHECKPOINTABLE_OBJECT_GRAPH"})
    assert len(names) > 10
    for name in names:
        np.testing.assert_allclose(resumed_ckpt.get_tensor(name), straight_ckpt.get_tensor(name), atol=RESUME_ATOL,
                                   err_msg=name)


def _kill_after_first_checkpoint(process, checkpoint_dir):
    """SIGKILLs ``process`` as soon as its first checkpoint is complete."""
    # CheckpointManager writes the "checkpoint" state file last, once the checkpoint's own files are written.
    state_file = checkpoint_dir / "checkpoint"
    deadline = time.monotonic() + FIRST_CHECKPOINT_TIMEOUT_SECONDS
    while not state_file.exists():
        assert process.poll() is None, f"exited before its first checkpoint:\n{process.communicate()[1]}"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL


def _signal_at_step(monkeypatch, step):
    """Makes the loop's bookkeeping send this process SIGTERM when it reaches ``step``, as a scheduler would
    between two chunks of steps; returns the network's weights at that moment (filled in then)."""
    at_signal = {}
    after_steps = Bookkeeper.after_steps

    def after_steps_and_signal(book, begin, now, *args):
        if now == step:
            at_signal.update(_numpy_weights(book.run.parts.network))
            signal.raise_signal(signal.SIGTERM)
        return after_steps(book, begin, now, *args)

    monkeypatch.setattr(Bookkeeper, "after_steps", after_steps_and_signal)
    return at_signal


# Batch-norm moving statistics and the dropout seed state must be in the checkpoint too, besides the weights and
# optimizer slots (a net without them checks a subset of this; it was dropped to keep the suite in its budget).
@pytest.mark.parametrize("arch", ["c4k3b-m2-d16-drop0.5"])
@pytest.mark.parametrize("loop", ["custom", pytest.param("fit", marks=pytest.mark.slow)])
def test_a_run_stopped_by_sigterm_saves_its_step_and_resumes_to_the_straight_result(tmp_path, tiny_config,
                                                                                      tiny_mnist, caplog,
                                                                                      monkeypatch, arch, loop):
    # The stop is in-process: the handler is the loop's, so SIGTERM only asks (checked by the test's survival).
    assert threading.current_thread() is threading.main_thread(), "needs the main thread to receive the signal"
    caplog.set_level(logging.INFO, logger="absl")
    # No checkpoint is due before the end: the one at step 20 is the stop's.
    config = tiny_config(tmp_path / "resumed", arch=arch, loop=loop, train_steps=40, checkpoint_every=1000)
    handler_before = signal.getsignal(signal.SIGTERM)
    with monkeypatch.context() as patch:
        after_20 = _signal_at_step(patch, 20)
        with pytest.raises(stopping.Stopped) as stopped:
            train(config, dataset=tiny_mnist)
    assert signal.getsignal(signal.SIGTERM) is handler_before
    # The one line the command prints (tests/test_console.py runs the command).
    assert str(stopped.value) == (f"stopped by SIGTERM after step 20 (epoch 2.5/5); the last good checkpoint "
                                  f"{tmp_path}/resumed/checkpoints/ckpt-20 is kept, and the same command resumes "
                                  "from it")
    assert _checkpoint_numbers(tmp_path / "resumed") == [20]
    assert list(json.loads((tmp_path / "resumed" / "clock.json").read_text())) == ["20"]
    assert not (tmp_path / "resumed" / "results.json").exists()
    resumed = train(config, dataset=tiny_mnist)
    assert f"resumed from {tmp_path}/resumed/checkpoints/ckpt-20 at step 20" in caplog.text
    straight = train(tiny_config(tmp_path / "straight", arch=arch, loop=loop, train_steps=40), dataset=tiny_mnist)

    assert resumed.results["train_steps"] == 40
    assert _checkpoint_numbers(tmp_path / "resumed") == [20, 40]
    resumed_weights, straight_weights = _numpy_weights(resumed.model), _numpy_weights(straight.model)
    assert list(resumed_weights) == list(straight_weights)
    # The 20 extra steps moved the weights far more than the tolerance, so a resume that skipped them fails.
    assert max(np.abs(straight_weights[n] - after_20[n]).max() for n in after_20) > 1000 * RESUME_ATOL
    for name, value in straight_weights.items():
        np.testing.assert_allclose(resumed_weights[name], value, atol=RESUME_ATOL, err_msg=name)
    assert resumed.results["test_loss"] == pytest.approx(straight.results["test_loss"], abs=RESUME_ATOL)
    # The learning curve survives the stop: the first evaluation (every 2 epochs of 8 steps: at 16; fit rounds it
    # up to the end of its chunk of log_every = 10 steps, 20) came from the first process, kept in clock.json with
    # the stop's checkpoint at step 20.
    curves = [[(e["step"], e["images"], e["validation_accuracy"]) for e in run.results["evaluations"]]
              for run in (resumed, straight)]
    steps = [16, 32, 40] if loop == "custom" else [20, 40]
    assert curves[0] == curves[1] == [(step, 64 * step, None) for step in steps]
    for got, want in zip(resumed.results["evaluations"], straight.results["evaluations"]):
        assert got["test_loss"] == pytest.approx(want["test_loss"], abs=RESUME_ATOL)


@pytest.mark.parametrize("loop", ["custom", "fit"])
def test_a_diverging_run_stops_naming_the_step_and_keeps_the_good_checkpoint(tmp_path, tiny_config, tiny_mnist,
                                                                             loop):
    # SGD at 1e20 per update: the first step is finite, its update makes the weights ~1e20 and the logits
    # overflow float32, so the loss of step 2 or 3 is not finite. One step per loop and a checkpoint each step
    # whose loss is finite and below the divergence bound: the last good checkpoint is a step before.
    config = tiny_config(tmp_path, optimizer="sgd", learning_rate=1e20, loop=loop, steps_per_loop=1,
                         checkpoint_every=1, log_every=1)
    checkpoints = tmp_path / "checkpoints"
    with pytest.raises(RunError, match=rf"^loss became (nan|inf|-inf) at step \d+; stopped, the last good "
                                       rf"checkpoint {re.escape(str(checkpoints))}/ckpt-\d+ is kept$") as caught:
        train(config, dataset=tiny_mnist)
    bad_step = int(re.search(r"at step (\d+)", str(caught.value))[1])
    good_step = int(re.search(r"ckpt-(\d+) is kept", str(caught.value))[1])
    assert 1 <= good_step < bad_step
    assert _checkpoint_numbers(tmp_path)[-1] == good_step
    last_good = tf.train.load_checkpoint(str(checkpoints / f"ckpt-{good_step}"))
    for name, dtype in last_good.get_variable_to_dtype_map().items():
        if dtype.is_floating:
            assert np.isfinite(last_good.get_tensor(name)).all(), name
    assert not (tmp_path / "results.json").exists()


def test_an_occupied_logdir_is_refused_without_resume(tmp_path, tiny_config, tiny_mnist):
    config = tiny_config(tmp_path)
    RunDir(config.logdir).prepare(config)  # what a started run leaves: config.json
    with pytest.raises(RunError, match=re.escape(f"--logdir {tmp_path} already holds a run; resume it (--resume) "
                                                 "or choose a new --logdir")):
        train(dataclasses.replace(config, resume=False), dataset=tiny_mnist)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


# Another network is refused whatever --allow_config_change says (tests/test_rundir.py).
@pytest.mark.parametrize("field,value,earlier", [
    ("optimizer", "sgd", "adam"),
    ("batch_size", 32, 64),
    ("learning_rate", 0.01, 0.001),
    ("seed", 1, 0),
    ("augment", True, False),
    ("lr_schedule", "cosine", "constant"),
])
def test_resuming_with_a_setting_that_changes_the_run_is_refused(tmp_path, tiny_config, tiny_mnist, field, value,
                                                                 earlier):
    config = tiny_config(tmp_path)
    RunDir(config.logdir).prepare(config)
    with pytest.raises(RunError, match=re.escape(f"--logdir {tmp_path} holds a run with --{field}={earlier}, not "
                                                 f"--{field}={value}; resume with the run's own values, pass "
                                                 "--allow_config_change, or choose a new --logdir")):
        train(dataclasses.replace(config, **{field: value}), dataset=tiny_mnist)
    assert json.loads((tmp_path / "config.json").read_text())["config"][field] == earlier  # not overwritten


def test_budgets_may_change_on_resume_and_config_json_keeps_the_history(tmp_path, tiny_config, tiny_mnist):
    config = dataclasses.replace(tiny_config(tmp_path), train_steps=10, checkpoint_every=10)
    train(config, dataset=tiny_mnist)
    longer = dataclasses.replace(config, train_steps=20, log_every=5)  # FREE fields: no permission needed
    assert train(longer, dataset=tiny_mnist).results["train_steps"] == 20
    changed_rate = dataclasses.replace(longer, train_steps=30, learning_rate=0.01, allow_config_change=True)
    train(changed_rate, dataset=tiny_mnist)

    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["config"]["train_steps"] == 30 and saved["config"]["learning_rate"] == 0.01
    assert [start["from_step"] for start in saved["history"]] == [0, 10, 20]
    assert saved["history"][0]["changed"] == {}
    assert saved["history"][1]["changed"] == {"train_steps": [10, 20], "log_every": [config.log_every, 5]}
    assert saved["history"][2]["changed"] == {"train_steps": [20, 30], "learning_rate": [0.001, 0.01],
                                              "allow_config_change": [False, True]}
    # Each start names the code and the CPU that trained from it (git_commit itself: tests/test_sweep.py).
    from training import provenance
    assert {(start["commit"], start["cpu"]) for start in saved["history"]} == {
        (provenance.git_commit(), provenance.cpu_model())}


def _rates(schedule, steps):
    return [float(schedule(step)) for step in steps]


@pytest.mark.parametrize("schedule,expected", [
    (Schedule("constant", 0.1, 100), {0: 0.1, 50: 0.1, 100: 0.1, 500: 0.1}),
    (Schedule("cosine", 0.1, 100), {
        0: 0.1, 25: 0.05 * (1 + math.cos(math.pi / 4)), 50: 0.05, 100: 0.0, 150: 0.0}),
    # Warmup to the peak over 10 steps, then cosine over the 90 that remain.
    (Schedule("cosine", 0.1, 100, warmup_steps=10), {
        0: 0.01, 4: 0.05, 9: 0.1, 10: 0.1, 55: 0.05, 100: 0.0}),
    # Warmup over 20 steps, then a straight line to 0 at step 100: 0.1 * (1 - (step - 20) / 80).
    (Schedule("linear", 0.1, 100, warmup_steps=20), {
        0: 0.005, 19: 0.1, 20: 0.1, 60: 0.05, 80: 0.025, 100: 0.0, 120: 0.0}),
    # x0.5 every 10 steps, continuously, counted after the warmup.
    (Schedule("exponential", 0.1, 100, decay_rate=0.5, decay_steps=10), {
        0: 0.1, 10: 0.05, 25: 0.1 * 0.5 ** 2.5, 100: 0.1 * 0.5 ** 10}),
    (Schedule("exponential", 0.1, 100, warmup_steps=5, decay_rate=0.5, decay_steps=10), {
        4: 0.1, 15: 0.05}),
    # x0.1 at half and at three quarters of the run.
    (Schedule("piecewise", 0.1, 100, decay_rate=0.1, boundaries=(0.5, 0.75)), {
        0: 0.1, 49: 0.1, 50: 0.01, 74: 0.01, 75: 0.001, 99: 0.001}),
    # Linear warmup: step k (counted from 0) uses (k + 1) / warmup_steps of the peak, so the first update is
    # not wasted at rate 0 and step warmup_steps - 1 reaches the peak.
    (Schedule("constant", 0.1, 100, warmup_steps=4), {0: 0.025, 1: 0.05, 2: 0.075, 3: 0.1, 4: 0.1, 99: 0.1}),
], ids=["constant", "cosine", "cosine_warmup", "linear_warmup", "exponential", "exponential_warmup", "piecewise",
        "warmup"])
def test_schedule_values(schedule, expected):
    np.testing.assert_allclose(_rates(schedule, expected), list(expected.values()), atol=SCHEDULE_ATOL)
    clone = Schedule(**schedule.get_config())
    np.testing.assert_allclose(_rates(clone, expected), list(expected.values()), atol=SCHEDULE_ATOL)


def test_unknown_schedule_and_optimizer_are_rejected():
    with pytest.raises(ValueError, match=re.escape("unknown schedule 'sawtooth'; choose one of constant, cosine, "
                                                   "linear, triangle, exponential, piecewise")):
        Schedule("sawtooth", 0.1, 100)
    with pytest.raises(ValueError, match=re.escape("unknown optimizer 'rmsprop'; choose one of adam, sgd")):
        build_optimizer("rmsprop", 0.1)


def test_weight_decay_shrinks_kernels_only():
    kernel = tf.Variable(np.full((2, 2), 2.0, np.float32))
    bias = tf.Variable(np.full((2,), 2.0, np.float32))
    optimizer = build_optimizer("sgd", 0.1, momentum=0.0, weight_decay=0.5)
    exclude_from_decay(optimizer, [kernel, bias])
    optimizer.apply_gradients([(tf.zeros_like(kernel), kernel), (tf.zeros_like(bias), bias)])
    # Decoupled decay with a zero gradient: w -= learning_rate * weight_decay * w = 2 - 0.1 * 0.5 * 2 = 1.9.
    np.testing.assert_allclose(kernel.numpy(), 1.9, atol=WEIGHT_DECAY_ATOL)
    np.testing.assert_allclose(bias.numpy(), 2.0, atol=WEIGHT_DECAY_ATOL)


def test_label_smoothing_mixes_the_target_with_uniform():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], np.float32)
    labels = np.array([0, 2], np.int32)
    smoothing = 0.3
    log_probs = logits - np.log(np.exp(logits.astype(np.float64)).sum(axis=1, keepdims=True))
    target = np.full((2, 3), smoothing / 3) + (1 - smoothing) * np.eye(3)[labels]
    expected = -(target * log_probs).sum(axis=1)
    per_example = classification_loss(3, smoothing, reduction=None)(labels, logits)
    np.testing.assert_allclose(np.asarray(per_example), expected, atol=LOSS_ATOL)
    mean = classification_loss(3, smoothing)(labels, logits)
    assert float(mean) == pytest.approx(expected.mean(), abs=LOSS_ATOL)
    plain = classification_loss(3)(labels, logits)
    assert float(plain) == pytest.approx(-log_probs[[0, 1], labels].mean(), abs=LOSS_ATOL)


@pytest.mark.parametrize("loop", ["custom", "fit"])
def test_a_checkpoint_without_the_model_weights_is_refused_in_one_line(tmp_path, tiny_config, tiny_mnist, loop):
    # A checkpoint holding only the step must not resume the run from freshly initialised weights.
    config = dataclasses.replace(tiny_config(tmp_path), loop=loop)
    RunDir(config.logdir).prepare(config)
    tf.train.Checkpoint(step=tf.Variable(5, dtype=tf.int64)).save(str(tmp_path / "checkpoints" / "ckpt"))
    with pytest.raises(RunError, match=r"checkpoints/ckpt-1 does not hold this run's state \(.+\); "
                                       r"choose a new --logdir$"):
        train(config, dataset=tiny_mnist)
    assert not (tmp_path / "results.json").exists()


def test_a_checkpoint_with_values_the_run_has_no_variable_for_is_refused(tmp_path):
    # Every variable of the run finds its value here, but one saved value would be silently dropped.
    saved = dict(w=tf.Variable(2.0), extra=tf.Variable(3.0))
    tf.train.Checkpoint(model=saved, step=tf.Variable(4, dtype=tf.int64)).save(str(tmp_path / "checkpoints" / "ckpt"))
    step, weight = tf.Variable(0, dtype=tf.int64), tf.Variable(1.0)
    with pytest.raises(RunError, match="does not hold this run's state"):
        RunDir(str(tmp_path)).restore_latest(tf.train.Checkpoint(model=dict(w=weight), step=step), step)
    RunDir(str(tmp_path)).restore_latest(tf.train.Checkpoint(model=dict(saved), step=step), step)
    assert (int(step), float(saved["w"])) == (4, 2.0)


def test_a_call_ends_at_every_interval_and_lasts_about_the_time_limit():
    # Intervals 25 (log) and 40 (checkpoint); at most 10 steps a call; calls limited to 3 s.
    length = CallLength(steps_per_loop=10, max_seconds=3.0, intervals=(25, 0, 40))
    assert length.next_steps(0, 1000) == 1  # the first call compiles: one step
    length.record(1, 30.0)
    assert length.next_steps(1, 1000) == 1  # the second measures a step
    length.record(1, 0.5)
    assert length.next_steps(2, 1000) == 6  # 3 s / 0.5 s a step
    length.record(6, 2.4)  # 0.4 s a step now: 7 steps fit 3 s
    assert [length.next_steps(begin, 1000) for begin in (8, 20, 24, 38, 995)] == [7, 5, 1, 2, 5]
    unlimited = CallLength(steps_per_loop=10, intervals=(25,))
    assert [unlimited.next_steps(begin, 1000) for begin in (0, 10, 20, 990)] == [10, 10, 5, 10]
    unlimited.record(10, 100.0)
    unlimited.record(10, 100.0)  # slow steps do not shorten calls without a limit
    assert unlimited.next_steps(30, 1000) == 10
