"""``train(config)``: one training run from a ``TrainConfig``, written to its run directory.

The story: strategy -> run directory checked -> data -> parts built -> checkpoint restored -> run directory
prepared -> the configured loop trains -> results.json. Data and strategy can be passed in, so tests run the
real thing on tiny arrays.
"""

import dataclasses
import math
import time

import keras
import tensorflow as tf
from absl import logging

from training import custom_loop, distribute, fit_loop, numerics, stopping
from training import data as data_lib
from training.config import VALIDATION_SPLIT_SEED
from training.errors import RunError
from training.parts import Run, build_parts, steps_per_epoch
from training.progress import default_eval_every
from training.rundir import RunDir

__all__ = ["RunError", "TrainResult", "train"]

# The loops a run can be trained by (``--loop``): name -> ``train(run) -> figures``.
LOOPS = {"custom": custom_loop.train, "fit": fit_loop.train}


@dataclasses.dataclass
class TrainResult:
    results: dict  # what results.json holds (also on workers that do not write it)
    model: object  # the trained network (a models.network.Network)


def train(config, dataset=None, strategy=None, flagfile=None):
    """Trains as ``config`` says and returns a ``TrainResult``; writes summaries, checkpoints, results.json.

    ``dataset`` (a ``data.Dataset``) and ``strategy`` replace the configured ones; ``flagfile`` is written to
    the run directory as flags.txt. Under multi-worker training only the chief keeps what it writes.
    """
    start = time.time()
    strategy = strategy or distribute.make_strategy(config.strategy, startup_timeout=config.startup_timeout)
    check_batch_sizes(config, strategy.num_replicas_in_sync)
    run_dir = RunDir(config.logdir, chief=distribute.is_chief(strategy), worker_name=distribute.task_name(strategy))
    failed = True
    try:
        run_dir.lock()
        # A resumed run keeps the numerics its first start chose (--precision=auto), before its settings are compared.
        choice = numerics.from_saved_run(config, run_dir.read_saved() if run_dir.holds_run() else None)
        if choice:
            config = choice.applied(config)
        if run_dir.chief:
            run_dir.check(config)
        config.check_on_disk()
        dataset = dataset or data_lib.load_for(config)
        data = data_lib.fingerprint(dataset)
        run_dir.check_data(config, data)
        distribute.check_workers_agree(strategy, config, data)  # before the first collective of the run
        validation = None
        if config.validation_split:
            dataset, validation = data_lib.split_validation(dataset, config.validation_split,
                                                            VALIDATION_SPLIT_SEED)
        logging.info("data: %s (%d train, %d test images)", dataset.source, len(dataset.x_train),
                     len(dataset.x_test))
        total_steps = resolve_train_steps(config, len(dataset.x_train))
        check_profile_range(config, total_steps)
        if config.precision == numerics.AUTO:
            choice = numerics.choose(config, dataset, strategy, total_steps)
            config = choice.applied(config)
        if choice:
            logging.info("%s", choice.describe())
        keras.utils.set_random_seed(config.seed)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        with strategy.scope():
            parts = build_parts(config, dataset, total_steps)
        # The step counter lives on the host, outside the strategy: one plain variable whatever the strategy.
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        state = dict(model=parts.network.checkpoint_state(), optimizer=parts.optimizer, step=step)
        state.update({key: hook.checkpoint_state() for key, hook in parts.step_hooks.items()})
        checkpoint = tf.train.Checkpoint(**state)
        run_dir.restore_latest(checkpoint, step)
        finished = run_dir.finished_results(int(step), total_steps)
        if finished is not None:  # the command of a finished run, run again: nothing to train or write
            failed = False
            return TrainResult(finished, parts.network)
        # Only now: a failed start leaves no run behind.
        run_dir.prepare(config, flagfile, from_step=int(step), numerics=choice.record() if choice else None,
                        data=data, standardization=parts.standardization)
        # A signal while the loop trains stops it after its current chunk, with a checkpoint. Not across workers:
        # a checkpoint is a collective save, and a signal reaches one worker only.
        # A full disk under TensorFlow's own writes (checkpoints, summaries) stops in one line, as under the run's.
        with run_dir.tensorflow_writes(), stopping.stop_requests(enabled=config.strategy != "multi_worker") as \
                stop_request:
            run = Run(config, dataset, strategy, parts, step, total_steps, run_dir.own_dir,
                      run_dir.checkpoint_manager(checkpoint), run_dir.summary_writers(), run_dir,
                      eval_every=resolve_eval_every(config, len(dataset.x_train), len(dataset.x_test) + (
                          len(validation[0]) if validation is not None else 0)), validation=validation,
                      stop_request=stop_request)
            figures = LOOPS[config.loop](run)
        results = run_results(config, dataset, strategy, parts.network, int(step), start, figures)
        run_dir.write_results(results)
        failed = False
    finally:
        run_dir.close(failed)
    return TrainResult(results, parts.network)


def run_results(config, dataset, strategy, network, train_steps, start, figures):
    """What results.json records of a finished run: the loop's figures and what produced them."""
    return dict(
        figures, test_accuracy=float(figures["test_accuracy"]), test_loss=float(figures["test_loss"]),
        images_per_second=round(figures["images_per_second"], 1), train_steps=train_steps,
        wall_seconds=round(time.time() - start, 2), params=int(network.count_params()), dataset=config.dataset,
        arch=config.arch, impl=config.impl, loop=config.loop, batch_size=config.batch_size, seed=config.seed,
        data_source=dataset.source, precision=config.precision, strategy=type(strategy).__name__,
        num_replicas=strategy.num_replicas_in_sync)


def resolve_train_steps(config, num_train_examples):
    """``config.train_steps``, or ``config.epochs`` passes over the training set in whole batches."""
    if config.train_steps:
        return config.train_steps
    return max(1, math.ceil(config.epochs * steps_per_epoch(config.batch_size, num_train_examples)))


def resolve_eval_every(config, num_train_examples, num_eval_examples=0):
    """Steps between evaluations: ``config.eval_every``, or ``config.eval_every_epochs`` of whole batches, so
    runs with different batch sizes are evaluated after the same numbers of images. Neither set, nor a target
    accuracy (whose time depends on where evaluations fall): ``progress.default_eval_every``."""
    if config.eval_every_epochs:
        return max(1, round(config.eval_every_epochs * steps_per_epoch(config.batch_size, num_train_examples)))
    if config.eval_every or config.target_accuracy:
        return config.eval_every
    return default_eval_every(config, num_train_examples, num_eval_examples)


def check_profile_range(config, total_steps):
    """Refuses a profiled range that ends after the run's last step: its trace would never be written."""
    if config.profile_steps and config.profile_steps[1] > total_steps:
        first, last = config.profile_steps
        raise RunError(f"--profile_steps={first},{last} ends after the run's last step {total_steps}; profile steps "
                       f"up to {total_steps}")


def check_batch_sizes(config, num_replicas):
    for name in ("batch_size", "eval_batch_size"):
        if getattr(config, name) % num_replicas:
            raise RunError(f"--{name}={getattr(config, name)} does not divide by the {num_replicas} replicas "
                           f"of the strategy; use a multiple of {num_replicas}")
