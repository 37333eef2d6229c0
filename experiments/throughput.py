"""Training throughput of the custom loop, ``fit``, the reference network and XLA, with and without training
augmentation, measured in one process.

The variants are measured in interleaved rounds (A, B, C, A, B, C, ...) and the median round is reported, so
background load affects all of them alike. Each variant builds its parts as a training run does
(``training.parts``), then runs training steps without evaluation, checkpoints or logging.
"""

import dataclasses
import os
import platform
import statistics
import time

import keras
import tensorflow as tf

from experiments import variants
from experiments.report import cpu_model
from models import analysis
from training import loop as loop_lib
from training import parts as parts_lib
from training import pipeline

UNBOUNDED_STEPS = 10**6  # the schedule's horizon: far beyond any benchmark, so the rate stays at its peak


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


def variant_config(config, name):
    """``config`` (a ``TrainConfig``) with the implementation, loop, XLA and augmentation of variant ``name``."""
    impl, loop, jit_compile, augment = variants.parse(name)
    return dataclasses.replace(config, impl=impl, loop=loop, jit_compile=jit_compile, augment=augment)


def make_runner(config, dataset, name):
    """The ``Runner`` of variant ``name`` for ``config`` (a ``TrainConfig``) on ``dataset``."""
    config = variant_config(config, name)
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        parts = parts_lib.build_parts(config, dataset, UNBOUNDED_STEPS)
    if config.loop == "fit":
        return _fit_runner(config, dataset, parts)
    batches = pipeline.distributed_train_dataset(strategy, dataset.x_train, dataset.y_train, config.batch_size,
                                                 config.seed, parts.train_preprocess)
    iterator = iter(batches)
    train_loop = loop_lib.make_train_loop(parts.network, parts.optimizer, parts.per_example_loss,
                                          parts.train_metrics, strategy, config.batch_size, config.jit_compile)

    def run_steps(steps):
        for _ in range(steps // config.steps_per_loop):
            losses = train_loop(iterator, tf.constant(config.steps_per_loop))
        losses.numpy()  # wait for the device

    return Runner(run_steps)


def _fit_runner(config, dataset, parts):
    model = parts.network
    model.compile(optimizer=parts.optimizer, loss=parts.loss, metrics=[keras.metrics.SparseCategoricalAccuracy()],
                  steps_per_execution=config.steps_per_loop, jit_compile=config.jit_compile)
    batches = pipeline.train_pipeline(dataset.x_train, dataset.y_train, config.batch_size, config.seed,
                                      parts.train_preprocess)

    def run_steps(steps):
        model.fit(batches, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)

    return Runner(run_steps)


def measure(config, dataset, variants, steps, rounds):
    """images/s of each variant in each of ``rounds`` interleaved rounds of ``steps`` steps: name -> list."""
    runners = {}
    for name in variants:
        runners[name] = make_runner(config, dataset, name)
        runners[name].warm_up(2 * config.steps_per_loop)
    seconds = {name: [] for name in variants}
    for _ in range(rounds):
        for name, runner in runners.items():
            seconds[name].append(runner.seconds_for(steps))
    return {name: [steps * config.batch_size / t for t in times] for name, times in seconds.items()}


def training_flops_per_image(arch, dataset):
    """FLOPs of one training image: the multiply-adds ``models.analysis`` counts (convolutions and dense layers
    only) x 2 FLOPs each x 3 (the forward pass, and a backward pass of about twice its cost)."""
    rows = analysis.layer_table(arch, dataset.image_shape, dataset.num_classes)
    return 6 * sum(row.macs for row in rows)


def peak_probes(seconds=2.0):
    """This machine's float32 FLOP/s on two dense kernels, in this process: a 2048x2048 matmul and a 3x3
    convolution of 256 to 256 channels on 16 images of 16x16. The best of repeated calls within ``seconds``."""
    matmul_a = tf.random.normal([2048, 2048])
    conv_x, conv_k = tf.random.normal([16, 16, 16, 256]), tf.random.normal([3, 3, 256, 256])
    probes = {"matmul": (lambda: tf.matmul(matmul_a, matmul_a), 2 * 2048**3),
              "conv": (lambda: tf.nn.conv2d(conv_x, conv_k, 1, "SAME"), 2 * 16 * 16 * 16 * 9 * 256 * 256)}
    peaks = {}
    for name, (run, flops) in probes.items():
        run().numpy()  # warm up
        best, deadline = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            tick = time.perf_counter()
            run().numpy()
            best = min(best, time.perf_counter() - tick)
        peaks[name] = flops / best
    return peaks


def table(round_rates, config, steps, rounds, flops_per_image=None, peaks=None):
    """The markdown table of ``measure``'s rates: the median of each variant's rounds, their range, and the
    ratio of medians to the custom loop's (or the first variant's, when the custom loop was not measured)."""
    rates = {name: statistics.median(values) for name, values in round_rates.items()}
    base_name = "custom" if "custom" in rates else next(iter(rates))
    base = rates[base_name]
    lines = [f"arch `{config.arch}`, global batch {config.batch_size}, {config.steps_per_loop} steps per call, "
             f"median of {rounds} interleaved rounds of {steps} steps; {cpu_model()} ({platform.machine()}), "
             f"{os.cpu_count()} cores, TF {tf.__version__}, Keras {keras.__version__}", ""]
    if peaks:
        lines += [f"peak probes in this process: matmul {peaks['matmul'] / 1e9:.1f} GFLOP/s, conv "
                  f"{peaks['conv'] / 1e9:.1f} GFLOP/s; training FLOPs per image {flops_per_image / 1e6:.1f}M "
                  "(6 x the multiply-adds of convolutions and dense layers: x2 FLOPs, x3 forward and backward)", ""]
    if any(variants.parse(name)[3] for name in rates):
        lines += [f"augmented: crop with {config.crop_padding} pixels of padding, flip {config.flip}", ""]
    lines += ["| variant | implementation | loop | XLA | augmented | images/s (median) | min–max over rounds | "
              f"ratio to {base_name} | GFLOP/s | of conv peak |",
              "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, rate in rates.items():
        impl, loop, *flags = variants.parse(name)
        xla, augmented = ("yes" if flag else "no" for flag in flags)
        ratio = f"{rate / base:.3f}"
        achieved = rate * flops_per_image if flops_per_image else None
        gflops = f"{achieved / 1e9:.1f}" if achieved else "-"
        share = f"{100 * achieved / peaks['conv']:.0f}%" if achieved and peaks else "-"
        spread = f"{min(round_rates[name]):.0f}–{max(round_rates[name]):.0f}"
        lines.append(f"| {name} | {impl} | {loop} | {xla} | {augmented} | {rate:.0f} | {spread} | {ratio} | "
                     f"{gflops} | {share} |")
    return "\n".join(lines)
