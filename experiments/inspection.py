"""Look inside a trained CNN (``python -m experiments.inspect_run --run_dir=runs/X [--layers=conv1,conv2]``).

Opens the run through ``training.trained_run`` (its newest checkpoint that restores, its evaluation preprocessing)
and writes into ``<run_dir>/inspect/``, as PNGs and as TensorBoard image
summaries (``tensorboard --logdir <run_dir>/inspect``):

| file | tag | what it shows |
| --- | --- | --- |
| ``filters_<first conv>.png`` | ``filters/<layer>`` | the first conv layer's kernels, one tile per filter |
| ``filters_change_<first conv>.png`` | ``filters_change/<layer>`` | the same kernels minus their initial values |
| ``feature_maps_<layer>.png`` | ``feature_maps/<layer>`` | per test image: the image, then each filter's map |
| ``top_k_mean_<layer>.png`` | ``top_k_mean/<layer>`` | per filter: the test images with its map's largest mean |
| ``top_k_max_<layer>.png`` | ``top_k_max/<layer>`` | per filter: the test images with its map's largest max |
| ``activation_max_<layer>.png`` | ``activation_max/<layer>`` | per filter: the input maximising its mean activation |

Every picture has a title (what it shows; the run, its dataset and step), the layer and filter index above each
tile (a test image is labelled with its true class, and the feature maps' first column also with its index),
and a colour bar saying what black and white stand for and whether the tiles share one scale. Kernel and
feature-map tiles are each scaled by their own min/max (the range is printed under the tile's label), or all by
one with ``shared_scale``. The mean of a map favours images with much ink, its max an image where the filter's
pattern occurs once, strongly: the two top-k pictures show both. The activation-maximising inputs come from
gradient ascent on the input (``experiments.activation_max``), in the run's input space, shown as pixels.
After a short run the first-layer kernels are still mostly their random initialisation, so the change picture
is the one that shows what training added. The feature-map and top-k PNGs name the classes of their images in
a text chunk ``classes`` (a JSON list: a row's image each, or each tile row by row; ``PIL.Image.open(path).text``).
``inspect_run(run_dir, ...)`` does the same from Python.
"""

import dataclasses
import json
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from experiments import activation_max, visuals
from models import architecture
from training import run_files, trained_run
from training.errors import OneLineError
from training.parts import build_run_network
from training.trained_run import INSPECT, TrainedRun

PICTURE_LINK_REMEDY = "a picture is never written through a link: remove the link"
BATCH_SIZE = 500  # test images per forward pass: conv1 of mnist_cnn then holds 500*28*28*32 floats (50 MB)


class InspectError(OneLineError, ValueError):
    """Layers that cannot be inspected as asked (an unknown layer, a network without conv blocks); the message
    says why. A run that cannot be opened is a ``trained_run.TrainedRunError``."""


def conv_blocks(model):
    """Names of the network's conv blocks, in order: the layers whose kind is a convolution
    (``architecture.CONV``), whose output is a stack of feature maps."""
    return architecture.layers_of_role(model.plan, architecture.CONV)


def choose_layers(model, names):
    """``names`` checked against the network, or every conv block when ``names`` is empty."""
    blocks = conv_blocks(model)
    if not blocks:
        raise InspectError(f"arch {model.arch} has no conv block to look inside")
    specs = {layer.spec.name: layer.spec for layer in model.plan}
    for name in names:
        if name not in specs:
            raise InspectError(f"the model has no layer '{name}'; its conv blocks are "
                               f"{', '.join(blocks)}")
        if name not in blocks:
            raise InspectError(f"layer '{name}' is a {type(specs[name]).__name__} layer, not a conv block; choose "
                               f"from {', '.join(blocks)}")
    return list(names) or blocks


def first_kernel_variable(model):
    """``(name, variable)`` of the first conv block: the HWIO kernel its kind names (``Kind.kernel``)."""
    spec = next(layer.spec for layer in model.plan if layer.spec.name == conv_blocks(model)[0])
    return spec.name, model.named_weights()[f"{spec.name}/{architecture.kind_of(spec).kernel}"]


def first_kernel(model):
    """``(name, kernel)`` of the first conv block: its (first) convolution's HWIO kernel, float32."""
    name, variable = first_kernel_variable(model)
    return name, np.asarray(variable, np.float32)


def initial_kernel(config):
    """The first conv kernel as ``trainer.train`` initialised it: the network rebuilt right after seeding Keras
    with ``config.seed``, as ``train`` does. Seeds Python's, NumPy's and TensorFlow's global generators."""
    keras.utils.set_random_seed(config.seed)
    return first_kernel(build_run_network(config))[1]


