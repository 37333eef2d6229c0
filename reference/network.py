"""A low-level CNN that mirrors the Keras models op for op, for equivalence tests.

Built from the same ``architecture.plan`` as ``models/keras_cnn.py`` with explicit ``tf.Variable``s and
``tf.nn`` ops only. Variables carry the Keras names (``conv1/conv/kernel``, ``res1/bn2/moving_mean``, ...),
kernels are HWIO and dense kernels (in, out), and flatten is NHWC, so weight transfer is a plain copy.
"""

import math
from typing import Callable, NamedTuple

import tensorflow as tf

from models import architecture as A
from models import initializers


class ReferenceCNN(tf.Module):
    """The low-level twin of ``models.CNN``; ``__call__(images, training=False)`` returns logits."""

    def __init__(self, arch, input_shape, num_classes, seed=0, dtype=tf.float32, compute_dtype=None,
                 name="reference_cnn"):
        super().__init__(name=name)
        self.arch = A.resolve(arch)
        self.plan = A.plan(self.arch, tuple(input_shape), num_classes)
        self.dtype = tf.as_dtype(dtype)  # variable dtype
        self.compute_dtype = tf.as_dtype(compute_dtype or dtype)
        # Keras computes batch norm in result_type(inputs, float32): float16/bfloat16 are upcast, float64 stays.
        self.bn_dtype = tf.float64 if self.compute_dtype == tf.float64 else tf.float32
        self._seed = seed
        self._kernels_drawn = 0  # each kernel gets its own stateless seed (seed, k)
        self._weights = {}  # name -> tf.Variable, in plan order (the order of the Keras CNN's named_weights)
        for layer in self.plan:
            REFERENCE_LAYERS[type(layer.spec)].create(self, layer)
        self._dropout_rng = tf.random.Generator.from_seed(seed)

    # Variables -------------------------------------------------------------------------------------------

    def named_weights(self):
        """Maps each Keras-style name to its ``tf.Variable``, BN moving statistics included, in plan order."""
        return dict(self._weights)

    def checkpoint_state(self):
        """What ``tf.train.Checkpoint`` holds: the module itself (its variables and dropout generator)."""
        return self

    def count_params(self):
        """Number of weights, batch-norm moving statistics included (as Keras' ``count_params``)."""
        return sum(math.prod(v.shape) for v in self._weights.values())

    # tf.Module sorts attributes when it collects variables; these keep the plan order of the Keras model.
    @property
    def variables(self):
        return tuple(self._weights.values())

    @property
    def trainable_variables(self):
        return tuple(v for v in self._weights.values() if v.trainable)

    def _variable(self, name, initial, trainable=True):
        self._weights[name] = tf.Variable(initial, trainable=trainable, name=name)

    def _glorot(self, name, shape, fan_in, fan_out, trainable=True):
        """Glorot (Xavier) uniform, as Keras' default kernel initializer."""
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        seed = (self._seed, self._kernels_drawn)
        self._kernels_drawn += 1
        self._variable(name, tf.random.stateless_uniform(shape, seed, -limit, limit, dtype=self.dtype), trainable)

    def _fan_in_uniform(self, name, shape, identity_filters=False):
        """PyTorch's default init as airbench94 uses it (``models.initializers``); drawn in the same sequence of
        stateless seeds as ``_glorot``."""
        limit = initializers.fan_in_limit(shape)
        seed = (self._seed, self._kernels_drawn)
        self._kernels_drawn += 1
        kernel = tf.random.stateless_uniform(shape, seed, -limit, limit, dtype=self.dtype)
        if identity_filters:
            kernel = tf.constant(initializers.with_identity_filters(kernel.numpy()), self.dtype)
        self._variable(name, kernel)

    def _create_conv(self, name, size, channels_in, filters, bias, trainable=True):
        area = size * size  # Keras' receptive field: fan_in = kh*kw*in, fan_out = kh*kw*out
        self._glorot(f"{name}/kernel", (size, size, channels_in, filters), area * channels_in, area * filters,
                     trainable)
        if bias:
            self._variable(f"{name}/bias", tf.zeros((filters,), self.dtype))

    def _create_bn(self, name, channels, scale=True):
        # Same creation order as keras.layers.BatchNormalization.build; scale=False (B{filters} blocks) has no
        # gamma at all, as BatchNormalization(scale=False).
        if scale:
            self._variable(f"{name}/gamma", tf.ones((channels,), self.dtype))
        self._variable(f"{name}/beta", tf.zeros((channels,), self.dtype))
        self._variable(f"{name}/moving_mean", tf.zeros((channels,), self.dtype), trainable=False)
        self._variable(f"{name}/moving_variance", tf.ones((channels,), self.dtype), trainable=False)

    # Forward pass ----------------------------------------------------------------------------------------

    def __call__(self, images, training=False):
        """(B, H, W, C) images -> (B, num_classes) logits in ``compute_dtype``."""
        x = tf.cast(images, self.compute_dtype)
        for layer in self.plan:
            x = self._apply(layer, x, training)
        return x

    def _get(self, name):
        """A variable read in the compute dtype, as Keras autocasts variables under mixed precision."""
        return tf.cast(self._weights[name], self.compute_dtype)

    def _conv(self, x, name, stride, padding):
        # (B, H, W, C_in) -> (B, H', W', C_out); TF's `same` puts the odd padding row/column at the bottom/right.
        return tf.nn.conv2d(x, self._get(f"{name}/kernel"), stride, padding.upper())

    def _batch_norm(self, x, name, training, momentum=A.BN_MOMENTUM, epsilon=A.BN_EPSILON):
        """keras.layers.BatchNormalization(synchronized=True): batch moments in training, moving ones otherwise.

        Without a ``{name}/gamma`` variable the scale is 1, as ``BatchNormalization(scale=False)``.
        """
        x = tf.cast(x, self.bn_dtype)
        moving_mean_var = self._weights[f"{name}/moving_mean"]
        moving_variance_var = self._weights[f"{name}/moving_variance"]
        moving_mean = tf.cast(moving_mean_var, self.bn_dtype)
        moving_variance = tf.cast(moving_variance_var, self.bn_dtype)
        if training:
            mean, variance = _global_batch_moments(x)
            # Written exactly as Keras does, so float64 trajectories agree to the last bits.
            moving_mean_var.assign(tf.cast(moving_mean * momentum + mean * (1.0 - momentum), moving_mean_var.dtype))
            moving_variance_var.assign(tf.cast(moving_variance * momentum + variance * (1.0 - momentum),
                                               moving_variance_var.dtype))
        else:
            mean, variance = moving_mean, moving_variance
        gamma_var = self._weights.get(f"{name}/gamma")
        gamma = None if gamma_var is None else tf.cast(gamma_var, self.bn_dtype)
        beta = tf.cast(self._weights[f"{name}/beta"], self.bn_dtype)
        y = tf.nn.batch_normalization(x, mean, variance, beta, gamma, epsilon)
        return tf.cast(y, self.compute_dtype)

    def _apply(self, layer, x, training):
        return REFERENCE_LAYERS[type(layer.spec)].apply(self, layer, x, training)

    def layer_outputs(self, images, names):
        """``{name: output}`` of the layers called ``names``, for ``images`` in inference mode (``Network``)."""
        x = tf.cast(images, self.compute_dtype)
        return A.outputs_of_layers(self.plan, names, lambda index, x: self._apply(self.plan[index], x, False), x)


