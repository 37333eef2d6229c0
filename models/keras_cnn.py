"""Subclassed Keras CNNs built from a planned architecture (see ``models/architecture.py``)."""

import random

import keras
import numpy as np

from models import architecture as A
from models import initializers
from models.batch_norm import BatchNormalization


def _bn(name, dtype, momentum=A.BN_MOMENTUM, epsilon=A.BN_EPSILON, scale=True):
    # Synchronized: under a multi-replica strategy the statistics are those of the global batch, so a run on
    # N devices computes what a run on one device does; on one replica it trains with the fused kernel.
    return BatchNormalization(momentum=momentum, epsilon=epsilon, scale=scale, name=name, dtype=dtype)


def _gelu(x):
    # The exact (erf) GELU; keras.activations.gelu calls tf.nn.gelu, as the reference does.
    return keras.activations.gelu(x, approximate=False)


# A spec's activation name -> the function; both are the tf.nn op the reference calls.
ACTIVATIONS = {"relu": keras.ops.relu, "gelu": _gelu}


class ConvBlock(keras.layers.Layer):
    """Convolution + activation, or convolution without bias -> batch norm -> activation."""

    def __init__(self, spec, dtype=None):
        super().__init__(name=spec.name, dtype=dtype)
        self.conv = keras.layers.Conv2D(spec.filters, spec.kernel_size, strides=spec.stride, padding=spec.padding,
                                        use_bias=not spec.batch_norm, name="conv", dtype=dtype)
        self.bn = _bn("bn", dtype) if spec.batch_norm else None
        self.activation = ACTIVATIONS[spec.activation]

    def build(self, input_shape):
        _build_in_order(input_shape, self.conv, self.bn)

    def call(self, x, training=False):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x, training=training)
        return self.activation(x)


class WhiteningBlock(keras.layers.Layer):
    """A frozen valid convolution (kernel set by ``models.whitening``), an optional trained bias (``w{size}t``),
    then an activation."""

    def __init__(self, spec, dtype=None):
        super().__init__(name=spec.name, dtype=dtype)
        # trainable=False makes the kernel a non-trainable variable: no optimizer or weight decay touches it. The
        # bias is the block's own variable, so it can train while the kernel stays frozen.
        self.conv = keras.layers.Conv2D(spec.filters, spec.kernel_size, padding="valid", use_bias=False,
                                        trainable=False, name="conv", dtype=dtype)
        self.filters, self.use_bias = spec.filters, spec.bias
        self.bias = None
        self.activation = ACTIVATIONS[spec.activation]

    def build(self, input_shape):
        if self.use_bias:
            self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")
        _build_in_order(input_shape, self.conv)

    def call(self, x, training=False):
        x = self.conv(x)
        if self.bias is not None:
            x = x + self.bias
        return self.activation(x)


@keras.saving.register_keras_serializable("cnn_lab")
class FanInUniform(keras.initializers.Initializer):
    """PyTorch's default init, uniform in +-1/sqrt(fan_in); with ``identity_filters`` a conv kernel's first
    min(in, out) filters are then the identity (``models.initializers``)."""

    def __init__(self, identity_filters=False):
        self.identity_filters = identity_filters
        # Drawn once, when the layer is made (as Keras' own initializers draw theirs, from the stream that
        # keras.utils.set_random_seed seeds): calling the initializer again gives the same kernel, so a weight's
        # initial values do not depend on how often or in which order Keras asks for them.
        self.seed = random.randint(1, 10**9)

    def __call__(self, shape, dtype=None):
        limit = initializers.fan_in_limit(shape)
        kernel = keras.initializers.RandomUniform(-limit, limit, seed=self.seed)(shape, dtype=dtype)
        if self.identity_filters:
            kernel = initializers.with_identity_filters(keras.ops.convert_to_numpy(kernel))
        return keras.ops.convert_to_tensor(np.asarray(kernel), dtype=dtype)

    def get_config(self):
        return {"identity_filters": self.identity_filters}


