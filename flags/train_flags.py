"""Flags of ``python -m training.train``: definitions, parse-time validation, and the ``TrainConfig`` they make.

Only entry points import this module; everything below them takes a ``TrainConfig``.
"""

import os

from absl import flags

from flags import cli
from models import architecture
from training import data, optimization
from training.config import TrainConfig

_DEFAULTS = TrainConfig()


def define_flags():
    """Defines the training flags on ``flags.FLAGS`` (once per process)."""
    d = _DEFAULTS
    flags.DEFINE_enum("dataset", d.dataset, list(data.DATASETS), "Dataset to train and test on.")
    flags.DEFINE_string("data_dir", d.data_dir, "Folder holding <dataset>.npz (x_train, y_train, x_test, y_test); "
                        "empty: tf.keras.datasets, then the MNIST subset bundled in bundled_data/.")
    flags.DEFINE_bool("download", d.allow_download, "Let tf.keras.datasets download a dataset it has not cached.")
    flags.DEFINE_string("arch", d.arch, f"Architecture string ({architecture.GRAMMAR}, joined by '-') or a "
                        f"preset: {', '.join(architecture.PRESETS)}.")
    flags.DEFINE_enum("impl", d.impl, ["keras", "reference"], "Subclassed Keras model or low-level tf.nn network.")
    flags.DEFINE_bool("standardize", d.standardize, "Standardise each channel with the training set's mean and "
                      "std instead of scaling to [0, 1].")
    flags.DEFINE_bool("augment", d.augment, "Random crop (4-pixel padding) and horizontal flip of training images.")
    flags.DEFINE_enum("optimizer", d.optimizer, list(optimization.OPTIMIZERS), "Optimizer.")
    flags.DEFINE_float("learning_rate", d.learning_rate, "Peak learning rate, per update.")
    flags.DEFINE_float("momentum", d.momentum, "SGD momentum coefficient, in [0, 1).")
    flags.DEFINE_bool("nesterov", d.nesterov, "Use Nesterov momentum with SGD.")
    flags.DEFINE_enum("lr_schedule", d.lr_schedule, list(optimization.SCHEDULES), "Decay after the warmup.")
    flags.DEFINE_integer("warmup_steps", d.warmup_steps, "Steps of linear warmup from 0 to --learning_rate.")
    flags.DEFINE_float("decay_rate", d.decay_rate, "exponential: factor per --decay_steps; piecewise: factor at "
                       "each boundary. In (0, 1].")
    flags.DEFINE_integer("decay_steps", d.decay_steps, "Period of the exponential decay, in steps.")
    flags.DEFINE_list("piecewise_boundaries", list(map(str, d.piecewise_boundaries)) or ["0.5", "0.75"],
                      "piecewise: increasing fractions of the training steps where the rate is multiplied by "
                      "--decay_rate.")
    flags.DEFINE_float("weight_decay", d.weight_decay, "Decoupled weight decay of conv and dense kernels.")
    flags.DEFINE_float("label_smoothing", d.label_smoothing, "Label smoothing, in [0, 1).")
    flags.DEFINE_integer("batch_size", d.batch_size, "Global batch size across all replicas.")
    flags.DEFINE_integer("train_steps", d.train_steps, "Optimizer steps to train for (instead of --epochs).")
    flags.DEFINE_float("epochs", d.epochs, "Passes over the training set (instead of --train_steps).")
    flags.DEFINE_integer("eval_every", d.eval_every, "Steps between test-set evaluations; 0: only at the end.")
    flags.DEFINE_integer("log_every", d.log_every, "Steps between console lines and train/ TensorBoard scalars.")
    flags.DEFINE_integer("checkpoint_every", d.checkpoint_every, "Steps between checkpoints; one is always "
                         "written at the end.")
    flags.DEFINE_integer("steps_per_loop", d.steps_per_loop, "Train steps per tf.function call (or fit's "
                         "steps_per_execution).")
    flags.DEFINE_enum("loop", d.loop, ["custom", "fit"], "custom: tf.function training loop; fit: Keras "
                      "compile/fit/evaluate on the same model, as a cross-check.")
    flags.DEFINE_integer("eval_batch_size", d.eval_batch_size, "Global batch size for evaluation.")
    flags.DEFINE_integer("seed", d.seed, "Seed of weight initialisation, data order, dropout and augmentation.")
    flags.DEFINE_bool("deterministic", d.deterministic, "Use deterministic kernels: bit-reproducible, slower.")
    flags.DEFINE_bool("jit_compile", d.jit_compile, "Compile the train step with XLA.")
    flags.DEFINE_enum("strategy", d.strategy, ["auto", "default", "one_device", "mirrored", "multi_worker"],
                      "tf.distribute strategy. auto: mirrored on 2+ GPUs, one_device on 1 GPU, default on CPU; "
                      "multi_worker reads TF_CONFIG.")
    flags.DEFINE_integer("num_cpu_devices", 1, "Split the CPU into this many logical devices (mirrored training "
                         "over CPU replicas).")
    flags.DEFINE_enum("precision", d.precision, ["float32", "mixed_float16", "mixed_bfloat16"],
                      "Compute dtype; variables stay float32. mixed_float16 scales the loss dynamically.")
    flags.DEFINE_list("profile_steps", [], "FIRST,LAST: record a TensorBoard profile of these training steps "
                      "(1-based, inclusive) into <logdir>/plugins/profile.")
    flags.DEFINE_bool("tf32", True, "Allow TensorFloat-32 matmuls and convolutions on Ampere and newer GPUs "
                      "(TensorFlow's default).")
    flags.DEFINE_string("logdir", "", "Run directory for TensorBoard logs, checkpoints, flags and results.json; "
                        "default runs/<dataset>-<arch>-<impl>-<loop>.")
    flags.DEFINE_bool("resume", d.resume, "Continue from the last checkpoint in --logdir; --noresume refuses a "
                      "--logdir that already holds a run.")
    _register_validators()


