"""Independent checks of the reference: a plain numpy forward pass, and finite-difference gradients.

The Keras/reference equivalence tests cannot catch a mistake both sides share (e.g. the padding rule or the
flatten order), so here convolution, pooling, batch norm and dense layers are written out in numpy from
their definitions and both implementations must agree with them.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

import models
import reference
from models import architecture as A

# TF32 would round float32 conv inputs on Ampere+ GPUs; irrelevant in float64 but kept off like the other suites.
tf.config.experimental.enable_tensor_float_32_execution(False)

# float64 throughout: numpy and TF sum in different orders, so they differ by a few ulps (2**-52 ~ 2e-16) of
# O(10) intermediate values; 1e-10 leaves a wide margin and still catches any misplaced pixel or weight.
NUMPY_TOL = 1e-10
NUM_CLASSES = 3
BATCH = 3


# Layers from their definitions -----------------------------------------------------------------------------

def _same_padding(size, kernel, stride):
    """TensorFlow's `same` rule: the odd padding row/column goes after (bottom/right)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def np_conv2d(x, kernel, stride, padding):
    """(B, H, W, C) * (k, k, C, F) -> (B, H', W', F), one output pixel at a time."""
    k = kernel.shape[0]
    if padding == "same":
        x = np.pad(x, ((0, 0), _same_padding(x.shape[1], k, stride), _same_padding(x.shape[2], k, stride), (0, 0)))
    out_h, out_w = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]))
    for i in range(out_h):
        for j in range(out_w):
            patch = x[:, i * stride:i * stride + k, j * stride:j * stride + k, :]  # (B, k, k, C)
            out[:, i, j, :] = np.einsum("bhwc,hwcf->bf", patch, kernel)
    return out


def np_pool(x, size, reduce):
    """Window = stride = size, valid: (B, H, W, C) -> (B, H // size, W // size, C)."""
    out_h, out_w = x.shape[1] // size, x.shape[2] // size
    out = np.zeros((x.shape[0], out_h, out_w, x.shape[3]))
    for i in range(out_h):
        for j in range(out_w):
            out[:, i, j, :] = reduce(x[:, i * size:(i + 1) * size, j * size:(j + 1) * size, :], axis=(1, 2))
    return out


def np_batch_norm(x, w, name, training, stats, momentum=A.BN_MOMENTUM, epsilon=A.BN_EPSILON):
    """Normalises over (B, H, W); in training also records the updated moving statistics in ``stats``.

    A layer without ``{name}/gamma`` (the batch norms of ``B{filters}`` blocks) has scale 1.
    """
    if training:
        mean, variance = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))  # biased variance
        # The documented convention: moving = momentum * moving + (1 - momentum) * batch.
        for stat, batch_value in (("moving_mean", mean), ("moving_variance", variance)):
            stats[f"{name}/{stat}"] = momentum * w[f"{name}/{stat}"] + (1 - momentum) * batch_value
    else:
        mean, variance = w[f"{name}/moving_mean"], w[f"{name}/moving_variance"]
    return w.get(f"{name}/gamma", 1.0) * (x - mean) / np.sqrt(variance + epsilon) + w[f"{name}/beta"]


# tf.nn.gelu(approximate=False) computes 0.5 x erfc(-x c) with c = 1/sqrt(2) cast through float32
# (``math_ops.cast`` of a Python float builds a float32 constant first), so in float64 it is not the exact GELU:
# c is off by 1.7e-8 relative, and the result by up to 2 z**2 * 1.7e-8 relative at z = x / sqrt(2), about 6e-7
# at |x| = 6 and 5e-9 absolute at worst. Both implementations call tf.nn.gelu, so the numpy GELU uses the same
# constant to keep NUMPY_TOL meaningful; test_tf_gelu_is_the_erf_gelu pins both facts.
TF_GELU_INV_SQRT2 = float(np.float32(1 / math.sqrt(2)))
_erfc = np.vectorize(math.erfc)


def np_gelu(x, inv_sqrt2=TF_GELU_INV_SQRT2):
    """GELU from its definition x P(X <= x), X ~ N(0, 1): 0.5 x erfc(-x / sqrt(2)), elementwise in float64."""
    return 0.5 * x * _erfc(-x * inv_sqrt2)


