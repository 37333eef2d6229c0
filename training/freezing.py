"""Variables that train for a number of steps and then stop changing: airbench94's whitening bias, trained for
its first 3 epochs. Setting the variables back after every later step freezes them against everything an
optimizer step does (gradient, momentum, weight decay), as taking them out of the optimizer would.
"""

import tensorflow as tf


class FreezeAfter:
    """After optimizer step ``steps`` (1-based) the value of ``variables`` is kept, and every later step's change
    to them is undone; create it in the strategy's scope and checkpoint it with the run."""

    def __init__(self, variables, steps):
        self.steps = steps
        self._targets = list(variables)
        # The values to restore; until step `steps` they hold the initial values, which is right for steps = 0.
        self.kept = [tf.Variable(tf.convert_to_tensor(v), trainable=False, name=f"kept_{i}")
                     for i, v in enumerate(self._targets)]

    def after_step(self, step):
        """The freeze's part of optimizer step ``step`` (an int64 tensor); cross-replica context."""
        step = tf.cast(step, tf.int64)
        tf.cond(tf.equal(step, self.steps), lambda: self._copy(self._targets, self.kept), tf.no_op)
        tf.cond(step > self.steps, lambda: self._copy(self.kept, self._targets), tf.no_op)

    def checkpoint_state(self):
        """What ``tf.train.Checkpoint`` should hold, so a run resumed after the freeze keeps the same values."""
        return dict(kept=self.kept)

    @staticmethod
    def _copy(sources, destinations):
        for source, destination in zip(sources, destinations):
            destination.assign(tf.convert_to_tensor(source))
        return tf.no_op()
