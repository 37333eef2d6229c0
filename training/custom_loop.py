"""``--loop=custom``: the compiled multi-step train function of ``training/loop.py`` driven chunk by chunk."""

import contextlib
import time

import numpy as np
import tensorflow as tf

from training import loop as loop_lib
from training import parts as parts_lib
from training.errors import RunError
from training.profiling import StepProfiler
from training.progress import Bookkeeper, CallLength, kept_checkpoint


def train(run):
    """Trains ``run`` (a ``parts.Run``) from its restored step to its budget; returns the loop's figures."""
    config, parts = run.config, run.parts
    train_iterator = iter(parts_lib.distributed_train_batches(run, int(run.step)))
    test_batches = parts_lib.distributed_eval_batches(run, run.dataset.x_test, run.dataset.y_test)
    train_loop = loop_lib.make_train_loop(parts.network, parts.optimizer, parts.per_example_loss,
                                          parts.train_metrics, run.strategy, config.batch_size, config.jit_compile,
                                          parts.gradient_scales, tuple(parts.step_hooks.values()))
    validation_batches = (parts_lib.distributed_eval_batches(run, *run.validation) if run.validation is not None
                          else None)
    with run.strategy.scope():
        confusion = loop_lib.ConfusionCounts(run.dataset.num_classes)
    eval_step = loop_lib.make_eval_step(parts.network, parts.per_example_loss, parts.eval_metrics, run.strategy,
                                        config.test_time_augmentation, confusion)
    book = Bookkeeper(run, evaluate=lambda: (*evaluate(eval_step, test_batches, parts.eval_metrics, confusion),
                                             confusion.result().numpy()),
                      evaluate_validation=lambda: evaluate(eval_step, validation_batches, parts.eval_metrics,
                                                           confusion))
    profiler = StepProfiler(run.logdir, *config.profile_steps) if config.profile_steps else None
    # Workers of a multi-worker run must make calls of the same lengths, and each would time its own: no limit.
    max_seconds = 0.0 if config.strategy == "multi_worker" else config.max_seconds_per_loop
    call_length = CallLength(config.steps_per_loop, max_seconds,
                             (config.log_every, run.eval_every, config.checkpoint_every))

    first_step = int(run.step)
    while not book.done:
        begin = int(run.step)
        num_steps = call_length.next_steps(begin, run.total_steps)
        if profiler:
            num_steps = profiler.steps_before_boundary(begin, num_steps)
        # A profiled step (and the one before, which traces that call) runs unrolled: see make_train_loop.
        steps = num_steps if profiler and profiler.runs_alone(begin + 1) else tf.constant(num_steps)
        tick = time.time()
        # The first call traces the train step: its graph goes to TensorBoard's Graphs tab (not beside a
        # profile, whose own trace holds the steps).
        graph = traced_graph(run.writers["train"], begin) if begin == first_step and not profiler else None
        with profiler.around(begin + 1) if profiler else graph or contextlib.nullcontext():
            losses = train_loop(train_iterator, steps).numpy()
        seconds = time.time() - tick
        call_length.record(num_steps, seconds)
        check_finite(losses, begin, run.checkpoints)
        run.step.assign(begin + num_steps)
        book.after_steps(begin, begin + num_steps, seconds, float(np.mean(losses)),
                         lambda: read_and_reset(parts.train_metrics))
    return book.finish()


@contextlib.contextmanager
def traced_graph(writer, step):
    """Records the graphs TensorFlow traces in the block and writes them to ``writer`` as ``train_step``."""
    tf.summary.trace_on(graph=True, profiler=False)
    try:
        yield
    finally:
        with writer.as_default():
            tf.summary.trace_export(name="train_step", step=step)


def evaluate(eval_step, test_batches, metrics, confusion):
    """Mean loss and accuracy over every batch of ``test_batches``; ``confusion`` then holds their counts."""
    for metric in (*metrics, confusion):
        metric.reset_state()
    for batch in test_batches:
        eval_step(batch)
    return tuple(float(metric.result()) for metric in metrics)


def read_and_reset(metrics):
    values = tuple(float(metric.result()) for metric in metrics)
    for metric in metrics:
        metric.reset_state()
    return values


def check_finite(losses, begin, checkpoints):
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        raise RunError(f"loss became {losses[bad[0]]} at step {begin + bad[0] + 1}; stopped, "
                       f"{kept_checkpoint(checkpoints)}")
