"""``train(config)``: one training run from a ``TrainConfig``, written to its run directory.

Build -> restore -> for each call of the compiled loop: train, maybe log, maybe evaluate, maybe checkpoint ->
evaluate -> results.json. Data and strategy can be passed in, so tests run the real thing on tiny arrays.
"""

import contextlib
import dataclasses
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from models.network import build_network
from training import data as data_lib
from training import distribute
from training import loop as loop_lib
from training.losses import classification_loss
from training.optimization import Schedule, build_optimizer, exclude_from_decay
from training.profiling import StepProfiler

# A run resumed from a checkpoint must agree with it on these; budgets and intervals may change.
_RESUME_MUST_MATCH = ("dataset", "arch", "impl", "loop", "optimizer", "batch_size", "standardize", "precision")


class RunError(RuntimeError):
    """A run that cannot start or go on (an occupied run directory, a diverged loss); the message says why."""


@dataclasses.dataclass
class TrainResult:
    results: dict  # what results.json holds (also on workers that do not write it)
    model: object  # the trained model (Keras CNN or reference network)


@dataclasses.dataclass
class TrainState:
    """What a checkpoint holds, plus the metrics; built inside the strategy's scope."""

    model: object
    optimizer: keras.optimizers.Optimizer
    step: tf.Variable
    train_metrics: tuple
    eval_metrics: tuple

    def checkpoint(self):
        return tf.train.Checkpoint(model=self.model.checkpoint_state(), optimizer=self.optimizer, step=self.step)


def train(config, dataset=None, strategy=None, flagfile=None):
    """Trains as ``config`` says and returns a ``TrainResult``; writes summaries, checkpoints, results.json.

    ``dataset`` (a ``data.Dataset``) and ``strategy`` replace the configured ones; ``flagfile`` is written to
    the run directory as flags.txt. Under multi-worker training only the chief keeps what it writes.
    """
    start = time.time()
    strategy = strategy or distribute.make_strategy(config.strategy)
    check_batch_sizes(config, strategy.num_replicas_in_sync)
    if distribute.is_chief(strategy):
        check_logdir(config)
    dataset = dataset or data_lib.load(config.dataset, config.data_dir, config.allow_download)
    logging.info("data: %s (%d train, %d test images)", dataset.source, len(dataset.x_train), len(dataset.x_test))
    total_steps = resolve_train_steps(config, len(dataset.x_train))
    if distribute.is_chief(strategy):  # only once the data is good, so a failed start leaves no run behind
        prepare_logdir(config, flagfile)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    if config.loop == "fit":
        from training.fit_loop import train_with_fit
        return train_with_fit(config, dataset, strategy, total_steps, start)

    own_logdir = distribute.worker_logdir(config.logdir, strategy)
    with strategy.scope():
        state = build_state(config, dataset, total_steps)
    # The step counter lives on the host, outside the strategy: one plain variable whatever the strategy.
    state.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = state.checkpoint()
    restore_latest(checkpoint, config.logdir, state.step)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(own_logdir, "checkpoints"), max_to_keep=3)
    trained = run_training(config, dataset, strategy, state, manager, own_logdir, total_steps)
    results = run_results(config, dataset, strategy, state.model, int(state.step), start, **trained)
    if own_logdir == config.logdir:
        write_results(config.logdir, results)
    distribute.remove_worker_logdir(config.logdir, own_logdir)
    return TrainResult(results, state.model)


