"""Flags of ``python -m training.analyze``: the network and the images it is analysed for."""

from absl import flags

from flags import cli
from models import architecture
from training import data


def define_flags():
    """Defines the analysis flags on ``flags.FLAGS`` (once per process)."""
    flags.DEFINE_string("arch", architecture.DEFAULT_ARCH, f"Architecture string ({architecture.GRAMMAR}, joined "
                        f"by '-') or a preset: {', '.join(architecture.PRESETS)}.")
    flags.DEFINE_enum("dataset", "mnist", list(data.DATASETS), "Dataset whose image shape and class count the "
                      "network is analysed for.")
    flags.DEFINE_bool("compare_mlp", True, "Also print the MLP with the same parameter count (within 2%) and "
                      "compare the two.")
    flags.DEFINE_integer("mlp_depth", None, "Hidden layers of that MLP, all of one width; default: the number of "
                         "dense layers of --arch before the logits, at least 1.")
    flags.register_validator("mlp_depth", lambda v: v is None or v > 0,
                             message="--mlp_depth must be a positive integer")

    cli.register_arch_validator()
