"""Flags of ``python -m experiments.seeds``: definitions and parse-time validation."""

import os

from absl import flags as absl_flags

from flags import cli

# Most seeds one command takes, of a recipe or of each sweep point: 100 seeds put a mean within 0.1 standard
# deviation, and are already days of CPU at this project's budgets; a typo such as --seeds=10000000 would
# otherwise spend minutes planning runs before printing a line.
MAX_SEEDS = 100
DEFAULT_LOGDIR = os.path.join("runs", "seeds")  # under runs/, which git ignores


def define_flags():
    """Defines the flags on ``absl.flags.FLAGS`` (once per process)."""
    # Not --flagfile: absl reads that one as flags of this command.
    absl_flags.DEFINE_string("recipe", None, "A training flagfile (e.g. flags/mnist_full.cfg) to run over seeds.")
    absl_flags.DEFINE_integer("seeds", 3, "Runs with seeds 0, 1, ..., seeds-1.")
    cli.define_data_dir("Passed to every run.")
    absl_flags.DEFINE_string("logdir", DEFAULT_LOGDIR, "Root of the run directories "
                             "<logdir>/<recipe>-seed<k>; a finished run there is read, an unfinished one resumed.")
    cli.define_table_flags("<logdir>/<recipe>.md", "that this command wrote for another version of the recipe",
                           "seeds")
    absl_flags.DEFINE_integer("jobs", 1, "Seeds trained at once, side by side, the next starting as soon as one "
                              "ends: two on 2 cores put 0.96-1.37x the images/s of one through them, by machine and "
                              "net (WORKSPACE.md section 12), for recipes whose result is an accuracy; their "
                              "training times are then with the cores shared.")
    absl_flags.DEFINE_string("paired_with", None, "Another training flagfile whose seeds under the same --logdir "
                             "(trained by its own experiments.seeds) the table compares with these, seed by seed: "
                             "the difference in test accuracy and its paired 95% interval.")
    absl_flags.mark_flag_as_required("recipe")
    cli.check("recipe", lambda v: v is None or os.path.isfile(v), "must name an existing flagfile")
    cli.check("paired_with", lambda v: v is None or os.path.isfile(v), "must name an existing flagfile")
    cli.check("seeds", lambda v: 0 < v <= MAX_SEEDS, f"must be a positive integer, at most {MAX_SEEDS}")
    cli.check("jobs", lambda v: 0 < v <= 64, "must be a positive integer, at most 64")
