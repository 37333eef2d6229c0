"""``--precision=auto``: the run computes in the numerics whose train step is fastest on this machine.

The candidates are float32 and mixed_bfloat16 (the latter only where bfloat16 is native: a GPU, or a CPU with
``avx512_bf16`` or ``amx_bf16``; elsewhere the CPU has no bfloat16 instructions, and it is not timed), each with
and without XLA (only with XLA when ``--jit_compile`` is set). Each is timed on the run's own train step: its
parts, compiled loop and input pipeline, built as training builds them, on its data. Which is fastest differs
between machines (WORKSPACE.md section 12): XLA made airbench94's step 1.1-1.2x faster on an older AMD EPYC and
0.64-0.68x as fast on the two newer ones, where bfloat16 gave 1.24-1.37x.

The answer is cached per CPU (model name, family, model, bfloat16 flags), core count, TensorFlow version and the
settings that shape the step, in ``$CNN_LAB_CACHE/numerics.json`` (default ``~/.cache/cnn-lab``), so the probe
is paid once per machine and recipe; a resumed run keeps the numerics its first start chose. The cache is only a
shortcut: a cache file that cannot be read (damaged, a directory, a named pipe, a link to ``/dev/zero``) or an
entry that is not one this code writes (another precision, rates that are not numbers) is timed again.
"""

import dataclasses
import gc
import hashlib
import json
import math
import os
import time

import tensorflow as tf
from absl import logging

from models import architecture
from training import parts as parts_lib
from training import pipeline, provenance, run_files

AUTO = "auto"
CACHE_ENV = "CNN_LAB_CACHE"
CACHE_FILE = "numerics.json"
# A timed call should last long enough that start-up jitter is small against it, and the whole probe stay
# short beside the run: about this many seconds per candidate, in calls of at most --steps_per_loop steps.
SECONDS_PER_CALL = 2.0
TIMED_CALLS = 2  # per candidate, after one that compiles and one that estimates the step's time; best kept


@dataclasses.dataclass(frozen=True)
class Numerics:
    precision: str
    jit_compile: bool

    @property
    def label(self):
        return f"{self.precision}{' + XLA' if self.jit_compile else ''}"


@dataclasses.dataclass(frozen=True)
class Choice:
    """What ``--precision=auto`` chose, from which rates (label -> images/s), and how it knows them."""

    numerics: Numerics
    rates: dict
    source: str  # "measured", "cached", or "the run's first start"

    def describe(self):
        rates = ", ".join(f"{label} {rate:.0f}" for label, rate in self.rates.items())
        how = f"images/s {self.source}: {rates}" if rates else self.source
        return f"numerics: {self.numerics.label}, the fastest train step on this machine ({how})"

    def record(self):
        """What config.json keeps of the choice."""
        return dict(precision=self.numerics.precision, jit_compile=self.numerics.jit_compile,
                    rates={label: round(rate, 1) for label, rate in self.rates.items()}, source=self.source,
                    cpu=provenance.cpu_description())

    def applied(self, config):
        return dataclasses.replace(config, precision=self.numerics.precision, jit_compile=self.numerics.jit_compile)


def candidates(config, native_bfloat16):
    """The numerics ``--precision=auto`` times for ``config``, float32 first."""
    precisions = ("float32", "mixed_bfloat16") if native_bfloat16 else ("float32",)
    xla = (True,) if config.jit_compile else (False, True)
    return [Numerics(precision, jit) for precision in precisions for jit in xla]


def native_bfloat16():
    """Whether this machine computes bfloat16 natively: any GPU TensorFlow sees (bfloat16 is slow only on GPUs
    older than Ampere, which the timing then shows), or a CPU with ``provenance.BFLOAT16_FLAGS``."""
    return bool(tf.config.list_physical_devices("GPU")) or provenance.native_bfloat16_cpu()


def from_saved_run(config, saved):
    """The ``Choice`` a run's first start recorded in its config.json (``saved``), or None: a resumed run keeps
    its numerics, whatever the machine would choose now."""
    if config.precision != AUTO or not saved:
        return None
    earlier = saved.get("config", {})
    if earlier.get("precision", AUTO) == AUTO:
        return None
    return Choice(Numerics(earlier["precision"], bool(earlier.get("jit_compile", False))), {},
                  "kept from the run's first start")


def choose(config, dataset, strategy, total_steps, cache_dir=None, measure=None):
    """The ``Choice`` for ``config`` (``precision="auto"``) on ``dataset``: from the cache when it holds this
    machine's answer for this step, else by timing each candidate (``measure(config, dataset, strategy,
    total_steps, numerics) -> images/s``; default ``time_train_step``), which is then cached."""
    options = candidates(config, native_bfloat16())
    key = cache_key(config, dataset, strategy, options)
    path = os.path.join(cache_dir or default_cache_dir(), CACHE_FILE)
    entry = read_cache(path).get(key)
    cached = cached_choice(entry, options)
    if cached:
        return cached
    if entry is not None:
        logging.warning("numerics: %s holds an entry for this machine and step that this code did not write (%s); "
                        "timing again", path, json.dumps(entry)[:120])
    measure = measure or time_train_step
    logging.info("numerics: timing the train step in %s on this machine, once (the answer is cached in %s)",
                 ", ".join(numerics.label for numerics in options), path)
    rates = {}
    for numerics in options:
        rates[numerics.label] = measure(config, dataset, strategy, total_steps, numerics)
        logging.info("numerics: %s: %.0f images/s", numerics.label, rates[numerics.label])
    fastest = max(options, key=lambda numerics: rates[numerics.label])
    choice = Choice(fastest, rates, "measured")
    write_cache(path, key, dict(precision=fastest.precision, jit_compile=fastest.jit_compile, rates=rates,
                                measured=time.strftime("%Y-%m-%d %H:%M:%S")))
    return choice


