"""CIFAR-100 as this project reads it from the real file, when the file is on this machine.

The file is not bundled (about 180 MB): ``../shared/data/README.md`` says how to build it. These tests look for
``cifar100.npz`` in ``$CIFAR100_DIR`` and then in ``../shared/data`` next to the repository, and skip, saying so,
when it is in neither.
"""

import os

import numpy as np
import pytest
from conftest import REPO_ROOT

from training import data as data_lib

CANDIDATES = [os.environ.get("CIFAR100_DIR", ""), str(REPO_ROOT.parent / "shared" / "data")]
FOLDER = next((folder for folder in CANDIDATES if folder and os.path.exists(os.path.join(folder, "cifar100.npz"))),
              None)

pytestmark = pytest.mark.skipif(
    FOLDER is None, reason="cifar100.npz is in neither $CIFAR100_DIR nor ../shared/data; build it as "
    "../shared/data/README.md says and set CIFAR100_DIR to its folder")


@pytest.fixture(scope="module")
def cifar100():
    return data_lib.load("cifar100", FOLDER, allow_download=False)


def test_the_real_file_has_the_official_sizes_and_balanced_classes(cifar100):
    assert cifar100.x_train.shape == (50000, 32, 32, 3) and cifar100.x_test.shape == (10000, 32, 32, 3)
    assert cifar100.x_train.dtype == np.uint8 and cifar100.y_train.dtype == np.int32
    # 500 training and 100 test images of each of the 100 fine classes.
    assert np.array_equal(np.bincount(cifar100.y_train, minlength=100), np.full(100, 500))
    assert np.array_equal(np.bincount(cifar100.y_test, minlength=100), np.full(100, 100))


def test_each_superclass_holds_five_fine_classes_and_matches_every_label(cifar100):
    assert np.array_equal(np.bincount(cifar100.fine_to_coarse, minlength=20), np.full(20, 5))
    assert np.array_equal(cifar100.fine_to_coarse[cifar100.y_train], cifar100.y_train_coarse)
    assert np.array_equal(cifar100.fine_to_coarse[cifar100.y_test], cifar100.y_test_coarse)
    names = data_lib.DATASETS["cifar100"]
    assert len(names.class_names) == 100 and len(names.coarse_class_names) == 20
