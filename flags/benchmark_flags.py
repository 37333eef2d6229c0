"""Flags of ``python -m experiments.benchmark``."""

import os

from absl import flags as absl_flags

from experiments.variants import VARIANT_NAMES
from flags import cli
from models import architecture
from training.choices import FLIP_MODES
from training.config import MAX_BATCH, MAX_STEPS
from training.dataset_info import DATASETS

MAX_TIMED_STEPS = 10_000  # per round: 100x the default, a day of the CIFAR speed recipe's slowest steps
MAX_ROUNDS = 100  # as --seeds


def define_flags():
    absl_flags.DEFINE_string("recipe", "", "A training flagfile (e.g. flags/cifar10_speed.cfg) whose run's train step "
                             "is timed: its network, batch, optimizer, augmentation and hooks (the variants set the "
                             "implementation, loop, XLA and precision); then --dataset, --arch, --batch_size, "
                             "--crop_padding and --flip are the recipe's and may not be given.")
    absl_flags.DEFINE_enum("dataset", "mnist", list(DATASETS), "Dataset whose images are fed.")
    cli.define_data_dir("Empty: the Keras cache, then the bundled MNIST subset.")
    absl_flags.DEFINE_string("arch", architecture.DEFAULT_ARCH, "Architecture string or preset.")
    absl_flags.DEFINE_integer("batch_size", 128, "Global batch size.")
    absl_flags.DEFINE_integer("steps_per_loop", 10, "Steps per tf.function call (fit's steps_per_execution).")
    absl_flags.DEFINE_integer("steps", 100, "Timed steps per round; a multiple of --steps_per_loop.")
    absl_flags.DEFINE_integer("rounds", 5, "Interleaved rounds; the median is reported.")
    absl_flags.DEFINE_list("variants", ["custom", "fit", "reference"],
                           f"Any of {', '.join(VARIANT_NAMES)}; a _bf16 variant computes in mixed_bfloat16 (the "
                           "others in float32), an _unfusedbn one trains batch norm with Keras' own call instead of "
                           "the fused kernel, an _augmented one also crops and flips its training images in the "
                           "input pipeline, as --augment does in a run.")
    absl_flags.DEFINE_integer("crop_padding", 4, "_augmented variants: pixels of reflected padding before the crop.")
    absl_flags.DEFINE_enum("flip", "random", list(FLIP_MODES), "_augmented variants: how images are flipped.")
    for name, limit in (("batch_size", MAX_BATCH), ("steps_per_loop", MAX_STEPS), ("steps", MAX_TIMED_STEPS),
                        ("rounds", MAX_ROUNDS)):
        absl_flags.register_validator(name, lambda v, limit=limit: 0 < v <= limit,
                                      message=f"--{name} must be a positive integer, at most {limit}")
    absl_flags.register_validator("variants", lambda v: v and set(v) <= set(VARIANT_NAMES) and len(set(v)) == len(v),
                                  message=f"--variants must be distinct names from {','.join(VARIANT_NAMES)}")
    absl_flags.register_validator("crop_padding", lambda v: 0 <= v <= 16,
                                  message="--crop_padding must be an integer in [0, 16]")
    cli.register_arch_validator()
    recipe_sets = ["dataset", "arch", "batch_size", "crop_padding", "flip"]
    absl_flags.register_multi_flags_validator(
        ["recipe", *recipe_sets],
        lambda v: not v["recipe"] or not any(absl_flags.FLAGS[name].present for name in recipe_sets),
        message=f"--recipe sets {', '.join('--' + name for name in recipe_sets)}; give them in the recipe")
    absl_flags.register_validator("recipe", lambda v: not v or os.path.isfile(v),
                                  message="--recipe must be an existing flagfile")
    absl_flags.register_multi_flags_validator(["steps", "steps_per_loop"],
                                              lambda v: v["steps"] % v["steps_per_loop"] == 0,
                                              message="--steps must be a multiple of --steps_per_loop")

