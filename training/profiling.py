"""Profiler traces of chosen training steps, with step markers so TensorBoard's profile tool finds steps."""

import contextlib

import tensorflow as tf
from absl import logging


class StepProfiler:
    """Records steps ``first..last`` (1-based, inclusive) into ``<logdir>/plugins/profile/<session>/``.

    Each profiled step runs in its own call inside ``Trace("train", step_num=step, _r=1)``; those markers
    are what the profile tool's step-time breakdown counts.
    """

    def __init__(self, logdir, first, last):
        self.logdir, self.first, self.last = logdir, first, last

    def steps_before_boundary(self, begin, num_steps):
        """How many of ``num_steps`` steps after step ``begin`` can run in one call without crossing a profiled
        step: profiled steps go one per call."""
        if begin + 1 >= self.first and begin + 1 <= self.last:
            return 1
        if begin < self.first <= begin + num_steps:
            return self.first - begin - 1
        return num_steps

    @contextlib.contextmanager
    def around(self, step):
        """Wraps the call that runs training step ``step`` (1-based)."""
        if not self.first <= step <= self.last:
            yield
            return
        if step == self.first:
            tf.profiler.experimental.start(self.logdir)
            logging.info("profiling steps %d to %d into %s", self.first, self.last, self.logdir)
        try:
            with tf.profiler.experimental.Trace("train", step_num=step, _r=1):
                yield
        finally:
            if step == self.last:
                tf.profiler.experimental.stop()
