"""Look inside a trained CNN: ``python -m experiments.inspect_run --run_dir=runs/X [--layers=conv1,conv2]``.

Writes the pictures ``experiments/inspection.py`` describes into ``<run_dir>/inspect/`` and prints their paths.
"""

import os

# Hide TensorFlow's C++ start-up INFO lines (oneDNN notices); warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import app, logging  # noqa: E402  (after the environment is set)
from absl import flags as absl_flags  # noqa: E402

from flags import cli, inspect_flags  # noqa: E402

inspect_flags.define_flags()
FLAGS = absl_flags.FLAGS
PROGRAM = "inspect_run"


def main(argv):
    if len(argv) > 1:
        cli.fail(PROGRAM, f"unexpected arguments {' '.join(argv[1:])}; flags look like --name=value", status=2)
    from experiments import inspection
    from training import data

    try:
        paths = inspection.inspect_run(FLAGS.run_dir, FLAGS.data_dir, FLAGS.layers, FLAGS.num_images, FLAGS.top_k,
                                       FLAGS.max_images, FLAGS.max_filters)
    except (inspection.InspectError, data.DataError) as error:
        logging.flush()
        cli.fail(PROGRAM, error)
    for path in paths:
        print(path)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_or_exit)
