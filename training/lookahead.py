"""airbench94's lookahead: every few steps the weights move part of the way towards a running average of
themselves and the average is copied back into the network; the average's decay grows over the run (move
fast early, average strongly at the end), and after the last step the network is set to the average.
"""

import tensorflow as tf

DECAY_BASE = 0.95  # per step; a sync every `every` steps decays by DECAY_BASE**every x (step / total)**3
DECAY_POWER = 3.0


class Lookahead:
    """Averages of ``variables`` (every float variable of a network, batch-norm statistics included) and the
    in-graph update of both; create it in the strategy's scope and checkpoint it with the run.

    Syncs happen at steps that are multiples of ``every`` from ``start_step`` on; the first one only copies
    the network into the average.
    """

    def __init__(self, variables, every, start_step, total_steps):
        self.every, self.start_step, self.total_steps = every, start_step, total_steps
        self._targets = list(variables)
        self.averages = [tf.Variable(tf.convert_to_tensor(v), trainable=False, name=f"average_{i}")
                         for i, v in enumerate(self._targets)]
        self.started = tf.Variable(False, trainable=False, name="started")

    def after_step(self, step):
        """The lookahead's part of optimizer step ``step`` (1-based, an int64 tensor); cross-replica context."""
        step = tf.cast(step, tf.int64)
        sync = tf.logical_and(step >= self.start_step, step % self.every == 0)
        # The first sync has decay 0: it sets the average to the weights and changes nothing else.
        tf.cond(sync, lambda: self._sync(tf.where(self.started, self._decay(step), 0.0)), tf.no_op)
        self.started.assign(tf.logical_or(self.started, sync))
        # After the last step the network takes the average as it is (decay 1), as airbench94 ends; only then:
        # a reset at every epoch's end would throw away the steps since the last sync.
        last = step >= self.total_steps
        tf.cond(tf.logical_and(last, self.started), lambda: self._sync(tf.constant(1.0)), tf.no_op)

    def checkpoint_state(self):
        """What ``tf.train.Checkpoint`` should hold, so a resumed run continues the same averages."""
        return dict(averages=self.averages, started=self.started)

    def _decay(self, step):
        fraction = tf.cast(step, tf.float32) / float(self.total_steps)
        return DECAY_BASE ** self.every * fraction ** DECAY_POWER

    def _sync(self, decay):
        """average <- decay * average + (1 - decay) * weights; weights <- average."""
        for average, variable in zip(self.averages, self._targets):
            value = tf.convert_to_tensor(variable)
            average.assign(decay * average + (1.0 - decay) * tf.cast(value, average.dtype))
            variable.assign(tf.convert_to_tensor(average))
        return tf.no_op()
