"""The Keras CNNs (models/) and the low-level reference (reference/) compute the same function.

Forward pass, gradients, 10-step optimiser trajectories (weights and BN moving statistics) and weight
transfer are compared on identical weights, over ``models.architecture.COVERAGE_ARCHS``, which use every token and
suffix.
Batch-norm statistics under two replicas need two logical CPUs, so they are checked in the two-CPU process of
tests/test_distributed.py.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
import reference
from models import architecture as A

# TF32 would round float32 matmul/conv inputs to 10 mantissa bits on Ampere+ GPUs, and the two
# implementations may pick different kernels, so float32 tolerances would have to be ~1e-3. Off for the suite.
tf.config.experimental.enable_tensor_float_32_execution(False)

# float32: the two sides run the same TF kernels, but summation order can differ between conv/matmul kernels
# and grappler rewrites; 1e-5 is ~100 ulps at the O(1) logits and gradients of these tiny networks.
FLOAT32_TOL = 1e-5
# float64: same argument with 2**-52 ulps; anything above ~1e-12 would be a real difference.
FLOAT64_TOL = 1e-10
# float32 after 10 optimiser steps. This tight only because the reference runs the same TF ops in the same
# order as Keras: ReLU trajectories are not continuous in the weights, and a last-bit difference alone (BN
# variance from tf.nn.moments instead of Keras' synchronized E[x^2] - E[x]^2) once flipped a ReLU and left 2e-3
# differences after 10 Adam steps. The one exception: Keras' batch norm trains with the fused kernel
# (models/batch_norm.py), whose variance is taken around the mean; these cases stay within the bound with it, and
# float64 (unfused on both sides) still checks the formula to the last bits. 1e-4 is 100x below one Adam step
# (learning rate 1e-2), so a wrong update rule, momentum or BN statistic cannot pass.
FLOAT32_TRAJECTORY_TOL = 1e-4
TOL = {"float32": FLOAT32_TOL, "float64": FLOAT64_TOL}
TRAJECTORY_TOL = {"float32": FLOAT32_TRAJECTORY_TOL, "float64": FLOAT64_TOL}

NUM_CLASSES = 3
BATCH = 4
STEPS = 10

# (arch, input shape (H, W, C)): together every token and suffix, both paddings, odd sizes and both dataset shapes.
ARCHS = list(A.COVERAGE_ARCHS)
ARCH_IDS = [arch for arch, _ in ARCHS]
DTYPES = ["float32", "float64"]


def _without_dropout(arch):
    """Sets every dropout rate to 0, so training-mode outputs are deterministic on both sides."""
    return re.sub(r"drop[\d.]+", "drop0", arch)


def _randomize(model, seed):
    """Non-trivial values for every weight (biases, beta and moving statistics start at 0 or 1)."""
    rng = np.random.default_rng(seed)
    for name, variable in model.named_weights().items():
        low = 0.5 if name.endswith(("moving_variance", "gamma")) else -0.5
        variable.assign(rng.uniform(low, low + 1.0, variable.shape).astype(variable.dtype.as_numpy_dtype))


def _pair(arch, input_shape, dtype, seed=0):
    """A Keras CNN and a reference CNN holding identical (random) weights."""
    keras_model = models.build_model(arch, input_shape, NUM_CLASSES, dtype=dtype)
    ref = reference.build_reference(arch, input_shape, NUM_CLASSES, seed=seed, dtype=dtype)
    _randomize(ref, seed)
    reference.copy_weights(ref, keras_model)
    return keras_model, ref


def _batch(input_shape, dtype, seed):
    rng = np.random.default_rng(seed)
    images = tf.constant(rng.normal(size=(BATCH, *input_shape)), dtype=dtype)
    labels = tf.constant(rng.integers(0, NUM_CLASSES, size=BATCH))
    return images, labels


def _loss(logits, labels):
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))


def _named_numpy(model):
    named = model.named_weights()
    return {name: variable.numpy() for name, variable in named.items()}


def _assert_weights_close(keras_model, ref, tol):
    keras_weights, ref_weights = _named_numpy(keras_model), _named_numpy(ref)
    assert list(keras_weights) == list(ref_weights)
    for name, value in keras_weights.items():
        np.testing.assert_allclose(ref_weights[name], value, atol=tol, rtol=tol, err_msg=name)


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arch,input_shape", ARCHS, ids=ARCH_IDS)
def test_forward_matches_keras(arch, input_shape, dtype, training):
    if training:
        arch = _without_dropout(arch)
    keras_model, ref = _pair(arch, input_shape, dtype)
    images, _ = _batch(input_shape, dtype, seed=1)
    expected = keras_model(images, training=training)
    actual = ref(images, training=training)
    assert actual.dtype == expected.dtype == tf.as_dtype(dtype)
    assert actual.shape == (BATCH, NUM_CLASSES)
    np.testing.assert_allclose(actual, expected, atol=TOL[dtype], rtol=TOL[dtype])
    # Training mode also updates the BN moving statistics on both sides.
    _assert_weights_close(keras_model, ref, TOL[dtype])


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arch,input_shape", ARCHS, ids=ARCH_IDS)
def test_gradients_match_keras(arch, input_shape, dtype, training):
    keras_model, ref = _pair(_without_dropout(arch), input_shape, dtype)
    images, labels = _batch(input_shape, dtype, seed=2)
    grads = {}
    for side, named in (("keras", keras_model.named_weights()), ("reference", ref.named_weights())):
        trainable = {name: v for name, v in named.items() if v.trainable}
        model = keras_model if side == "keras" else ref
        with tf.GradientTape() as tape:
            loss = _loss(model(images, training=training), labels)
        grads[side] = dict(zip(trainable, tape.gradient(loss, list(trainable.values()))))
    assert list(grads["reference"]) == list(grads["keras"])
    for name, expected in grads["keras"].items():
        np.testing.assert_allclose(grads["reference"][name], expected, atol=TOL[dtype], rtol=TOL[dtype],
                                   err_msg=name)


def _train_step(model, optimizer, images, labels):
    with tf.GradientTape() as tape:
        loss = _loss(model(images, training=True), labels)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))


# A trajectory test takes seconds per arch on a loaded 2-core machine, so the airbench tokens train in one small
# arch (frozen GELU whitening with its trained bias, a block's momentum-0.6 statistics over 10 steps, a GELU BN
# conv, lin9) instead of the two above, whose forward passes and gradients are checked.
TRAJECTORY_ARCHS = [(arch, shape) for arch, shape in ARCHS if not arch.startswith("w")]
AIRBENCH_TRAJECTORY = ("w2tg-B4-c3k2bg-gmp-lin9", (6, 6, 2))

OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(learning_rate=1e-2),
    "nesterov": lambda: keras.optimizers.SGD(learning_rate=0.05, momentum=0.9, nesterov=True),
}


# Every arch trains with both dtypes and both optimizers, in two of the four pairings, alternating between
# consecutive archs so that each pairing runs on several archs (the dtype sets the tolerance, the optimizer the
# update rule; neither depends on the layers); the airbench arch likewise.
_PAIRINGS = ((("float64", "adam"), ("float32", "nesterov")), (("float32", "adam"), ("float64", "nesterov")))
TRAJECTORY_CASES = [(arch, shape, dtype, optimizer) for index, (arch, shape) in enumerate(TRAJECTORY_ARCHS)
                    for dtype, optimizer in _PAIRINGS[index % 2]] + [
    (*AIRBENCH_TRAJECTORY, "float64", "adam"), (*AIRBENCH_TRAJECTORY, "float32", "nesterov")]


@pytest.mark.parametrize("arch,input_shape,dtype,optimizer", TRAJECTORY_CASES,
                         ids=[f"{arch}-{dtype}-{optimizer}" for arch, _, dtype, optimizer in TRAJECTORY_CASES])
def test_training_trajectories_match_keras(arch, input_shape, dtype, optimizer):
    keras_model, ref = _pair(_without_dropout(arch), input_shape, dtype)
    # trainable_variables are in plan order on both sides, so zip(grads, variables) pairs the same names.
    assert [v.path.split("/", 1)[1] for v in keras_model.trainable_variables] == \
        [v.name.removesuffix(":0") for v in ref.trainable_variables]
    keras_optimizer, ref_optimizer = OPTIMIZERS[optimizer](), OPTIMIZERS[optimizer]()
    for step in range(STEPS):
        images, labels = _batch(input_shape, dtype, seed=100 + step)
        _train_step(keras_model, keras_optimizer, images, labels)
        _train_step(ref, ref_optimizer, images, labels)
    _assert_weights_close(keras_model, ref, TRAJECTORY_TOL[dtype])


# Mixed precision: float16 rounding (2**-11 relative) of every activation and weight read, accumulated over
# a few layers of O(1) values; both sides round at the same places, so they stay far inside 1e-2.
MIXED_TOL = 1e-2


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("arch", ["c4k3b-r6-m2-gap-d5", "w2g-B6-c4k3bg-gap-lin9"])
def test_mixed_precision_matches_keras(arch, training):
    input_shape = (8, 8, 3)
    keras_model = models.build_model(arch, input_shape, NUM_CLASSES, dtype="mixed_float16")
    ref = reference.build_reference(arch, input_shape, NUM_CLASSES, dtype=tf.float32, compute_dtype=tf.float16)
    _randomize(ref, seed=0)
    reference.copy_weights(ref, keras_model)
    images, _ = _batch(input_shape, "float32", seed=3)
    expected, actual = keras_model(images, training=training), ref(images, training=training)
    assert actual.dtype == expected.dtype == tf.float16
    assert all(v.dtype == tf.float32 for v in ref.variables)
    np.testing.assert_allclose(actual, expected, atol=MIXED_TOL, rtol=MIXED_TOL)
    # BN statistics are computed in float32 on both sides.
    _assert_weights_close(keras_model, ref, MIXED_TOL)


@pytest.mark.parametrize("arch,input_shape", ARCHS, ids=ARCH_IDS)
def test_copy_weights_round_trip_is_bit_exact(arch, input_shape):
    keras_model = models.build_model(arch, input_shape, NUM_CLASSES, dtype="float32")
    original = _named_numpy(keras_model)
    ref = reference.build_reference(arch, input_shape, NUM_CLASSES, seed=7)
    reference.copy_weights(keras_model, ref)
    assert all(np.array_equal(ref_value, original[name]) for name, ref_value in _named_numpy(ref).items())
    other_keras = models.build_model(arch, input_shape, NUM_CLASSES, dtype="float32")
    reference.copy_weights(ref, other_keras)
    copied = _named_numpy(other_keras)
    assert list(copied) == list(original)
    for name, value in original.items():
        assert np.array_equal(copied[name], value), name


@pytest.mark.parametrize("src_arch,dst_arch,message", [
    ("c32k5-d8", "c32k3-d8", (r"copy_weights: layer 'conv1/conv/kernel' has shape \(5, 5, 1, 32\) in the source "
                             r"but \(3, 3, 1, 32\) in the destination")),
    ("d8-d4", "d8", r"'dense2/kernel' exists in the source but not in the destination"),
    ("c4k3-d8", "c4k3b-d8", r"'conv1/conv/bias' exists in the source but not in the destination"),
    ("d8", "d6", r"'dense1/kernel' has shape \(784, 8\) in the source but \(784, 6\) in the destination"),
    ("w2-d8", "c8k2v-d8", r"'whiten1/conv/kernel' exists in the source but not in the destination"),
    ("B4-d8", "c4k3b-m2-d8", r"'block1/conv1/kernel' exists in the source but not in the destination"),
    ("c4k3-gap-lin9", "c4k3-gap", r"'logits/bias' exists in the destination but not in the source"),
])
@pytest.mark.parametrize("direction", ["keras_to_reference", "reference_to_keras"])
def test_copy_weights_between_architectures_fails(src_arch, dst_arch, message, direction):
    build_src = models.build_model if direction == "keras_to_reference" else reference.build_reference
    build_dst = reference.build_reference if direction == "keras_to_reference" else models.build_model
    with pytest.raises(ValueError, match=message):
        reference.copy_weights(build_src(src_arch, (28, 28, 1), 10), build_dst(dst_arch, (28, 28, 1), 10))


@pytest.mark.parametrize("dtype", DTYPES)
def test_keras_gelu_is_tf_nn_gelu_bit_for_bit(dtype):
    # The two implementations' GELU: Keras' activation must be the erf form tf.nn.gelu(approximate=False)
    # computes, bit for bit, and that must differ from the tanh approximation (else the check would be vacuous:
    # the two differ by up to ~5e-4). tests/test_reference_numpy.py checks tf.nn.gelu against its definition.
    x = tf.constant(np.linspace(-6.0, 6.0, 1001), dtype=dtype)
    erf_gelu = tf.nn.gelu(x, approximate=False)
    np.testing.assert_array_equal(keras.activations.gelu(x, approximate=False), erf_gelu)
    assert np.abs(tf.nn.gelu(x, approximate=True) - erf_gelu).max() > 1e-4
