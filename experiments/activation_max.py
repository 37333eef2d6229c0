"""The input that excites a filter most: gradient ascent on the input image, regularised to stay image-like.

The canonical picture (Erhan et al. 2009; the Keras example "Visualizing what convnets learn"): start from seeded
noise around mid-gray and move the image, step by step, along the gradient of one channel's spatially
averaged activation. Unregularised, the ascent drifts to high-frequency patterns (Yosinski et al. 2015); so, as
there and in Mahendran & Vedaldi (2015), each step also rolls the image by a few random pixels before the gradient
(jitter: the pattern must work wherever it sits), smooths it along its total-variation gradient (squared
differences of neighbouring pixels), and pulls it towards mid-gray (L2 decay); every few steps it is blurred.

The image lives in pixel scale, [0, 1] per channel, and is clipped to it after every step, so it always maps back
to valid pixels; the network sees it as the run saw its images: ``low + p * (high - low)`` per channel, where
``low`` and ``high`` are what the run's preprocessing makes of pixel values 0 and 255 (``pixel_bounds``). All
filters of one layer climb together, one image each, in one batch.
"""

import dataclasses

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Ascent:
    """Settings of the ascent; lengths are in input pixels, image values on the [0, 1] pixel scale."""

    steps: int = 200
    step_size: float = 0.02  # each step moves the pixels by this much (root mean square) along the gradient
    jitter: int = 2  # each step rolls the image by a random offset in [-jitter, jitter] along height and width
    tv_weight: float = 0.02  # step along minus the total-variation gradient (stable below 0.25)
    l2_decay: float = 0.002  # share of each pixel's distance to mid-gray removed per step
    blur_every: int = 8  # steps between Gaussian blurs; 0: none
    blur_sigma: float = 0.5
    # The start image is 0.5 plus uniform noise of this width. Full-range noise: on faint noise (0.1) around
    # gray, 5 of the 24 conv1 filters of the main job's run (batch norm, then ReLU) are 0 everywhere, so their
    # gradient is 0 and they never start to climb; on full-range noise none is.
    start_noise: float = 1.0
    seed: int = 0  # of the start image and the jitter offsets


@dataclasses.dataclass
class Maximised:
    """What ``maximise`` found, one entry per filter."""

    image: np.ndarray  # (F, H, W, C) float32 in [0, 1]: the images reached, on the pixel scale
    pixels: np.ndarray  # (F, H, W, C) uint8: the same, rounded to pixels
    initial: np.ndarray  # (F,) float32: the filter's mean activation on its start image
    final: np.ndarray  # (F,) float32: ... on ``pixels`` (rounded to uint8, as shown)


def pixel_bounds(preprocess, channels):
    """``(low, high)``, each ``(channels,)``: what ``preprocess(images_uint8, labels) -> (images, labels)`` (the
    run's evaluation preprocessing, a per-channel affine map) makes of pixel values 0 and 255."""
    extremes = np.zeros((2, 1, 1, channels), np.uint8)
    extremes[1] = 255
    inputs = np.asarray(preprocess(tf.constant(extremes), None)[0], np.float32)
    return inputs[0, 0, 0], inputs[1, 0, 0]


def filter_means(model, layer, filters, low, high):
    """``fn(p) -> (F,)``: for images ``p`` ``(F, H, W, C)`` on the pixel scale, filter ``filters[i]``'s mean
    activation over the output of layer ``layer`` of the network ``model`` (either implementation, inference
    mode) on image i."""
    shapes = {planned.spec.name: planned.output_shape for planned in model.plan}
    if layer not in shapes:
        raise ValueError(f"the network has no layer named {layer}")
    low = tf.constant(low, tf.float32)
    span = tf.constant(high, tf.float32) - low
    chosen = tf.one_hot(np.asarray(filters), shapes[layer][-1])  # (F, channels): picks filter i's channel for image i

    def means(p):
        x = model.layer_outputs(low + p * span, [layer])[layer]
        return tf.reduce_sum(tf.reduce_mean(tf.cast(x, tf.float32), axis=(1, 2)) * chosen, axis=1)

    return means


def total_variation_step(p, weight):
    """``p`` moved by ``weight`` along minus the gradient of half the summed squared differences of neighbouring
    pixels: that gradient is minus the Laplacian (edges reflected, so the border is not pulled to 0)."""
    padded = tf.pad(p, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    laplacian = (padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:]
                 - 4.0 * p)
    return p + weight * laplacian


def gaussian_blur(p, sigma):
    """Images ``(N, H, W, C)`` blurred by a separable Gaussian of ``sigma`` pixels (radius 2 sigma, at least 1;
    edges reflected)."""
    radius = max(1, int(np.ceil(2 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = tf.constant(taps / taps.sum(), tf.float32)
    channels = p.shape[-1]
    for kernel, pad in ((tf.reshape(taps, (-1, 1, 1, 1)), [[0, 0], [radius, radius], [0, 0], [0, 0]]),
                        (tf.reshape(taps, (1, -1, 1, 1)), [[0, 0], [0, 0], [radius, radius], [0, 0]])):
        p = tf.nn.depthwise_conv2d(tf.pad(p, pad, mode="REFLECT"), tf.tile(kernel, (1, 1, channels, 1)),
                                   strides=(1, 1, 1, 1), padding="VALID")
    return p


def maximise(model, layer, filters, low, high, ascent=Ascent()):
    """Gradient ascent on one image per filter of ``filters`` of block ``layer`` (see the module docstring);
    ``low``/``high`` from ``pixel_bounds``. Returns ``Maximised``; the same ``ascent.seed`` gives the same images."""
    means = filter_means(model, layer, filters, low, high)
    rng = np.random.default_rng(ascent.seed)
    shape = (len(filters),) + tuple(model.plan[0].input_shape)
    start = (0.5 + ascent.start_noise * (rng.uniform(size=shape) - 0.5)).astype(np.float32)

    @tf.function
    def step(p, shift):
        with tf.GradientTape() as tape:
            tape.watch(p)
            total = tf.reduce_sum(means(tf.roll(p, shift, axis=(1, 2))))
        gradient = tape.gradient(total, p)
        # Each image's gradient scaled to unit root mean square, so every filter climbs at the same pace whatever
        # the size of its gradient (a dead filter's gradient is 0 and stays 0).
        rms = tf.sqrt(tf.reduce_mean(tf.square(gradient), axis=(1, 2, 3), keepdims=True))
        p = p + ascent.step_size * gradient / tf.maximum(rms, 1e-12)
        p = total_variation_step(p, ascent.tv_weight)
        p = 0.5 + (1.0 - ascent.l2_decay) * (p - 0.5)
        return tf.clip_by_value(p, 0.0, 1.0)

    p = tf.constant(start)
    for number in range(1, ascent.steps + 1):
        p = step(p, tf.constant(rng.integers(-ascent.jitter, ascent.jitter + 1, size=2), tf.int32))
        if ascent.blur_every and number % ascent.blur_every == 0:
            p = tf.clip_by_value(gaussian_blur(p, ascent.blur_sigma), 0.0, 1.0)  # its taps sum to 1 up to rounding
    image = p.numpy()
    pixels = np.round(image * 255.0).astype(np.uint8)
    return Maximised(image, pixels, means(tf.constant(start)).numpy(),
                     means(tf.constant(pixels / 255.0, tf.float32)).numpy())
