"""Train a CNN: ``python -m training.train [--flags]`` (``--helpfull`` lists them).

With no flags it trains the default MNIST CNN on MNIST (the bundled subset when full MNIST can be neither found
nor downloaded) and writes TensorBoard logs, checkpoints, flags.txt and results.json under runs/.
"""

import os

from absl import flags as absl_flags

from flags import cli, train_flags
from training.errors import RunError

train_flags.define_flags()
FLAGS = absl_flags.FLAGS


def main(arguments):
    del arguments
    from absl import logging

    from training import distribute, progress, stopping, trainer
    from training.run_files import RESULTS
    from training.rundir import stopped_message

    config = train_flags.config_from_flags(FLAGS)
    distribute.configure_devices(config.num_cpu_devices, config.tf32)
    try:
        result = trainer.train(config, flagfile=train_flags.flagfile_text(FLAGS, config))
    except stopping.Stopped:
        raise  # it says where the loop stopped and what it kept
    except KeyboardInterrupt:  # a second signal, or one outside the loop
        raise stopping.Stopped(stopped_message(config.logdir)) from None
    except distribute.LOST_WORKER_ERRORS as error:
        if config.strategy != "multi_worker":
            raise
        raise RunError(distribute.lost_worker(error)) from None
    for line in progress.summary_lines(result.results, os.path.join(config.logdir, RESULTS)):
        logging.info("%s", line)


if __name__ == "__main__":
    cli.run('train', main)
