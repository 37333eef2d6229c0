"""Where a profiled run's time goes: ``python3 -m experiments.op_time --logdir=RUN``.

Prints, for the run's newest profile session (``--profile_steps`` of ``training.train``), what TensorBoard's
Profile tab shows without needing a browser or the internet: the overview page's step-time breakdown (each
profiled step's time by part: host compute, input, compilation, ...) and its conclusion, then the host self-time
of each TensorFlow op type with the share of the busy time it takes, and the profiled steps' wall time against
the cores (``experiments/profile_stats.py``).
"""

import os

from absl import flags as absl_flags

from flags import cli

absl_flags.DEFINE_string("logdir", None, "Run directory holding plugins/profile/<session>/.")
absl_flags.DEFINE_integer("top", 12, "Op types listed one by one; the rest are summed in one row.")
absl_flags.mark_flag_as_required("logdir")
cli.check("top", lambda v: v >= 1, "must be a positive integer")
FLAGS = absl_flags.FLAGS


def main(arguments):
    del arguments
    from experiments import profile_stats

    sessions = profile_stats.profile_sessions(FLAGS.logdir)
    if not sessions:
        cli.fail("op_time", f"{FLAGS.logdir} holds no profile (plugins/profile/<session>/); train with "
                 "--profile_steps=FIRST,LAST first")
    try:
        categories, steps, summary = profile_stats.step_breakdown(sessions[-1])
        idle, shares = profile_stats.op_time_shares(sessions[-1])
    except profile_stats.ProfileError as error:
        message = str(error)
        if len(sessions) > 1:  # only the newest session is read, so a damaged one hides those before it
            message += f"; move it out of plugins/profile/ to read the one before, {sessions[-2].name}"
        cli.fail("op_time", message)
    print(f"Profile {sessions[-1]}\n")
    print(profile_stats.format_breakdown(categories, steps, summary) + "\n")
    print(profile_stats.format_shares(idle, shares, {name: total / 1000 for name, _, total in steps},
                                      os.cpu_count(), FLAGS.top))


if __name__ == "__main__":
    cli.run('op_time', main)
