"""A trained run opened for use: ``TrainedRun.open(run_dir, data_dir="")``.

Export, predict, inspection and activation maximisation all read a run through here: its ``TrainConfig``, its
network as its ``impl`` builds it with the weights of the newest checkpoint that restores, its evaluation
preprocessing, what its dataset is (``run_info``: for a folder of images or a prepared TFDS dataset, as
config.json recorded it, so that a run is used where its data is not), and the folders those commands write under
it (``export/``, ``inspect/``).
Whatever keeps a run from being opened (no such directory, no or a damaged config.json, no checkpoint that
restores, training data that cannot be found for its statistics) is one ``TrainedRunError`` with the reason.
Opening reads only: nothing in the run directory changes.
"""

import dataclasses
import functools
import os

import numpy as np
from absl import logging

from training import data as data_lib
from training import dataset_info, pipeline, run_files
from training.config import VALIDATION_SPLIT_SEED, TrainConfig
from training.errors import DataDirError, OneLineError, RunError, first_line
from training.parts import build_run_network
from training.run_files import PREPROCESSING
from training.rundir import RunDir

# The folders other commands write under a run directory, beside what training writes (``RunDir``).
EXPORT, INSPECT = "export", "inspect"
SUBFOLDERS = (EXPORT, INSPECT)


class TrainedRunError(OneLineError, ValueError):
    """A run that cannot be opened for use (no such directory, no config.json, no checkpoint that restores, no
    training data for its statistics); the message says why."""


@dataclasses.dataclass(frozen=True)
class Standardization:
    """The per-channel statistics a run standardised its images with, on the [0, 1] scale: float32 (C,) each."""

    mean: np.ndarray
    std: np.ndarray
    source: str  # where they were computed from


def read_config(run_dir):
    """The run's ``TrainConfig`` (the network it trained; a dataset this code does not know is refused here)."""
    try:
        return RunDir(run_dir).read_config()
    except RunError as error:
        raise TrainedRunError(str(error)) from None


def subfolder(run_dir, name, create=False):
    """``<run_dir>/<name>`` for ``name`` in ``SUBFOLDERS``; with ``create``, made if need be. A symbolic link
    there is refused (``run_files.RunFileError``): writing through it would change files outside the run."""
    if name not in SUBFOLDERS:
        raise ValueError(f"a run's subfolders are {', '.join(SUBFOLDERS)}, not {name}")
    path = os.path.join(run_dir, name)
    if create:
        run_files.refuse_symlinks(run_dir, [name])
        os.makedirs(path, exist_ok=True)
    return path