class AirbenchBlock(keras.layers.Layer):
    """airbench94's ConvGroup: gelu(bn2(conv2(gelu(bn1(pool(conv1(x))))))), batch norm without scale, convs
    initialised as airbench does (``FanInUniform`` with identity filters)."""

    def __init__(self, spec, dtype=None):
        super().__init__(name=spec.name, dtype=dtype)

        def conv(name):
            return keras.layers.Conv2D(spec.filters, 3, padding="same", use_bias=False, name=name, dtype=dtype,
                                       kernel_initializer=FanInUniform(identity_filters=True))

        def bn(name):
            return _bn(name, dtype, A.BLOCK_BN_MOMENTUM, A.BLOCK_BN_EPSILON, scale=False)

        # Assigned in call order, which is the order of the weights (and of reference/'s variables).
        self.conv1 = conv("conv1")
        self.pool = keras.layers.MaxPooling2D(2, name="pool", dtype=dtype)
        self.bn1 = bn("bn1")
        self.conv2, self.bn2 = conv("conv2"), bn("bn2")

    def build(self, input_shape):
        _build_in_order(input_shape, self.conv1, self.pool, self.bn1, self.conv2, self.bn2)

    def call(self, x, training=False):
        x = _gelu(self.bn1(self.pool(self.conv1(x)), training=training))
        return _gelu(self.bn2(self.conv2(x), training=training))


class ScaledDense(keras.layers.Dense):
    """A dense layer whose outputs are multiplied by a constant: airbench's logits (``lin{divisor}``), with
    PyTorch's default init as airbench has it."""

    def __init__(self, units, scale, **kwargs):
        kwargs.setdefault("kernel_initializer", FanInUniform())
        super().__init__(units, **kwargs)
        self.scale = scale

    def call(self, inputs, training=None):
        return super().call(inputs) * self.scale


class ResidualBlock(keras.layers.Layer):
    """He et al. (2016) basic block: relu(skip(x) + bn2(conv2(relu(bn1(conv1(x))))))."""

    def __init__(self, spec, dtype=None):
        super().__init__(name=spec.name, dtype=dtype)

        def conv(name, size):
            return keras.layers.Conv2D(spec.filters, size, padding="same", use_bias=False, name=name, dtype=dtype)

        self.conv1, self.bn1 = conv("conv1", 3), _bn("bn1", dtype)
        self.conv2, self.bn2 = conv("conv2", 3), _bn("bn2", dtype)
        self.proj = self.proj_bn = None
        if spec.projection:
            self.proj, self.proj_bn = conv("proj", 1), _bn("proj_bn", dtype)

    def build(self, input_shape):
        # The order of ``call``, which takes the skip path first: each variable draws its initial values in the
        # order it is created.
        if self.proj is not None:
            _build_in_order(input_shape, self.proj, self.proj_bn)
        _build_in_order(input_shape, self.conv1, self.bn1, self.conv2, self.bn2)

    def call(self, x, training=False):
        skip = x if self.proj is None else self.proj_bn(self.proj(x), training=training)
        y = keras.ops.relu(self.bn1(self.conv1(x), training=training))
        y = self.bn2(self.conv2(y), training=training)
        return keras.ops.relu(skip + y)


def _build_in_order(input_shape, *layers):
    """Builds each of ``layers`` (None skipped) on the output shape of the one before it, in the order given.

    A composite layer that builds its sublayers itself spares Keras the symbolic pass through ``call`` it would
    otherwise make to find their shapes (about 5% of the test suite's CPU time, WORKSPACE.md section 14). The
    order must be the order of ``call``: initialisers draw from one random stream in the order the variables are
    created.
    """
    shape = tuple(input_shape)
    for layer in layers:
        if layer is not None:
            layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))


def _pool(spec, dtype):
    pool = keras.layers.MaxPooling2D if spec.kind == "max" else keras.layers.AveragePooling2D
    return pool(spec.size, name=spec.name, dtype=dtype)


def _global_pool(spec, dtype):
    pool = keras.layers.GlobalMaxPooling2D if spec.kind == "max" else keras.layers.GlobalAveragePooling2D
    return pool(name=spec.name, dtype=dtype)


def _flatten(spec, dtype):
    return keras.layers.Flatten(name=spec.name, dtype=dtype)