def inspect_run(run_dir, data_dir="", layers=(), num_images=8, top_k=9, max_images=2000, max_filters=32,
                shared_scale=False, ascent=activation_max.Ascent()):
    """Writes the pictures of the module docstring for the run in ``run_dir``; returns the PNG paths written.

    ``data_dir`` overrides the run's own; feature maps use the first ``num_images`` test images and the top
    ``top_k`` images per filter are searched among the first ``max_images``. Layers with more than
    ``max_filters`` filters are drawn with their first ``max_filters``. ``shared_scale`` draws the tiles of a
    kernel or feature-map picture on one scale. ``ascent`` sets the gradient ascent (``None``: no
    activation-maximisation pictures). Raises ``trained_run.TrainedRunError``, ``InspectError`` (and
    ``data.DataError``) with a one-line reason.
    """
    run = TrainedRun.open(run_dir, data_dir)
    model, config, dataset = run.network, run.config, run.dataset
    layers = choose_layers(model, layers)
    logging.info("inspecting %s (arch %s, step %d) on %s", run.checkpoint, config.arch, run.step, dataset.source)
    preprocess = run.eval_preprocess()
    images = dataset.x_test[:max_images]
    batches = (preprocess(tf.constant(images[i:i + BATCH_SIZE]), None)[0] for i in range(0, len(images),
                                                                                       BATCH_SIZE))
    pooled = visuals.pooled_activations(model, batches, layers)  # {(pooling, layer): (N, F)}
    shown = dataset.x_test[:num_images]
    classes = [run.class_names[label] for label in dataset.y_test[:max(num_images, max_images)]]
    maps = visuals.block_outputs(model, preprocess(tf.constant(shown), None)[0], layers)  # {layer: (n, H, W, F)}
    about = (f"run {os.path.basename(os.path.normpath(run_dir))}: arch {config.arch}, {config.dataset}, "
             f"step {run.step}")
    bounds = activation_max.pixel_bounds(preprocess, model.plan[0].input_shape[-1])

    pictures = kernel_pictures(model, config, about, shared_scale)
    texts = {}  # (kind, layer): PNG text chunks
    for name in layers:
        filters = maps[name].shape[-1]
        if filters > max_filters:
            logging.info("layer %s has %d filters; drawing the first %d (--max_filters)", name, filters,
                         max_filters)
        pictures["feature_maps", name] = feature_map_picture(shown, maps[name][..., :max_filters], name,
                                                             shared_scale, about, classes[:len(shown)])
        texts["feature_maps", name] = visuals.class_text(classes[:len(shown)])
        for pooling in visuals.POOLINGS:
            best = visuals.top_k_indices(pooled[pooling, name][:, :max_filters], top_k)  # (F, k)
            pictures[f"top_k_{pooling}", name] = top_k_picture(images, pooled[pooling, name][:, :max_filters],
                                                               best, name, pooling, about, classes)
            texts[f"top_k_{pooling}", name] = visuals.class_text(classes[i] for i in best.reshape(-1))
        if ascent is not None:
            logging.info("gradient ascent on %s: %d filters, %d steps", name, min(filters, max_filters), ascent.steps)
            found = activation_max.maximise(model, name, range(min(filters, max_filters)), *bounds, ascent)
            pictures["activation_max", name] = activation_max_picture(found, name, ascent, about)
    return write_pictures(run.subfolder(INSPECT, create=True), pictures, run.step, texts)


def kernel_pictures(model, config, about, shared_scale):
    """``{("filters", layer): picture, ("filters_change", layer): picture}`` of the first conv layer's kernels."""
    layer, variable = first_kernel_variable(model)
    kernel = np.asarray(variable, np.float32)
    size = "x".join(map(str, kernel.shape[:3]))
    pictures = {
        ("filters", layer): visuals.annotate(
            visuals.filter_grid(kernel, layer=layer, shared_scale=shared_scale),
            [f"{layer} kernels ({size}: height x width x input channels), a tile per filter", about],
            visuals.value_bar(kernel, shared_scale, "kernel weight")),
    }
    if not variable.trainable:
        return pictures  # frozen (whitening: computed from the training images): there is no change to draw
    change = kernel - initial_kernel(config)
    return {
        **pictures,
        ("filters_change", layer): visuals.annotate(
            visuals.filter_grid(change, layer=layer, shared_scale=shared_scale),
            [f"{layer} kernels minus their initial values (the network rebuilt from seed {config.seed})", about],
            visuals.value_bar(change, shared_scale, "kernel weight change")),
    }


