"""``--loop=fit`` (Keras compile/fit) and ``--loop=custom`` (tf.function loop) train to the same weights.

Same seed (same initial weights), same batches in the same order, same loss and optimizer, deterministic
kernels, no dropout: 20 steps from each loop must agree weight for weight.
"""

import keras
import numpy as np
import pytest

import models
from training.trainer import train

# The spec's tolerance. Both loops run the same kernels on the same batches and here agree bit for bit; 1e-4
# leaves room for a different but equivalent reduction order (e.g. a future Keras computing the mean loss
# as reduce_mean rather than sum / batch), while a wrong update rule, learning rate or batch order moves
# the weights by far more (each case checks that training moved them by over 100x this).
WEIGHT_ATOL = 1e-4
LOSS_ATOL = 1e-4


# Each optimizer once: a plain Adam case would repeat the second case's update rule and the first's constant rate.
@pytest.mark.parametrize("overrides", [
    # SGD needs a large step for the weights to move well beyond the tolerance in 20 steps.
    dict(optimizer="sgd", learning_rate=0.1, momentum=0.9, nesterov=True),
    # Adam with batch norm and a residual block (moving statistics compared too), a warmup + cosine schedule read
    # from the optimizer's step counter, and fit chunks of 8 steps that leave a 4-step remainder (a second fit
    # call on a pipeline that skips 16 batches).
    pytest.param(dict(optimizer="adam", arch="c4k3b-m2-r6-gap", lr_schedule="cosine", warmup_steps=5,
                      learning_rate=1e-2, log_every=8), marks=pytest.mark.slow),
], ids=["sgd_nesterov", "adam_bn_residual_cosine_chunks"])
def test_fit_matches_the_custom_loop(tmp_path, tiny_config, tiny_mnist, overrides):
    custom = train(tiny_config(tmp_path / "custom", loop="custom", **overrides), dataset=tiny_mnist)
    fit = train(tiny_config(tmp_path / "fit", loop="fit", **overrides), dataset=tiny_mnist)
    assert custom.results["train_steps"] == fit.results["train_steps"] == 20
    assert fit.results["loop"] == "fit"

    custom_weights = {n: v.numpy() for n, v in custom.model.named_weights().items()}
    fit_weights = {n: v.numpy() for n, v in fit.model.named_weights().items()}
    assert list(custom_weights) == list(fit_weights)
    for name, value in custom_weights.items():
        np.testing.assert_allclose(fit_weights[name], value, atol=WEIGHT_ATOL, rtol=0, err_msg=name)
    assert fit.results["test_loss"] == pytest.approx(custom.results["test_loss"], abs=LOSS_ATOL)

    # The initial weights train() started from (same seed, same construction), to show the 20 steps moved
    # the weights far beyond the tolerance.
    keras.utils.set_random_seed(0)
    initial = models.build_network("keras", custom.model.arch, tiny_mnist.image_shape, tiny_mnist.num_classes)
    moved = max(np.abs(custom_weights[n] - v.numpy()).max() for n, v in initial.named_weights().items())
    assert moved > 100 * WEIGHT_ATOL
