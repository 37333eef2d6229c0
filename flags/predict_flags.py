"""Flags of ``python -m training.predict``: the exported run, how many classes to print, or a split to evaluate."""

from absl import flags as absl_flags

from flags import cli
from training.dataset_info import SPLITS


def define_flags():
    """Defines the prediction flags on ``absl_flags.FLAGS`` (once per process)."""
    absl_flags.DEFINE_string("run_dir", None, "Run directory whose export (<run_dir>/export/saved_model, written by "
                             "training.export) makes the predictions.")
    absl_flags.DEFINE_integer("top_k", 3, "Classes printed per image, most probable first (at most the dataset's "
                              "number of classes).")
    absl_flags.DEFINE_enum("dataset_split", None, SPLITS, "Instead of image files: evaluate the export on this "
                           "split of the run's dataset and print its accuracy.")
    absl_flags.DEFINE_string("data_dir", "", "Folder holding <dataset>.npz for --dataset_split; empty: the run's own "
                             "--data_dir, then the Keras cache, then the bundled MNIST subset. Never downloads.")
    absl_flags.mark_flag_as_required("run_dir")
    cli.check_directory("run_dir", required=True)
    cli.check("top_k", lambda v: v > 0, "must be a positive integer")
    cli.check_directory("data_dir")
