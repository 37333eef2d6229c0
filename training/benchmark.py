"""Training throughput of the custom loop, ``fit``, the reference network and XLA, measured in one process.

``python -m training.benchmark`` prints a markdown table of images/s per variant and each one's ratio to the
custom Keras loop. The variants are measured in interleaved rounds (A, B, C, A, B, C, ...) and the median round
is reported, so background load affects all of them alike.
"""

import dataclasses
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from flags import benchmark_flags, cli  # noqa: E402
from models.network import build_network  # noqa: E402
from training import data as data_lib  # noqa: E402
from training import loop as loop_lib  # noqa: E402
from training import trainer  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.losses import classification_loss  # noqa: E402

benchmark_flags.define_flags()
FLAGS = flags.FLAGS

# name -> (implementation, loop, XLA)
VARIANTS = {
    "custom": ("keras", "custom", False),
    "fit": ("keras", "fit", False),
    "reference": ("reference", "custom", False),
    "custom_xla": ("keras", "custom", True),
    "fit_xla": ("keras", "fit", True),
    "reference_xla": ("reference", "custom", True),
}


@dataclasses.dataclass
class Runner:
    """Runs ``steps`` training steps of one variant per call; ``warm_up`` traces and compiles first."""

    run_steps: object

    def warm_up(self, steps):
        self.run_steps(steps)

    def seconds_for(self, steps):
        tick = time.perf_counter()
        self.run_steps(steps)
        return time.perf_counter() - tick


def custom_runner(config, dataset, impl, jit_compile):
    with tf.distribute.get_strategy().scope():
        model = build_network(impl, config.arch, dataset.image_shape, dataset.num_classes, config.seed)
        optimizer = trainer.make_optimizer(config, 10**6, model.trainable_variables)
        metrics = trainer.make_metrics("train")
    iterator = iter(trainer.make_pipelines(config, dataset, tf.distribute.get_strategy(), 0).train)
    loss = classification_loss(dataset.num_classes, reduction=None)
    train_loop = loop_lib.make_train_loop(model, optimizer, loss, metrics, tf.distribute.get_strategy(),
                                          config.batch_size, jit_compile)

    def run_steps(steps):
        for _ in range(steps // config.steps_per_loop):
            losses = train_loop(iterator, tf.constant(config.steps_per_loop))
        losses.numpy()  # wait for the device

    return Runner(run_steps)


def fit_runner(config, dataset, jit_compile):
    model = build_network("keras", config.arch, dataset.image_shape, dataset.num_classes, config.seed)
    model.compile(optimizer=trainer.make_optimizer(config, 10**6, model.trainable_variables),
                  loss=classification_loss(dataset.num_classes),
                  metrics=[keras.metrics.SparseCategoricalAccuracy()],
                  steps_per_execution=config.steps_per_loop, jit_compile=jit_compile)
    train_preprocess, _ = trainer.make_preprocessors(config, dataset)
    pipeline = data_lib.train_pipeline(dataset.x_train, dataset.y_train, config.batch_size, 0, train_preprocess)

    def run_steps(steps):
        model.fit(pipeline, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)

    return Runner(run_steps)


def measure(config, dataset, variants, steps, rounds):
    """Median images/s of each variant over ``rounds`` interleaved rounds of ``steps`` steps."""
    runners = {}
    for name in variants:
        impl, loop, jit_compile = VARIANTS[name]
        runners[name] = (fit_runner(config, dataset, jit_compile) if loop == "fit"
                         else custom_runner(config, dataset, impl, jit_compile))
        runners[name].warm_up(2 * config.steps_per_loop)
    seconds = {name: [] for name in variants}
    for _ in range(rounds):
        for name, runner in runners.items():
            seconds[name].append(runner.seconds_for(steps))
    return {name: steps * config.batch_size / statistics.median(times) for name, times in seconds.items()}


def table(rates, config, steps, rounds):
    base = rates.get("custom")
    lines = [f"arch `{config.arch}`, global batch {config.batch_size}, {config.steps_per_loop} steps per call, "
             f"median of {rounds} interleaved rounds of {steps} steps; {platform.machine()}, "
             f"{os.cpu_count()} cores, TF {tf.__version__}, Keras {keras.__version__}", "",
             "| variant | implementation | loop | XLA | images/s | ratio to custom |",
             "| --- | --- | --- | --- | ---: | ---: |"]
    for name, rate in rates.items():
        impl, loop, jit_compile = VARIANTS[name]
        ratio = f"{rate / base:.3f}" if base else "-"
        lines.append(f"| {name} | {impl} | {loop} | {'yes' if jit_compile else 'no'} | {rate:.0f} | {ratio} |")
    return "\n".join(lines)


def main(argv):
    del argv
    config = TrainConfig(dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, arch=FLAGS.arch,
                         batch_size=FLAGS.batch_size, steps_per_loop=FLAGS.steps_per_loop, seed=0)
    try:
        dataset = data_lib.load(config.dataset, config.data_dir, allow_download=False)
    except data_lib.DataError as error:
        cli.fail("benchmark", error)
    keras.utils.set_random_seed(0)
    rates = measure(config, dataset, FLAGS.variants, FLAGS.steps, FLAGS.rounds)
    print(table(rates, config, FLAGS.steps, FLAGS.rounds))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_or_exit)
