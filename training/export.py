"""Export a trained run: ``python -m training.export --run_dir=RUN [--data_dir=DIR]``.

Writes ``RUN/export/saved_model/`` (uint8 images in, probabilities and class ids out), ``RUN/export/model.keras``
for a Keras run and ``RUN/export/export.json``, as ``training/exporting.py`` describes, and prints their paths.
"""

from absl import flags as absl_flags

from flags import cli, export_flags

export_flags.define_flags()
FLAGS = absl_flags.FLAGS


def main(arguments):
    del arguments
    from training import exporting

    for path in exporting.export_run(FLAGS.run_dir, FLAGS.data_dir):
        if path:
            print(path)


if __name__ == "__main__":
    cli.run('export', main)
