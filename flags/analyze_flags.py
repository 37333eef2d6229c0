"""Flags of ``python -m experiments.analyze``: the network and the images it is analysed for."""

from absl import flags as absl_flags

from flags import cli
from models import architecture
from training.dataset_info import DATASETS

MAX_MLP_DEPTH = 1000  # hidden layers; deeper than any network here by far, and its table is still 1,000 rows


def define_flags():
    """Defines the analysis flags on ``absl_flags.FLAGS`` (once per process)."""
    absl_flags.DEFINE_string("arch", architecture.DEFAULT_ARCH, f"Architecture string ({architecture.GRAMMAR}, joined "
                        f"by '-') or a preset: {', '.join(architecture.PRESETS)}.")
    absl_flags.DEFINE_enum("dataset", "mnist", list(DATASETS), "Dataset whose image shape and class count the "
                      "network is analysed for.")
    absl_flags.DEFINE_bool("compare_mlp", True, "Also print the MLP with the same parameter count (within 2%) and "
                      "compare the two.")
    absl_flags.DEFINE_integer("mlp_depth", None, f"Hidden layers of that MLP (at most {MAX_MLP_DEPTH}), all of one "
                         "width; default: the number of dense layers of --arch before the logits, at least 1.")
    # Bounded because the MLP's string and table hold one token and one row per layer.
    cli.check("mlp_depth", lambda v: v is None or 0 < v <= MAX_MLP_DEPTH,
              f"must be a positive integer, at most {MAX_MLP_DEPTH}")

    cli.register_arch_validator()
