"""tf.data pipelines over in-memory datasets: preprocessing, augmentation, batching, distribution; images fitted to
a size (``fit_to_size``: an image folder's when decoded, and a prediction's input).

Training augmentation is a pure function of the run seed and of each example's place in the run:
``train_pipeline`` hands ``preprocess`` every example's ``Draws``, made with stateless random ops from
(seed, global batch index, position in the global batch). So a run resumed at step k, and a global batch split
over any number of replicas, augment bit for bit as one uninterrupted one-device run does.
"""

import os
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from training.choices import FLIP_MODES, IMAGE_FITS


def fit_to_size(images, size, fit="stretch"):
    """uint8 images ``(..., h, w, c)`` brought to ``size`` (height, width) as ``fit`` says: ``stretch`` resizes them,
    aspect ratio not kept; ``crop`` first cuts the largest central window of the target's aspect ratio (the window
    and its rounding of ``keras.utils.image_dataset_from_directory(crop_to_aspect_ratio=True)``), then resizes.
    Bilinear with antialiasing, rounded back to uint8; images of that size already are returned as they are.
    Works in a graph, on images whose size is known only when it runs (an image folder's, decoded by tf.data).
    """
    if fit not in IMAGE_FITS:
        raise ValueError(f"fit_to_size: fit must be one of {', '.join(IMAGE_FITS)}, got {fit!r}")
    height, width = size
    shape = tf.shape(images)
    rows, columns = shape[-3], shape[-2]

    def resized():
        x = images
        if fit == "crop":
            crop_rows, crop_columns = tf.minimum(rows, columns * height // width), tf.minimum(columns,
                                                                                           rows * width // height)
            top, left = (rows - crop_rows) // 2, (columns - crop_columns) // 2
            x = x[..., top:top + crop_rows, left:left + crop_columns, :]
        scaled = tf.image.resize(x, (height, width), antialias=True)  # float32, on the 0..255 scale
        return tf.cast(tf.clip_by_value(tf.round(scaled), 0, 255), tf.uint8)

    return tf.cond(tf.logical_and(rows == height, columns == width), lambda: images, resized)


def crop_window(rows, columns, size):
    """``(rows, columns)`` of the central window that ``fit_to_size(fit="crop")`` cuts from an image of that size
    before resizing it to ``size``; for the line that says what was done to an image."""
    height, width = size
    return min(rows, columns * height // width), min(columns, rows * width // height)


def channel_stats(images):
    """Per-channel mean and standard deviation of uint8 images, on the [0, 1] scale."""
    scaled = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return scaled.mean(axis=0).astype(np.float32), scaled.std(axis=0).astype(np.float32)


class Draws(NamedTuple):
    """The random numbers behind a batch's augmentation, one row per example (``train_pipeline`` makes them)."""

    crop_flip: tf.Tensor  # (b, 3) float32 in [0, 1): row offset, column offset, flip coin; new at every step
    example_coin: tf.Tensor  # (b,) float32 in [0, 1): one per training example, fixed for the whole run
    epoch: tf.Tensor  # (b,) int64: how many full passes over the training set came before this example


def make_preprocess(mean=None, std=None, augment=False, dtype=tf.float32, crop_padding=4, flip="random"):
    """Returns ``fn(images_uint8, labels, draws=None) -> (images, labels)`` for batches of NHWC images.

    Images go to [0, 1], then ``(x - mean) / std`` per channel when both are given. ``augment`` adds the CIFAR
    augmentation, decided by ``draws`` (the ``Draws`` that ``train_pipeline`` passes with every batch; required
    when augmenting). Each image is padded by ``crop_padding`` pixels (reflected; 0: no translation), cropped
    back to its size at its own offset, and flipped left-right as ``flip`` says: ``"random"``, on its own fair
    coin at every step; ``"alternating"``, on a coin fixed per training example XOR "the epoch is odd", so each
    example is seen flipped in every other epoch (airbench's alternating flip); ``"none"``, never.
    """
    if flip not in FLIP_MODES:
        raise ValueError(f"make_preprocess: flip must be one of {', '.join(FLIP_MODES)}, got {flip!r}")
    if not isinstance(crop_padding, int) or crop_padding < 0:
        raise ValueError(f"make_preprocess: crop_padding must be a whole number of pixels >= 0, got {crop_padding!r}")

    def preprocess(images, labels, draws=None):
        x = tf.cast(images, tf.float32) / 255.0
        if mean is not None:
            x = (x - mean) / std
        if augment:
            if draws is None:
                raise ValueError("make_preprocess(augment=True): the function needs each example's draws; pass it "
                                 "to train_pipeline, which supplies them")
            x = _crop_and_flip(x, draws, crop_padding, flip)
        return tf.cast(x, dtype), labels

    return preprocess


def _crop_and_flip(images, draws, padding, flip):
    """Each image gets the crop window and the flip its draws pick.

    The windows are cut with two batched gathers (rows, then columns); a flip reverses the column indices, so
    one gather both crops and flips. Gathers copy values, so the output is exact.
    """
    height, width = images.shape[1], images.shape[2]
    if height is not None and padding >= min(height, width):
        raise ValueError(f"make_preprocess: crop_padding {padding} must be smaller than the {height}x{width} "
                         f"images, to reflect")
    shape = tf.shape(images)
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]], mode="REFLECT")
    # u in [0, 1) -> offset in 0 .. 2 * padding; the minimum guards against float rounding up to the end.
    offsets = tf.minimum(tf.cast(draws.crop_flip[:, :2] * (2 * padding + 1), tf.int32), 2 * padding)
    columns = tf.range(shape[2])
    columns = tf.where(_flips(draws, flip)[:, tf.newaxis], tf.reverse(columns, [0]), columns)  # (b, W)
    rows = offsets[:, :1] + tf.range(shape[1])[tf.newaxis, :]  # (b, H)
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, offsets[:, 1:] + columns, axis=2, batch_dims=1)


