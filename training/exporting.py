"""Export a trained run for use outside this project: ``export_run(run_dir, data_dir="")``.

Restores the run's newest checkpoint and writes into ``<run_dir>/export/``:

- ``saved_model/``: a SavedModel whose ``serving_default`` signature takes ``images``, uint8 (n, H, W, C), and
  returns ``probabilities``, float32 (n, classes) softmax, and ``class_ids``, int64 (n,) argmax. The run's
  evaluation is inside: pixels / 255; when the run standardised, ``(x - mean) / std`` with its training set's
  per-channel statistics as constants; the logits averaged over the views of its ``test_time_augmentation``.
  ``tf.saved_model.load`` needs nothing from this project.
- ``model.keras``, for a run whose implementation saves one (``models.network.CAPABILITIES``: the Keras CNN): the
  ``CNN`` with the checkpoint's weights, registered as ``cnn_lab>CNN``. It takes preprocessed float images and
  returns logits, not probabilities.
- ``export.json``: what was exported: checkpoint and step, dataset and class names, image shape, test-time
  augmentation, the baked-in mean and std and the file they came from.

A run trained further after its export keeps the old export until ``export_run`` runs again; every export
replaces the previous one whole.
"""

import json
import os
import shutil
from typing import NamedTuple

import tensorflow as tf
from absl import logging

from models.network import CAPABILITIES
from training import data as data_lib
from training import pipeline
from training.config import VALIDATION_SPLIT_SEED
from training.errors import OneLineError, RunError
from training.loop import augmented_logits
from training.parts import build_run_network
from training.rundir import RunDir

EXPORT, SAVED_MODEL, KERAS_FILE, RECORD = "export", "saved_model", "model.keras", "export.json"
SIGNATURE = "serving_default"


class ExportError(OneLineError, ValueError):
    """A run that cannot be exported (no such directory, no checkpoint, training data not found); the message says
    why."""


class ExportPaths(NamedTuple):
    saved_model: str
    keras: str  # None for a run whose implementation saves no .keras file
    record: str


def export_paths(run_dir, impl="keras"):
    """Where ``export_run`` writes for a run of ``impl``."""
    folder = os.path.join(run_dir, EXPORT)
    keras_file = os.path.join(folder, KERAS_FILE) if CAPABILITIES[impl].saves_keras_file else None
    return ExportPaths(os.path.join(folder, SAVED_MODEL), keras_file, os.path.join(folder, RECORD))


def export_run(run_dir, data_dir=""):
    """Writes the run's SavedModel (and ``model.keras`` when the run's implementation saves one) and returns their
    ``ExportPaths``.

    ``data_dir`` holds ``<dataset>.npz`` for a run that standardised, whose training images give the mean and
    std; empty: the run's own ``data_dir``, then the Keras cache, then the bundled MNIST subset. Never downloads.
    Raises ``ExportError`` (or ``data.DataError`` for a malformed data file) with a one-line reason.
    """
    config = read_run_config(run_dir)
    info = data_lib.DATASETS[config.dataset]
    network, checkpoint, step = restore_network(run_dir, config)
    mean, std, stats_source = standardization_stats(config, run_dir, data_dir)
    paths = export_paths(run_dir, config.impl)
    os.makedirs(os.path.dirname(paths.saved_model), exist_ok=True)
    module = ServingModule(network, pipeline.make_preprocess(mean, std), info.image_shape,
                           config.test_time_augmentation)
    _replace(paths.saved_model, lambda tmp: tf.saved_model.save(module, tmp, signatures={SIGNATURE: module.serve}))
    if paths.keras:
        _replace(paths.keras, network.save, suffix=".tmp.keras")  # Keras insists on the .keras ending
    record = {
        "run_dir": os.path.abspath(run_dir), "checkpoint": os.path.abspath(checkpoint),
        "step": step, "dataset": config.dataset, "arch": config.arch, "impl": config.impl,
        "precision": config.precision, "image_shape": list(info.image_shape),
        "class_names": list(info.class_names or map(str, range(info.num_classes))),
        "test_time_augmentation": config.test_time_augmentation,
        "standardize": config.standardize, "mean": None if mean is None else mean.tolist(),
        "std": None if std is None else std.tolist(), "stats_source": stats_source,
        "signature": {"name": SIGNATURE, "inputs": {"images": "uint8 (n, H, W, C)"},
                      "outputs": {"probabilities": "float32 (n, classes)", "class_ids": "int64 (n,)"}},
        "keras_file_outputs": "logits" if paths.keras else None,
    }
    with open(paths.record, "w") as file:
        json.dump(record, file, indent=2)
    logging.info("exported %s (step %d) to %s", checkpoint, record["step"], os.path.dirname(paths.saved_model))
    return paths


