"""Flags of ``python -m experiments.analyze``: the network and the images it is analysed for."""

from absl import flags as absl_flags

from flags import cli
from models import architecture
from training.dataset_info import DATASETS


def define_flags():
    """Defines the analysis flags on ``absl_flags.FLAGS`` (once per process)."""
    absl_flags.DEFINE_string("arch", architecture.DEFAULT_ARCH, f"Architecture string ({architecture.GRAMMAR}, joined "
                        f"by '-') or a preset: {', '.join(architecture.PRESETS)}.")
    absl_flags.DEFINE_enum("dataset", "mnist", list(DATASETS), "Dataset whose image shape and class count the "
                      "network is analysed for.")
    absl_flags.DEFINE_bool("compare_mlp", True, "Also print the MLP with the same parameter count (within 2%) and "
                      "compare the two.")
    absl_flags.DEFINE_integer("mlp_depth", None, "Hidden layers of that MLP, all of one width; default: the number of "
                         "dense layers of --arch before the logits, at least 1.")
    absl_flags.register_validator("mlp_depth", lambda v: v is None or v > 0,
                             message="--mlp_depth must be a positive integer")

    cli.register_arch_validator()