def _flips(draws, flip):
    """(b,) bool: which images to flip left-right, as ``make_preprocess`` documents."""
    if flip == "random":
        return draws.crop_flip[:, 2] < 0.5
    if flip == "alternating":
        return tf.math.logical_xor(draws.example_coin < 0.5, draws.epoch % 2 == 1)
    return tf.zeros_like(draws.epoch, tf.bool)


# Second words of the stateless seed pairs (run seed, word): global batch k draws with k = 0, 1, 2, ...; the
# per-example coins use a word no batch index takes. The draws run on the CPU, where the stateless ops' default
# algorithm is Philox (the same numbers as alg="philox", whose seed scrambling costs 70 ms more per trace).
_EXAMPLE_COIN_WORD = -1


def train_pipeline(x, y, batch_size, seed, preprocess, skip_batches=0, replicas=(0, 1, 1)):
    """An endless tf.data pipeline of shuffled training batches of ``batch_size`` (the remainder dropped).

    Yields ``preprocess(images, labels, draws)``, with ``draws`` the batch's ``Draws``. The order depends
    only on ``seed``, and the draws only on ``seed`` and each example's place in the run, so a run resumed at
    step ``skip_batches`` sees, augmented identically, the batches the uninterrupted run would have seen.
    ``replicas=(first, count, total)`` cuts each global batch into ``total`` equal parts and yields parts
    ``first .. first + count - 1`` one after another: what one worker's ``count`` replicas take in a
    distributed run (see ``distributed_train_dataset``). The draws are made for the whole global batch before
    it is cut, so an image's crop and flip do not depend on how the batch is split.
    """
    if seed is None:
        raise ValueError("train_pipeline: seed must be an integer; the batch order and augmentation derive from it")
    num_examples = len(x)
    with tf.device("CPU:0"):  # where tf.data runs; eagerly the coins would otherwise be drawn on a GPU
        images, labels = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
        example_coins = tf.random.stateless_uniform([num_examples], [seed, _EXAMPLE_COIN_WORD])
    # Indices, not images, are shuffled and batched: skipping to a resumed step copies no pixels.
    order = tf.data.Dataset.range(num_examples).shuffle(num_examples, seed=seed, reshuffle_each_iteration=True)
    batches = order.repeat().batch(batch_size, drop_remainder=True).enumerate().skip(skip_batches)
    first, count, total = replicas
    part = batch_size // total

    def this_workers_parts(step, indices):
        crop_flip = tf.random.stateless_uniform([batch_size, 3], tf.stack([tf.constant(seed, tf.int64), step]))
        place = step * batch_size + tf.range(batch_size, dtype=tf.int64)  # examples before each, in the run
        draws = Draws(crop_flip, tf.gather(example_coins, indices), place // num_examples)
        # (B, ...) -> (count, B / total, ...): this worker's replicas' slices of the global batch, in order.
        take = slice(first * part, (first + count) * part)
        return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(
            lambda t: tf.reshape(t[take], [count, part, *t.shape[1:]]), (indices, draws)))

    def gather_and_preprocess(indices, draws):
        return preprocess(tf.gather(images, indices), tf.gather(labels, indices), draws)

    return _parallel_map_and_prefetch(batches.flat_map(this_workers_parts), gather_and_preprocess)


def _parallel_map_and_prefetch(dataset, preprocess):
    """Preprocesses batches on all cores and keeps two ready, with tf.data's autotuning off.

    The pipelines are in-memory slicing and scaling, which fixed settings serve well; and in TensorFlow 2.21
    the autotuning thread of a long-lived iterator can hold up the iterator's deletion (the end of a run) for
    up to a minute.
    """
    dataset = dataset.map(preprocess, num_parallel_calls=os.cpu_count() or 1, deterministic=True)
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(2).with_options(options)


def distributed_train_dataset(strategy, x, y, batch_size, seed, preprocess, skip_batches=0):
    """``train_pipeline`` distributed so that replica r of the run gets part r of every global batch.

    Every worker shuffles identically, so the replicas together see exactly the batches of a one-device run
    with the same seed, whatever the number of workers and devices.
    """

    def dataset_fn(context):
        local = context.num_replicas_in_sync // context.num_input_pipelines
        replicas = (context.input_pipeline_id * local, local, context.num_replicas_in_sync)
        return train_pipeline(x, y, batch_size, seed, preprocess, skip_batches, replicas)

    return strategy.distribute_datasets_from_function(dataset_fn)


def distributed_eval_dataset(strategy, x, y, batch_size, preprocess):
    """The test set split across workers, in per-replica batches; every example is evaluated once."""

    def dataset_fn(context):
        shard = slice(context.input_pipeline_id, None, context.num_input_pipelines)
        return eval_pipeline(x[shard], y[shard], context.get_per_replica_batch_size(batch_size), preprocess)

    return strategy.distribute_datasets_from_function(dataset_fn)


def eval_pipeline(x, y, batch_size, preprocess):
    """Every test example exactly once, in order, in minibatches of ``batch_size`` (the last one smaller)."""
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    return _parallel_map_and_prefetch(dataset, preprocess)
