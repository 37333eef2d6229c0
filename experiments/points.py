"""A sweep's points and where their runs live, without TensorFlow: the sweep trains them (``runner``), and a table
or a plot can be made again from the run files alone (``committed``)."""

import dataclasses
import os


@dataclasses.dataclass
class RunRecord:
    results: dict  # what the run's results.json holds
    reused: bool  # read from an earlier run's results.json instead of trained now


@dataclasses.dataclass
class PointResult:
    label: str
    overrides: dict
    runs: list  # one RunRecord per seed


def run_dir(logdir, grid_name, dataset_name, label, seed):
    return os.path.join(logdir, grid_name, dataset_name, f"{label}-seed{seed}")


# The results.json fields a sweep's table and progress lines read.
TABLE_FIELDS = ("test_accuracy", "wall_seconds", "params", "images_per_second", "train_steps")
