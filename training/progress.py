"""What happens between chunks of training steps, the same for both loops: throughput and time left, console
lines, TensorBoard scalars, evaluations, checkpoints, and the time it took to reach a target accuracy.
"""

import math
import time

import keras
import tensorflow as tf
from absl import logging

from training.errors import RunError

# Divergence guard: a cross-entropy above DIVERGED_FACTOR x ln(classes) (the loss of a uniform guess) means the
# network predicts worse than guessing by a wide margin; a sane run's loss starts near ln(classes) and falls.
# DIVERGED_CHUNKS such chunks in a row stop the run, and no checkpoint is saved while the loss is that high, so
# the last one kept is from before the divergence.
DIVERGED_FACTOR = 10.0
DIVERGED_CHUNKS = 3


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
        self.train_seconds, self.eval_seconds = state["train_seconds"], state["eval_seconds"]
        self.reached_at = tuple(state["reached_at"]) if state["reached_at"] else None

    def results(self):
        """The results.json fields; ``None`` values when the target was not reached or not set."""
        step, train_seconds, eval_seconds = self.reached_at or (None, None, None)
        return dict(target_accuracy=self.target or None, steps_to_target=step,
                    images_to_target=None if step is None else step * self.batch_size,
                    seconds_to_target=None if train_seconds is None else round(train_seconds, 2),
                    eval_seconds_to_target=None if eval_seconds is None else round(eval_seconds, 2))


class Bookkeeper:
    """Called by a loop after each chunk of steps: logs, evaluates and checkpoints at the configured intervals.

    ``evaluate()`` returns ``(test loss, test accuracy)`` and ``evaluate_validation(x, y)`` the same on held-out
    arrays; the loop supplies both because the custom loop and ``fit`` evaluate differently. Intervals are in
    steps and round up to the loop's chunks.
    """

    def __init__(self, run, evaluate, evaluate_validation):
        config = run.config
        self.run, self.evaluate_fn, self.evaluate_validation = run, evaluate, evaluate_validation
        self.progress = Progress(run.total_steps, int(run.step), config.batch_size)
        self.clock = TargetClock(config.target_accuracy, config.batch_size)
        saved_clock = run.run_dir.read_clock(int(run.step)) if int(run.step) else None
        if saved_clock:
            self.clock.restore(saved_clock)
        self.stop_at_target = config.stop_at_target
        self.reached_target = False
        self.last_eval = None  # (step, loss, accuracy)
        self.loss_bound = DIVERGED_FACTOR * math.log(run.dataset.num_classes)
        self.diverged = []  # (step, mean loss) of the chunks in a row whose loss is above loss_bound

    @property
    def done(self):
        return int(self.run.step) >= self.run.total_steps or (self.stop_at_target and self.reached_target)

    def after_steps(self, begin, now, seconds, chunk_loss, train_metrics):
        """Bookkeeping after steps ``begin + 1 .. now`` took ``seconds`` at a mean loss of ``chunk_loss``;
        ``train_metrics()`` returns the mean training loss and accuracy since the last log and starts the next."""
        run, config = self.run, self.run.config
        self.progress.record(now - begin, seconds)
        self.clock.train_seconds += seconds
        self.check_divergence(now, chunk_loss)

        def due(every):
            return now == run.total_steps or (every > 0 and now // every > begin // every)

        if due(config.log_every):
            self.log_training(now, *train_metrics())
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
            logging.warning("%s: stopped after step %d; %s", stop.signal_name, now, kept_checkpoint(run.checkpoints))
            raise KeyboardInterrupt

    def save(self, step):
        """A checkpoint at ``step``, and the run's clock as of it."""
        self.run.checkpoints.save(checkpoint_number=step)
        self.run.run_dir.write_clock(step, self.clock.state())

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
        scalars = dict(loss=loss, accuracy=accuracy, learning_rate=learning_rate,
                       images_per_second=self.progress.images_per_second())
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            scalars["loss_scale"] = float(optimizer.dynamic_scale.numpy())
        write_scalars(self.run.writers["train"], step, **scalars)
        logging.info("step %d/%d: loss %.4f, accuracy %.2f%%, lr %.3g, %s", step, self.run.total_steps, loss,
                     100 * accuracy, learning_rate, self.progress.describe())

    def evaluate(self, step):
        tick = time.time()
        loss, accuracy = self.evaluate_fn()
        self.clock.eval_seconds += time.time() - tick
        write_scalars(self.run.writers["eval"], step, loss=loss, accuracy=accuracy)
        logging.info("step %d: test loss %.4f, test accuracy %.2f%%", step, loss, 100 * accuracy)
        self.reached_target |= self.clock.record(step, accuracy)
        self.last_eval = (step, loss, accuracy)
        return loss, accuracy

    def finish(self):
        """The final evaluation (reused when the last chunk ended with one) and the loop's figures."""
        step = int(self.run.step)
        if self.last_eval is None or self.last_eval[0] != step:
            self.evaluate(step)
        _, loss, accuracy = self.last_eval
        validation_loss = validation_accuracy = None
        if self.run.validation is not None:
            validation_loss, validation_accuracy = self.evaluate_validation(*self.run.validation)
            logging.info("step %d: validation loss %.4f, validation accuracy %.2f%% (%d held-out images)", step,
                         validation_loss, 100 * validation_accuracy, len(self.run.validation[0]))
        return dict(test_loss=loss, test_accuracy=accuracy, validation_loss=validation_loss,
                    validation_accuracy=validation_accuracy, images_per_second=self.progress.images_per_second(),
                    train_seconds=round(self.clock.train_seconds, 2), **self.clock.results())


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