# Each layer kind: create(net, layer) makes its variables, in the order the Keras layer creates them (the order of
# named_weights and of the initial draws); apply(net, layer, x, training) is its forward pass.

def _create_conv_layer(net, layer):
    spec = layer.spec
    net._create_conv(f"{spec.name}/conv", spec.kernel_size, layer.input_shape[-1], spec.filters,
                     bias=not spec.batch_norm)
    if spec.batch_norm:
        net._create_bn(f"{spec.name}/bn", spec.filters)


def _apply_conv_layer(net, layer, x, training):
    spec = layer.spec
    x = net._conv(x, f"{spec.name}/conv", spec.stride, spec.padding)
    if spec.batch_norm:
        x = net._batch_norm(x, f"{spec.name}/bn", training)
    else:
        x = x + net._get(f"{spec.name}/conv/bias")  # a broadcast add, as Keras' ops.add
    return _ACTIVATIONS[spec.activation](x)


def _create_whitening_layer(net, layer):
    spec = layer.spec
    # Frozen: models.whitening assigns the kernel; no optimizer sees it. The bias (`t`) trains; it comes first, as
    # in models.keras_cnn.WhiteningBlock, whose own variables precede its conv's.
    if spec.bias:
        net._variable(f"{spec.name}/bias", tf.zeros((spec.filters,), net.dtype))
    net._create_conv(f"{spec.name}/conv", spec.kernel_size, layer.input_shape[-1], spec.filters, bias=False,
                     trainable=False)


def _apply_whitening_layer(net, layer, x, training):  # (B, H, W, C) -> (B, H - k + 1, W - k + 1, 2*C*k*k)
    spec = layer.spec
    x = net._conv(x, f"{spec.name}/conv", 1, "valid")
    if spec.bias:
        x = x + net._get(f"{spec.name}/bias")
    return _ACTIVATIONS[spec.activation](x)


def _apply_pool_layer(net, layer, x, training):
    spec = layer.spec
    pool = tf.nn.max_pool2d if spec.kind == "max" else tf.nn.avg_pool2d
    return pool(x, spec.size, spec.size, "VALID")  # (B, H, W, C) -> (B, H // size, W // size, C)


