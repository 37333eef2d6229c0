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
from absl import logging

from experiments import variants
from models import analysis
from training import parts as parts_lib
from training import pipeline
from training.config import CUSTOM_LOOP_ONLY
from training.provenance import cpu_description

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
    """``config`` (a ``TrainConfig``) with the implementation, loop, XLA, precision and augmentation of variant
    ``name``; a config that augments already (a recipe's) keeps augmenting."""
    impl, loop, jit_compile, augment, precision, _ = variants.parse(name)
    changes = dict(impl=impl, loop=loop, jit_compile=jit_compile, augment=augment or config.augment,
                   precision=precision)
    if loop == "fit":  # what only the custom loop applies is left out of fit's step, as --loop=fit requires
        defaults = {field.name: field.default for field in dataclasses.fields(config)}
        changes.update({name: defaults[name] for name in CUSTOM_LOOP_ONLY})
    return dataclasses.replace(config, **changes)


def make_runner(config, dataset, name):
    """The ``Runner`` of variant ``name`` for ``config`` (a ``TrainConfig``) on ``dataset``: the train step a run
    of that config takes (``parts.make_run_train_loop``), fed by the run's input pipeline."""
    config = variant_config(config, name)
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        parts = parts_lib.build_parts(config, dataset, UNBOUNDED_STEPS)
    *_, fused_batch_norm = variants.parse(name)
    if not fused_batch_norm:
        _unfuse_batch_norm(parts.network)
    if config.loop == "fit":
        return _fit_runner(config, dataset, parts)
    batches = pipeline.distributed_train_dataset(strategy, dataset.x_train, dataset.y_train, config.batch_size,
                                                 config.seed, parts.train_preprocess)
    iterator = iter(batches)
    train_loop = parts_lib.make_run_train_loop(config, parts, strategy)

    def run_steps(steps):
        for _ in range(steps // config.steps_per_loop):
            losses = train_loop(iterator, tf.constant(config.steps_per_loop))
        losses.numpy()  # wait for the device

    return Runner(run_steps)


def _unfuse_batch_norm(model):
    """Makes every batch norm of the Keras ``model`` train with Keras' own call, before its step is traced."""
    from models.batch_norm import BatchNormalization

    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, BatchNormalization):
            layer.fused = False


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
    for index, name in enumerate(variants, 1):
        logging.info("benchmark: building and compiling variant %d of %d, %s", index, len(variants), name)
        runners[name] = make_runner(config, dataset, name)
        runners[name].warm_up(2 * config.steps_per_loop)
    seconds = {name: [] for name in variants}
    for round_number in range(1, rounds + 1):
        for name, runner in runners.items():
            seconds[name].append(runner.seconds_for(steps))
        logging.info("benchmark: round %d of %d: %s images/s", round_number, rounds,
                     ", ".join(f"{name} {steps * config.batch_size / s[-1]:.0f}" for name, s in seconds.items()))
    return {name: [steps * config.batch_size / t for t in times] for name, times in seconds.items()}


def training_flops_per_image(arch, dataset):
    """FLOPs of one training image: the multiply-adds ``models.analysis`` counts (convolutions and dense layers
    only) x 2 FLOPs each x 3 (the forward pass, and a backward pass of about twice its cost)."""
    rows = analysis.layer_table(arch, dataset.image_shape, dataset.num_classes)
    return 6 * sum(row.macs for row in rows)


def peak_probes(seconds=2.0):
    """This machine's FLOP/s on two dense kernels, in this process: a 2048x2048 matmul and a 3x3 convolution of
    256 to 256 channels on 16 images of 16x16, in float32 ("matmul", "conv") and in bfloat16 ("matmul_bf16",
    "conv_bf16": native on CPUs with avx512_bf16 or amx_bf16, emulated elsewhere). The best of repeated calls
    within ``seconds`` each."""
    probes = {}
    for suffix, dtype in (("", tf.float32), ("_bf16", tf.bfloat16)):
        matmul_a = tf.cast(tf.random.normal([2048, 2048]), dtype)
        conv_x = tf.cast(tf.random.normal([16, 16, 16, 256]), dtype)
        conv_k = tf.cast(tf.random.normal([3, 3, 256, 256]), dtype)
        probes[f"matmul{suffix}"] = (lambda a=matmul_a: tf.matmul(a, a), 2 * 2048**3)
        probes[f"conv{suffix}"] = (lambda x=conv_x, k=conv_k: tf.nn.conv2d(x, k, 1, "SAME"),
                                   2 * 16 * 16 * 16 * 9 * 256 * 256)
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
    """The markdown table of ``measure``'s rates: the median of each variant's rounds, their range, the ratio of
    medians to the custom loop's (or the first variant's, when the custom loop was not measured), and the share
    of the conv probe's peak in the variant's own precision."""
    rates = {name: statistics.median(values) for name, values in round_rates.items()}
    base_name = "custom" if "custom" in rates else next(iter(rates))
    base = rates[base_name]
    lines = [f"arch `{config.arch}`, global batch {config.batch_size}, {config.steps_per_loop} steps per call, "
             f"median of {rounds} interleaved rounds of {steps} steps; {cpu_description()} ({platform.machine()}), "
             f"{os.cpu_count()} cores, TF {tf.__version__}, Keras {keras.__version__}", ""]
    if peaks:
        probes = ", ".join(f"{name} {peak / 1e9:.1f}" for name, peak in peaks.items())
        lines += [f"peak probes in this process, GFLOP/s: {probes}; training FLOPs per image "
                  f"{flops_per_image / 1e6:.1f}M (6 x the multiply-adds of convolutions and dense layers: x2 FLOPs, "
                  "x3 forward and backward)", ""]
    if any(variants.parse(name)[3] for name in rates):
        lines += [f"augmented: crop with {config.crop_padding} pixels of padding, flip {config.flip}", ""]
    lines += ["| variant | implementation | loop | XLA | precision | augmented | images/s (median) | min–max over "
              f"rounds | ratio to {base_name} | GFLOP/s | of conv peak in its precision |",
              "| --- | --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, rate in rates.items():
        impl, loop, jit, augment, precision, fused = variants.parse(name)
        impl = impl if fused else f"{impl}, batch norm unfused"
        xla, augmented = ("yes" if flag else "no" for flag in (jit, augment))
        ratio = f"{rate / base:.3f}"
        achieved = rate * flops_per_image if flops_per_image else None
        gflops = f"{achieved / 1e9:.1f}" if achieved else "-"
        peak = peaks and peaks.get("conv_bf16" if precision == "mixed_bfloat16" else "conv")
        share = f"{100 * achieved / peak:.0f}%" if achieved and peak else "-"
        spread = f"{min(round_rates[name]):.0f}–{max(round_rates[name]):.0f}"
        lines.append(f"| {name} | {impl} | {loop} | {xla} | {precision} | {augmented} | {rate:.0f} | {spread} | "
                     f"{ratio} | {gflops} | {share} |")
    return "\n".join(lines)
