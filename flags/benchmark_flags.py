"""Flags of ``python -m training.benchmark``."""

from absl import flags

from flags import cli
from models import architecture
from training import data

VARIANT_NAMES = ("custom", "fit", "reference", "custom_xla", "fit_xla", "reference_xla")


def define_flags():
    flags.DEFINE_enum("dataset", "mnist", list(data.DATASETS), "Dataset whose images are fed.")
    flags.DEFINE_string("data_dir", "", "Folder holding <dataset>.npz; empty: Keras cache or bundled MNIST.")
    flags.DEFINE_string("arch", architecture.DEFAULT_ARCH, "Architecture string or preset.")
    flags.DEFINE_integer("batch_size", 128, "Global batch size.")
    flags.DEFINE_integer("steps_per_loop", 10, "Steps per tf.function call (fit's steps_per_execution).")
    flags.DEFINE_integer("steps", 100, "Timed steps per round; a multiple of --steps_per_loop.")
    flags.DEFINE_integer("rounds", 5, "Interleaved rounds; the median is reported.")
    flags.DEFINE_list("variants", ["custom", "fit", "reference"], f"Any of {', '.join(VARIANT_NAMES)}.")
    for name in ("batch_size", "steps_per_loop", "steps", "rounds"):
        flags.register_validator(name, lambda v: v > 0, message=f"--{name} must be a positive integer")
    flags.register_validator("variants", lambda v: v and set(v) <= set(VARIANT_NAMES),
                             message=f"--variants must be a comma-separated subset of {','.join(VARIANT_NAMES)}")
    cli.register_arch_validator()
    flags.register_multi_flags_validator(["steps", "steps_per_loop"], lambda v: v["steps"] % v["steps_per_loop"] == 0,
                                         message="--steps must be a multiple of --steps_per_loop")

