"""What happens between chunks of training steps, the same for both loops: throughput and time left, console
lines, TensorBoard summaries, evaluations, checkpoints, and the time it took to reach a target accuracy.

The console of a run: a start line (run directory, budget in steps and epochs, new or resumed), a line after the
first timed call (compilation time, time per step, time left), a progress line every ``--log_every`` steps and
at least every ``PROGRESS_SECONDS`` whatever that says, a line per evaluation, and a two-line summary at the end.
"""

import math
import os
import time
from time import monotonic

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from training import config as config_lib
from training import stopping
from training.errors import RunError
from training.loop import TTA_VIEWS
from training.parts import steps_per_epoch

# Divergence guard: a cross-entropy above DIVERGED_FACTOR x ln(classes) (the loss of a uniform guess) means the
# network predicts worse than guessing by a wide margin; a sane run's loss starts near ln(classes) and falls.
# DIVERGED_CHUNKS such chunks in a row stop the run, and no checkpoint is saved while the loss is that high, so
# the last one kept is from before the divergence.
DIVERGED_FACTOR = 10.0
DIVERGED_CHUNKS = 3
# A console line at the first chunk boundary after this many seconds without one, whatever --log_every says.
PROGRESS_SECONDS = 30.0
# Evaluations a run gets when it asks for none (default_eval_every): their cost at most this share of training.
EVAL_COST_SHARE = 0.10
# What a training image costs in forward passes of the network: the forward pass, then the backward pass through
# activations and weights (about two more).
TRAIN_PASSES_PER_IMAGE = 3
VALIDATION_WRITER = "validation"  # <run>/validation/: validation loss and accuracy at each evaluation


class Progress:
    """Throughput and time left; the first call (tracing and compilation) is left out of the rate."""

    def __init__(self, total_steps, start_step, batch_size):
        self.total_steps, self.step, self.batch_size = total_steps, start_step, batch_size
        self.calls = self.timed_steps = 0
        self.timed_seconds = 0.0
        self.first_call = None  # (steps, seconds) of this process's first call

    def record(self, num_steps, seconds):
        self.step += num_steps
        self.calls += 1
        if self.calls == 1:
            self.first_call = (num_steps, seconds)
        else:
            self.timed_steps += num_steps
            self.timed_seconds += seconds

    def images_per_second(self):
        return self.timed_steps * self.batch_size / self.timed_seconds if self.timed_seconds else 0.0

    def seconds_left(self):
        rate = self.images_per_second()
        return (self.total_steps - self.step) * self.batch_size / rate if rate else None

    def describe(self):
        left = self.seconds_left()
        if left is None:
            return "compiling"
        return f"{self.images_per_second():,.0f} images/s, {clock_text(left)} left"

    def describe_first_calls(self):
        """After the first timed call: how long compiling took and what a step takes."""
        per_step = self.timed_seconds / self.timed_steps
        steps, seconds = self.first_call
        compiling = max(0.0, seconds - steps * per_step)
        return (f"compiling took {compiling:.1f} s; then {format_seconds(per_step)} a step, "
                f"{self.images_per_second():,.0f} images/s, {clock_text(self.seconds_left())} left")


class CallLength:
    """How many steps the custom loop's next compiled call may train: at most ``steps_per_loop``, fewer when
    calls of that many would last longer than ``max_seconds`` (0: no limit), and never past the next multiple of
    one of ``intervals`` (the log, evaluation and checkpoint intervals).

    A stop signal and a console line can only come between calls, so a slow step (seconds on a CPU) must not be
    multiplied by ``steps_per_loop``. The first two calls of a process train one step each when there is a limit:
    the first traces and compiles, the second measures the time of a step. Ending calls at the intervals makes
    logs, evaluations and checkpoints happen at exact multiples of their intervals, whatever the calls' lengths.
    """

    def __init__(self, steps_per_loop, max_seconds=0.0, intervals=()):
        self.steps_per_loop, self.max_seconds = steps_per_loop, max_seconds
        self.intervals = tuple(every for every in intervals if every > 0)
        self.calls, self.seconds_per_step = 0, None

    def next_steps(self, begin, total_steps):
        """Steps of the call that starts after step ``begin`` of a run of ``total_steps``."""
        steps = min(self.steps_per_loop, total_steps - begin)
        for every in self.intervals:
            steps = min(steps, every - begin % every)
        if self.max_seconds:
            steps = min(steps, 1 if self.seconds_per_step is None else
                        max(1, int(self.max_seconds / self.seconds_per_step)))
        return steps

    def record(self, num_steps, seconds):
        """A call of ``num_steps`` steps took ``seconds``; the first call (compiling) does not count."""
        self.calls += 1
        if self.calls > 1:
            self.seconds_per_step = max(seconds, 1e-9) / num_steps  # a clock that did not tick is not 0 s


