"""The architecture language: each token's spec and output shape, presets, and errors that name the token."""

import re

import pytest

from models import architecture as A

MNIST_SHAPE = (28, 28, 1)
CIFAR_SHAPE = (32, 32, 3)


def _layers(arch, input_shape, num_classes=10):
    """(spec, output shape) of every planned layer."""
    return [(layer.spec, layer.output_shape) for layer in A.plan(arch, input_shape, num_classes)]


@pytest.mark.parametrize("arch,input_shape,spec,output_shape", [
    # A kernel as large as the image with valid padding leaves a single position.
    ("c16k28v", (28, 28, 1), A.Conv("conv1", 16, 28, 1, "valid", False), (1, 1, 16)),
    # `same` padding with stride 2 keeps ceil(7 / 2) = 4 positions.
    ("c8k3s2", (7, 7, 1), A.Conv("conv1", 8, 3, 2, "same", False), (4, 4, 8)),
    # Valid padding with stride 2: (7 - 3) // 2 + 1 = 3.
    ("c8k3s2v", (7, 7, 1), A.Conv("conv1", 8, 3, 2, "valid", False), (3, 3, 8)),
    ("c6k5b", (9, 9, 2), A.Conv("conv1", 6, 5, 1, "same", True), (9, 9, 6)),
    ("c6k1s3vb", (9, 9, 2), A.Conv("conv1", 6, 1, 3, "valid", True), (3, 3, 6)),
    # Pooling windows are valid and as large as their stride: floor(7 / 2) = 3, floor(7 / 3) = 2.
    ("m2", (7, 7, 3), A.Pool("maxpool1", "max", 2), (3, 3, 3)),
    ("a3", (7, 7, 3), A.Pool("avgpool1", "avg", 3), (2, 2, 3)),
    # A residual block keeps the spatial size; it needs a projection only when the channel count changes.
    ("r16", (5, 5, 8), A.Residual("res1", 16, projection=True), (5, 5, 16)),
    ("r8", (5, 5, 8), A.Residual("res1", 8, projection=False), (5, 5, 8)),
    ("gap", (5, 5, 8), A.GlobalPool("global_avgpool1", "avg"), (8,)),
    ("gmp", (5, 5, 8), A.GlobalPool("global_maxpool1", "max"), (8,)),
    ("drop0.25", (5, 5, 8), A.Dropout("dropout1", 0.25), (5, 5, 8)),
    ("drop0", (5, 5, 8), A.Dropout("dropout1", 0.0), (5, 5, 8)),
    # `g` selects GELU, after the other suffixes.
    ("c8k3g", (7, 7, 1), A.Conv("conv1", 8, 3, 1, "same", False, "gelu"), (7, 7, 8)),
    ("c6k1s3vbg", (9, 9, 2), A.Conv("conv1", 6, 1, 3, "valid", True, "gelu"), (3, 3, 6)),
    # Whitening: valid, 2 * C * k * k filters (every whitening direction with both signs).
    ("w2", CIFAR_SHAPE, A.Whitening("whiten1", 2, 24, "relu"), (31, 31, 24)),
    ("w3g", (7, 7, 1), A.Whitening("whiten1", 3, 18, "gelu"), (5, 5, 18)),
    # `t`: a trained bias (airbench94's), before `g`.
    ("w2tg", CIFAR_SHAPE, A.Whitening("whiten1", 2, 24, "gelu", bias=True), (31, 31, 24)),
    # airbench block: the `same` convs keep the size, its 2x2 max pool halves it (floor: 7 -> 3).
    ("B64", (31, 31, 24), A.Block("block1", 64), (15, 15, 64)),
    ("B8", (7, 7, 3), A.Block("block1", 8), (3, 3, 8)),
    ("B8", (2, 2, 3), A.Block("block1", 8), (1, 1, 8)),
])
def test_each_token_parses_to_its_spec_and_shape(arch, input_shape, spec, output_shape):
    first = A.plan(arch, input_shape, 10)[0]
    assert first.spec == spec
    assert first.input_shape == input_shape
    assert first.output_shape == output_shape


def test_dense_flattens_first_and_logits_end_the_network():
    assert _layers("c8k3-d10-d5", (6, 6, 1), num_classes=3) == [
        (A.Conv("conv1", 8, 3), (6, 6, 8)),
        (A.Flatten("flatten"), (288,)),  # 6 * 6 * 8, implicit before the first dense layer only
        (A.Dense("dense1", 10), (10,)),
        (A.Dense("dense2", 5), (5,)),
        (A.Dense("logits", 3, activation=False), (3,)),
    ]


