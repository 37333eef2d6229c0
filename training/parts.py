"""Assembles a run's parts once, for every trainer: network, optimizer with its schedule, loss, metrics,
preprocessing and pipelines. The custom loop, the fit loop and the benchmark all build through here.
"""

import dataclasses

import keras
import tensorflow as tf

from models import architecture
from models.network import build_network
from models.whitening import initialise_whitening
from training import data as data_lib
from training import loop as loop_lib
from training import pipeline
from training.freezing import FreezeAfter
from training.lookahead import Lookahead
from training.losses import classification_loss
from training.optimization import Schedule, build_optimizer, exclude_from_decay

WHITENING_SAMPLE = 5000  # training images whose 2x2 patches set a whitening layer's kernel (airbench94's count)


@dataclasses.dataclass
class RunParts:
    """What a loop trains with; built inside the strategy's scope by ``build_parts``."""

    network: object  # a models.network.Network
    optimizer: keras.optimizers.Optimizer
    loss: keras.losses.Loss  # mean over the batch, for Keras compile
    per_example_loss: keras.losses.Loss  # one loss per example, for the custom loop
    train_metrics: tuple  # (mean loss, accuracy)
    eval_metrics: tuple
    train_preprocess: object  # fn(images_uint8, labels) -> (images, labels)
    eval_preprocess: object
    standardization: tuple = None  # (mean, std) per channel on the [0, 1] scale, float32, when the run standardises
    gradient_scales: tuple = None  # one multiplier per trainable variable (--bn_bias_lr_scale), or None
    # What acts after each optimizer step, in order, by checkpoint key: "freeze" (--whitening_bias_epochs), then
    # "lookahead" (--lookahead_every), which then averages the frozen values.
    step_hooks: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Run:
    """Everything one loop needs to train a run, assembled by ``trainer.train``."""

    config: object  # a TrainConfig
    dataset: data_lib.Dataset
    strategy: tf.distribute.Strategy
    parts: RunParts
    step: tf.Variable  # optimizer steps taken, restored from the checkpoint
    total_steps: int
    logdir: str  # where this process writes (a temporary directory on non-chief workers)
    checkpoints: tf.train.CheckpointManager
    writers: dict  # "train" / "eval" -> summary writer (a no-op writer on non-chief workers)
    run_dir: object  # the training.rundir.RunDir: the run's clock is kept with its checkpoints
    eval_every: int  # steps between evaluations (0: only at the end), resolved from steps or epochs
    validation: tuple = None  # (x_val, y_val) held out of the training set, evaluated at each evaluation; or None
    stop_request: object = None  # a training.stopping.StopRequest: a signal asks the loop to stop after a checkpoint


def build_run_network(config, impl=None, info=None):
    """The network of the run ``config`` describes, freshly initialised: as ``config.impl`` builds it, or as
    ``impl`` does (the weights of either implementation copy into the other by name); for images and classes as
    ``info`` (a ``DatasetInfo``) says, else as ``config.dataset_info()`` does."""
    info = info or config.dataset_info()
    return build_network(impl or config.impl, config.arch, info.image_shape, info.num_classes, config.seed,
                         config.precision)


def steps_per_epoch(batch_size, num_train_examples):
    """Optimizer steps in one pass over the training set: whole batches only (the last partial one is dropped)."""
    return num_train_examples // batch_size


def build_parts(config, dataset, total_steps):
    """The run's ``RunParts`` for ``config`` on ``dataset``; call inside ``strategy.scope()``."""
    network = build_run_network(config, info=dataset.info)
    standardization = pipeline.channel_stats(dataset.x_train) if config.standardize else None
    train_preprocess, eval_preprocess = make_preprocessors(config, standardization)
    if any(isinstance(layer.spec, architecture.Whitening) for layer in network.plan):
        # Frozen patch whitening is computed from the preprocessed training images; a restored checkpoint then
        # holds the same kernel.
        sample = dataset.x_train[:WHITENING_SAMPLE]
        initialise_whitening(network, eval_preprocess(tf.constant(sample), None)[0])
    return RunParts(
        network=network, optimizer=make_optimizer(config, total_steps, network.trainable_variables),
        loss=classification_loss(dataset.num_classes, config.label_smoothing),
        per_example_loss=classification_loss(dataset.num_classes, config.label_smoothing, reduction=None),
        train_metrics=make_metrics("train"), eval_metrics=make_metrics("eval"),
        train_preprocess=train_preprocess, eval_preprocess=eval_preprocess, standardization=standardization,
        gradient_scales=bias_gradient_scales(network, config.bn_bias_lr_scale),
        step_hooks=make_step_hooks(config, network, len(dataset.x_train), total_steps))


