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
replaces the previous one whole, and a second export of the run while one is under way is refused (``exclusive``).
The run is opened through ``training.trained_run``, as predict and inspection open it.
"""

import contextlib
import fcntl
import glob
import json
import os
import shutil
import tempfile
from typing import NamedTuple

import tensorflow as tf
from absl import logging

from models.network import CAPABILITIES
from training import run_files
from training.errors import OneLineError
from training.loop import augmented_logits
from training.trained_run import EXPORT, TrainedRun, subfolder

SAVED_MODEL, KERAS_FILE, RECORD = "saved_model", "model.keras", "export.json"
SIGNATURE = "serving_default"
# ``_written_beside``'s temporary folders: ``.<name>.<random>.tmp`` beside ``<name>``, left only by a killed export.
SWAP_SUFFIX = ".tmp"


class ExportError(OneLineError, ValueError):
    """An export that cannot be written now (another export of the run is under way); the message says why."""


class ExportPaths(NamedTuple):
    saved_model: str
    keras: str  # None for a run whose implementation saves no .keras file
    record: str


def export_paths(run_dir, impl="keras"):
    """Where ``export_run`` writes for a run of ``impl``."""
    folder = subfolder(run_dir, EXPORT)
    keras_file = os.path.join(folder, KERAS_FILE) if CAPABILITIES[impl].saves_keras_file else None
    return ExportPaths(os.path.join(folder, SAVED_MODEL), keras_file, os.path.join(folder, RECORD))


def export_run(run_dir, data_dir=""):
    """Writes the run's SavedModel (and ``model.keras`` when the run's implementation saves one) and returns their
    ``ExportPaths``.

    ``data_dir`` holds ``<dataset>.npz`` for a run that standardised, whose training images give the mean and
    std; empty: the run's own ``data_dir``, then the Keras cache, then the bundled MNIST subset. Never downloads.
    Raises ``trained_run.TrainedRunError`` for a run that cannot be opened, ``ExportError`` while another export
    of the run is under way (or ``data.DataError`` for a malformed data file), each with a one-line reason.
    """
    run = TrainedRun.open(run_dir, data_dir)
    config, stats = run.config, run.standardization
    paths = export_paths(run_dir, config.impl)
    module = ServingModule(run.network, run.eval_preprocess(), run.info.image_shape, config.test_time_augmentation)
    with exclusive(run.subfolder(EXPORT, create=True), run_dir) as folder, \
            run_files.failed_writes_stop(lambda path: folder, lambda: f"export again; the previous export in "
                                         f"{folder} is unchanged"), contextlib.ExitStack() as staged:
        # Every file is written before any is put in place, so a write that fails (a full disk) leaves the
        # previous export whole: never a new SavedModel beside an old model.keras or export.json.
        written = [staged.enter_context(_written_beside(paths.saved_model, lambda path: tf.saved_model.save(
            module, path, signatures={SIGNATURE: module.serve})))]
        if paths.keras:
            written.append(staged.enter_context(_written_beside(paths.keras, run.network.save)))
        record = {
            "run_dir": os.path.abspath(run_dir), "checkpoint": os.path.abspath(run.checkpoint),
            "step": run.step, "dataset": config.dataset, "arch": config.arch, "impl": config.impl,
            "precision": config.precision, "image_shape": list(run.info.image_shape),
            "class_names": list(run.class_names),
            "test_time_augmentation": config.test_time_augmentation,
            "standardize": config.standardize, "mean": None if stats is None else stats.mean.tolist(),
            "std": None if stats is None else stats.std.tolist(),
            "stats_source": None if stats is None else stats.source,
            "signature": {"name": SIGNATURE, "inputs": {"images": "uint8 (n, H, W, C)"},
                          "outputs": {"probabilities": "float32 (n, classes)", "class_ids": "int64 (n,)"}},
            "keras_file_outputs": "logits" if paths.keras else None,
        }
        text = json.dumps(record, indent=2)
        written.append(staged.enter_context(_written_beside(paths.record, lambda path: run_files.write_atomically(
            path, text))))
        for temporary, path in written:  # renames within the folder: no new space is needed
            _remove(path)
            os.replace(temporary, path)
    logging.info("exported %s (step %d) to %s", run.checkpoint, run.step, folder)
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


def load_keras_model(path):
    """``model.keras`` reopened in Keras' safe mode, which refuses to deserialise code (a ``Lambda`` layer's
    function): a ``models.keras_cnn.CNN`` that returns logits of preprocessed images."""
    import keras

    import models.keras_cnn  # noqa: F401  (registers the CNN class under the name model.keras gives it)
    return keras.saving.load_model(path, safe_mode=True)


@contextlib.contextmanager
def exclusive(folder, run_dir):
    """Holds ``folder`` (the run's export folder) for one export: a second export of the same run meanwhile
    stops with an ``ExportError`` instead of writing into the same files. The lock is an ``flock`` on the folder
    itself (no lock file is left in the export), which the operating system releases when its process ends,
    however it ends. Under it, what killed exports left is removed first. Yields ``folder``."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        raise ExportError(f"{folder} cannot be opened ({error.strerror}); remove it, then export again") from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ExportError(f"another export of {run_dir} is under way; wait for it to end, then export again "
                              f"if need be") from None
        _remove_leftovers(folder)
        yield folder
    finally:
        os.close(descriptor)  # closing releases the flock


@contextlib.contextmanager
def _written_beside(path, write):
    """Writes with ``write(temporary path)`` and yields ``(temporary path, path)``, for the caller to put the
    result (a file or a folder) in place of ``path`` with ``os.replace``; what is left is removed after the block.

    The temporary path lies in a fresh folder (``tempfile.mkdtemp``) beside ``path`` and has ``path``'s name
    (Keras insists on the .keras ending), so nothing planted under a fixed temporary name is written through.
    """
    folder, name = os.path.split(path)
    temporary = tempfile.mkdtemp(prefix=f".{name}.", suffix=SWAP_SUFFIX, dir=folder)
    try:
        written = os.path.join(temporary, name)
        write(written)
        yield written, path
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _remove_leftovers(folder):
    """Removes what exports killed mid-write left in ``folder``: ``_written_beside``'s temporary folders and
    ``write_atomically``'s temporary export.json."""
    leftovers = [path for name in (SAVED_MODEL, KERAS_FILE)
                 for path in glob.glob(os.path.join(glob.escape(folder), f".{name}.*{SWAP_SUFFIX}"))]
    leftovers += [os.path.join(folder, name) for name in run_files.write_leftovers(folder, [RECORD])]
    for path in leftovers:
        _remove(path)
    if leftovers:
        logging.info("removed what an interrupted export left in %s: %s", folder,
                     ", ".join(os.path.basename(path) for path in leftovers))


def _remove(path):
    """Removes the file, link or folder ``path`` if there is one; a link is removed itself, never followed."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
