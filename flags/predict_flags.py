"""Flags of ``python -m training.predict``: the exported run, how many classes to print, or a split to evaluate."""

from absl import flags as absl_flags

from flags import cli
from training.dataset_info import SPLITS


def define_flags():
    """Defines the prediction flags on ``absl_flags.FLAGS`` (once per process)."""
    absl_flags.DEFINE_string("run_dir", None, "Run directory exported by training.export. The predictions are "
                             "made by its export/model.keras, opened in Keras' safe mode, or for a run without one "
                             "(a reference run) by the run's network rebuilt from its newest checkpoint; both use "
                             "the preprocessing export/export.json records.")
    absl_flags.DEFINE_integer("top_k", 3, "Classes printed per image, most probable first (at most the dataset's "
                              "number of classes).")
    absl_flags.DEFINE_enum("dataset_split", None, SPLITS, "Instead of image files: predict this split of the run's "
                           "dataset, print the accuracy and draw the confusion matrix into "
                           "<run_dir>/inspect/confusion_<split>.png.")
    cli.define_data_dir("For --dataset_split; empty: the run's own --data_dir, then the Keras cache, then the bundled "
                        "MNIST subset. Never downloads.")
    absl_flags.DEFINE_boolean("allow_saved_model", False, "Predict with <run_dir>/export/saved_model instead. A "
                              "SavedModel is a program: loading and calling it runs the TensorFlow graph it holds, "
                              "which can read and write files (TensorFlow's SECURITY.md). Give this flag only for "
                              "an export from a source you trust.")
    absl_flags.mark_flag_as_required("run_dir")
    cli.check_directory("run_dir", required=True)
    cli.check("top_k", lambda v: v > 0, "must be a positive integer")
