"""Train a named grid of points over seeds and write a markdown table of the results.

``python -m experiments.sweep --grid=filter_size --data_dir=../shared/data [--dataset=mnist] [--seeds=3]
[--train_steps=N] [--out=sweeps/<grid>-<dataset>.md] [--logdir=runs/sweeps]``

The grids are in ``experiments/grids.py``. Every run has its own directory under ``--logdir``; running the same
command again reuses the finished runs, so an interrupted sweep continues where it stopped.
"""

import os
import shlex
import sys

if __name__ == "__main__":
    from flags import console

    # Before TensorFlow is imported: its C++ libraries print their notices as they load.
    console.quiet(sys.argv)

from absl import flags as absl_flags  # noqa: E402

from flags import cli, sweep_flags  # noqa: E402

sweep_flags.define_flags()
FLAGS = absl_flags.FLAGS


def command_line(argv):
    """The command that ran, as one could type it again from the repository root."""
    return shlex.join([os.path.basename(sys.executable), "-m", "experiments.sweep", *argv[1:]])


def main(arguments):
    del arguments
    from experiments import grids, runner
    from training import data

    grid = grids.make_grid(FLAGS.grid, FLAGS.dataset)
    out = FLAGS.out or os.path.join("sweeps", f"{grid.name}-{FLAGS.dataset}.md")
    dataset = data.load(FLAGS.dataset, FLAGS.data_dir)
    runner.run_and_report(grid, dataset, FLAGS.seeds, FLAGS.logdir, out, command_line(sys.argv),
                          train_steps=FLAGS.train_steps or None, data_dir=FLAGS.data_dir)


if __name__ == "__main__":
    cli.run('sweep', main, stopped="stopped by a signal; finished runs are kept, and the same command continues "
            "with the others")
