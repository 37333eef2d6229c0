"""Reading TensorBoard event files back, for tests."""

import tensorflow as tf


def read_values(event_dir):
    """``{tag: {step: ndarray}}`` of every summary in the event files of ``event_dir`` (a ``Path``)."""
    values = {}
    for path in sorted(event_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                values.setdefault(value.tag, {})[event.step] = tf.make_ndarray(value.tensor)
    return values


def read_scalars(event_dir):
    """``{tag: {step: value}}`` of every scalar summary (a 0-d tensor) in the event files of ``event_dir``."""
    return {tag: {step: float(array) for step, array in steps.items()}
            for tag, steps in read_values(event_dir).items()
            if all(a.ndim == 0 and a.dtype.kind in "fiu" for a in steps.values())}


def has_graph(event_dir):
    """Whether the event files of ``event_dir`` hold a graph (TensorBoard's Graphs tab)."""
    for path in sorted(event_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            if event.graph_def or any(value.metadata.plugin_data.plugin_name == "graph_run_metadata_graph"
                                      for value in event.summary.value):
                return True
    return False


def read_images(event_dir):
    """``{tag: {step: (height, width, channels)}}`` of every image summary in the event files of ``event_dir``:
    ``tf.summary.image`` stores ``[width, height, PNG bytes]``."""
    images = {}
    for tag, steps in read_values(event_dir).items():
        for step, array in steps.items():
            if array.ndim == 1 and len(array) == 3 and array[2][:4] == b"\x89PNG":
                images.setdefault(tag, {})[step] = tuple(tf.io.decode_png(array[2]).shape)
    return images
