"""Profiler traces of chosen training steps, each inside a step marker that TensorBoard's profile tool counts."""

import contextlib
import os
import shutil

import tensorflow as tf
from absl import logging


class StepProfiler:
    """Records steps ``first..last`` (1-based, inclusive) into ``<logdir>/plugins/profile/<session>/``.

    Each profiled step runs in its own call inside ``Trace("train", step_num=step, _r=1)``. On a CPU-only host the
    overview page's step-time breakdown counts those markers only around a call without a TensorFlow while loop,
    so the custom loop runs these calls unrolled (README, Profiling).
    """

    def __init__(self, logdir, first, last):
        self.logdir, self.first, self.last = logdir, first, last
        self._sessions_root = os.path.join(logdir, "plugins", "profile")
        self._sessions_before = None  # the sessions there when this profile started

    def steps_before_boundary(self, begin, num_steps):
        """How many of ``num_steps`` steps after step ``begin`` can run in one call without crossing a profiled
        step: profiled steps go one per call, and so does the step before the first, so that the one-step call
        is traced and compiled before the profile starts."""
        warmup = max(self.first - 1, 1)
        if warmup <= begin + 1 <= self.last:
            return 1
        if begin < warmup <= begin + num_steps:
            return warmup - begin - 1
        return num_steps

    def runs_alone(self, step):
        """Whether step ``step`` (1-based) runs in a call of its own (see ``steps_before_boundary``)."""
        return max(self.first - 1, 1) <= step <= self.last

    @contextlib.contextmanager
    def around(self, step):
        """Wraps the call that runs training step ``step`` (1-based)."""
        if not self.first <= step <= self.last:
            yield
            return
        if step == self.first:
            self._sessions_before = self._sessions()
            tf.profiler.experimental.start(self.logdir)
            logging.info("profiling steps %d to %d into %s", self.first, self.last, self.logdir)
        try:
            with tf.profiler.experimental.Trace("train", step_num=step, _r=1):
                yield
        finally:
            if step == self.last:
                self._stop()

    def _sessions(self):
        root = self._sessions_root
        return set(os.listdir(root)) if os.path.isdir(root) else set()

    def _stop(self):
        """Writes the trace; one that could not be written whole (a full disk) is removed rather than left
        truncated, where TensorBoard would list a session it cannot open. The error goes on to the caller."""
        try:
            tf.profiler.experimental.stop()
        except BaseException:
            if self._sessions_before is not None:
                for session in self._sessions() - self._sessions_before:
                    shutil.rmtree(os.path.join(self._sessions_root, session), ignore_errors=True)
            raise