class TargetClock:
    """Training and evaluation seconds until the first evaluation at or above ``target`` test accuracy.

    Training time counts every train call from the first step of this process, compilation included;
    evaluation time is kept apart, so runs that evaluate more often are not charged for it.
    """

    def __init__(self, target, batch_size):
        self.target, self.batch_size = target, batch_size
        self.train_seconds = self.eval_seconds = 0.0
        self.reached_at = None  # (step, train seconds, eval seconds) of the first evaluation at the target

    def record(self, step, accuracy):
        if self.target and self.reached_at is None and accuracy >= self.target:
            self.reached_at = (step, self.train_seconds, self.eval_seconds)
            logging.info("reached test accuracy %.2f%% (target %.2f%%) at step %d after %.1f s of training",
                         100 * accuracy, 100 * self.target, step, self.train_seconds)
            return True
        return False

    def state(self):
        return dict(train_seconds=self.train_seconds, eval_seconds=self.eval_seconds,
                    reached_at=list(self.reached_at) if self.reached_at else None)

    def restore(self, state):
        """Continues the count of an earlier process of the same run (``state()`` as of the restored step)."""
        seconds = state["train_seconds"], state["eval_seconds"]
        reached_at = tuple(state["reached_at"]) if state["reached_at"] else None
        if not all(type(value) in (int, float) and value >= 0 for value in seconds + (reached_at or ())):
            raise ValueError(f"not a clock: {state!r}")
        self.train_seconds, self.eval_seconds = seconds
        self.reached_at = reached_at

    def results(self):
        """The results.json fields; ``None`` values when the target was not reached or not set."""
        step, train_seconds, eval_seconds = self.reached_at or (None, None, None)
        return dict(target_accuracy=self.target or None, steps_to_target=step,
                    images_to_target=None if step is None else step * self.batch_size,
                    seconds_to_target=None if train_seconds is None else round(train_seconds, 2),
                    eval_seconds_to_target=None if eval_seconds is None else round(eval_seconds, 2))


