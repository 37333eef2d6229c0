"""Flags of ``python -m experiments.inspect_run``: definitions and parse-time validation."""

from absl import flags as absl_flags

from flags import cli


def define_flags():
    """Defines the inspection flags on ``absl_flags.FLAGS`` (once per process)."""
    absl_flags.DEFINE_string("run_dir", None, "Run directory of a finished or running training run (holding "
                        "config.json and checkpoints/); the pictures go to <run_dir>/inspect/.")
    cli.define_data_dir("Empty: the run's own --data_dir, then the Keras cache, then the bundled MNIST subset. Never "
                        "downloads.")
    absl_flags.DEFINE_list("layers", [], "Conv or residual blocks to draw feature maps and top-k images of, e.g. "
                      "conv1,conv2; empty: every conv and residual block of the model.")
    absl_flags.DEFINE_integer("num_images", 8, "Test images (the first ones) whose feature maps are drawn, one row "
                              "each.")
    absl_flags.DEFINE_integer("top_k", 9, "Images per filter in the top-k pictures.")
    absl_flags.DEFINE_integer("max_images", 2000, "Test images (the first ones) searched for each filter's top k.")
    absl_flags.DEFINE_integer("max_filters", 32, "Filters drawn per layer in feature-map and top-k pictures (the first "
                         "ones); the log says when a layer has more.")
    absl_flags.DEFINE_boolean("shared_scale", False, "Draw the tiles of each kernel and feature-map picture on one "
                              "scale (the picture's min is black, its max white) instead of each on its own.")
    absl_flags.DEFINE_integer("ascent_steps", 200, "Gradient-ascent steps of the activation-maximisation pictures "
                              "(one input per filter); 0: none.")
    absl_flags.DEFINE_integer("ascent_seed", 0, "Seed of the activation-maximisation start images and jitter.")
    absl_flags.mark_flag_as_required("run_dir")
    cli.check_directory("run_dir", required=True)
    for name in ("num_images", "top_k", "max_images", "max_filters"):
        absl_flags.register_validator(name, lambda v: v > 0, message=f"--{name} must be a positive integer")
    absl_flags.register_validator("ascent_steps", lambda v: v >= 0, message="--ascent_steps must be 0 (no "
                                  "activation-maximisation pictures) or more")
