"""``--loop=fit``: the same run trained by Keras ``compile``/``fit``, as a cross-check of the custom loop.

Same parts (network, optimizer, loss), same batches in the same order, same run directory and bookkeeping, so
the two should agree to rounding.
"""

import math
import time

import keras

from training import pipeline
from training.errors import RunError
from training.progress import Bookkeeper, kept_checkpoint


class _BookkeepingCallback(keras.callbacks.Callback):
    """Hands each chunk of ``log_every`` steps (one Keras "epoch") to the run's ``Bookkeeper``."""

    def __init__(self, run, book):
        super().__init__()
        self.run, self.book = run, book
        self.tick = None

    def on_train_batch_end(self, batch, logs=None):
        # Raise rather than stop (as TerminateOnNaN does): on_epoch_end would still save the bad weights.
        # logs["loss"] is a running mean, so with steps_per_execution > 1 the step named is the last of its group.
        if not math.isfinite(logs["loss"]):
            raise RunError(f"loss became {logs['loss']} at step {int(self.model.optimizer.iterations)}; stopped, "
                           f"{kept_checkpoint(self.run.checkpoints)}")
        # A chunk of log_every steps can last long: a console line at least every PROGRESS_SECONDS within it.
        self.book.report_if_quiet(int(self.model.optimizer.iterations), logs["loss"])

    def on_epoch_begin(self, epoch, logs=None):
        self.tick = time.time()

    def on_epoch_end(self, epoch, logs=None):
        begin, now = int(self.run.step), int(self.model.optimizer.iterations)
        self.run.step.assign(now)
        self.book.after_steps(begin, now, time.time() - self.tick, logs["loss"],
                              lambda: (logs["loss"], logs["accuracy"]))
        if self.book.done:
            self.model.stop_training = True


def train(run):
    """Trains ``run`` (a ``parts.Run``, Keras implementation) with ``fit`` in chunks of ``log_every`` steps."""
    config, parts, dataset = run.config, run.parts, run.dataset
    model = parts.network
    with run.strategy.scope():
        model.compile(optimizer=parts.optimizer, loss=parts.loss,
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                      steps_per_execution=config.steps_per_loop, jit_compile=config.jit_compile)
    def batches_of(x, y):
        return pipeline.eval_pipeline(x, y, config.eval_batch_size, parts.eval_preprocess)

    test_batches = batches_of(dataset.x_test, dataset.y_test)  # built once, evaluated at every interval
    validation_batches = batches_of(*run.validation) if run.validation is not None else None
    # Keras' evaluate gives no predictions to count a confusion matrix from (a second pass would double the cost).
    book = Bookkeeper(run, evaluate=lambda: (*model.evaluate(test_batches, verbose=0), None),
                      evaluate_validation=lambda: tuple(model.evaluate(validation_batches, verbose=0)))
    callback = _BookkeepingCallback(run, book)
    # One Keras "epoch" is one chunk of log_every steps; a shorter last chunk gets a fit call of its own, on a
    # pipeline that starts at the batch the custom loop would be at.
    while not book.done:
        chunk = min(config.log_every, run.total_steps - int(run.step))
        train_batches = pipeline.train_pipeline(dataset.x_train, dataset.y_train, config.batch_size, config.seed,
                                                parts.train_preprocess, skip_batches=int(run.step))
        model.fit(train_batches, epochs=(run.total_steps - int(run.step)) // chunk, steps_per_epoch=chunk,
                  callbacks=[callback], verbose=0, shuffle=False)
    return book.finish()
