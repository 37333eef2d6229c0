"""Race training recipes to a target accuracy and write a markdown table (``experiments/racing.py``):

``python -m experiments.race --flagfiles=flags/keras_mnist_baseline.cfg,flags/mnist_speed.cfg
--target_accuracy=0.99 --seeds=5 --data_dir=../shared/data --logdir=runs/races/mnist [--out=<logdir>/race.md
[--overwrite_table]]``
"""

import os
import shlex
import sys

from absl import flags as absl_flags

from flags import cli, race_flags

race_flags.define_flags()
FLAGS = absl_flags.FLAGS


def main(arguments):
    del arguments
    from experiments import racing
    from flags import train_flags

    # Each recipe as its runs will train it, checked before the race records its terms: a recipe that cannot
    # train is refused now, in one line, instead of failing its first run and binding the --logdir to it.
    overrides = racing.race_flags(FLAGS.target_accuracy, FLAGS.eval_every_epochs, FLAGS.stop_at_target)
    for flagfile in FLAGS.flagfiles:
        train_flags.recipe_config(flagfile, "--seed=0", *overrides,
                                  *([f"--data_dir={FLAGS.data_dir}"] if FLAGS.data_dir else []))
    command = shlex.join([os.path.basename(sys.executable), "-m", "experiments.race", *sys.argv[1:]])
    out = racing.table_path(FLAGS.out, FLAGS.logdir)
    racing.race_and_report(FLAGS.flagfiles, FLAGS.target_accuracy, FLAGS.seeds, FLAGS.logdir, out, command,
                           FLAGS.data_dir, FLAGS.eval_every_epochs, FLAGS.stop_at_target,
                           overwrite_table=FLAGS.overwrite_table)
    print(out)


if __name__ == "__main__":
    cli.run('race', main, stopped="stopped by a signal; finished runs are kept, and the same command continues "
            "the race")
