"""Training throughput of the custom loop, ``fit``, the reference network and XLA, in float32 or bfloat16, each
with or without training augmentation: ``python -m experiments.benchmark [--flags]`` prints a markdown table of
images/s per variant and each one's ratio to the custom Keras loop (or to the first variant listed without it),
with the training FLOP/s each achieves and its share of this machine's peak in its precision, measured by matmul
and conv probes in the same process (``experiments/throughput.py``). ``--recipe=<flagfile>`` times the train step
a run of that recipe takes.
"""

from absl import flags as absl_flags

from flags import benchmark_flags, cli, train_flags

benchmark_flags.define_flags()
FLAGS = absl_flags.FLAGS


def main(arguments):
    del arguments
    import keras

    from experiments import throughput
    from training import data
    from training.config import TrainConfig

    if FLAGS.recipe:
        config = train_flags.recipe_config(FLAGS.recipe, f"--data_dir={FLAGS.data_dir}", "--seed=0",
                                           f"--steps_per_loop={FLAGS.steps_per_loop}")
    else:
        config = TrainConfig(dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, arch=FLAGS.arch,
                             batch_size=FLAGS.batch_size, steps_per_loop=FLAGS.steps_per_loop,
                             crop_padding=FLAGS.crop_padding, flip=FLAGS.flip, seed=0)
    dataset = data.load_for(config, allow_download=False)  # a recipe's folder of images as it trains on them
    keras.utils.set_random_seed(0)
    peaks = throughput.peak_probes()
    rates = throughput.measure(config, dataset, FLAGS.variants, FLAGS.steps, FLAGS.rounds)
    flops = throughput.training_flops_per_image(config.arch, dataset)
    print(throughput.table(rates, config, FLAGS.steps, FLAGS.rounds, flops, peaks))


if __name__ == "__main__":
    cli.run('benchmark', main)
