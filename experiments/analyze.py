"""Where the parameters and multiply-adds of a network sit: ``python -m experiments.analyze [--flags]``.

Prints a markdown table per layer (parameters, share, multiply-adds per image) with subtotals for the early
convolutions, the late convolutions and the dense layers; then the same for the MLP with as many parameters
(``--nocompare_mlp`` leaves it out) and a one-line comparison. Nothing is built or trained: the counts come from
the architecture plan (``models/analysis.py``).
"""

from absl import flags as absl_flags

from flags import analyze_flags, cli

analyze_flags.define_flags()
FLAGS = absl_flags.FLAGS


def main(arguments):
    del arguments
    # training.dataset_info, not training.data, which imports TensorFlow.
    from models import analysis
    from training.dataset_info import describe

    info = describe(FLAGS.dataset)
    try:
        text = analysis.report(FLAGS.arch, info.image_shape, info.num_classes, compare_mlp=FLAGS.compare_mlp,
                               mlp_depth=FLAGS.mlp_depth)
    except ValueError as error:
        cli.fail("analyze", f"{error}; --nocompare_mlp prints the table of --arch alone")
    print(text)


if __name__ == "__main__":
    cli.run('analyze', main)
