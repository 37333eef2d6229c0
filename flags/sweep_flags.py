"""Flags of ``python -m experiments.sweep``: definitions and parse-time validation."""

import os

from absl import flags as absl_flags

from experiments import grids
from flags import cli
from flags.seeds_flags import MAX_SEEDS
from training.config import MAX_STEPS
from training.dataset_info import DATASETS

DEFAULT_LOGDIR = os.path.join("runs", "sweeps")  # under runs/, which git ignores


def define_flags():
    """Defines the sweep flags on ``absl_flags.FLAGS`` (once per process)."""
    absl_flags.DEFINE_enum("grid", None, list(grids.GRIDS), "Named grid of points to train (experiments/grids.py).")
    absl_flags.DEFINE_enum("dataset", "mnist", list(DATASETS), "Dataset to train and test on.")
    cli.define_data_dir("Passed to every run; empty: tf.keras.datasets, then the MNIST subset bundled in "
                        "bundled_data/.")
    absl_flags.DEFINE_bool("bundled_mnist", False, "Train and test on the MNIST subset bundled in bundled_data/ "
                           "(10,000 training images, the official 10,000 test images), which python3 -m "
                           "training.train falls back to without full MNIST: the main job's data, whatever this "
                           "machine's Keras cache holds. With --dataset=mnist and no --data_dir.")
    absl_flags.DEFINE_integer("seeds", 3, "Runs per point, with seeds 0, 1, ..., seeds-1.")
    absl_flags.DEFINE_integer("train_steps", 0, "Optimizer steps per run; 0: the grid's own budget "
                         f"({grids.DEFAULT_TRAIN_STEPS} steps of {grids.DEFAULT_BATCH_SIZE} images for the "
                         f"architecture and optimizer grids, {grids.AIRBENCH_ABLATION_STEPS} of "
                         f"{grids.AIRBENCH_BATCH_SIZE} for airbench_ablation; main_job: each point's epochs).")
    cli.define_table_flags("<logdir>/<grid>-<dataset>.md", "that this command wrote for another grid, budget or "
                           "seed count", "points")
    absl_flags.DEFINE_string("logdir", DEFAULT_LOGDIR, "Root of the run directories: each run lives in "
                        "<logdir>/<grid>/<dataset>/<point>-seed<k>, and a finished one is reused, not retrained.")
    absl_flags.DEFINE_integer("jobs", 1, "Runs trained at once, each in a process of its own; this process then "
                              "writes the table. Two on 2 cores put 0.96-1.37x the images/s of one through them, by "
                              "machine and net (WORKSPACE.md section 12); the runs' times are then with the cores "
                              "shared.")
    absl_flags.DEFINE_bool("train_only", False, "Train the runs that have not finished and that no other process "
                           "is training, and write no table: what each of --jobs's processes does.")
    absl_flags.mark_flag_as_required("grid")
    _register_validators()


def _register_validators():
    cli.check("seeds", lambda v: 0 < v <= MAX_SEEDS, f"must be a positive integer, at most {MAX_SEEDS}")
    cli.check("jobs", lambda v: 0 < v <= 64, "must be a positive integer, at most 64")
    cli.check("train_steps", lambda v: 0 <= v <= MAX_STEPS,
              f"must be a non-negative integer, at most {MAX_STEPS} (0: the grid's budget)")
    absl_flags.register_multi_flags_validator(
        ["bundled_mnist", "dataset", "data_dir"],
        lambda v: not v["bundled_mnist"] or (v["dataset"] == "mnist" and not v["data_dir"]),
        message="--bundled_mnist is MNIST's subset in bundled_data/: give it with --dataset=mnist and without "
                "--data_dir")