class Bookkeeper:
    """Called by a loop after each chunk of steps: logs, evaluates and checkpoints at the configured intervals.

    ``evaluate()`` returns ``(test loss, test accuracy, confusion counts or None)`` and ``evaluate_validation()``
    ``(loss, accuracy)`` on the held-out images; the loop supplies both because the custom loop and ``fit``
    evaluate differently. Intervals are in steps and round up to the loop's chunks. A console line comes at
    least every ``progress_seconds``.
    """

    def __init__(self, run, evaluate, evaluate_validation, progress_seconds=PROGRESS_SECONDS):
        config = run.config
        self.run, self.evaluate_fn, self.evaluate_validation = run, evaluate, evaluate_validation
        self.progress = Progress(run.total_steps, int(run.step), config.batch_size)
        self.clock = TargetClock(config.target_accuracy, config.batch_size)
        saved = run.run_dir.read_clock(int(run.step)) if int(run.step) else None
        # (step, test loss, test accuracy, validation loss or None, validation accuracy or None) of each
        # evaluation, kept with each checkpoint so a resumed run's results.json holds its whole learning curve;
        # None when part of it is unknown (restored from a record without it).
        self.evaluations = []
        if saved:
            self.restore(saved)
        self.stop_at_target = config.stop_at_target
        self.reached_target = False
        self.last_eval = None  # (step, loss, accuracy, validation loss, validation accuracy)
        self.loss_bound = DIVERGED_FACTOR * math.log(run.dataset.num_classes)
        self.diverged = []  # (step, mean loss) of the chunks in a row whose loss is above loss_bound
        self.steps_per_epoch = steps_per_epoch(config.batch_size, len(run.dataset.x_train))
        self.progress_seconds, self.last_line = progress_seconds, monotonic()
        self.validation_writer = chief_writer(run, VALIDATION_WRITER) if run.validation is not None else None
        if run.run_dir.chief:
            write_hparams(run.run_dir.path, recipe_hparams(config, run.total_steps))
        logging.info("%s", self.describe_start())

    @property
    def done(self):
        return int(self.run.step) >= self.run.total_steps or (self.stop_at_target and self.reached_target)

    def epoch(self, step):
        """``epoch 2.4/12`` at ``step``; empty when an epoch is not a whole batch (a tiny training set)."""
        if not self.steps_per_epoch:
            return ""
        total = self.run.total_steps / self.steps_per_epoch
        return f" (epoch {epochs_text(step / self.steps_per_epoch, total)}/{epochs_text(total)})"

    def describe_start(self):
        """The start line: where, how long, from where, and when it evaluates."""
        run, step, epoch_steps = self.run, int(self.run.step), self.steps_per_epoch
        state = f"resumed at step {step}{self.epoch(step)}" if step else "new run"
        budget = f"{run.total_steps} steps"
        if epoch_steps:
            budget += (f" = {epochs_text(run.total_steps / epoch_steps)} epochs of {epoch_steps} steps "
                       f"(batch {run.config.batch_size})")
        every, evaluations = run.eval_every, "evaluating at the end"
        if 0 < every < run.total_steps:
            in_epochs = f" ({epochs_text(every / epoch_steps)} epochs)" if epoch_steps else ""
            evaluations = f"evaluating every {every} steps{in_epochs} and at the end"
        images = f"{len(run.dataset.x_test):,} test"
        if run.validation is not None:
            images += f" and {len(run.validation[0]):,} validation"
        return f"{run.run_dir.path}: {state}; {budget}; {evaluations} ({images} images)"

    def after_steps(self, begin, now, seconds, chunk_loss, train_metrics):
        """Bookkeeping after steps ``begin + 1 .. now`` took ``seconds`` at a mean loss of ``chunk_loss``;
        ``train_metrics()`` returns the mean training loss and accuracy since the last log and starts the next."""
        run, config = self.run, self.run.config
        self.progress.record(now - begin, seconds)
        self.clock.train_seconds += seconds
        self.check_divergence(now, chunk_loss)

        def due(every):
            return now == run.total_steps or (every > 0 and now // every > begin // every)

        # The rate the next update uses, at every chunk: a warmup of a few chunks is drawn, not jumped.
        with run.writers["train"].as_default(step=now):
            tf.summary.scalar("learning_rate", float(current_learning_rate(run.parts.optimizer)))
        if self.progress.calls == 2:
            logging.info("step %d/%d%s: %s", now, run.total_steps, self.epoch(now),
                         self.progress.describe_first_calls())
            self.last_line = monotonic()
        if due(config.log_every):
            self.log_training(now, *train_metrics())
        else:
            self.report_if_quiet(now, chunk_loss)
        if run.eval_every and due(run.eval_every) and now != run.total_steps:
            self.evaluate(now)
        saved = False
        if due(config.checkpoint_every) or self.done:
            if self.diverged:
                logging.warning("step %d: no checkpoint while the training loss (%.4g) is above %.4g", now,
                                chunk_loss, self.loss_bound)
            else:
                self.save(now)
                saved = True
        stop = run.stop_request
        if stop is not None and stop.signal_name and not self.done:
            if not saved and not self.diverged:
                self.save(now)
            then = ("and the same command resumes from it" if run.checkpoints.latest_checkpoint else
                    "the same command starts from step 0")
            raise stopping.Stopped(f"stopped by {stop.signal_name} after step {now}{self.epoch(now)}; "
                                   f"{kept_checkpoint(run.checkpoints)}, {then}")

    def report_if_quiet(self, step, loss):
        """A progress line when none has come for ``progress_seconds``: at most that long without news."""
        if monotonic() - self.last_line < self.progress_seconds:
            return
        learning_rate = float(current_learning_rate(self.run.parts.optimizer))
        logging.info("step %d/%d%s: loss %.4f, lr %.3g, %s", step, self.run.total_steps, self.epoch(step), loss,
                     learning_rate, self.progress.describe())
        self.last_line = monotonic()

    def save(self, step):
        """A checkpoint at ``step``, and the run's clock and evaluations as of it."""
        self.run.checkpoints.save(checkpoint_number=step)
        self.run.run_dir.write_clock(step, dict(self.clock.state(), evaluations=self.evaluations))

    def restore(self, saved):
        """Continues the clock and the evaluations recorded with the restored checkpoint; a record this code
        cannot read (a run of older code, an edited file) starts them again with a warning, as the run goes on."""
        try:
            self.clock.restore(saved)
            # None: a record of older code, which kept no evaluations; the run's curve is then unknown.
            recorded = saved.get("evaluations")
            self.evaluations = None if recorded is None else valid_evaluations(recorded, int(self.run.step))
            if recorded is None:
                logging.info("clock.json's record of step %d keeps no evaluations (older code): results.json's "
                             "learning curve will be null", int(self.run.step))
        except (TypeError, ValueError, KeyError, AttributeError):
            logging.warning("clock.json's record of step %d is unreadable; the time and evaluations before this "
                            "start are not counted", int(self.run.step))
            self.clock = TargetClock(self.clock.target, self.clock.batch_size)
            self.evaluations = None

    def check_divergence(self, step, chunk_loss):
        if chunk_loss <= self.loss_bound:
            self.diverged = []
            return
        self.diverged.append((step, chunk_loss))
        if len(self.diverged) >= DIVERGED_CHUNKS:
            losses = ", ".join(f"{loss:.4g} (step {at})" for at, loss in self.diverged)
            raise RunError(f"training diverged: mean loss {losses}, above {DIVERGED_FACTOR:g} x ln(classes) = "
                           f"{self.loss_bound:.4g}; stopped, {kept_checkpoint(self.run.checkpoints)} (lower "
                           f"--learning_rate)")

    def log_training(self, step, loss, accuracy):
        optimizer = self.run.parts.optimizer
        learning_rate = float(current_learning_rate(optimizer))
        scalars = dict(loss=loss, accuracy=accuracy, images_per_second=self.progress.images_per_second())
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            scalars["loss_scale"] = float(optimizer.dynamic_scale.numpy())
        write_scalars(self.run.writers["train"], step, **scalars)
        logging.info("step %d/%d%s: loss %.4f, accuracy %.2f%%, lr %.3g, %s", step, self.run.total_steps,
                     self.epoch(step), loss, 100 * accuracy, learning_rate, self.progress.describe())
        self.last_line = monotonic()

    def evaluate(self, step):
        """Evaluates the test set (and the validation set, if any) at ``step``: scalars, the confusion matrix
        image, a console line, and the target's clock."""
        tick = time.time()
        loss, accuracy, confusion = self.evaluate_fn()
        validation = self.evaluate_validation() if self.run.validation is not None else (None, None)
        self.clock.eval_seconds += time.time() - tick
        write_scalars(self.run.writers["eval"], step, loss=loss, accuracy=accuracy)
        if confusion is not None:
            with self.run.writers["eval"].as_default(step=step):
                tf.summary.image("confusion_matrix", confusion_image(confusion), description=CONFUSION_DESCRIPTION)
        line = f"step {step}{self.epoch(step)}: test loss {loss:.4f}, test accuracy {100 * accuracy:.2f}%"
        if validation[0] is not None:
            write_scalars(self.validation_writer, step, loss=validation[0], accuracy=validation[1])
            line += (f"; validation loss {validation[0]:.4f}, validation accuracy {100 * validation[1]:.2f}% "
                     f"({len(self.run.validation[0]):,} held-out images)")
        logging.info("%s", line)
        self.reached_target |= self.clock.record(step, accuracy)
        self.last_eval = (step, float(loss), float(accuracy), *(None if v is None else float(v) for v in validation))
        if self.evaluations is not None:
            self.evaluations.append(list(self.last_eval))

    def finish(self):
        """The final evaluation (reused when the last chunk ended with one) and the loop's figures."""
        step = int(self.run.step)
        if self.last_eval is None or self.last_eval[0] != step:
            self.evaluate(step)
        _, loss, accuracy, validation_loss, validation_accuracy = self.last_eval
        return dict(test_loss=loss, test_accuracy=accuracy, validation_loss=validation_loss,
                    validation_accuracy=validation_accuracy, images_per_second=self.progress.images_per_second(),
                    train_seconds=round(self.clock.train_seconds, 2), **self.clock.results(),
                    evaluations=evaluation_records(self.evaluations, self.run.config.batch_size))


EVALUATION_FIELDS = ("step", "test_loss", "test_accuracy", "validation_loss", "validation_accuracy")


def valid_evaluations(saved, step):
    """The evaluations recorded with the checkpoint of ``step`` as lists of ``EVALUATION_FIELDS``; ValueError
    or TypeError when they are not a list of such records at increasing steps up to ``step``."""
    evaluations = []
    for record in saved:
        if not isinstance(record, list) or len(record) != len(EVALUATION_FIELDS):
            raise ValueError(f"not an evaluation record: {record!r}")
        at, *values = record
        if type(at) is not int or not 0 <= at <= step or (evaluations and at <= evaluations[-1][0]):
            raise ValueError(f"evaluation step {at!r} out of order")
        if not all(v is None or type(v) in (int, float) for v in values):
            raise ValueError(f"not a number: {record!r}")
        evaluations.append([at, *values])
    return evaluations


def evaluation_records(evaluations, batch_size):
    """results.json's ``evaluations``: one dict per evaluation, in step order, with the images trained on; None
    when the run's evaluations are not all known."""
    if evaluations is None:
        return None
    return [dict(zip(EVALUATION_FIELDS, record), images=record[0] * batch_size) for record in evaluations]


def default_eval_every(config, num_train_examples, num_eval_examples):
    """Steps between evaluations for a run that asks for none: every k epochs, k the fewest whole epochs whose
    training costs at least 1 / EVAL_COST_SHARE (10) times an evaluation (a run shorter than that is evaluated
    at its end only, as every run is).

    An evaluation costs one forward pass per test and validation image and test-time view; an epoch of training
    TRAIN_PASSES_PER_IMAGE (3) per training image. Full MNIST (60,000 / 10,000) and CIFAR (50,000 / 10,000) are
    evaluated every epoch (5.6% and 6.7%); the bundled MNIST subset (10,000 / 10,000) every 4 epochs;
    six-view test-time augmentation on CIFAR-10 every 5.
    """
    epoch_steps = steps_per_epoch(config.batch_size, num_train_examples)
    if not epoch_steps:
        return 0
    eval_passes = num_eval_examples * TTA_VIEWS[config.test_time_augmentation]
    epoch_passes = TRAIN_PASSES_PER_IMAGE * epoch_steps * config.batch_size
    return math.ceil(eval_passes / (EVAL_COST_SHARE * epoch_passes)) * epoch_steps


def summary_lines(results, results_path):
    """The two lines a run ends with: what it reached and at what cost, then where the figures are."""
    first = (f"test accuracy {100 * results['test_accuracy']:.2f}%, loss {results['test_loss']:.4f}; "
             f"{results['train_steps']:,} steps in {duration_text(results['wall_seconds'])} "
             f"({duration_text(results['train_seconds'])} training), {results['images_per_second']:,.0f} images/s")
    second = f"results: {results_path}"
    if results.get("validation_accuracy") is not None:
        second += f" (validation accuracy {100 * results['validation_accuracy']:.2f}%)"
    return first, second


# What the confusion matrix image shows, for TensorBoard's image card.
CONFUSION_DESCRIPTION = ("Rows: true class, columns: predicted class, both from class 0 at the top left. Each cell's "
                         "shade is the square root of the share of the row's test images predicted so (sqrt, so "
                         "that 1% mistakes show): blue on the diagonal (correct), red off it (mistakes).")
CONFUSION_PIXELS = 192  # about this many pixels a side, whatever the number of classes (at least 3 per cell)


def confusion_image(counts):
    """``counts`` (true class, predicted class) as a (1, H, W, 3) uint8 image (``CONFUSION_DESCRIPTION``)."""
    counts = np.asarray(counts, np.float64)
    classes = len(counts)
    shares = np.sqrt(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1))
    colour = np.where(np.eye(classes, dtype=bool)[..., None], [0, 90, 200], [200, 30, 30])  # (C, C, 3)
    cells = 255 - shares[..., None] * (255 - colour)
    cell = max(3, CONFUSION_PIXELS // classes)
    image = np.full((classes * cell + 1, classes * cell + 1, 3), 220.0)  # grid lines between cells
    for row in range(classes):
        for column in range(classes):
            image[row * cell + 1:(row + 1) * cell, column * cell + 1:(column + 1) * cell] = cells[row, column]
    return image.round().astype(np.uint8)[None]


def recipe_hparams(config, total_steps):
    """A run's recipe as TensorBoard hparams: every setting that changes what it computes, its budget in steps
    and its test-time augmentation; not the seed, so that the seeds of one recipe fall in one group."""
    names = [field.name for field in config_lib.fields()
             if field.metadata["resume"] == config_lib.FIXED and field.name != "seed"]
    values = {name: getattr(config, name) for name in names}
    values.update(train_steps=total_steps, test_time_augmentation=config.test_time_augmentation)
    return {name: value if isinstance(value, (bool, int, float, str)) else ",".join(map(str, value))
            for name, value in values.items()}


def write_hparams(run_path, hparams):
    """Writes ``hparams`` as one HParams session at the run directory's top, so that TensorBoard's HParams
    dashboard lists the run with every scalar of its train/, eval/ and validation/ writers as metrics. The group
    (trial id) is a hash of the hparams: the seeds of one recipe share it."""
    from tensorboard.plugins.hparams import api as hp

    writer = tf.summary.create_file_writer(run_path)
    with writer.as_default():
        hp.hparams(hparams)
    writer.close()


def chief_writer(run, name):
    """A summary writer for ``<run>/<name>/``; a no-op writer on a worker that is not the chief."""
    if not run.run_dir.chief:
        return tf.summary.create_noop_writer()
    return tf.summary.create_file_writer(os.path.join(run.run_dir.path, name))


def epochs_text(epochs, total=None):
    """``12``, ``2.4``, ``0.26``: a whole number as such, else one decimal, two below 2 epochs (of ``total`` when
    given, so that a count and its total read alike)."""
    total = epochs if total is None else total
    if total == epochs and epochs == round(epochs):
        return f"{epochs:.0f}"
    return f"{epochs:.{2 if total < 2 else 1}f}"


def clock_text(seconds):
    """``2:05`` (minutes and seconds), or ``1:02:05`` from an hour up."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def duration_text(seconds):
    """``4.2 s`` under a minute, else ``clock_text``."""
    return f"{seconds:.1f} s" if seconds < 60 else clock_text(seconds)


def format_seconds(seconds):
    return f"{seconds * 1000:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def kept_checkpoint(manager):
    """What a stopped run leaves: its last good checkpoint, or none."""
    if manager.latest_checkpoint:
        return f"the last good checkpoint {manager.latest_checkpoint} is kept"
    return "no checkpoint had been saved yet"


def current_learning_rate(optimizer):
    rate = optimizer.learning_rate
    return rate(optimizer.iterations) if callable(rate) else rate


def write_scalars(writer, step, **scalars):
    with writer.as_default(step=step):
        for name, value in scalars.items():
            tf.summary.scalar(name, value)
    writer.flush()

