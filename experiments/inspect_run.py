"""Look inside a trained CNN: ``python -m experiments.inspect_run --run_dir=runs/X [--layers=conv1,conv2]``.

Writes the pictures ``experiments/inspection.py`` describes into ``<run_dir>/inspect/`` and prints their paths.
"""

import os

# Hide TensorFlow's C++ start-up INFO lines (oneDNN notices); warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import flags as absl_flags  # noqa: E402

from flags import cli, inspect_flags  # noqa: E402

inspect_flags.define_flags()
FLAGS = absl_flags.FLAGS


def main(arguments):
    del arguments
    from experiments import inspection

    for path in inspection.inspect_run(FLAGS.run_dir, FLAGS.data_dir, FLAGS.layers, FLAGS.num_images, FLAGS.top_k,
                                       FLAGS.max_images, FLAGS.max_filters):
        print(path)


if __name__ == "__main__":
    cli.run('inspect_run', main)
