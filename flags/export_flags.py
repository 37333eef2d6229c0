"""Flags of ``python -m training.export``: the run to export, and where a standardised run's training images are."""

from absl import flags as absl_flags

from flags import cli


def define_flags():
    """Defines the export flags on ``absl_flags.FLAGS`` (once per process)."""
    absl_flags.DEFINE_string("run_dir", None, "Run directory written by training.train (config.json, checkpoints/); "
                             "the export goes to <run_dir>/export/.")
    cli.define_data_dir("Read only for a run of older code trained with --standardize (a run records its mean and std "
                        "in preprocessing.json); empty: the run's own --data_dir, then the Keras cache, then the "
                        "bundled MNIST subset. Never downloads.")
    absl_flags.mark_flag_as_required("run_dir")
    cli.check_directory("run_dir", required=True)
