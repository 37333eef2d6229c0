"""Training throughput of the custom loop, ``fit``, the reference network and XLA, each with or without training
augmentation: ``python -m experiments.benchmark [--flags]`` prints a markdown table of images/s per variant and
each one's ratio to the custom Keras loop (or to the first variant listed without it), with the training FLOP/s
each achieves and its share of this machine's peak, measured by a matmul and a conv probe in the same process
(``experiments/throughput.py``).
"""

import sys

if __name__ == "__main__":
    from flags import console

    # Before TensorFlow is imported: its C++ libraries print their notices as they load.
    console.quiet(sys.argv)

from absl import flags as absl_flags  # noqa: E402

from flags import benchmark_flags, cli  # noqa: E402

benchmark_flags.define_flags()
FLAGS = absl_flags.FLAGS


def main(arguments):
    del arguments
    import keras

    from experiments import throughput
    from training import data
    from training.config import TrainConfig

    config = TrainConfig(dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, arch=FLAGS.arch,
                         batch_size=FLAGS.batch_size, steps_per_loop=FLAGS.steps_per_loop,
                         crop_padding=FLAGS.crop_padding, flip=FLAGS.flip, seed=0)
    dataset = data.load(config.dataset, config.data_dir, allow_download=False)
    keras.utils.set_random_seed(0)
    peaks = throughput.peak_probes()
    rates = throughput.measure(config, dataset, FLAGS.variants, FLAGS.steps, FLAGS.rounds)
    flops = throughput.training_flops_per_image(config.arch, dataset)
    print(throughput.table(rates, config, FLAGS.steps, FLAGS.rounds, flops, peaks))


if __name__ == "__main__":
    cli.run('benchmark', main)