def _create_residual_layer(net, layer):
    spec, channels_in = layer.spec, layer.input_shape[-1]
    # Same order as the attributes of models.keras_cnn.ResidualBlock: conv1, bn1, conv2, bn2, proj, proj_bn.
    net._create_conv(f"{spec.name}/conv1", 3, channels_in, spec.filters, bias=False)
    net._create_bn(f"{spec.name}/bn1", spec.filters)
    net._create_conv(f"{spec.name}/conv2", 3, spec.filters, spec.filters, bias=False)
    net._create_bn(f"{spec.name}/bn2", spec.filters)
    if spec.projection:
        net._create_conv(f"{spec.name}/proj", 1, channels_in, spec.filters, bias=False)
        net._create_bn(f"{spec.name}/proj_bn", spec.filters)


def _apply_residual_layer(net, layer, x, training):
    spec, n = layer.spec, layer.spec.name
    skip = x
    if spec.projection:  # 1x1 conv + BN so the skip has `filters` channels
        skip = net._batch_norm(net._conv(x, f"{n}/proj", 1, "same"), f"{n}/proj_bn", training)
    y = tf.nn.relu(net._batch_norm(net._conv(x, f"{n}/conv1", 1, "same"), f"{n}/bn1", training))
    y = net._batch_norm(net._conv(y, f"{n}/conv2", 1, "same"), f"{n}/bn2", training)
    return tf.nn.relu(skip + y)


def _create_block_layer(net, layer):
    spec = layer.spec
    # Same order as models.keras_cnn.AirbenchBlock: conv1, bn1, conv2, bn2.
    net._fan_in_uniform(f"{spec.name}/conv1/kernel", (3, 3, layer.input_shape[-1], spec.filters),
                        identity_filters=True)
    net._create_bn(f"{spec.name}/bn1", spec.filters, scale=False)
    net._fan_in_uniform(f"{spec.name}/conv2/kernel", (3, 3, spec.filters, spec.filters), identity_filters=True)
    net._create_bn(f"{spec.name}/bn2", spec.filters, scale=False)


def _apply_block_layer(net, layer, x, training):  # (B, H, W, C) -> (B, H // 2, W // 2, filters)
    n = layer.spec.name

    def bn(y, name):
        return net._batch_norm(y, name, training, A.BLOCK_BN_MOMENTUM, A.BLOCK_BN_EPSILON)

    y = tf.nn.max_pool2d(net._conv(x, f"{n}/conv1", 1, "same"), 2, 2, "VALID")
    y = _gelu(bn(y, f"{n}/bn1"))
    return _gelu(bn(net._conv(y, f"{n}/conv2", 1, "same"), f"{n}/bn2"))


def _apply_global_pool_layer(net, layer, x, training):  # (B, H, W, C) -> (B, C)
    if layer.spec.kind == "max":
        return tf.reduce_max(x, axis=[1, 2])
    # Keras averages float16/bfloat16 in float32 to avoid overflow, then casts back.
    return tf.cast(tf.reduce_mean(tf.cast(x, net.bn_dtype), axis=[1, 2]), x.dtype)


def _apply_flatten_layer(net, layer, x, training):
    return tf.reshape(x, (-1, math.prod(layer.input_shape)))  # (B, H, W, C) -> (B, H*W*C)


def _create_dense_layer(net, layer):
    spec, channels_in = layer.spec, layer.input_shape[-1]
    if spec.scale != 1.0:  # airbench's logits (lin{divisor}), its init
        net._fan_in_uniform(f"{spec.name}/kernel", (channels_in, spec.units))
        return
    net._glorot(f"{spec.name}/kernel", (channels_in, spec.units), channels_in, spec.units)
    if spec.bias:
        net._variable(f"{spec.name}/bias", tf.zeros((spec.units,), net.dtype))


def _apply_dense_layer(net, layer, x, training):  # (B, in) -> (B, units)
    spec = layer.spec
    x = tf.matmul(x, net._get(f"{spec.name}/kernel"))
    if spec.bias:
        # A broadcast add as Keras' ops.add (not tf.nn.bias_add), so the bias gradient is the same reduction.
        x = x + net._get(f"{spec.name}/bias")
    x = tf.nn.relu(x) if spec.activation else x
    return x * spec.scale if spec.scale != 1.0 else x


def _apply_dropout_layer(net, layer, x, training):
    if not training or layer.spec.rate == 0:  # Keras' Dropout is the identity then too
        return x
    seed = net._dropout_rng.make_seeds(1)[:, 0]  # a fresh mask on every call
    return tf.nn.experimental.stateless_dropout(x, layer.spec.rate, seed)