def read_results(run_dir):
    """results.json of the run, or ``{}`` when it has none or it cannot be read (then with a warning): what a
    command takes from it (the accuracy the run recorded, its data's source) is only shown beside its own."""
    try:
        return RunDir(run_dir).read_results() or {}
    except (OSError, ValueError) as error:
        logging.warning("%s is unreadable (%s); going on without it", os.path.join(run_dir, run_files.RESULTS),
                        error)
        return {}


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A run directory's config and restored network, and what its evaluation did to images."""

    path: str
    config: TrainConfig
    network: object  # a models.network.Network holding the checkpoint's weights
    checkpoint: str  # path prefix of the restored checkpoint
    step: int  # training step of that checkpoint
    data_dir: str = ""  # where the run's dataset is read from, before the run's own data_dir
    info: object = None  # the dataset's DatasetInfo (``run_info``): image shape, classes

    @classmethod
    def open(cls, run_dir, data_dir=""):
        """The run in ``run_dir`` with the weights of its newest checkpoint that restores (``RunDir.restore_weights``:
        unreadable newer ones are skipped with a log line). ``data_dir`` holds ``<dataset>.npz`` (for a folder
        dataset: its class folders) when the run's data is needed (a standardised run's statistics, test images);
        empty: the run's own ``data_dir``."""
        config = read_config(run_dir)
        info = run_info(run_dir, config, data_dir)
        network = build_run_network(config, info=info)
        try:
            checkpoint, step = RunDir(run_dir).restore_weights(network, config.arch)
        except RunError as error:
            raise TrainedRunError(str(error)) from None
        return cls(run_dir, config, network, checkpoint, step, data_dir, info)

    @property
    def class_names(self):
        return class_names(self.info)

    def subfolder(self, name, create=False):
        return subfolder(self.path, name, create)

    def results(self):
        return read_results(self.path)

    @functools.cached_property
    def dataset(self):
        """The run's dataset (``data.load``; never downloaded), read once: from ``data_dir``, else the run's own
        ``data_dir``, else the Keras cache, then the bundled MNIST subset."""
        return data_lib.load_for(self.config, self.data_dir, allow_download=False)

    @functools.cached_property
    def standardization(self):
        """The run's ``Standardization``, or None when it did not standardise (then no data is read).

        The statistics the run recorded in preprocessing.json; for a run of older code, computed again from the
        training set it trained on, less its validation examples when it held some out, as training computed
        it. A ``<folder>/<dataset>.npz`` named by ``data_dir`` or by the run's own must then exist: falling back
        to another copy of the dataset would give other statistics without a word.
        """
        config = self.config
        if not config.standardize:
            return None
        recorded = read_preprocessing(self.path)
        if recorded:
            return recorded
        folder = self.data_dir or config.data_dir
        expected = os.path.join(folder, f"{config.dataset}.npz") if folder and config.dataset not in \
            dataset_info.FROM_DISK else None
        if expected and not os.path.exists(expected):
            whose = "--data_dir" if self.data_dir else f"the run's data_dir {folder}"
            raise TrainedRunError(f"the run standardised its images with its training set's per-channel mean and "
                                  f"std, but {expected} ({whose}) cannot be found; pass --data_dir=<folder holding "
                                  f"{config.dataset}.npz>")
        dataset = self.dataset
        if config.validation_split:
            dataset, _ = data_lib.split_validation(dataset, config.validation_split, VALIDATION_SPLIT_SEED)
        trained_on = self.results().get("data_source")
        if trained_on not in (None, dataset.source):
            logging.warning("the run trained on %s; its mean and std are taken from %s", trained_on, dataset.source)
        mean, std = pipeline.channel_stats(dataset.x_train)
        return Standardization(mean, std, dataset.source)

    def eval_preprocess(self):
        """``fn(images_uint8, labels) -> (images, labels)``: what the run's evaluation did to its images (pixels /
        255, then ``(x - mean) / std`` when it standardised)."""
        stats = self.standardization
        return pipeline.make_preprocess(*((stats.mean, stats.std) if stats else ()))


def read_preprocessing(run_dir):
    """The ``Standardization`` a run recorded in preprocessing.json, or None when it holds none (older code); a
    damaged file is refused in one line rather than replaced by statistics from elsewhere."""
    path = os.path.join(run_dir, PREPROCESSING)
    if not os.path.exists(path):
        return None
    try:
        saved = run_files.read_json(path)
        mean, std = (np.asarray(saved[key], np.float32) for key in ("mean", "std"))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise TrainedRunError(f"{path}: cannot be read as the run's mean and std ({first_line(error)}); move it "
                              "away to compute them again from the run's data") from None
    trained_on = f", from {saved['source']}" if saved.get("source") else ""
    return Standardization(mean, std, f"{path} (recorded by the run{trained_on})")


def run_info(run_dir, config, data_dir=""):
    """The ``DatasetInfo`` of the dataset the run in ``run_dir`` (of ``config``) trained on: a built-in's; for one
    read from disk (a folder, a prepared TFDS dataset), what config.json recorded of it when the run trained
    (``dataset_info.as_record``), else what its ``data_dir`` (given, else the run's own) holds now.
    ``TrainedRunError`` when neither says."""
    if config.dataset not in dataset_info.FROM_DISK:
        return dataset_info.describe(config.dataset)
    try:
        recorded = dataset_info.from_record(RunDir(run_dir).read_saved().get("data") or {})
    except (RunError, OSError, ValueError):
        recorded = None
    if recorded:
        return recorded
    try:
        return dataset_info.describe_settings({**vars(config), "data_dir": data_dir or config.data_dir})
    except DataDirError as error:
        raise TrainedRunError(f"{run_dir}: its config.json records no image shape and classes of its data, and "
                              f"its --data_dir cannot tell them ({error})") from None


def class_names(info):
    """The names of the classes of the dataset ``info`` describes, by label: its own, else the labels as text."""
    return tuple(info.class_names or map(str, range(info.num_classes)))