def _register_validators():
    cli.check("data_dir", lambda v: not v or os.path.isdir(v), "must be an existing directory")
    cli.check("learning_rate", lambda v: v > 0, "must be > 0")
    cli.check("momentum", lambda v: 0 <= v < 1, "must be in [0, 1)")
    cli.check("decay_rate", lambda v: 0 < v <= 1, "must be in (0, 1]")
    cli.check("weight_decay", lambda v: v >= 0, "must be >= 0")
    cli.check("label_smoothing", lambda v: 0 <= v < 1, "must be in [0, 1)")
    for name in ("batch_size", "eval_batch_size", "steps_per_loop", "log_every", "checkpoint_every",
                 "decay_steps"):
        cli.check(name, lambda v: v > 0, "must be a positive integer")
    for name in ("warmup_steps", "eval_every", "seed"):
        cli.check(name, lambda v: v >= 0, "must be a non-negative integer")
    cli.check("train_steps", lambda v: v >= 0, "must be a non-negative integer (0: use --epochs)")
    cli.check("epochs", lambda v: v > 0, "must be > 0")
    cli.check("piecewise_boundaries", _valid_boundaries, "must be increasing fractions in (0, 1), e.g. 0.5,0.75")
    cli.check("num_cpu_devices", lambda v: v > 0, "must be a positive integer")
    cli.check("profile_steps", lambda v: not v or _profile_range(v) is not None,
           "must be FIRST,LAST with 1 <= FIRST <= LAST, e.g. 5,10")

    @flags.multi_flags_validator(["train_steps", "epochs"],
                                 message="give either --train_steps or --epochs, not both")
    def _one_budget(values):
        del values  # Whether a flag was given matters here, not its value.
        return not (flags.FLAGS["train_steps"].present and flags.FLAGS["epochs"].present)

    cli.register_arch_validator()

    @flags.multi_flags_validator(["impl", "loop"], message="--loop=fit trains Keras models only; use "
                                 "--impl=keras with --loop=fit, or --loop=custom with --impl=reference")
    def _fit_needs_keras(values):
        return not (values["impl"] == "reference" and values["loop"] == "fit")

    @flags.multi_flags_validator(["loop", "strategy"], message="--loop=fit runs on one machine; use "
                                 "--loop=custom with --strategy=multi_worker")
    def _fit_on_one_machine(values):
        return not (values["loop"] == "fit" and values["strategy"] == "multi_worker")

    @flags.multi_flags_validator(["strategy", "num_cpu_devices", "batch_size", "eval_batch_size"],
                                 message="--batch_size and --eval_batch_size are global and must divide by "
                                 "--num_cpu_devices under --strategy=mirrored")
    def _batches_divide_over_cpus(values):
        if values["strategy"] != "mirrored":
            return True  # other counts of replicas are known only once devices are up; train() checks them
        return all(values[name] % values["num_cpu_devices"] == 0 for name in ("batch_size", "eval_batch_size"))


def _valid_boundaries(values):
    try:
        fractions = [float(v) for v in values]
    except ValueError:
        return False
    return all(0 < f < 1 for f in fractions) and fractions == sorted(set(fractions))


def _profile_range(values):
    try:
        first, last = (int(v) for v in values)
    except ValueError:
        return None
    return (first, last) if 1 <= first <= last else None


def config_from_flags(values):
    """The ``TrainConfig`` described by parsed flag ``values`` (``flags.FLAGS``)."""
    logdir = values.logdir or os.path.join("runs", f"{values.dataset}-{values.arch}-{values.impl}-{values.loop}")
    return TrainConfig(
        dataset=values.dataset, data_dir=values.data_dir, allow_download=values.download, arch=values.arch,
        impl=values.impl, standardize=values.standardize, augment=values.augment, optimizer=values.optimizer,
        learning_rate=values.learning_rate, momentum=values.momentum, nesterov=values.nesterov,
        lr_schedule=values.lr_schedule, warmup_steps=values.warmup_steps, decay_rate=values.decay_rate,
        decay_steps=values.decay_steps, piecewise_boundaries=tuple(float(b) for b in values.piecewise_boundaries),
        weight_decay=values.weight_decay, label_smoothing=values.label_smoothing, batch_size=values.batch_size,
        train_steps=values.train_steps if values["train_steps"].present else 0, epochs=values.epochs,
        eval_every=values.eval_every, log_every=values.log_every, checkpoint_every=values.checkpoint_every,
        steps_per_loop=values.steps_per_loop, loop=values.loop, eval_batch_size=values.eval_batch_size,
        seed=values.seed, deterministic=values.deterministic, jit_compile=values.jit_compile,
        strategy=values.strategy, precision=values.precision,
        profile_steps=_profile_range(values.profile_steps) if values.profile_steps else (), logdir=logdir,
        resume=values.resume)


def flagfile_text(values, config):
    """The training flags as a flagfile that reproduces the run (``--flagfile=<logdir>/flags.txt``).

    It names the run directory ``config`` resolved and only the step budget that was used.
    """
    unused_budget = "epochs" if config.train_steps else "train_steps"
    lines = []
    for flag in values.get_flags_for_module(__name__):
        if flag.name == "logdir":
            lines.append(f"--logdir={config.logdir}")
        elif flag.name != unused_budget:
            lines.append(flag.serialize())
    return "".join(f"{line}\n" for line in lines)
