"""Look inside a trained CNN: ``python -m experiments.inspect_run --run_dir=runs/X [--layers=conv1,conv2]``.

Writes the pictures ``experiments/inspection.py`` describes into ``<run_dir>/inspect/`` and prints their paths.
"""

from absl import flags as absl_flags

from flags import cli, inspect_flags

inspect_flags.define_flags()
FLAGS = absl_flags.FLAGS


def main(arguments):
    del arguments
    from experiments import activation_max, inspection

    ascent = activation_max.Ascent(steps=FLAGS.ascent_steps, seed=FLAGS.ascent_seed) if FLAGS.ascent_steps else None
    for path in inspection.inspect_run(FLAGS.run_dir, FLAGS.data_dir, FLAGS.layers, FLAGS.num_images, FLAGS.top_k,
                                       FLAGS.max_images, FLAGS.max_filters, FLAGS.shared_scale, ascent):
        print(path)


if __name__ == "__main__":
    cli.run('inspect_run', main)
