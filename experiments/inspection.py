"""Look inside a trained CNN (``python -m experiments.inspect_run --run_dir=runs/X [--layers=conv1,conv2]``).

Restores the run's latest checkpoint and writes into ``<run_dir>/inspect/``, as PNGs and as TensorBoard image
summaries (``tensorboard --logdir <run_dir>/inspect``):

| file | tag | what it shows |
| --- | --- | --- |
| ``filters_<first conv>.png`` | ``filters/<layer>`` | the first conv layer's kernels, one tile per filter |
| ``filters_change_<first conv>.png`` | ``filters_change/<layer>`` | the same kernels minus their initial values |
| ``feature_maps_<layer>.png`` | ``feature_maps/<layer>`` | per test image: the image, then each filter's map |
| ``top_k_<layer>.png`` | ``top_k/<layer>`` | per filter: the test images with its largest mean activation |

Every tile is scaled by its own min/max. After a short run the first-layer kernels are still mostly their
random initialisation, so the change picture is the one that shows what training added.
``inspect_run(run_dir, ...)`` does the same from Python.
"""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from experiments import visuals
from models import architecture
from reference import copy_weights
from training import data as data_lib
from training.config import TrainConfig
from training.errors import OneLineError, RunError
from training.parts import build_run_network, make_preprocessors
from training.rundir import RunDir

BATCH_SIZE = 500  # test images per forward pass: conv1 of mnist_cnn then holds 500*28*28*32 floats (50 MB)


class InspectError(OneLineError, ValueError):
    """A run that cannot be inspected as asked (no checkpoint, an unknown layer); the message says why."""


@dataclasses.dataclass
class RestoredRun:
    config: TrainConfig
    model: object  # a Keras CNN (models.CNN) holding the checkpoint's weights
    checkpoint: str  # path prefix of the restored checkpoint
    step: int  # training step of that checkpoint


def load_config(run_dir):
    """The ``TrainConfig`` saved in ``<run_dir>/config.json``."""
    try:
        return RunDir(run_dir).read_config()
    except RunError as error:
        raise InspectError(str(error)) from None


def restore_run(run_dir):
    """The run's model with the weights of its latest checkpoint, as a float32-variable Keras CNN.

    A reference-network run is restored as such, then its weights are copied into the equivalent Keras CNN
    (``reference.copy_weights`` is exact), so activations are always read from ``model.stack``.
    """
    config = load_config(run_dir)
    model = build_run_network(config)
    try:
        latest, step = RunDir(run_dir).restore_weights(model, config.arch)
    except RunError as error:
        raise InspectError(str(error)) from None
    return RestoredRun(config, _as_keras(model, config), latest, step)


def _as_keras(model, config):
    """A Keras CNN holding ``model``'s weights (an exact copy, whichever implementation ``model`` is), so
    activations are read from ``keras_model.stack`` alike for both."""
    keras_model = build_run_network(config, "keras")
    copy_weights(model, keras_model)
    return keras_model


def conv_blocks(model):
    """Names of the model's conv and residual blocks, in order."""
    return [layer.spec.name for layer in model.plan if isinstance(layer.spec, (architecture.Conv,
                                                                                 architecture.Residual))]


def choose_layers(model, names):
    """``names`` checked against the model, or every conv and residual block when ``names`` is empty."""
    blocks = conv_blocks(model)
    if not blocks:
        raise InspectError(f"arch {model.arch} has no conv or residual block to look inside")
    specs = {layer.spec.name: layer.spec for layer in model.plan}
    for name in names:
        if name not in specs:
            raise InspectError(f"the model has no layer '{name}'; its conv and residual blocks are "
                               f"{', '.join(blocks)}")
        if name not in blocks:
            raise InspectError(f"layer '{name}' is a {type(specs[name]).__name__} layer, not a conv or residual "
                               f"block; choose from {', '.join(blocks)}")
    return list(names) or blocks


