"""Train a CNN: ``python -m training.train [--flags]`` (``--helpfull`` lists them).

With no flags it trains the default MNIST CNN on MNIST (the bundled subset when full MNIST can be neither found
nor downloaded) and writes TensorBoard logs, checkpoints, flags.txt and results.json under runs/.
"""

import logging
import os
import signal

# Hide TensorFlow's C++ start-up INFO lines (oneDNN notices); warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import flags as absl_flags  # noqa: E402

from flags import cli, train_flags  # noqa: E402
from training.errors import RunError  # noqa: E402

train_flags.define_flags()
FLAGS = absl_flags.FLAGS


def main(arguments):
    del arguments
    from training import distribute, trainer

    config = train_flags.config_from_flags(FLAGS)
    if FLAGS.verbosity <= 0:  # TensorFlow's own INFO lines ("Sharding callback duration" at every checkpoint)
        logging.getLogger("absl").addFilter(_only_ours_below_warning)
    distribute.configure_devices(config.num_cpu_devices, config.tf32)
    # SIGTERM ends the run as Ctrl-C does, through the trainer's cleanup (lock, a worker's temporary directory).
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        trainer.train(config, flagfile=train_flags.flagfile_text(FLAGS, config))
    except KeyboardInterrupt:
        raise RunError(f"stopped by a signal; checkpoints already saved in {config.logdir} are kept, and the same "
                       f"command resumes from the last one") from None
    except distribute.LOST_WORKER_ERRORS as error:
        if config.strategy != "multi_worker":
            raise
        raise RunError(distribute.lost_worker(error)) from None


def _only_ours_below_warning(record):
    """Keeps warnings and errors from anywhere, and information from this project's code only."""
    return record.levelno >= logging.WARNING or f"{os.sep}tensorflow{os.sep}" not in record.pathname


def _interrupt(signum, frame):
    del signum, frame
    raise KeyboardInterrupt


if __name__ == "__main__":
    cli.run('train', main)
