"""Runs ``training.trainer.train`` for the distribution tests in a fresh process; not a test itself.

Logical CPU devices must be configured before TensorFlow initialises its devices, and
MultiWorkerMirroredStrategy must be created at start-up, so the tests run these in subprocesses:

    python3 tests/distributed_job.py --spec spec.json

``spec.json`` holds ``num_cpu_devices``, the tiny data cut (``train_size``, ``test_size``), ``out`` (where the
summary JSON goes) and ``runs``: a list of ``{"name", "config": {TrainConfig fields}, "weights": path.npz}``
trained one after another in this process. Each run saves every weight (``named_weights()``, the same for both
implementations) to its .npz; the summary maps each run name to its results,
its log lines, and, for replicated variables, the largest difference between replica copies. With
``"two_replica_batch_norm": true`` (two CPU devices) the summary also holds, under that key, what
``two_replica_batch_norm`` returns: it needs the same fresh process with two devices.
"""

import argparse
import json
import logging as py_logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from absl import logging  # noqa: E402

from training import data as data_lib  # noqa: E402
from training import distribute  # noqa: E402
from training.config import TrainConfig  # noqa: E402

_TUPLE_FIELDS = ("profile_steps", "piecewise_boundaries")  # JSON has lists; the frozen config holds tuples


class _Records(py_logging.Handler):
    """Collects the formatted absl log lines of one run."""

    def __init__(self):
        super().__init__(level=py_logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def tiny_mnist(train_size, test_size):
    """The first images of the bundled MNIST subset (KERAS_HOME should point at an empty folder)."""
    full = data_lib.load("mnist", allow_download=False)
    return data_lib.Dataset("mnist", full.x_train[:train_size], full.y_train[:train_size], full.x_test[:test_size],
                            full.y_test[:test_size], source=f"{full.source}, first {train_size}/{test_size}")


def replica_spread(variables):
    """Largest |difference| between any replica's copy of a variable and the first copy (0 when unreplicated)."""
    spread = 0.0
    for variable in variables.values():
        inner = getattr(variable, "_value", variable)  # a Keras variable wraps the tf.Variable
        copies = [np.asarray(copy.numpy()) for copy in getattr(inner, "values", ())]
        for copy in copies[1:]:
            spread = max(spread, float(np.max(np.abs(copy - copies[0]))))
    return spread


def run_one(run, dataset):
    from training import trainer

    fields = {key: tuple(value) if key in _TUPLE_FIELDS else value for key, value in run["config"].items()}
    config = TrainConfig(**fields)
    records = _Records()
    py_logging.getLogger("absl").addHandler(records)
    try:
        result = trainer.train(config, dataset=dataset)
    finally:
        py_logging.getLogger("absl").removeHandler(records)
    variables = result.model.named_weights()
    np.savez(run["weights"], **{name: np.asarray(v.numpy()) for name, v in variables.items()})
    return dict(results=result.results, log=records.lines, replica_spread=replica_spread(variables),
                dtypes=sorted({str(np.asarray(v.numpy()).dtype) for v in variables.values()}))


def two_replica_batch_norm():
    """Per implementation, the largest |difference| over every weight (batch-norm moving statistics included)
    between one float64 forward pass in training mode under MirroredStrategy over two CPUs, each replica holding
    half the batch, and the same pass over the whole batch on one device. Both networks all-reduce their
    batch-norm sums under a strategy, so the two differ by rounding only."""
    import tensorflow as tf

    import models
    import reference

    arch, shape = "c4k3b-r6-gap", (6, 6, 3)
    images = tf.constant(np.random.default_rng(0).normal(size=(4, *shape)))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        replicated = {"keras": models.build_model(arch, shape, 3, dtype="float64"),
                      "reference": reference.build_reference(arch, shape, 3, dtype=tf.float64)}
    single = reference.build_reference(arch, shape, 3, dtype=tf.float64)
    reference.copy_weights(replicated["keras"], replicated["reference"])
    reference.copy_weights(replicated["keras"], single)
    halves = strategy.experimental_distribute_values_from_function(
        lambda context: images[2 * context.replica_id_in_sync_group:][:2])
    for model in replicated.values():
        strategy.run(tf.function(lambda x, model=model: model(x, training=True)), (halves,))
    single(images, training=True)
    expected = {name: np.asarray(variable.numpy()) for name, variable in single.named_weights().items()}
    return {impl: max(float(np.max(np.abs(np.asarray(model.named_weights()[name].numpy()) - value)))
                      for name, value in expected.items())
            for impl, model in replicated.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="JSON file describing the runs")
    spec_path = parser.parse_args().spec
    with open(spec_path) as file:
        spec = json.load(file)
    logging.set_verbosity(logging.INFO)
    distribute.configure_devices(spec.get("num_cpu_devices", 1), tf32=False)
    dataset = tiny_mnist(spec["train_size"], spec["test_size"])
    summary = {}
    if spec.get("two_replica_batch_norm"):
        summary["two_replica_batch_norm"] = two_replica_batch_norm()
    for run in spec["runs"]:
        summary[run["name"]] = run_one(run, dataset)
        with open(spec["out"] + ".tmp", "w") as file:  # written after every run, so a failure keeps the rest
            json.dump(summary, file, indent=2)
        os.replace(spec["out"] + ".tmp", spec["out"])


if __name__ == "__main__":
    main()