def test_flatten_is_implicit_before_logits_and_not_after_global_pooling():
    assert _layers("c8k3", (4, 4, 1), num_classes=2) == [
        (A.Conv("conv1", 8, 3), (4, 4, 8)),
        (A.Flatten("flatten"), (128,)),
        (A.Dense("logits", 2, activation=False), (2,)),
    ]
    assert _layers("c8k3-gap", (4, 4, 1), num_classes=2) == [
        (A.Conv("conv1", 8, 3), (4, 4, 8)),
        (A.GlobalPool("global_avgpool1", "avg"), (8,)),
        (A.Dense("logits", 2, activation=False), (2,)),
    ]


@pytest.mark.parametrize("arch,scale", [("gap-lin9", 1 / 9), ("gap-lin2.5", 0.4), ("gap-lin1", 1.0)])
def test_lin_makes_the_logits_layer_scaled_and_without_bias(arch, scale):
    assert _layers(arch, (4, 4, 2), num_classes=3) == [
        (A.GlobalPool("global_avgpool1", "avg"), (2,)),
        (A.Dense("logits", 3, activation=False, bias=False, scale=scale), (3,)),
    ]


def test_the_linear_preset_is_a_linear_classifier():
    assert _layers("linear", (2, 3, 1), num_classes=4) == _layers("", (2, 3, 1), num_classes=4) == [
        (A.Flatten("flatten"), (6,)),
        (A.Dense("logits", 4, activation=False), (4,)),
    ]


def test_layers_of_a_kind_are_numbered_in_order():
    names = [spec.name for spec, _ in _layers("c4k3-m2-c4k3-a1-r4-r6-d8-drop0.1-d8-drop0.2", (8, 8, 1))]
    assert names == ["conv1", "maxpool1", "conv2", "avgpool1", "res1", "res2", "flatten", "dense1", "dropout1",
                     "dense2", "dropout2", "logits"]


def test_new_kinds_are_numbered_in_order():
    names = [spec.name for spec, _ in _layers("w2g-B4-c4k3g-B4-gmp-lin9", (16, 16, 1))]
    assert names == ["whiten1", "block1", "conv1", "block2", "global_maxpool1", "logits"]


def test_presets_resolve_to_their_strings():
    assert A.resolve("mnist_cnn") == "c32k5-m2-c64k5-m2-d1024-drop0.5"
    assert A.resolve("airbench94") == "w2tg-B64-B256-B256-gmp-lin9"
    assert A.resolve("keras_convnet") == "c32k3v-m2-c64k3v-m2-drop0.5"
    assert A.resolve("mlp") == "d512-d512"
    assert A.resolve("c8k3-d10") == "c8k3-d10"  # not a preset: returned as is
    assert A.DEFAULT_ARCH in A.PRESETS


@pytest.mark.parametrize("preset,input_shape,expected", [
    ("mnist_cnn", MNIST_SHAPE, [
        ("conv1", (28, 28, 32)), ("maxpool1", (14, 14, 32)), ("conv2", (14, 14, 64)), ("maxpool2", (7, 7, 64)),
        ("flatten", (3136,)), ("dense1", (1024,)), ("dropout1", (1024,)), ("logits", (10,))]),
    ("keras_convnet", MNIST_SHAPE, [
        ("conv1", (26, 26, 32)), ("maxpool1", (13, 13, 32)), ("conv2", (11, 11, 64)), ("maxpool2", (5, 5, 64)),
        ("dropout1", (5, 5, 64)), ("flatten", (1600,)), ("logits", (10,))]),
    ("mlp", MNIST_SHAPE, [("flatten", (784,)), ("dense1", (512,)), ("dense2", (512,)), ("logits", (10,))]),
    ("resnet9", CIFAR_SHAPE, [
        ("conv1", (32, 32, 64)), ("conv2", (32, 32, 128)), ("maxpool1", (16, 16, 128)), ("res1", (16, 16, 128)),
        ("conv3", (16, 16, 256)), ("maxpool2", (8, 8, 256)), ("conv4", (8, 8, 512)), ("maxpool3", (4, 4, 512)),
        ("res2", (4, 4, 512)), ("global_maxpool1", (512,)), ("logits", (10,))]),
    ("resnet_small", CIFAR_SHAPE, [
        ("conv1", (32, 32, 32)), ("res1", (32, 32, 32)), ("conv2", (32, 32, 64)), ("maxpool1", (16, 16, 64)),
        ("res2", (16, 16, 64)), ("conv3", (16, 16, 128)), ("maxpool2", (8, 8, 128)), ("res3", (8, 8, 128)),
        ("global_avgpool1", (128,)), ("logits", (10,))]),
    # airbench94: 32 -> 31 (2x2 valid whitening, 2*3*2*2 = 24 filters) -> 15 -> 7 -> 3 (each block's pool).
    ("airbench94", CIFAR_SHAPE, [
        ("whiten1", (31, 31, 24)), ("block1", (15, 15, 64)), ("block2", (7, 7, 256)), ("block3", (3, 3, 256)),
        ("global_maxpool1", (256,)), ("logits", (10,))]),
])
def test_presets_plan_to_the_documented_networks(preset, input_shape, expected):
    assert [(spec.name, shape) for spec, shape in _layers(preset, input_shape)] == expected