def make_step_hooks(config, network, num_train_examples, total_steps):
    """``{checkpoint key: hook}`` of what acts after each optimizer step (see ``RunParts.step_hooks``)."""
    epoch = max(1, steps_per_epoch(config.batch_size, num_train_examples))  # a batch larger than the data: 1
    hooks, named = {}, network.named_weights()
    if config.whitening_bias_epochs:  # the config guarantees the architecture has such a bias
        biases = [named[f"{layer.spec.name}/bias"] for layer in network.plan
                  if isinstance(layer.spec, architecture.Whitening) and layer.spec.bias]
        hooks["freeze"] = FreezeAfter(biases, round(config.whitening_bias_epochs * epoch))
    if config.lookahead_every:
        hooks["lookahead"] = Lookahead(named.values(), config.lookahead_every,
                                       round(config.lookahead_start_epochs * epoch), total_steps)
    return hooks


def bias_gradient_scales(network, scale):
    """One gradient multiplier per trainable variable of ``network``: ``scale`` for batch-norm biases (beta),
    1 for the rest; None when ``scale`` is 1."""
    if scale == 1:
        return None
    biases = {id(v) for name, v in network.named_weights().items() if name.endswith("/beta")}
    return tuple(scale if id(v) in biases else 1.0 for v in network.trainable_variables)


def make_preprocessors(config, standardization=None):
    """``(train, eval)`` batch preprocessing functions as ``config`` says (scaling, standardising with
    ``standardization``'s (mean, std), augmenting)."""
    mean, std = standardization or (None, None)
    train = pipeline.make_preprocess(mean, std, augment=config.augment, crop_padding=config.crop_padding,
                                     flip=config.flip)
    return train, pipeline.make_preprocess(mean, std)


def distributed_train_batches(run, start_step):
    """Training batches from ``start_step`` on, distributed over the run's strategy."""
    config, dataset = run.config, run.dataset
    return pipeline.distributed_train_dataset(run.strategy, dataset.x_train, dataset.y_train, config.batch_size,
                                              config.seed, run.parts.train_preprocess, skip_batches=start_step)


def make_run_train_loop(config, parts, strategy):
    """The compiled train function a run trains with (``loop.make_train_loop``), with its gradient scales and
    step hooks: the custom loop, the numerics probe and the benchmark all time this one."""
    return loop_lib.make_train_loop(parts.network, parts.optimizer, parts.per_example_loss, parts.train_metrics,
                                    strategy, config.batch_size, config.jit_compile, parts.gradient_scales,
                                    tuple(parts.step_hooks.values()))


def distributed_eval_batches(run, x, y):
    """Every example of ``x, y`` once, distributed over the run's strategy."""
    return pipeline.distributed_eval_dataset(run.strategy, x, y, run.config.eval_batch_size,
                                             run.parts.eval_preprocess)


def make_optimizer(config, total_steps, variables):
    """The configured optimizer, built on ``variables`` (call inside ``strategy.scope()``).

    With float16 compute it is wrapped in Keras' ``LossScaleOptimizer``, so small gradients do not flush to 0.
    """
    schedule = Schedule(config.lr_schedule, config.learning_rate, total_steps, config.warmup_steps,
                        config.decay_rate, config.decay_steps, config.piecewise_boundaries)
    optimizer = build_optimizer(config.optimizer, schedule, config.momentum, config.nesterov, config.weight_decay,
                                (config.adam_beta_1, config.adam_beta_2))
    if not config.decay_biases:
        exclude_from_decay(optimizer, variables)
    if config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    # Keras 3 creates slot variables lazily; building them here, in the strategy's scope, lets
    # apply_gradients run inside strategy.run.
    optimizer.build(variables)
    return optimizer


def make_metrics(prefix):
    return (keras.metrics.Mean(name=f"{prefix}_loss"),
            keras.metrics.SparseCategoricalAccuracy(name=f"{prefix}_accuracy"))
