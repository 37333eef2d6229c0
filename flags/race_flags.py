"""Flags of ``python -m experiments.race``: definitions and parse-time validation."""

import os

from absl import flags as absl_flags

from flags import cli
from flags.seeds_flags import MAX_SEEDS

DEFAULT_LOGDIR = os.path.join("runs", "races", "race")  # under runs/, which git ignores


def define_flags():
    """Defines the race flags on ``absl.flags.FLAGS`` (once per process)."""
    absl_flags.DEFINE_list("flagfiles", None, "Two or more training flagfiles; the first is the baseline.")
    absl_flags.DEFINE_float("target_accuracy", None, "Test accuracy in (0, 1] every recipe races to.")
    absl_flags.DEFINE_integer("seeds", 3, "Runs per recipe, with seeds 0, 1, ..., seeds-1, run alternately.")
    cli.define_data_dir("Passed to every run.")
    absl_flags.DEFINE_float("eval_every_epochs", 0.0, "Evaluate every run after this many epochs, overriding the "
                            "flagfiles, so every recipe is checked after the same numbers of images; 0: each "
                            "flagfile's own interval.")
    absl_flags.DEFINE_bool("stop_at_target", False, "End each run at its first evaluation at the target.")
    absl_flags.DEFINE_string("logdir", DEFAULT_LOGDIR, "Root of the run directories "
                             "<logdir>/<recipe>-seed<k> and of race.json, the race's terms: the same command "
                             "continues a stopped race there (same recipes, settings, commit and CPU model).")
    cli.define_table_flags("<logdir>/race.md", "of another race", "runs")
    absl_flags.mark_flags_as_required(["flagfiles", "target_accuracy"])
    cli.check("flagfiles", lambda v: v is None or (len(v) >= 2 and all(os.path.isfile(f) for f in v)),
              "must name two or more existing flagfiles, the baseline first")
    cli.check("target_accuracy", lambda v: v is None or 0 < v <= 1, "must be in (0, 1]")
    cli.check("seeds", lambda v: 0 < v <= MAX_SEEDS, f"must be a positive integer, at most {MAX_SEEDS}")
    cli.check("eval_every_epochs", lambda v: 0 <= v <= 1e6, "must be in [0, 1e6]")