def feature_map_picture(images, maps, layer, shared_scale, about, classes):
    """Each of ``images`` (test images 0, 1, ..., of the true ``classes``) and then its ``maps`` ``(n, H, W, F)``
    of ``layer``, a row per image, annotated."""
    bar = visuals.value_bar(maps, shared_scale, f"{layer} activation")
    image_labels = [[name, f"test image {number}"] for number, name in enumerate(classes)]
    return visuals.annotate(
        visuals.feature_map_grid(images, maps, layer=layer, shared_scale=shared_scale, image_labels=image_labels),
        [f"{layer} feature maps of the first {len(images)} test images: a row per image, then a map per filter",
         about],
        dataclasses.replace(bar, caption=bar.caption + ("the first tile of each row is the test image, its pixels "
                                                        "as they are, under its true class",)))


def top_k_picture(images, pooled, best, layer, pooling, about, classes):
    """The ``images`` at ``best`` ``(F, k)``, those with the largest ``pooled`` ``(N, F)`` activation, a row per
    filter, each labelled with its score and its true class (``classes``, one per image), annotated."""
    scores = np.take_along_axis(pooled.T, best, axis=1)  # (F, k)
    return visuals.annotate(
        visuals.top_k_grid(images, best, layer=layer, scores=scores, statistic=pooling, image_labels=classes),
        [f"{layer}: per filter, the {best.shape[1]} of the first {len(images)} test images with the largest "
         f"spatial {pooling} of its map (ranked by {pooling}, printed under the filter; then the image's true "
         "class)", about],
        visuals.PIXEL_BAR)


def activation_max_picture(found, layer, ascent, about):
    """The images ``activation_max.maximise`` found (a ``Maximised``), annotated with how they were found."""
    return visuals.annotate(
        visuals.activation_max_grid(found.pixels, layer, range(len(found.pixels)), found.final),
        [f"{layer}: per filter, the input that maximises its mean activation (printed under it)", about,
         f"gradient ascent in the run's input space, {ascent.steps} steps of {ascent.step_size} from gray noise "
         f"(seed {ascent.seed}); jitter {ascent.jitter} px, total variation {ascent.tv_weight}, L2 decay "
         f"{ascent.l2_decay}, " + (f"blur sigma {ascent.blur_sigma} px every {ascent.blur_every} steps"
                                   if ascent.blur_every else "no blur")],
        visuals.PIXEL_BAR)


def write_pictures(folder, pictures, step, texts=None):
    """Writes each ``{(kind, layer): uint8 HWC image}`` as ``<folder>/<kind>_<layer>.png``, with the PNG text
    chunks ``texts[kind, layer]`` where given, and as a TensorBoard image summary tagged ``<kind>/<layer>`` at
    ``step``; returns the PNG paths."""
    os.makedirs(folder, exist_ok=True)
    for earlier in tf.io.gfile.glob(os.path.join(folder, "events.out.tfevents.*")):
        os.remove(earlier)  # TensorBoard shows one image per tag and step; keep only this inspection's
    paths = []
    # A full disk under the summary writer stops in one line, as under the PNGs (run_files.write_atomically).
    with run_files.failed_writes_stop(lambda path: folder, lambda: "run the same command again"):
        writer = tf.summary.create_file_writer(folder)
        with writer.as_default(step=step):
            for (kind, layer), image in pictures.items():
                path = os.path.join(folder, f"{kind}_{layer}.png")
                # Never through a link planted at the name, and whole or not at all.
                run_files.write_atomically(path, visuals.png_bytes(image, (texts or {}).get((kind, layer))),
                                           PICTURE_LINK_REMEDY)
                tf.summary.image(f"{kind}/{layer}", image[np.newaxis])
                paths.append(path)
        writer.close()
    return paths


def write_confusion_picture(run_dir, evaluation):
    """Draws ``evaluation``'s confusion matrix as ``<run_dir>/inspect/confusion_<split>.png`` (class names on both
    axes, rows the true class, counts where they fit; PNG text chunks ``classes``, ``split`` and ``counts``, the
    matrix as JSON rows); returns its path. The only file ``training.predict`` writes into a run."""
    picture = visuals.annotate(
        visuals.confusion_grid(evaluation.matrix, evaluation.class_names),
        [f"confusion matrix of the {evaluation.split} split ({evaluation.total} images of {evaluation.source}): "
         f"rows the true class, columns the predicted; accuracy {evaluation.accuracy:.4f}", evaluation.about],
        visuals.CONFUSION_BAR)
    folder = trained_run.subfolder(run_dir, trained_run.INSPECT, create=True)
    path = os.path.join(folder, f"confusion_{evaluation.split}.png")
    text = {**visuals.class_text(evaluation.class_names), "split": evaluation.split,
            "counts": json.dumps(np.asarray(evaluation.matrix).tolist())}
    run_files.write_atomically(path, visuals.png_bytes(picture, text), PICTURE_LINK_REMEDY)
    return path
