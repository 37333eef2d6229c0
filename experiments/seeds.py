"""Run one training recipe over seeds and write mean ± std and min–max of its results
(``experiments/seed_runs.py``):

``python -m experiments.seeds --recipe=flags/mnist_full.cfg --seeds=3 --data_dir=../shared/data
--logdir=runs/seeds --out=sweeps/seeds-mnist_full.md``

The same command continues an interrupted one: finished seeds are read, an unfinished one resumes.
"""

import os
import shlex
import sys

if __name__ == "__main__":
    from flags import console

    # Before TensorFlow is imported: its C++ libraries print their notices as they load.
    console.quiet(sys.argv)

from absl import flags as absl_flags  # noqa: E402

from flags import cli, seeds_flags  # noqa: E402

seeds_flags.define_flags()
FLAGS = absl_flags.FLAGS


def main(arguments):
    del arguments
    from experiments import launch, seed_runs

    command = shlex.join([os.path.basename(sys.executable), "-m", "experiments.seeds", *sys.argv[1:]])
    flagfile = FLAGS.recipe
    out = FLAGS.out or os.path.join(FLAGS.logdir, f"{launch.recipe_name(flagfile)}.md")
    seed_runs.seeds_and_report(flagfile, FLAGS.seeds, FLAGS.logdir, out, command, FLAGS.data_dir, jobs=FLAGS.jobs)
    print(out)


if __name__ == "__main__":
    cli.run('seeds', main)