def run_training(config, dataset, strategy, state, manager, logdir, total_steps):
    """The loop from the restored step to ``total_steps``, then a final evaluation; returns its figures."""
    pipelines = make_pipelines(config, dataset, strategy, int(state.step))
    train_iterator = iter(pipelines.train)
    per_example_loss = classification_loss(dataset.num_classes, config.label_smoothing, reduction=None)
    train_loop = loop_lib.make_train_loop(state.model, state.optimizer, per_example_loss, state.train_metrics,
                                          strategy, config.batch_size, config.jit_compile)
    eval_step = loop_lib.make_eval_step(state.model, per_example_loss, state.eval_metrics, strategy)
    writers = {part: tf.summary.create_file_writer(os.path.join(logdir, part)) for part in ("train", "eval")}
    profiler = StepProfiler(logdir, *config.profile_steps) if config.profile_steps else None
    progress = Progress(total_steps, int(state.step), config.batch_size)

    def evaluate_and_log(at_step):
        loss, accuracy = evaluate(eval_step, pipelines.eval, state.eval_metrics)
        write_scalars(writers["eval"], at_step, loss=loss, accuracy=accuracy)
        logging.info("step %d: test loss %.4f, test accuracy %.2f%%", at_step, loss, 100 * accuracy)
        return loss, accuracy

    while int(state.step) < total_steps:
        begin = int(state.step)
        num_steps = min(config.steps_per_loop, total_steps - begin)
        if profiler:
            num_steps = profiler.steps_before_boundary(begin, num_steps)
        tick = time.time()
        with profiler.around(begin + 1) if profiler else contextlib.nullcontext():
            losses = train_loop(train_iterator, tf.constant(num_steps)).numpy()
        progress.record(num_steps, time.time() - tick)
        check_finite(losses, begin, manager.directory)
        state.step.assign(begin + num_steps)
        now = int(state.step)

        def due(every):
            return now == total_steps or (every > 0 and now // every > begin // every)

        if due(config.log_every):
            log_training(writers["train"], state, now, total_steps, progress)
        if config.eval_every and due(config.eval_every) and now != total_steps:
            evaluate_and_log(now)
        if due(config.checkpoint_every):
            manager.save(checkpoint_number=now)
    test_loss, test_accuracy = evaluate_and_log(int(state.step))
    return dict(test_loss=test_loss, test_accuracy=test_accuracy, images_per_second=progress.images_per_second())


def run_results(config, dataset, strategy, model, train_steps, start, test_loss, test_accuracy,
                images_per_second):
    """What results.json records of a finished run."""
    return dict(
        test_accuracy=float(test_accuracy), test_loss=float(test_loss), train_steps=train_steps,
        wall_seconds=round(time.time() - start, 2), params=int(model.count_params()), dataset=config.dataset,
        arch=config.arch, impl=config.impl, loop=config.loop, batch_size=config.batch_size, seed=config.seed,
        images_per_second=round(images_per_second, 1), data_source=dataset.source, precision=config.precision,
        strategy=type(strategy).__name__, num_replicas=strategy.num_replicas_in_sync)


def check_finite(losses, begin, checkpoint_dir):
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        raise RunError(f"loss became {losses[bad[0]]} at step {begin + bad[0] + 1}; stopped, the last good "
                       f"checkpoint in {checkpoint_dir} is kept")


def log_training(writer, state, step, total_steps, progress):
    """Writes train/ scalars and a console line for the steps since the last log, then resets the metrics."""
    loss, accuracy = (float(m.result()) for m in state.train_metrics)
    learning_rate = float(current_learning_rate(state.optimizer))
    scalars = dict(loss=loss, accuracy=accuracy, learning_rate=learning_rate,
                   images_per_second=progress.images_per_second())
    if isinstance(state.optimizer, keras.optimizers.LossScaleOptimizer):
        scalars["loss_scale"] = float(state.optimizer.dynamic_scale.numpy())
    write_scalars(writer, step, **scalars)
    logging.info("step %d/%d: loss %.4f, accuracy %.2f%%, lr %.3g, %s", step, total_steps, loss, 100 * accuracy,
                 learning_rate, progress.describe())
    for metric in state.train_metrics:
        metric.reset_state()


def resolve_train_steps(config, num_train_examples):
    """``config.train_steps``, or ``config.epochs`` passes over the training set in whole batches."""
    if config.train_steps:
        return config.train_steps
    return max(1, math.ceil(config.epochs * (num_train_examples // config.batch_size)))


def check_batch_sizes(config, num_replicas):
    for name in ("batch_size", "eval_batch_size"):
        if getattr(config, name) % num_replicas:
            raise RunError(f"--{name}={getattr(config, name)} does not divide by the {num_replicas} replicas "
                           f"of the strategy; use a multiple of {num_replicas}")


def build_state(config, dataset, total_steps):
    """Model, optimizer and metrics (the step counter is set by the caller); call inside ``strategy.scope()``."""
    model = build_network(config.impl, config.arch, dataset.image_shape, dataset.num_classes, config.seed,
                          config.precision)
    optimizer = make_optimizer(config, total_steps, model.trainable_variables)
    return TrainState(model, optimizer, None, make_metrics("train"), make_metrics("eval"))


def restore_latest(checkpoint, logdir, step):
    """Restores the newest checkpoint of the run in ``logdir`` (the chief's, which every worker reads).

    Every variable must find its value (else the run would go on from fresh weights) and every saved value its
    variable (else part of the saved run would be silently dropped); a mismatch is a one-line ``RunError``.
    """
    latest = tf.train.latest_checkpoint(os.path.join(logdir, "checkpoints"))
    if latest:
        try:
            checkpoint.restore(latest).assert_consumed()
        except AssertionError as error:
            reason = str(error).strip().splitlines()[0][:200]
            raise RunError(f"{latest} does not hold this run's state ({reason}); choose a new --logdir") from None
        logging.info("resumed from %s at step %d", latest, int(step))


def check_logdir(config):
    """Refuses a run directory that holds a run unless resuming, and refuses to resume a run of another model
    or data, so no earlier run is overwritten or mixed into."""
    logdir = config.logdir
    config_path = os.path.join(logdir, "config.json")
    if os.path.isdir(logdir) and os.listdir(logdir):
        if not config.resume:
            raise RunError(f"--logdir {logdir} already holds a run; resume it (--resume) or choose a new --logdir")
        if os.path.exists(config_path):
            with open(config_path) as file:
                earlier = json.load(file)
            for field in _RESUME_MUST_MATCH:
                if earlier.get(field, getattr(config, field)) != getattr(config, field):
                    raise RunError(f"--logdir {logdir} holds a run with --{field}={earlier.get(field)}, not "
                                   f"{getattr(config, field)}; choose a new --logdir")


def prepare_logdir(config, flagfile=None):
    """Checks the run directory (``check_logdir``), then creates it with config.json, and flags.txt when
    ``flagfile`` text is given."""
    check_logdir(config)
    logdir, config_path = config.logdir, os.path.join(config.logdir, "config.json")
    os.makedirs(logdir, exist_ok=True)
    with open(config_path, "w") as file:
        json.dump(dataclasses.asdict(config), file, indent=2)
    if flagfile is not None:
        with open(os.path.join(logdir, "flags.txt"), "w") as file:
            file.write(flagfile)


@dataclasses.dataclass
class Pipelines:
    train: object  # distributed training batches
    eval: object  # distributed test set


def make_preprocessors(config, dataset):
    """``(train, eval)`` batch preprocessing functions as ``config`` says (scaling, standardising, augmenting)."""
    mean = std = None
    if config.standardize:
        mean, std = data_lib.channel_stats(dataset.x_train)
    return data_lib.make_preprocess(mean, std, augment=config.augment), data_lib.make_preprocess(mean, std)


def make_pipelines(config, dataset, strategy, start_step):
    """Training batches from ``start_step`` on, and the whole test set, distributed over ``strategy``."""
    train_preprocess, eval_preprocess = make_preprocessors(config, dataset)
    return Pipelines(
        train=data_lib.distributed_train_dataset(strategy, dataset.x_train, dataset.y_train, config.batch_size,
                                                 config.seed, train_preprocess, skip_batches=start_step),
        eval=data_lib.distributed_eval_dataset(strategy, dataset.x_test, dataset.y_test, config.eval_batch_size,
                                               eval_preprocess))


def make_optimizer(config, total_steps, variables):
    """The configured optimizer, built on ``variables`` (call inside ``strategy.scope()``).

    With float16 compute it is wrapped in Keras' ``LossScaleOptimizer``, so small gradients do not flush to 0.
    """
    schedule = Schedule(config.lr_schedule, config.learning_rate, total_steps, config.warmup_steps,
                        config.decay_rate, config.decay_steps, config.piecewise_boundaries)
    optimizer = build_optimizer(config.optimizer, schedule, config.momentum, config.nesterov, config.weight_decay)
    exclude_from_decay(optimizer, variables)
    if config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    # Keras 3 creates slot variables lazily; building them here, in the strategy's scope, lets
    # apply_gradients run inside strategy.run.
    optimizer.build(variables)
    return optimizer


def make_metrics(prefix):
    return (keras.metrics.Mean(name=f"{prefix}_loss"),
            keras.metrics.SparseCategoricalAccuracy(name=f"{prefix}_accuracy"))


def current_learning_rate(optimizer):
    rate = optimizer.learning_rate
    return rate(optimizer.iterations) if callable(rate) else rate


def evaluate(eval_step, eval_dataset, metrics):
    """Mean loss and accuracy over every batch of ``eval_dataset``."""
    for metric in metrics:
        metric.reset_state()
    for batch in eval_dataset:
        eval_step(batch)
    return tuple(float(metric.result()) for metric in metrics)


def write_scalars(writer, step, **scalars):
    with writer.as_default(step=step):
        for name, value in scalars.items():
            tf.summary.scalar(name, value)
    writer.flush()


def write_results(logdir, results):
    path = os.path.join(logdir, "results.json")
    with open(path + ".tmp", "w") as file:
        json.dump(results, file, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)  # a reader never sees half a file
    logging.info("results: %s", json.dumps(results, sort_keys=True))


class Progress:
    """Throughput and time left; the first call (tracing and compilation) is left out of the rate."""

    def __init__(self, total_steps, start_step, batch_size):
        self.total_steps, self.step, self.batch_size = total_steps, start_step, batch_size
        self.calls = self.timed_steps = 0
        self.timed_seconds = 0.0

    def record(self, num_steps, seconds):
        self.step += num_steps
        self.calls += 1
        if self.calls > 1:
            self.timed_steps += num_steps
            self.timed_seconds += seconds

    def images_per_second(self):
        return self.timed_steps * self.batch_size / self.timed_seconds if self.timed_seconds else 0.0

    def describe(self):
        rate = self.images_per_second()
        if not rate:
            return "compiling"
        left = (self.total_steps - self.step) * self.batch_size / rate
        return f"{rate:.0f} images/s, {int(left) // 60}:{int(left) % 60:02d} left"