def _dense(spec, dtype):
    activation = "relu" if spec.activation else None
    if spec.scale != 1.0:
        return ScaledDense(spec.units, spec.scale, activation=activation, use_bias=spec.bias, name=spec.name,
                           dtype=dtype)
    return keras.layers.Dense(spec.units, activation=activation, use_bias=spec.bias, name=spec.name, dtype=dtype)


def _dropout(spec, dtype):
    return keras.layers.Dropout(spec.rate, name=spec.name, dtype=dtype)


# Each layer kind of ``architecture.KINDS`` -> (spec, dtype) -> the Keras layer named ``spec.name``.
KERAS_LAYERS = {
    A.Conv: ConvBlock,
    A.Whitening: WhiteningBlock,
    A.Pool: _pool,
    A.Residual: ResidualBlock,
    A.Block: AirbenchBlock,
    A.GlobalPool: _global_pool,
    A.Flatten: _flatten,
    A.Dense: _dense,
    A.Dropout: _dropout,
}


@keras.saving.register_keras_serializable(package="cnn_lab", name="CNN")  # model.keras files name it so
class CNN(keras.Model):
    """A feed-forward classifier built from an architecture string; ``call`` returns logits."""

    def __init__(self, arch, input_shape, num_classes, dtype=None, **kwargs):
        super().__init__(dtype=dtype, **kwargs)
        self.arch = A.resolve(arch)
        self.image_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.plan = A.plan(self.arch, self.image_shape, num_classes)
        self.stack = [KERAS_LAYERS[type(layer.spec)](layer.spec, dtype) for layer in self.plan]

    def build(self, input_shape):
        for layer, planned in zip(self.stack, self.plan):
            layer.build((input_shape[0], *planned.input_shape))

    def call(self, images, training=False):
        x = images
        for layer in self.stack:
            x = layer(x, training=training)
        return x

    def layer_outputs(self, images, names):
        """``{name: output}`` of the layers called ``names``, for ``images`` in inference mode (``Network``)."""
        x = keras.ops.cast(images, self.compute_dtype)
        return A.outputs_of_layers(self.plan, names, lambda index, x: self.stack[index](x, training=False), x)

    def named_weights(self):
        """Maps ``"<layer>/<sublayer>/<variable>"`` to each variable, BN moving statistics included.

        These names are the contract with ``reference/``: the low-level network uses the same keys.
        """
        named = {}
        for layer in self.stack:
            for variable in layer.weights:
                # A Keras variable's path is <model>/<layer>/.../<variable>; dropping the model's part keeps the
                # name the same whatever the model is called.
                parts = variable.path.split("/")
                named["/".join(parts[parts.index(layer.name):])] = variable
        return named

    def checkpoint_state(self):
        """What ``tf.train.Checkpoint`` should hold: every weight and each dropout layer's RNG state.

        Keras 3 hides layers kept in a Python list (``self.stack``) from ``tf.train.Checkpoint``, so they are
        listed here by their stable names. The dropout seed state is kept so that a resumed run draws the masks
        the uninterrupted run would have drawn.
        """
        state = dict(self.named_weights())
        for layer in self.stack:
            if getattr(layer, "seed_generator", None) is not None:
                state[f"{layer.name}/seed_generator_state"] = layer.seed_generator.state
        return state

    def get_config(self):
        return {"arch": self.arch, "input_shape": self.image_shape, "num_classes": self.num_classes,
                "dtype": self.dtype_policy.name, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_model(arch, input_shape, num_classes, dtype=None, name="cnn"):
    """Returns a built ``CNN`` for ``arch`` (string or preset) on images of ``input_shape`` (H, W, C).

    ``dtype`` is a Keras dtype policy name ("float32", "float64", "mixed_float16", ...); None uses the global
    policy. Raises ``ValueError`` naming the token and the shapes when ``arch`` is malformed or does not fit.
    """
    model = CNN(arch, input_shape, num_classes, dtype=dtype, name=name)
    # Keras 3 builds the variables of a subclassed model on its first call; calling once eagerly here means
    # optimizers and strategies see every variable before the first train step.
    model(keras.ops.zeros((1, *model.image_shape), dtype=model.compute_dtype), training=False)
    return model
