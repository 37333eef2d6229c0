"""Train a CNN: ``python -m training.train [--flags]`` (``--helpfull`` lists them).

With no flags it trains the default MNIST CNN on MNIST (the bundled subset when full MNIST can be neither found
nor downloaded) and writes TensorBoard logs, checkpoints, flags.txt and results.json under runs/.
"""

import sys

if __name__ == "__main__":
    from flags import console

    # Before TensorFlow is imported: its C++ libraries print their notices as they load.
    console.quiet(sys.argv)

from absl import flags as absl_flags  # noqa: E402

from flags import cli, train_flags  # noqa: E402
from training.errors import RunError  # noqa: E402

train_flags.define_flags()
FLAGS = absl_flags.FLAGS


def main(arguments):
    del arguments
    from training import distribute, trainer
    from training.rundir import stopped_message

    config = train_flags.config_from_flags(FLAGS)
    distribute.configure_devices(config.num_cpu_devices, config.tf32)
    try:
        trainer.train(config, flagfile=train_flags.flagfile_text(FLAGS, config))
    except KeyboardInterrupt:
        raise RunError(stopped_message(config.logdir)) from None
    except distribute.LOST_WORKER_ERRORS as error:
        if config.strategy != "multi_worker":
            raise
        raise RunError(distribute.lost_worker(error)) from None


if __name__ == "__main__":
    cli.run('train', main)
