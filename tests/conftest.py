"""Shared set-up: the repository on the import path, quiet TensorFlow, tiny MNIST data and a CLI runner.

Everything here is small on purpose: the whole suite must stay under 10 minutes on the slowest two-core machine
it runs on (a few minutes here, in the two processes of pyproject.toml's addopts).
"""

import os
import pathlib
import subprocess
import sys

# Before anything imports TensorFlow: hide its C++ INFO/WARNING start-up lines in this process and in the
# subprocesses the CLI tests start (they inherit the environment).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# The tests import the repository's top-level packages `models`, `training` and `flags`; `from absl import
# flags` is unaffected by the latter.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from training.config import TrainConfig  # noqa: E402

# Sizes of the tiny MNIST cut used by the training and CLI tests: an epoch is 4 batches of the CLI's default 128
# (8 of the in-process tests' 64), and one evaluation batch covers the test set.
TINY_TRAIN = 512
TINY_TEST = 256
# A CLI subprocess imports TensorFlow (3-10 s on a loaded 2-core machine); a tiny training run adds a few.
CLI_TIMEOUT_SECONDS = 180
# The settings of the tiny runs trained on a dataset read from disk (a folder, a TFDS preparation) of a few dozen
# images of three digits: 30 steps of 24, one evaluation, deterministic.
DISK_RUN = dict(arch="c4k3s2-d16", batch_size=24, train_steps=30, learning_rate=3e-3, log_every=30,
                steps_per_loop=30, eval_every=30, eval_batch_size=18, deterministic=True)


def train_disk_run_on_a_copy(source, folder, **settings):
    """A ``DISK_RUN`` with ``settings`` trained on a copy of the data folder ``source`` made in ``folder``/data (its
    tests may change or move the copy), its run in ``folder``/run: ``(config, TrainResult)``."""
    import shutil

    from training.trainer import train

    data_dir = pathlib.Path(folder) / "data"
    shutil.copytree(source, data_dir)
    config = TrainConfig(data_dir=str(data_dir), **DISK_RUN, **settings, logdir=str(pathlib.Path(folder) / "run"))
    config.check_on_disk()
    return config, train(config)


@pytest.fixture(autouse=True)
def _op_determinism_stays_in_its_test():
    """Turns op determinism back off after each test (``train(deterministic=True)`` turns it on, in a test or in
    a module fixture set up before this fixture could note the state).

    It is process-global, and under it XLA refuses to compile some gradients (MaxPool: "no deterministic XLA
    implementation"), so the jit_compile tests of other files would fail depending on test order. TensorFlow
    has no public way to turn it off, hence the private ``disable_op_determinism``.
    """
    yield
    if "tensorflow" not in sys.modules:
        return  # a test that never imported TensorFlow cannot have turned it on
    from tensorflow.python.framework import config as tf_config

    if tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()


@pytest.fixture(scope="session")
def bundled_mnist():
    """The arrays of bundled_data/mnist_subset.npz, as stored: (n, 28, 28) uint8 images and uint8 labels."""
    from training import data as data_lib

    with np.load(data_lib.BUNDLED_MNIST) as npz:
        return {key: npz[key] for key in data_lib.REQUIRED_KEYS}


@pytest.fixture(scope="session")
def tiny_arrays(bundled_mnist):
    """The first TINY_TRAIN training and TINY_TEST test images of the bundled subset."""
    return dict(x_train=bundled_mnist["x_train"][:TINY_TRAIN], y_train=bundled_mnist["y_train"][:TINY_TRAIN],
                x_test=bundled_mnist["x_test"][:TINY_TEST], y_test=bundled_mnist["y_test"][:TINY_TEST])


@pytest.fixture(scope="session")
def tiny_mnist(tiny_arrays):
    """A validated in-memory ``Dataset`` (uint8 NHWC images, int32 labels) to pass to ``train``."""
    from training import data as data_lib

    return data_lib._validated("mnist", tiny_arrays, "tiny MNIST", source="tiny MNIST cut of the bundled subset")


@pytest.fixture(scope="session")
def tiny_mnist_dir(tmp_path_factory, tiny_arrays):
    """A folder holding a valid mnist.npz of the tiny cut, for ``--data_dir``."""
    folder = tmp_path_factory.mktemp("tiny_mnist_data")
    np.savez(folder / "mnist.npz", **tiny_arrays)
    return folder


@pytest.fixture
def empty_keras_home(tmp_path, monkeypatch):
    """Points KERAS_HOME at an empty folder, so no dataset comes from this machine's Keras cache."""
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_config():
    """``make(logdir, **overrides)``: a ``TrainConfig`` for a ~1 s in-process run on ``tiny_mnist``.

    A conv, a pool and a small dense layer (12,770 weights, no dropout or batch norm), 20 steps of 64 images,
    deterministic kernels, and no download.
    """

    def make(logdir, **overrides):
        fields = dict(arch="c4k3-m2-d16", batch_size=64, train_steps=20, log_every=10, steps_per_loop=10,
                      eval_batch_size=TINY_TEST, allow_download=False, deterministic=True, logdir=str(logdir))
        fields.update(overrides)
        return TrainConfig(**fields)

    return make


def _cli_command(args):
    return [sys.executable, "-m", "training.train", *map(str, args)]


def _cli_options():
    return dict(cwd=REPO_ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), text=True)


@pytest.fixture(scope="session")
def run_cli():
    """``run(*args)``: runs ``python3 -m training.train *args`` from the repository root to completion."""

    def run(*args, timeout=CLI_TIMEOUT_SECONDS):
        return subprocess.run(_cli_command(args), capture_output=True, timeout=timeout, **_cli_options())

    return run


@pytest.fixture(scope="session")
def start_cli():
    """``start(*args)``: starts ``python3 -m training.train *args`` and returns the ``Popen``; stdout and
    stderr are pipes."""

    def start(*args):
        return subprocess.Popen(_cli_command(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                **_cli_options())

    return start
