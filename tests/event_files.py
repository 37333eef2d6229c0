"""Reading TensorBoard event files back, for tests."""

import tensorflow as tf


def read_scalars(event_dir):
    """``{tag: {step: value}}`` of every scalar summary in the event files of ``event_dir`` (a ``Path``)."""
    scalars = {}
    for path in sorted(event_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return scalars
