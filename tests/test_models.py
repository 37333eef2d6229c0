"""Keras CNNs built from architecture strings: pinned parameter counts, names, config round trip, logits."""

import re

import keras
import numpy as np
import pytest

import models
from models.keras_cnn import CNN

MNIST_SHAPE = (28, 28, 1)
# float32 forward pass against a float64 NumPy one: three small matmuls with O(1) values stay well within
# 1e-5 (~100 float32 ulps).
FORWARD_ATOL = 1e-5


def _trainable_count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@pytest.mark.parametrize("arch,total,trainable", [
    # conv1  5*5*1*32 + 32         =       832
    # conv2  5*5*32*64 + 64        =    51,264
    # dense1 (7*7*64)*1024 + 1024  = 3,212,288  (two 'same' convs and two 2x2 pools: 28 -> 14 -> 7)
    # logits 1024*10 + 10          =    10,250
    #                        total = 3,274,634
    ("mnist_cnn", 3_274_634, 3_274_634),
    # conv1  3*3*1*32 + 32         =       320  (valid: 28 -> 26, pool -> 13)
    # conv2  3*3*32*64 + 64        =    18,496  (valid: 13 -> 11, pool -> 5)
    # logits (5*5*64)*10 + 10      =    16,010
    #                        total =    34,826  (the Keras "simple MNIST convnet" example's count)
    ("keras_convnet", 34_826, 34_826),
    # dense1 784*512 + 512         =   401,920
    # dense2 512*512 + 512         =   262,656
    # logits 512*10 + 10           =     5,130
    #                        total =   669,706
    ("mlp", 669_706, 669_706),
    # Batch norm holds 4 vectors per channel: gamma and beta (trained), moving mean and variance (not).
    # conv1 (BN, no bias) 3*3*1*8 + 4*8                                  =   104
    # res1 (8 -> 8, identity skip): 2 * (3*3*8*8 + 4*8)                   = 1,216
    # res2 (8 -> 16, projection): 3*3*8*16 + 4*16 + 3*3*16*16 + 4*16
    #                             + 1*1*8*16 + 4*16                       = 3,776
    # logits (after global average pooling: 16 features) 16*10 + 10      =   170
    #                                                               total = 5,266
    # Not trained: 2 moving vectors * (8 + 8 + 8 + 16 + 16 + 16) channels =   144, so 5,122 trainable.
    ("c8k3b-r8-r16-gap", 5_266, 5_122),
    # The airbench94 tokens. Whitening on 1 channel: 2*1*2*2 = 8 filters; its kernel is frozen, its bias (`t`)
    # trained. Block batch norms have no gamma: 3 vectors per channel, of which only beta is trained.
    # 28 -> 27 -> 13 -> 6 spatially.
    # whiten1 2*2*1*8 (not trained) + 8 bias                               =    40
    # block1 (8 -> 8): 3*3*8*8 + 3*8 + 3*3*8*8 + 3*8                        = 1,200
    # block2 (8 -> 16): 3*3*8*16 + 3*16 + 3*3*16*16 + 3*16                  = 3,552
    # logits (lin9: no bias) 16*10                                         =   160
    #                                                                total = 4,952
    # Not trained: the 32 kernel weights and 2 moving vectors * (8 + 8 + 16 + 16) = 96, so 4,824 trainable.
    ("w2tg-B8-B16-gmp-lin9", 4_952, 4_824),
])
def test_parameter_counts(arch, total, trainable):
    model = models.build_model(arch, MNIST_SHAPE, 10)
    assert model.count_params() == total
    assert _trainable_count(model) == trainable


def test_named_weights_follow_the_plan():
    model = models.build_model("c8k3b-r8-r16-gap", MNIST_SHAPE, 10)
    shapes = {name: tuple(v.shape) for name, v in model.named_weights().items()}
    bn = ("gamma", "beta", "moving_mean", "moving_variance")
    assert shapes == {
        "conv1/conv/kernel": (3, 3, 1, 8), **{f"conv1/bn/{v}": (8,) for v in bn},
        "res1/conv1/kernel": (3, 3, 8, 8), **{f"res1/bn1/{v}": (8,) for v in bn},
        "res1/conv2/kernel": (3, 3, 8, 8), **{f"res1/bn2/{v}": (8,) for v in bn},
        "res2/conv1/kernel": (3, 3, 8, 16), **{f"res2/bn1/{v}": (16,) for v in bn},
        "res2/conv2/kernel": (3, 3, 16, 16), **{f"res2/bn2/{v}": (16,) for v in bn},
        "res2/proj/kernel": (1, 1, 8, 16), **{f"res2/proj_bn/{v}": (16,) for v in bn},
        "logits/kernel": (16, 10), "logits/bias": (10,),
    }
    # The plan order, which reference/ relies on for weight transfer.
    assert list(shapes)[:2] == ["conv1/conv/kernel", "conv1/bn/gamma"]
    assert list(shapes)[-2:] == ["logits/kernel", "logits/bias"]