class ServingModule(tf.Module):
    """A trained network behind one ``tf.function``: uint8 images in, probabilities and class ids out."""

    def __init__(self, network, preprocess, image_shape, test_time_augmentation="none"):
        super().__init__(name="serving")
        self.network = network
        self._test_time_augmentation = test_time_augmentation
        # Listed explicitly: the Keras CNN keeps its layers in a Python list, which tf.Module does not track.
        self.weights = list(network.named_weights().values())
        self._preprocess = preprocess
        self.serve = tf.function(self._serve, input_signature=[
            tf.TensorSpec((None, *image_shape), tf.uint8, name="images")])

    def _serve(self, images):
        x, _ = self._preprocess(images, None)  # the run's eval preprocessing; mean and std become constants
        # float32 logits, averaged over the views of the run's test-time augmentation, as its evaluation did.
        logits = augmented_logits(self.network, x, self._test_time_augmentation)
        # argmax of the logits, as the run's accuracy metric takes it: softmax may round two near logits to one
        # probability.
        return {"probabilities": tf.nn.softmax(logits),
                "class_ids": tf.argmax(logits, axis=-1, output_type=tf.int64)}


def read_run_config(run_dir):
    """The run's ``TrainConfig`` (one of a dataset this code does not know is refused as it is read)."""
    try:
        return RunDir(run_dir).read_config()
    except RunError as error:
        raise ExportError(str(error)) from None


def standardization_stats(config, run_dir, data_dir=""):
    """``(mean, std, source)`` of the run's training images on the [0, 1] scale, float32 (C,) each, as the run
    computed them; ``(None, None, None)`` when it did not standardise (then no data is read).

    The training set is the one the run trained on: less its validation examples when it held some out. A
    ``<folder>/<dataset>.npz`` named by ``data_dir`` or the run's own ``data_dir`` must exist: falling back to
    another copy of the dataset would bake in other statistics without a word.
    """
    if not config.standardize:
        return None, None, None
    folder = data_dir or config.data_dir
    if folder and not os.path.exists(os.path.join(folder, f"{config.dataset}.npz")):
        whose = "--data_dir" if data_dir else f"the run's data_dir {folder}"
        raise ExportError(f"the run standardised its images with its training set's per-channel mean and std, but "
                          f"{os.path.join(folder, config.dataset + '.npz')} ({whose}) cannot be found; pass "
                          f"--data_dir=<folder holding {config.dataset}.npz>")
    dataset = data_lib.load(config.dataset, folder, allow_download=False)
    if config.validation_split:
        dataset, _ = data_lib.split_validation(dataset, config.validation_split, VALIDATION_SPLIT_SEED)
    results = RunDir(run_dir).read_results() or {}
    if results.get("data_source") not in (None, dataset.source):
        logging.warning("the run trained on %s; its mean and std are taken from %s", results["data_source"],
                        dataset.source)
    mean, std = pipeline.channel_stats(dataset.x_train)
    return mean, std, dataset.source


def restore_network(run_dir, config):
    """``(network, checkpoint, step)``: the run's network, as its ``impl`` builds it, with the weights of the
    newest checkpoint that restores (``RunDir.restore_weights``)."""
    network = build_run_network(config)
    try:
        checkpoint, step = RunDir(run_dir).restore_weights(network, config.arch)
    except RunError as error:
        raise ExportError(str(error)) from None
    return network, checkpoint, step


def load_keras_model(path):
    """``model.keras`` reopened: a ``models.keras_cnn.CNN`` that returns logits of preprocessed images."""
    import keras

    import models.keras_cnn  # noqa: F401  (registers the CNN class under the name model.keras gives it)
    return keras.saving.load_model(path)


def _replace(path, write, suffix=".tmp"):
    """Writes with ``write(temporary path)``, then puts the result in place of ``path``: an export that fails
    halfway leaves the previous one intact."""
    tmp = path + suffix
    _remove(tmp)
    write(tmp)
    _remove(path)
    os.replace(tmp, path)


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)
