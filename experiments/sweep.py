"""Train a named grid of points over seeds and write a markdown table of the results.

``python -m experiments.sweep --grid=filter_size --data_dir=../shared/data [--dataset=mnist] [--seeds=3]
[--train_steps=N] [--logdir=runs/sweeps] [--out=<logdir>/<grid>-<dataset>.md [--overwrite_table]] [--jobs=2]``;
``--bundled_mnist`` instead of ``--data_dir``: the MNIST subset in bundled_data/, the main job's data.

The grids are in ``experiments/grids.py``. Every run has its own directory under ``--logdir``; running the same
command again reuses the finished runs, so an interrupted sweep continues where it stopped. With ``--jobs=N``
this command starts N copies of itself with ``--train_only``, which share the runs between them, then reads
their results into the table.
"""

import os
import shlex
import sys

from absl import flags as absl_flags
from absl import logging

from flags import cli, sweep_flags

sweep_flags.define_flags()
FLAGS = absl_flags.FLAGS


def command_line(argv):
    """The command that ran, as one could type it again from the repository root."""
    return shlex.join([os.path.basename(sys.executable), "-m", "experiments.sweep", *argv[1:]])


def main(arguments):
    del arguments
    from experiments import grids, launch, runner
    from training import data

    grid = grids.make_grid(FLAGS.grid, FLAGS.dataset)
    out = runner.table_path(FLAGS.out, FLAGS.logdir, grid.name, FLAGS.dataset)
    dataset = data.load_bundled_mnist() if FLAGS.bundled_mnist else data.load(FLAGS.dataset, FLAGS.data_dir)
    steps = FLAGS.train_steps or None
    if FLAGS.train_only:
        trained = runner.train_free_runs(grid, dataset, FLAGS.seeds, FLAGS.logdir, steps, FLAGS.data_dir)
        logging.info("sweep: this process trained %d runs", trained)
        return
    train_elsewhere = None
    if FLAGS.jobs > 1:
        def train_elsewhere():
            # Later flags win: each copy trains only, one process each.
            copy = [sys.executable, "-m", "experiments.sweep", *sys.argv[1:], "--train_only", "--jobs=1"]
            codes = launch.run_all_in_console([copy] * FLAGS.jobs)
            if any(codes):
                ended = launch.how_it_ended(next(code for code in codes if code))
                raise runner.SweepError(f"a training process {ended}; the same command continues the sweep")
    runner.run_and_report(grid, dataset, FLAGS.seeds, FLAGS.logdir, out, command_line(sys.argv),
                          train_steps=steps, data_dir=FLAGS.data_dir, train_elsewhere=train_elsewhere,
                          jobs=FLAGS.jobs, overwrite_table=FLAGS.overwrite_table)


if __name__ == "__main__":
    cli.run('sweep', main, stopped="stopped by a signal; finished runs are kept, and the same command continues "
            "with the others")