def first_kernel(model):
    """``(name, kernel)`` of the first conv or residual block: its (first) convolution's HWIO kernel."""
    name = conv_blocks(model)[0]
    block = next(layer for layer in model.stack if layer.name == name)
    conv = getattr(block, "conv", None) or block.conv1  # ConvBlock.conv, or ResidualBlock.conv1
    return name, np.asarray(conv.kernel, np.float32)


def initial_kernel(config):
    """The first conv kernel as ``trainer.train`` initialised it: the model rebuilt right after seeding Keras
    with ``config.seed``, as ``train`` does. Seeds Python's, NumPy's and TensorFlow's global generators."""
    keras.utils.set_random_seed(config.seed)
    return first_kernel(_as_keras(build_run_network(config), config))[1]


def inspect_run(run_dir, data_dir="", layers=(), num_images=8, top_k=9, max_images=2000, max_filters=32):
    """Writes the pictures of the module docstring for the run in ``run_dir``; returns the PNG paths written.

    ``data_dir`` overrides the run's own; feature maps use the first ``num_images`` test images and the top
    ``top_k`` images per filter are searched among the first ``max_images``. Layers with more than
    ``max_filters`` filters are drawn with their first ``max_filters``. Raises ``InspectError`` (and
    ``data.DataError``) with a one-line reason.
    """
    run = restore_run(run_dir)
    model, config = run.model, run.config
    layers = choose_layers(model, layers)
    dataset = data_lib.load(config.dataset, data_dir or config.data_dir, allow_download=False)
    logging.info("inspecting %s (arch %s, step %d) on %s", run.checkpoint, config.arch, run.step, dataset.source)
    preprocess = make_preprocessors(config, dataset)[1]
    images = dataset.x_test[:max_images]
    batches = (preprocess(tf.constant(images[i:i + BATCH_SIZE]), None)[0] for i in range(0, len(images),
                                                                                       BATCH_SIZE))
    means = visuals.mean_activations(model, batches, layers)  # {layer: (N, F)}
    shown = dataset.x_test[:num_images]
    maps = visuals.block_outputs(model, preprocess(tf.constant(shown), None)[0], layers)  # {layer: (n, H, W, F)}

    kernel_layer, kernel = first_kernel(model)
    pictures = {("filters", kernel_layer): visuals.filter_grid(kernel),
                ("filters_change", kernel_layer): visuals.filter_grid(kernel - initial_kernel(config))}
    for name in layers:
        filters = maps[name].shape[-1]
        if filters > max_filters:
            logging.info("layer %s has %d filters; drawing the first %d (--max_filters)", name, filters,
                         max_filters)
        pictures["feature_maps", name] = visuals.feature_map_grid(shown, maps[name][..., :max_filters])
        best = visuals.top_k_indices(means[name][:, :max_filters], top_k)  # (F, k)
        pictures["top_k", name] = visuals.top_k_grid(images, best)
    return write_pictures(os.path.join(run_dir, "inspect"), pictures, run.step)


def write_pictures(folder, pictures, step):
    """Writes each ``{(kind, layer): uint8 HWC image}`` as ``<folder>/<kind>_<layer>.png`` and as a TensorBoard
    image summary tagged ``<kind>/<layer>`` at ``step``; returns the PNG paths."""
    os.makedirs(folder, exist_ok=True)
    for earlier in tf.io.gfile.glob(os.path.join(folder, "events.out.tfevents.*")):
        os.remove(earlier)  # TensorBoard shows one image per tag and step; keep only this inspection's
    writer = tf.summary.create_file_writer(folder)
    paths = []
    with writer.as_default(step=step):
        for (kind, layer), image in pictures.items():
            path = os.path.join(folder, f"{kind}_{layer}.png")
            tf.io.write_file(path, tf.io.encode_png(image))
            tf.summary.image(f"{kind}/{layer}", image[np.newaxis])
            paths.append(path)
    writer.close()
    return paths