def test_named_weights_of_the_airbench_tokens():
    model = models.build_model("w2g-B8-c4k3bg-gmp-lin9", MNIST_SHAPE, 10)
    shapes = {name: tuple(v.shape) for name, v in model.named_weights().items()}
    block_bn = ("beta", "moving_mean", "moving_variance")  # no gamma: BatchNormalization(scale=False)
    assert list(shapes.items()) == [
        ("whiten1/conv/kernel", (2, 2, 1, 8)),  # no bias
        ("block1/conv1/kernel", (3, 3, 8, 8)), *((f"block1/bn1/{v}", (8,)) for v in block_bn),
        ("block1/conv2/kernel", (3, 3, 8, 8)), *((f"block1/bn2/{v}", (8,)) for v in block_bn),
        # An ordinary BN conv keeps its gamma, whatever its activation.
        ("conv1/conv/kernel", (3, 3, 8, 4)),
        *((f"conv1/bn/{v}", (4,)) for v in ("gamma", "beta", "moving_mean", "moving_variance")),
        ("logits/kernel", (4, 10)),  # lin9: no bias
    ]
    frozen = [name for name, v in model.named_weights().items() if not v.trainable]
    assert frozen == ["whiten1/conv/kernel"] + [f"{layer}/{v}" for layer in ("block1/bn1", "block1/bn2", "conv1/bn")
                                                for v in ("moving_mean", "moving_variance")]


def test_config_round_trip_builds_the_same_network():
    model = models.build_model("resnet_small", (8, 8, 3), 5)
    config = model.get_config()
    assert config == {"arch": "c32k3b-r32-c64k3b-m2-r64-c128k3b-m2-r128-gap", "input_shape": (8, 8, 3),
                      "num_classes": 5, "dtype": "float32", "name": "cnn"}
    clone = CNN.from_config(config)
    clone(np.zeros((1, 8, 8, 3), np.float32))  # builds the variables
    assert clone.get_config() == config
    assert ({name: tuple(v.shape) for name, v in clone.named_weights().items()}
            == {name: tuple(v.shape) for name, v in model.named_weights().items()})
    assert clone.count_params() == model.count_params()


def test_output_is_logits_of_batch_by_classes():
    # With an MLP the forward pass is three matmuls: NHWC flatten, dense + ReLU twice, then logits with no
    # activation (so no softmax and no ReLU at the end).
    keras.utils.set_random_seed(0)
    model = models.build_model("d6-d5", (3, 3, 2), 4)
    images = np.random.default_rng(0).uniform(-1, 1, size=(7, 3, 3, 2)).astype(np.float32)
    logits = np.asarray(model(images, training=False))
    assert logits.shape == (7, 4)

    w = {name: v.numpy().astype(np.float64) for name, v in model.named_weights().items()}
    x = images.reshape(7, -1).astype(np.float64)
    x = np.maximum(x @ w["dense1/kernel"] + w["dense1/bias"], 0)
    x = np.maximum(x @ w["dense2/kernel"] + w["dense2/bias"], 0)
    expected = x @ w["logits/kernel"] + w["logits/bias"]
    np.testing.assert_allclose(logits, expected, atol=FORWARD_ATOL)
    assert (logits < 0).any()  # unrectified: a ReLU or softmax at the end would make every entry >= 0


def test_build_model_rejects_an_architecture_that_does_not_fit():
    message = ("architecture token 'c8k29v': kernel size 29 does not fit its input of shape (28, 28, 1) (H, W, C) "
               "with valid padding")
    with pytest.raises(ValueError, match=re.escape(message)):
        models.build_model("c8k29v", MNIST_SHAPE, 10)
    with pytest.raises(ValueError, match=re.escape("architecture token 'q3' in 'c8k3-q3' is not one of")):
        models.build_model("c8k3-q3", MNIST_SHAPE, 10)