def test_airbench94_preset_is_airbench94s_network():
    specs = [spec for spec, _ in _layers("airbench94", CIFAR_SHAPE)]
    assert specs == [A.Whitening("whiten1", 2, 24, "gelu", bias=True), A.Block("block1", 64), A.Block("block2", 256),
                     A.Block("block3", 256), A.GlobalPool("global_maxpool1", "max"),
                     A.Dense("logits", 10, activation=False, bias=False, scale=1 / 9)]
    # airbench94.py's BatchNorm: eps=1e-12, momentum 0.6 in the moving = momentum * moving + ... convention.
    assert (A.BLOCK_BN_MOMENTUM, A.BLOCK_BN_EPSILON) == (0.6, 1e-12)


def test_preset_residual_blocks_keep_their_channels():
    # Every residual block in the presets follows a layer with its own width, so none needs a projection.
    for preset in ("resnet9", "resnet_small"):
        blocks = [spec for spec, _ in _layers(preset, CIFAR_SHAPE) if isinstance(spec, A.Residual)]
        assert blocks and not any(block.projection for block in blocks)


@pytest.mark.parametrize("arch,message", [
    ("c8k3-x", "architecture token 'x' in 'c8k3-x' is not one of: c{filters}k{size}"),
    ("c8k3-c8", "architecture token 'c8' in 'c8k3-c8' is not one of"),
    ("c0k3", "architecture token 'c0k3': filters must be positive, got 0"),
    ("c8k0", "architecture token 'c8k0': kernel size must be positive, got 0"),
    ("c8k3s0", "architecture token 'c8k3s0': stride must be positive, got 0"),
    ("m0", "architecture token 'm0': pool size must be positive, got 0"),
    ("d0", "architecture token 'd0': units must be positive, got 0"),
    ("drop1.5", "architecture token 'drop1.5': dropout rate must be in [0, 1), got 1.5"),
    ("drop1", "architecture token 'drop1': dropout rate must be in [0, 1), got 1.0"),
    ("c8k3--d3", "architecture 'c8k3--d3' has an empty token; tokens are joined by single '-'"),
    ("c8k3-", "architecture 'c8k3-' has an empty token"),
    ("d10-c3k3", "architecture token 'c3k3' needs an image input (H, W, C) but follows a flat layer of shape (10,)"),
    ("gap-m2", "architecture token 'm2' needs an image input (H, W, C) but follows a flat layer of shape (1,)"),
    ("c8k29v", ("architecture token 'c8k29v': kernel size 29 does not fit its input of shape (28, 28, 1) (H, W, C) "
               "with valid padding")),
    ("m2-m2-m2-m2-m2", "architecture token 'm2': pool size 2 does not fit its input of shape (1, 1, 1)"),
    ("c8k3-w2", ("architecture token 'w2' must be the first token: its kernel is computed from patches of the "
                "input images, but it follows 'c8k3'")),
    ("w0", "architecture token 'w0': kernel size must be positive, got 0"),
    ("w29g", ("architecture token 'w29g': kernel size 29 does not fit its input of shape (28, 28, 1) (H, W, C) "
             "with valid padding")),
    ("B0", "architecture token 'B0': filters must be positive, got 0"),
    # 28 -> 14 -> 7 -> 3 -> 1: the fifth block's pool has a 1x1 input.
    ("B8-B8-B8-B8-B8", "architecture token 'B8': pool size 2 does not fit its input of shape (1, 1, 8)"),
    ("d10-B8", "architecture token 'B8' needs an image input (H, W, C) but follows a flat layer of shape (10,)"),
    ("lin9-gap", ("architecture token 'lin9' must be the last token: it sets the logits layer, but 'gap' follows "
                 "it")),
    ("lin0", "architecture token 'lin0': divisor must be positive, got 0.0"),
    ("b8", "architecture token 'b8' in 'b8' is not one of"),  # the block is B, upper case
    ("c8k3gb", "architecture token 'c8k3gb' in 'c8k3gb' is not one of"),  # suffixes in their order
    ("w2v", "architecture token 'w2v' in 'w2v' is not one of"),  # whitening is always valid
])
def test_malformed_architectures_raise_naming_the_token(arch, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        A.plan(arch, MNIST_SHAPE, 10)


def test_bad_input_shape_and_class_count_are_rejected():
    with pytest.raises(ValueError, match=re.escape("input shape must be (height, width, channels), got (28, 28)")):
        A.plan("c8k3", (28, 28), 10)
    with pytest.raises(ValueError, match="num_classes must be at least 2, got 1"):
        A.plan("c8k3", MNIST_SHAPE, 1)
