"""Gradient ascent on the input (``experiments.activation_max``) on a tiny randomly initialised CNN: it raises the
chosen filters' activations, stays in the valid pixel range, is seeded, and reads the run's input space."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from experiments import activation_max, visuals
from models.network import build_network
from reference import copy_weights
from training import pipeline

ARCH = "c4k3-m2-c4k3-gmp-d10"  # conv1 (28, 28, 4) -> maxpool1 -> conv2 (14, 14, 4) -> global max pool -> logits
MNIST_MEAN, MNIST_STD = np.float32([0.1307]), np.float32([0.3081])  # a standardised run's input space
FILTERS = [0, 1, 2, 3]
STEPS = 30
# Without regularisers, 30 steps of 0.02 lift every conv1 filter of this net (Keras seed 0) to 1.6-2.4x its mean
# activation on the noise it starts from (measured, Keras 3.15.1); 1.3x is the margin.
PLAIN_GAIN = 1.3
# With the default regularisers (jitter, smoothing, decay, blur) pulling the other way, the mean over the four
# filters still grows 1.7x (measured); 1.2x is the margin.
REGULARISED_GAIN = 1.2
ACTIVATION_RTOL = 1e-5  # float32, the same ops in another order (batch of 4 here, of 1 in the check)
# A reference network against its Keras twin: float32, the same TF ops in the same order on CPU (bit for bit there);
# 1e-5 leaves room for kernels that sum in another order.
TWIN_TOL = 1e-5
PLAIN = activation_max.Ascent(steps=STEPS, tv_weight=0.0, l2_decay=0.0, blur_every=0)


@pytest.fixture(scope="module")
def network():
    keras.utils.set_random_seed(0)  # the Keras CNN draws its initial weights from the global seed
    return build_network("keras", ARCH, (28, 28, 1), 10)


@pytest.fixture(scope="module")
def bounds():
    return activation_max.pixel_bounds(pipeline.make_preprocess(MNIST_MEAN, MNIST_STD), 1)


def test_pixel_bounds_are_the_run_inputs_of_black_and_white(bounds):
    low, high = bounds
    np.testing.assert_allclose(low, -MNIST_MEAN / MNIST_STD, rtol=1e-6)  # (0 - mean) / std
    np.testing.assert_allclose(high, (1 - MNIST_MEAN) / MNIST_STD, rtol=1e-6)
    np.testing.assert_array_equal(activation_max.pixel_bounds(pipeline.make_preprocess(), 3), ([0] * 3, [1] * 3))


def test_plain_ascent_raises_every_chosen_filter(network, bounds):
    found = activation_max.maximise(network, "conv1", FILTERS, *bounds, PLAIN)
    assert np.all(found.initial > 0), found.initial  # no filter starts dead, so each has a gradient
    assert np.all(found.final >= PLAIN_GAIN * found.initial), (found.initial, found.final)


def test_regularised_ascent_still_raises_the_mean_activation(network, bounds):
    found = activation_max.maximise(network, "conv1", FILTERS, *bounds, activation_max.Ascent(steps=STEPS))
    assert found.final.mean() >= REGULARISED_GAIN * found.initial.mean(), (found.initial, found.final)


def test_result_is_finite_valid_pixels_that_the_run_preprocessing_maps_to_the_reported_activation(network, bounds):
    found = activation_max.maximise(network, "conv2", FILTERS, *bounds, activation_max.Ascent(steps=STEPS))
    assert found.pixels.shape == (4, 28, 28, 1) and found.pixels.dtype == np.uint8
    assert np.all(np.isfinite(found.image)) and found.image.min() >= 0.0 and found.image.max() <= 1.0
    np.testing.assert_array_equal(found.pixels, np.round(found.image * 255.0))
    # The reported activation is the network's on the pixels, preprocessed as the run preprocesses its images.
    inputs = pipeline.make_preprocess(MNIST_MEAN, MNIST_STD)(tf.constant(found.pixels), None)[0]
    conv2 = visuals.block_outputs(network, inputs, ["conv2"])["conv2"]  # (4, 14, 14, 4)
    np.testing.assert_allclose(found.final, conv2.mean(axis=(1, 2))[np.arange(4), FILTERS], rtol=ACTIVATION_RTOL)


def test_the_same_seed_gives_the_same_images_and_another_seed_others(network, bounds):
    ascent = activation_max.Ascent(steps=5, seed=7)
    first = activation_max.maximise(network, "conv1", [1, 3], *bounds, ascent)
    again = activation_max.maximise(network, "conv1", [1, 3], *bounds, ascent)
    other = activation_max.maximise(network, "conv1", [1, 3], *bounds, activation_max.Ascent(steps=5, seed=8))
    np.testing.assert_array_equal(first.image, again.image)
    assert not np.array_equal(first.pixels, other.pixels)


def test_a_reference_network_is_maximised_as_its_keras_twin(bounds):
    # Inspection reads a reference run's own network: the ascent finds what it finds on the Keras CNN holding the
    # same weights.
    reference = build_network("reference", ARCH, (28, 28, 1), 10, seed=1)
    keras_twin = build_network("keras", ARCH, (28, 28, 1), 10)
    copy_weights(reference, keras_twin)
    ascent = activation_max.Ascent(steps=3)
    found, expected = (activation_max.maximise(network, "conv2", [0, 2], *bounds, ascent)
                       for network in (reference, keras_twin))
    assert found.pixels.shape == (2, 28, 28, 1) and np.isfinite(found.final).all()
    np.testing.assert_allclose(found.image, expected.image, atol=TWIN_TOL)
    np.testing.assert_allclose(found.final, expected.final, rtol=TWIN_TOL)


def test_smoothing_and_blur_leave_a_flat_image_flat():
    flat = tf.fill((1, 6, 5, 3), 0.25)  # reflected edges: nothing pulls the border towards 0
    np.testing.assert_allclose(activation_max.total_variation_step(flat, 0.2), flat, atol=1e-7)
    np.testing.assert_allclose(activation_max.gaussian_blur(flat, 0.5), flat, atol=1e-7)  # taps sum to 1


def test_an_unknown_layer_is_refused(network, bounds):
    with pytest.raises(ValueError, match="no layer named conv9"):
        activation_max.maximise(network, "conv9", [0], *bounds)
