"""Run one training recipe over seeds and write mean ± std and min–max of its results
(``experiments/seed_runs.py``):

``python -m experiments.seeds --recipe=flags/mnist_full.cfg --seeds=3 --data_dir=../shared/data
--logdir=runs/seeds [--out=<logdir>/<recipe>.md [--overwrite_table]] [--paired_with=<another flagfile>]``

The same command continues an interrupted one: finished seeds are read, an unfinished one resumes.
"""

import os
import shlex
import sys

from absl import flags as absl_flags

from flags import cli, seeds_flags

seeds_flags.define_flags()
FLAGS = absl_flags.FLAGS


def main(arguments):
    del arguments
    from experiments import seed_runs
    from flags import train_flags

    # The recipe as its runs will train it, checked before its record is written into the --logdir.
    train_flags.recipe_config(FLAGS.recipe, "--seed=0", *([f"--data_dir={FLAGS.data_dir}"] if FLAGS.data_dir else []))
    command = shlex.join([os.path.basename(sys.executable), "-m", "experiments.seeds", *sys.argv[1:]])
    flagfile = FLAGS.recipe
    out = seed_runs.table_path(FLAGS.out, FLAGS.logdir, flagfile)
    seed_runs.seeds_and_report(flagfile, FLAGS.seeds, FLAGS.logdir, out, command, FLAGS.data_dir, jobs=FLAGS.jobs,
                               overwrite_table=FLAGS.overwrite_table, paired_with=FLAGS.paired_with)
    print(out)


if __name__ == "__main__":
    cli.run('seeds', main, stopped="stopped by a signal; finished seeds are kept, and the same command resumes "
            "the others")
