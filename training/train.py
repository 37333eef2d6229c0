"""Train a CNN: ``python -m training.train [--flags]`` (``--helpfull`` lists them).

With no flags it trains the default MNIST CNN on MNIST (the bundled subset when full MNIST can be neither found
nor downloaded) and writes TensorBoard logs, checkpoints, flags.txt and results.json under runs/.
"""

import os
import signal

# Hide TensorFlow's C++ start-up INFO lines (oneDNN notices); warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import app, logging  # noqa: E402  (after the environment is set)
from absl import flags as absl_flags  # noqa: E402

from flags import cli, train_flags  # noqa: E402

train_flags.define_flags()
FLAGS = absl_flags.FLAGS


def main(argv):
    if len(argv) > 1:
        cli.fail("train", f"unexpected arguments {' '.join(argv[1:])}; flags look like --name=value", status=2)
    from training import data, distribute, trainer

    config = train_flags.config_from_flags(FLAGS)
    distribute.configure_devices(config.num_cpu_devices, config.tf32)
    # SIGTERM ends the run as Ctrl-C does, through the trainer's cleanup (lock, a worker's temporary directory).
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        trainer.train(config, flagfile=train_flags.flagfile_text(FLAGS, config))
    except KeyboardInterrupt:
        logging.flush()
        cli.fail("train", f"stopped by a signal; the checkpoints in {config.logdir} are kept and the same command "
                          f"resumes from the last one")
    except (data.DataError, trainer.RunError) as error:
        logging.flush()
        cli.fail("train", error)
    except distribute.LOST_WORKER_ERRORS as error:
        if config.strategy != "multi_worker":
            raise
        logging.flush()
        cli.fail("train", distribute.lost_worker(error))


def _interrupt(signum, frame):
    del signum, frame
    raise KeyboardInterrupt


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_or_exit)
