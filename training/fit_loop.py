"""``--loop=fit``: the same model, data, optimizer and run directory, trained by Keras ``compile``/``fit``.

It exists as a cross-check of the custom loop: same initial weights (same seed), same batches in the same
order, same loss and optimizer, so the two should agree to rounding.
"""

import math
import os
import time

import keras
import tensorflow as tf

from models.network import build_network
from training import data as data_lib
from training import trainer
from training.losses import classification_loss


class _RunDirectoryCallback(keras.callbacks.Callback):
    """Writes train/ scalars, checkpoints and (optionally) test-set evaluations at the end of each chunk."""

    def __init__(self, config, total_steps, manager, step, writers, evaluate_fn):
        super().__init__()
        self.config, self.total_steps = config, total_steps
        self.manager, self.step, self.writers = manager, step, writers
        self.evaluate_fn = evaluate_fn
        self.progress = trainer.Progress(total_steps, int(step), config.batch_size)
        self.tick = None

    def on_train_batch_end(self, batch, logs=None):
        # Raise rather than stop (as TerminateOnNaN does): on_epoch_end would still save the bad weights.
        # logs["loss"] is a running mean, so with steps_per_execution > 1 the step named is the last of its group.
        if not math.isfinite(logs["loss"]):
            raise trainer.RunError(f"loss became {logs['loss']} at step {int(self.model.optimizer.iterations)}; "
                                   f"stopped, the last good checkpoint in {self.manager.directory} is kept")

    def on_epoch_begin(self, epoch, logs=None):
        self.tick = time.time()

    def on_epoch_end(self, epoch, logs=None):
        begin = int(self.step)
        now = int(self.model.optimizer.iterations)
        self.step.assign(now)
        self.progress.record(now - begin, time.time() - self.tick)
        learning_rate = float(trainer.current_learning_rate(self.model.optimizer))
        trainer.write_scalars(self.writers["train"], now, loss=logs["loss"], accuracy=logs["accuracy"],
                              learning_rate=learning_rate, images_per_second=self.progress.images_per_second())
        if self.config.eval_every and now // self.config.eval_every > begin // self.config.eval_every:
            self.evaluate_fn(now)
        if now == self.total_steps or now // self.config.checkpoint_every > begin // self.config.checkpoint_every:
            self.manager.save(checkpoint_number=now)


def train_with_fit(config, dataset, strategy, total_steps, start):
    """Trains a Keras model with ``fit`` in chunks of ``config.log_every`` steps; returns a ``TrainResult``."""
    with strategy.scope():
        model = build_network("keras", config.arch, dataset.image_shape, dataset.num_classes, config.seed,
                                      config.precision)
        optimizer = trainer.make_optimizer(config, total_steps, model.trainable_variables)
        model.compile(optimizer=optimizer,
                      loss=classification_loss(dataset.num_classes, config.label_smoothing),
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                      steps_per_execution=config.steps_per_loop, jit_compile=config.jit_compile)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = tf.train.Checkpoint(model=model.checkpoint_state(), optimizer=optimizer, step=step)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(config.logdir, "checkpoints"), max_to_keep=3)
    trainer.restore_latest(checkpoint, config.logdir, step)
    train_preprocess, eval_preprocess = trainer.make_preprocessors(config, dataset)
    eval_pipeline = data_lib.eval_pipeline(dataset.x_test, dataset.y_test, config.eval_batch_size, eval_preprocess)
    writers = {part: tf.summary.create_file_writer(os.path.join(config.logdir, part)) for part in ("train", "eval")}

    def evaluate_and_log(at_step):
        loss, accuracy = model.evaluate(eval_pipeline, verbose=0)
        trainer.write_scalars(writers["eval"], at_step, loss=loss, accuracy=accuracy)
        return loss, accuracy

    callback = _RunDirectoryCallback(config, total_steps, manager, step, writers, evaluate_and_log)
    # One Keras "epoch" is one chunk of log_every steps; a shorter last chunk gets a fit call of its own, on a
    # pipeline that starts at the batch the custom loop would be at.
    while int(step) < total_steps:
        chunk = min(config.log_every, total_steps - int(step))
        train_pipeline = data_lib.train_pipeline(dataset.x_train, dataset.y_train, config.batch_size, config.seed,
                                                 train_preprocess, skip_batches=int(step))
        model.fit(train_pipeline, epochs=(total_steps - int(step)) // chunk, steps_per_epoch=chunk,
                  callbacks=[callback], verbose=0, shuffle=False)
    test_loss, test_accuracy = evaluate_and_log(int(step))
    results = trainer.run_results(config, dataset, strategy, model, int(step), start, test_loss, test_accuracy,
                                  callback.progress.images_per_second())
    trainer.write_results(config.logdir, results)
    return trainer.TrainResult(results, model)
