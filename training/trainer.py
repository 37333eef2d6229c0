"""``train(config)``: one training run from a ``TrainConfig``, written to its run directory.

Build -> restore -> for each loop of steps: train, maybe log, maybe evaluate, maybe checkpoint -> evaluate ->
results.json. Data and strategy can be passed in, so tests run the real thing on tiny arrays.
"""

import dataclasses
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from training import data as data_lib
from training import loop as loop_lib
from training.losses import classification_loss
from training.optimization import Schedule, build_optimizer, exclude_from_decay

IMPLS = ("keras", "reference")


class RunError(RuntimeError):
    """A run that cannot start or go on (an occupied run directory, a diverged loss); the message says why."""


@dataclasses.dataclass
class TrainResult:
    results: dict  # what results.json holds
    model: object  # the trained model (Keras CNN or reference network)


def resolve_train_steps(config, num_train_examples):
    """``config.train_steps``, or ``config.epochs`` passes over the training set in whole batches."""
    if config.train_steps:
        return config.train_steps
    return max(1, math.ceil(config.epochs * (num_train_examples // config.batch_size)))


def build_network(impl, arch, image_shape, num_classes, seed=0, dtype=None):
    """The Keras CNN or the low-level reference network for ``arch``; both return logits from ``__call__``."""
    if impl == "keras":
        from models import build_model
        return build_model(arch, image_shape, num_classes, dtype=dtype)
    if impl == "reference":
        import reference
        return reference.build_reference(arch, image_shape, num_classes, seed=seed)
    raise ValueError(f"unknown implementation '{impl}'; choose one of {', '.join(IMPLS)}")


def count_params(model):
    """Number of weights, batch-norm moving statistics included (as Keras' ``count_params``)."""
    if hasattr(model, "count_params"):
        return int(model.count_params())
    return int(sum(np.prod(v.shape) for v in model.named_weights().values()))


# A run resumed from a checkpoint must agree with it on these; budgets and intervals may change.
_RESUME_MUST_MATCH = ("dataset", "arch", "impl", "loop", "optimizer", "batch_size", "standardize")


def prepare_logdir(config, flagfile=None):
    """Creates the run directory with config.json (and flags.txt when ``flagfile`` text is given).

    Refuses a directory that holds a run unless resuming, and refuses to resume a run of another model or data,
    so no earlier run is overwritten or mixed into.
    """
    logdir = config.logdir
    config_path = os.path.join(logdir, "config.json")
    if os.path.isdir(logdir) and os.listdir(logdir):
        if not config.resume:
            raise RunError(f"--logdir {logdir} already holds a run; resume it (--resume) or choose a new --logdir")
        if os.path.exists(config_path):
            with open(config_path) as file:
                earlier = json.load(file)
            for field in _RESUME_MUST_MATCH:
                if earlier.get(field) != getattr(config, field):
                    raise RunError(f"--logdir {logdir} holds a run with --{field}={earlier.get(field)}, not "
                                   f"{getattr(config, field)}; choose a new --logdir")
    os.makedirs(logdir, exist_ok=True)
    with open(config_path, "w") as file:
        json.dump(dataclasses.asdict(config), file, indent=2)
    if flagfile is not None:
        with open(os.path.join(logdir, "flags.txt"), "w") as file:
            file.write(flagfile)


def train(config, dataset=None, strategy=None, flagfile=None):
    """Trains as ``config`` says and returns a ``TrainResult``; writes summaries, checkpoints, results.json.

    ``dataset`` (a ``data.Dataset``) and ``strategy`` replace the configured ones; ``flagfile`` is written to
    the run directory as flags.txt.
    """
    start = time.time()
    strategy = strategy or tf.distribute.get_strategy()
    prepare_logdir(config, flagfile)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    dataset = dataset or data_lib.load(config.dataset, config.data_dir, config.allow_download)
    logging.info("data: %s (%d train, %d test images)", dataset.source, len(dataset.x_train), len(dataset.x_test))
    total_steps = resolve_train_steps(config, len(dataset.x_train))
    if config.loop == "fit":
        from training.fit_loop import train_with_fit
        return train_with_fit(config, dataset, strategy, total_steps, start)

    with strategy.scope():
        model = build_network(config.impl, config.arch, dataset.image_shape, dataset.num_classes, config.seed)
        optimizer = make_optimizer(config, total_steps, model.trainable_variables)
        train_metrics = make_metrics("train")
        eval_metrics = make_metrics("eval")
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(config.logdir, "checkpoints"), max_to_keep=3)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        logging.info("resumed from %s at step %d", manager.latest_checkpoint, int(step))

    pipelines = make_pipelines(config, dataset, int(step))
    train_iterator = iter(strategy.experimental_distribute_dataset(pipelines.train))
    eval_dataset = strategy.experimental_distribute_dataset(pipelines.eval)
    per_example_loss = classification_loss(dataset.num_classes, config.label_smoothing, reduction=None)
    train_loop = loop_lib.make_train_loop(model, optimizer, per_example_loss, train_metrics, strategy,
                                          config.batch_size, config.jit_compile)
    eval_step = loop_lib.make_eval_step(model, per_example_loss, eval_metrics, strategy)
    writers = {part: tf.summary.create_file_writer(os.path.join(config.logdir, part)) for part in ("train", "eval")}

    def evaluate_and_log(at_step):
        loss, accuracy = evaluate(eval_step, eval_dataset, eval_metrics)
        write_scalars(writers["eval"], at_step, loss=loss, accuracy=accuracy)
        logging.info("step %d: test loss %.4f, test accuracy %.2f%%", at_step, loss, 100 * accuracy)
        return loss, accuracy

    progress = Progress(total_steps, int(step), config.batch_size)
    while int(step) < total_steps:
        begin = int(step)
        num_steps = min(config.steps_per_loop, total_steps - begin)
        tick = time.time()
        losses = train_loop(train_iterator, tf.constant(num_steps)).numpy()
        progress.record(num_steps, time.time() - tick)
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            raise RunError(f"loss became {losses[bad[0]]} at step {begin + bad[0] + 1}; stopped, the last good "
                           f"checkpoint in {manager.directory} is kept")
        step.assign(begin + num_steps)
        now = int(step)

        def due(every):
            return now == total_steps or (every > 0 and now // every > begin // every)

        if due(config.log_every):
            loss, accuracy = (m.result().numpy() for m in train_metrics)
            learning_rate = float(current_learning_rate(optimizer))
            write_scalars(writers["train"], now, loss=loss, accuracy=accuracy, learning_rate=learning_rate,
                          images_per_second=progress.images_per_second())
            logging.info("step %d/%d: loss %.4f, accuracy %.2f%%, lr %.3g, %s", now, total_steps, loss,
                         100 * accuracy, learning_rate, progress.describe())
            for metric in train_metrics:
                metric.reset_state()
        if config.eval_every and due(config.eval_every) and now != total_steps:
            evaluate_and_log(now)
        if due(config.checkpoint_every):
            manager.save(checkpoint_number=now)

    test_loss, test_accuracy = evaluate_and_log(int(step))
    results = dict(
        test_accuracy=float(test_accuracy), test_loss=float(test_loss), train_steps=int(step),
        wall_seconds=round(time.time() - start, 2), params=count_params(model), dataset=config.dataset,
        arch=config.arch, impl=config.impl, loop=config.loop, batch_size=config.batch_size, seed=config.seed,
        images_per_second=round(progress.images_per_second(), 1), data_source=dataset.source,
        num_replicas=strategy.num_replicas_in_sync)
    write_results(config.logdir, results)
    return TrainResult(results, model)


@dataclasses.dataclass
class Pipelines:
    train: tf.data.Dataset
    eval: tf.data.Dataset


def make_pipelines(config, dataset, start_step):
    """Training batches from ``start_step`` on, and the whole test set, preprocessed as ``config`` says."""
    mean = std = None
    if config.standardize:
        mean, std = data_lib.channel_stats(dataset.x_train)
    train_preprocess = data_lib.make_preprocess(mean, std, augment=config.augment)
    eval_preprocess = data_lib.make_preprocess(mean, std)
    return Pipelines(
        train=data_lib.train_pipeline(dataset.x_train, dataset.y_train, config.batch_size, config.seed,
                                      train_preprocess, skip_batches=start_step),
        eval=data_lib.eval_pipeline(dataset.x_test, dataset.y_test, config.eval_batch_size, eval_preprocess))


def make_optimizer(config, total_steps, variables):
    """The configured optimizer, built on ``variables`` (call inside ``strategy.scope()``)."""
    schedule = Schedule(config.lr_schedule, config.learning_rate, total_steps, config.warmup_steps,
                        config.decay_rate, config.decay_steps, config.piecewise_boundaries)
    optimizer = build_optimizer(config.optimizer, schedule, config.momentum, config.nesterov, config.weight_decay)
    exclude_from_decay(optimizer, variables)
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