def np_forward(plan, w, x, training):
    """Logits for images ``x`` and the moving statistics after the pass, from numpy weights ``w``."""
    stats = {}

    def relu(v):
        return np.maximum(v, 0)

    activation = {"relu": relu, "gelu": np_gelu}

    def conv(v, name, stride=1, padding="same"):
        return np_conv2d(v, w[f"{name}/kernel"], stride, padding)

    def bn(v, name):
        return np_batch_norm(v, w, name, training, stats)

    def block_bn(v, name):  # airbench's batch norm: momentum 0.6, epsilon 1e-12, no gamma
        return np_batch_norm(v, w, name, training, stats, momentum=0.6, epsilon=1e-12)

    for layer in plan:
        s, n = layer.spec, layer.spec.name
        if isinstance(s, A.Conv):
            y = conv(x, f"{n}/conv", s.stride, s.padding)
            x = activation[s.activation](bn(y, f"{n}/bn") if s.batch_norm else y + w[f"{n}/conv/bias"])
        elif isinstance(s, A.Whitening):  # valid; `t`: a bias
            y = conv(x, f"{n}/conv", padding="valid")
            x = activation[s.activation](y + w[f"{n}/bias"] if s.bias else y)
        elif isinstance(s, A.Block):  # conv -> max pool 2 -> BN -> GELU -> conv -> BN -> GELU
            y = np_gelu(block_bn(np_pool(conv(x, f"{n}/conv1"), 2, np.max), f"{n}/bn1"))
            x = np_gelu(block_bn(conv(y, f"{n}/conv2"), f"{n}/bn2"))
        elif isinstance(s, A.Residual):
            skip = bn(conv(x, f"{n}/proj"), f"{n}/proj_bn") if s.projection else x
            y = relu(bn(conv(x, f"{n}/conv1"), f"{n}/bn1"))
            x = relu(skip + bn(conv(y, f"{n}/conv2"), f"{n}/bn2"))
        elif isinstance(s, A.Pool):
            x = np_pool(x, s.size, np.max if s.kind == "max" else np.mean)
        elif isinstance(s, A.GlobalPool):
            x = x.max(axis=(1, 2)) if s.kind == "max" else x.mean(axis=(1, 2))
        elif isinstance(s, A.Flatten):
            x = x.reshape(x.shape[0], -1)  # row-major (B, H, W, C) -> (B, H*W*C), i.e. NHWC order
        elif isinstance(s, A.Dense):
            x = x @ w[f"{n}/kernel"] + (w[f"{n}/bias"] if s.bias else 0.0)
            x = relu(x) if s.activation else x
            x = x * s.scale  # 1, or 1 / divisor after lin{divisor}
        # Dropout is the identity here: inference, or rate 0 in the training-mode archs.
    return x, stats


# Tests ---------------------------------------------------------------------------------------------------

# (arch, input shape): odd (7, 9) and even (6) sizes, strides 1/2/3, kernels 1-5, both paddings.
NUMPY_ARCHS = [
    ("c3k2s2-m2-d5", (7, 7, 2)),
    ("c2k3-c3k4s2v-a2-d4", (6, 6, 1)),
    ("c2k1-c3k4s2-m2-gmp", (9, 9, 1)),  # 4x4 stride 2 `same` on 9: padding 1 on top, 2 at the bottom
    ("c2k5s3-gap", (7, 7, 2)),
    ("c3k3s2b-r3-r4-gap", (7, 7, 2)),  # BN conv, identity and projection residual blocks
    ("c2k2v-a3-drop0-d6-drop0-d4", (7, 6, 3)),  # non-square input
    ("d6-d4", (3, 3, 2)),
    # The airbench94 tokens: GELU whitening (2*2*1*2 = 8 filters) with its trained bias, airbench blocks
    # (6 -> 3 -> 1), a GELU BN conv between them, logits without bias scaled by 1/9.
    ("w2tg-B3-c2k3bg-B4-gmp-lin9", (7, 7, 1)),
    # ReLU whitening with a 3x3 kernel on a non-square input (8x7 -> 6x5), a GELU conv with bias, a block whose
    # pool drops the odd column (6x5 -> 3x2), then dense.
    ("w3-c2k2g-B4-d4", (8, 7, 2)),
] + [(f"c2k{k}s{s}{v}", (n, n, 2)) for n in (6, 7) for k in (1, 2, 3, 4) for s in (1, 2) for v in ("", "v")]


def _random_weights(model, seed):
    """Non-trivial values for every weight (biases, beta and moving statistics start at 0 or 1)."""
    rng = np.random.default_rng(seed)
    for name, variable in model.named_weights().items():
        low = 0.5 if name.endswith(("moving_variance", "gamma")) else -0.5
        variable.assign(rng.uniform(low, low + 1.0, variable.shape))


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("arch,input_shape", NUMPY_ARCHS, ids=[arch + "@" + "x".join(map(str, s))
                                                                for arch, s in NUMPY_ARCHS])
def test_numpy_forward_matches_both_implementations(arch, input_shape, training):
    ref = reference.build_reference(arch, input_shape, NUM_CLASSES, dtype=tf.float64)
    _random_weights(ref, seed=0)
    keras_model = models.build_model(arch, input_shape, NUM_CLASSES, dtype="float64")
    reference.copy_weights(ref, keras_model)
    weights = {name: v.numpy() for name, v in ref.named_weights().items()}
    images = np.random.default_rng(1).normal(size=(BATCH, *input_shape))

    expected, expected_stats = np_forward(ref.plan, weights, images, training)
    for model, named in ((ref, ref.named_weights()), (keras_model, keras_model.named_weights())):
        np.testing.assert_allclose(model(tf.constant(images), training=training), expected,
                                   atol=NUMPY_TOL, rtol=NUMPY_TOL)
        for name, value in expected_stats.items():
            np.testing.assert_allclose(named[name], value, atol=NUMPY_TOL, rtol=NUMPY_TOL, err_msg=name)