def cached_choice(entry, options):
    """The ``Choice`` a cache ``entry`` records, or None unless it is what ``choose`` writes for the candidates
    ``options``: one of them chosen, a finite positive rate (images/s) for each, and the chosen one the fastest."""
    if not isinstance(entry, dict) or not isinstance(entry.get("precision"), str) or \
            not isinstance(entry.get("jit_compile"), bool):
        return None
    numerics, rates = Numerics(entry["precision"], entry["jit_compile"]), entry.get("rates")
    labels = [option.label for option in options]
    if not (isinstance(rates, dict) and sorted(rates) == sorted(labels) and all(
            isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0 < rate < math.inf
            for rate in rates.values())):
        return None
    if numerics.label not in labels or rates[numerics.label] != max(rates.values()):
        return None
    return Choice(numerics, rates, "cached")


# Which kernels this code's train step runs, where that changes which numerics win: entries written by code with
# other kernels are timed again. "fused-batch-norm": one replica's batch norm trains with FusedBatchNormV3
# (models/batch_norm.py), which changes what the float32 and bfloat16 steps cost.
STEP_KERNELS = "fused-batch-norm"


def cache_key(config, dataset, strategy, options):
    """A string naming the machine, the software and every setting that changes the train step's cost."""
    machine = dict(cpu=provenance.cpu_description(), cores=os.cpu_count(), tensorflow=tf.__version__,
                   gpus=len(tf.config.list_physical_devices("GPU")), kernels=STEP_KERNELS)
    step = dict(arch=architecture.resolve(config.arch), image_shape=list(dataset.image_shape),
                classes=dataset.num_classes, impl=config.impl, batch_size=config.batch_size,
                optimizer=config.optimizer, nesterov=config.nesterov, augment=config.augment,
                crop_padding=config.crop_padding, flip=config.flip, standardize=config.standardize,
                bn_bias_lr_scale=config.bn_bias_lr_scale, lookahead_every=config.lookahead_every,
                whitening_bias_epochs=config.whitening_bias_epochs, weight_decay=bool(config.weight_decay),
                strategy=type(strategy).__name__, replicas=strategy.num_replicas_in_sync,
                candidates=[numerics.label for numerics in options])
    text = json.dumps(dict(machine=machine, step=step), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def default_cache_dir():
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "cnn-lab")


def read_cache(path):
    """The cache's entries, or {} when it is missing or cannot be read (it is only a shortcut: the probe runs
    again). Read as run files are (``run_files.read_json``): a named pipe there would block for ever."""
    try:
        entries = run_files.read_json(path)
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def write_cache(path, key, entry):
    """Adds ``entry`` under ``key``; a cache that cannot be written only costs the next run another probe. Written
    as run files are (``run_files.write_atomically``): whole, and never through a link planted at its name."""
    entries = {**read_cache(path), key: entry}
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        run_files.write_atomically(path, json.dumps(entries, indent=1), "the cache is never written through a "
                                   f"link: remove the link, or set ${CACHE_ENV} to another folder")
    except OSError as error:
        logging.warning("numerics: the choice could not be cached in %s (%s)", path, error.strerror)
    except run_files.RunFileError as error:
        logging.warning("numerics: the choice could not be cached: %s", error)


def time_train_step(config, dataset, strategy, total_steps, numerics):
    """images/s of ``config``'s train step under ``numerics``: one call compiles, one 1-step call estimates the
    step's time, then the best of ``TIMED_CALLS`` calls of about ``SECONDS_PER_CALL`` each."""
    rate = _timed_rate(config, dataset, strategy, total_steps, numerics)
    gc.collect()  # the candidate's network, optimizer and compiled step, before the next is built
    return rate


def _timed_rate(config, dataset, strategy, total_steps, numerics):
    trial = dataclasses.replace(config, precision=numerics.precision, jit_compile=numerics.jit_compile)
    with strategy.scope():
        parts = parts_lib.build_parts(trial, dataset, total_steps)
    batches = pipeline.distributed_train_dataset(strategy, dataset.x_train, dataset.y_train, trial.batch_size,
                                                 trial.seed, parts.train_preprocess)
    iterator = iter(batches)
    train_loop = parts_lib.make_run_train_loop(trial, parts, strategy)

    def seconds(steps):
        tick = time.perf_counter()
        train_loop(iterator, tf.constant(steps)).numpy()
        return time.perf_counter() - tick

    seconds(1)  # traces and compiles
    per_step = seconds(1)
    steps = max(1, min(trial.steps_per_loop, round(SECONDS_PER_CALL / per_step)))
    best = min(seconds(steps) for _ in range(TIMED_CALLS))
    return steps * trial.batch_size / best