def _no_variables(net, layer):
    pass


class ReferenceLayer(NamedTuple):
    create: Callable  # (net, layer): makes the layer's variables in net
    apply: Callable  # (net, layer, x, training) -> output


# Each layer kind of ``architecture.KINDS`` -> how the reference makes and runs it.
REFERENCE_LAYERS = {
    A.Conv: ReferenceLayer(_create_conv_layer, _apply_conv_layer),
    A.Whitening: ReferenceLayer(_create_whitening_layer, _apply_whitening_layer),
    A.Pool: ReferenceLayer(_no_variables, _apply_pool_layer),
    A.Residual: ReferenceLayer(_create_residual_layer, _apply_residual_layer),
    A.Block: ReferenceLayer(_create_block_layer, _apply_block_layer),
    A.GlobalPool: ReferenceLayer(_no_variables, _apply_global_pool_layer),
    A.Flatten: ReferenceLayer(_no_variables, _apply_flatten_layer),
    A.Dense: ReferenceLayer(_create_dense_layer, _apply_dense_layer),
    A.Dropout: ReferenceLayer(_no_variables, _apply_dropout_layer),
}


def _gelu(x):
    """The exact GELU, 0.5 x (1 + erf(x / sqrt(2))): the op keras.activations.gelu(x, approximate=False) calls."""
    return tf.nn.gelu(x, approximate=False)


# A spec's activation name -> the op.
_ACTIVATIONS = {"relu": tf.nn.relu, "gelu": _gelu}


def _global_batch_moments(x):
    """Mean and biased variance over (B, H, W) of the global batch: (B, H, W, C) -> (C,), (C,).

    Written as Keras' synchronized batch norm computes them (keras/src/backend/tensorflow/nn.py,
    ``_compute_moments_sync``): sums all-reduced over replicas, variance = E[x^2] - E[x]^2 clipped at 0. Outside
    a strategy the default replica context makes the all-reduce an identity; in a cross-replica context Keras
    falls back to ``tf.nn.moments``. In float32 the two formulas differ in the last bits, which is enough for
    ReLUs to flip within a few Adam steps, so the reference follows Keras' choice exactly.
    """
    replica = tf.distribute.get_replica_context()
    if replica is None:
        return tf.nn.moments(x, axes=[0, 1, 2])

    def global_sum(t):  # (B, H, W, C) -> (1, 1, 1, C), summed over all replicas
        return replica.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(t, axis=[0, 1, 2], keepdims=True))

    total, total_sq, count = global_sum(x), global_sum(tf.square(x)), global_sum(tf.ones_like(x))
    mean = tf.math.divide_no_nan(total, count)
    variance = tf.maximum(tf.math.divide_no_nan(total_sq, count) - tf.square(mean), 0.0)
    return tf.squeeze(mean, [0, 1, 2]), tf.squeeze(variance, [0, 1, 2])


def build_reference(arch, input_shape, num_classes, seed=0, dtype=tf.float32, compute_dtype=None):
    """Returns a ``ReferenceCNN`` for ``arch`` (string or preset) on images of ``input_shape`` (H, W, C).

    ``dtype`` is the variable dtype; ``compute_dtype`` (default ``dtype``) is the dtype of the forward pass,
    e.g. float16 with float32 variables as under Keras mixed precision. Raises the same ``ValueError`` as
    ``models.build_model`` when ``arch`` is malformed or does not fit the input.
    """
    return ReferenceCNN(arch, input_shape, num_classes, seed=seed, dtype=dtype, compute_dtype=compute_dtype)


def copy_weights(src, dst):
    """Copies every weight, BN moving statistics included, from ``src`` to ``dst`` (Keras or reference).

    Names, order and shapes must match exactly; values are cast to the destination's variable dtype. Raises
    ``ValueError`` naming the first variable that is missing on either side or differs in shape.
    """
    src_named, dst_named = src.named_weights(), dst.named_weights()
    for name, variable in src_named.items():
        if name not in dst_named:
            raise ValueError(f"copy_weights: layer '{name}' exists in the source but not in the destination")
        src_shape, dst_shape = tuple(variable.shape), tuple(dst_named[name].shape)
        if src_shape != dst_shape:
            raise ValueError(f"copy_weights: layer '{name}' has shape {src_shape} in the source but {dst_shape} "
                             f"in the destination")
    for name in dst_named:
        if name not in src_named:
            raise ValueError(f"copy_weights: layer '{name}' exists in the destination but not in the source")
    if list(src_named) != list(dst_named):
        raise ValueError(f"copy_weights: same variables in a different order: {list(src_named)} in the source, "
                         f"{list(dst_named)} in the destination")
    for name, variable in src_named.items():
        dst_named[name].assign(tf.cast(variable, dst_named[name].dtype))