def test_tf_gelu_is_the_erf_gelu():
    x = np.linspace(-6.0, 6.0, 1001)
    tf_gelu = tf.nn.gelu(tf.constant(x), approximate=False).numpy()
    # Equal, to float64 rounding, to the definition with TensorFlow's float32 1/sqrt(2). If this fails after a
    # TensorFlow upgrade, TF computes 1/sqrt(2) in float64 now: np_gelu should use the exact constant.
    np.testing.assert_allclose(tf_gelu, np_gelu(x), atol=1e-15, rtol=1e-14)
    # Within the bound above of the exact GELU: 2 z**2 * 1.7e-8 relative at z = 6 / sqrt(2), i.e. 6.1e-7.
    np.testing.assert_allclose(tf_gelu, np_gelu(x, inv_sqrt2=1 / math.sqrt(2)), atol=0, rtol=6.5e-7)


def test_same_padding_rule():
    assert _same_padding(7, 4, 2) == (1, 2)  # 3 padding rows: the extra one at the bottom
    assert _same_padding(6, 3, 2) == (0, 1)
    assert _same_padding(6, 3, 1) == (1, 1)
    assert _same_padding(9, 1, 2) == (0, 0)


# Central differences in float64 with step 1e-6: truncation error ~1e-12 * f''' and rounding error
# ~1e-16 / 1e-6 = 1e-10 per entry, so analytic and numeric Jacobians agree to ~1e-9 unless a ReLU/max kink
# lies within 1e-6 of a pre-activation, which for these fixed random inputs it does not.
GRADIENT_DELTA = 1e-6
GRADIENT_TOL = 1e-7
GRADIENT_ARCH = "c3k3b-r4-m2-c4k2s2v-d6"  # BN (training mode), residual projection, max pool, strided valid conv
# GELU whitening with a bias, an airbench block (BN without gamma, its pool inside), a GELU BN conv, lin9 logits.
# On 5x5 images (5 -> 4 -> 2): 50 input entries, so the input gradient takes 100 forward passes.
AIRBENCH_GRADIENT_ARCH = "w2tg-B3-c4k2bg-lin9"
GRADIENT_SIZE = {GRADIENT_ARCH: 6, AIRBENCH_GRADIENT_ARCH: 5}


def _gradient_check_setup(arch=GRADIENT_ARCH):
    """A float64 reference with random weights whose ReLUs are not all dead for the fixed input (checked)."""
    shape = (GRADIENT_SIZE[arch], GRADIENT_SIZE[arch], 1)
    ref = reference.build_reference(arch, shape, NUM_CLASSES, dtype=tf.float64)
    _random_weights(ref, seed=0)
    return ref, tf.constant(np.random.default_rng(1).normal(size=(2, *shape)))


# The airbench arch in training mode only (its batch norms then use the batch moments): each case takes seconds
# on a loaded machine.
@pytest.mark.parametrize("training,arch", [(False, GRADIENT_ARCH), (True, GRADIENT_ARCH),
                                           (True, AIRBENCH_GRADIENT_ARCH)],
                         ids=["inference", "training", "training-airbench"])
def test_finite_difference_gradient_wrt_input(training, arch):
    ref, images = _gradient_check_setup(arch)
    # Moving statistics are updated on every call in training mode but do not affect the training output.
    theoretical, numerical = tf.test.compute_gradient(lambda x: ref(x, training=training), [images],
                                                      delta=GRADIENT_DELTA)
    assert np.abs(theoretical[0]).max() > 1e-3  # not trivially zero
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=GRADIENT_TOL, rtol=0)


@pytest.mark.parametrize("arch,name", [(GRADIENT_ARCH, name) for name in (
    "conv1/conv/kernel", "res1/bn1/gamma", "res1/proj/kernel", "conv2/conv/bias", "dense1/kernel")] + [
    # Small weights only (one forward pass per entry and side); the Keras/reference tests cover the kernels.
    (AIRBENCH_GRADIENT_ARCH, name) for name in ("whiten1/bias", "block1/bn1/beta", "block1/bn2/beta",
                                                "conv1/bn/gamma")])
def test_finite_difference_gradient_wrt_weight(arch, name):
    ref, images = _gradient_check_setup(arch)
    variable = ref.named_weights()[name]

    def logits_of(value):
        # Reads the weight from `value` (a watched tensor) instead of the variable for this one call, so
        # compute_gradient can differentiate through it and perturb it.
        ref._weights[name] = value
        try:
            return ref(images, training=True)
        finally:
            ref._weights[name] = variable

    theoretical, numerical = tf.test.compute_gradient(logits_of, [tf.constant(variable.numpy())],
                                                      delta=GRADIENT_DELTA)
    assert np.abs(theoretical[0]).max() > 1e-3
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=GRADIENT_TOL, rtol=0)
