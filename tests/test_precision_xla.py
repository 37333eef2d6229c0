"""Mixed precision trains both implementations with float32 variables; XLA compiles the same train step.

Everything here runs in the test process with the default strategy on tiny MNIST (conftest ``tiny_mnist``).
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.event_files import read_scalars
from training import loop as loop_lib
from training import parts as parts_lib
from training import pipeline, trainer
from training.config import TrainConfig

IMPLS = ("keras", "reference")
# Two convolutions, one with batch norm (kept in float32 inside a float16 network, as Keras does), and a dense
# layer: batch norm and the loss are where reduced precision usually goes wrong.
ARCH = "c8k3-m2-c8k3b-m2-d32"
BATCH_SIZE = 32
EVAL_BATCH_SIZE = 128  # tiny_mnist's 256 test images in 2 batches
# 30 Adam steps (lr 1e-3) logged every 10: the mean loss over steps 21-30 must be below that over steps 1-10 by
# this much. Measured drops were 0.68-0.72 (Keras) and 1.05-1.06 (reference) in float32, float16 and bfloat16
# alike, from ~2.4; a run whose gradients underflow or are never unscaled stays near 2.3 or goes to inf/nan.
MIN_LOSS_DROP = 0.3
# XLA fuses and reorders the float32 arithmetic of the same step; the first 5 losses (each a mean over 32
# examples, 2.2-3.1) were measured to agree within 1e-6 (Keras) and 2.4e-6 (reference). 1e-4 still catches a
# different batch, a skipped update or a changed learning rate, each of which moves the second loss by 1e-3 or
# more.
XLA_LOSS_ATOL = 1e-4
XLA_STEPS = 5


def config_for(tmp_path, **overrides):
    fields = dict(dataset="mnist", allow_download=False, arch=ARCH, batch_size=BATCH_SIZE,
                  eval_batch_size=EVAL_BATCH_SIZE, train_steps=30, log_every=10, steps_per_loop=10,
                  logdir=str(tmp_path / "run"), seed=0)
    return TrainConfig(**{**fields, **overrides})


# Each network under one policy, each policy once: the casts and the loss scaling are the loop's and the policy's,
# the same code for either network; the reference network, whose casts are its own, takes float16, the
# narrower range.
@pytest.mark.parametrize("impl, precision, compute_dtype", [("reference", "mixed_float16", tf.float16),
                                                            ("keras", "mixed_bfloat16", tf.bfloat16)])
def test_mixed_precision_trains_with_float32_variables(tmp_path, tiny_mnist, impl, precision, compute_dtype):
    config = config_for(tmp_path, impl=impl, precision=precision)
    result = trainer.train(config, dataset=tiny_mnist)

    train_scalars = read_scalars(tmp_path / "run" / "train")
    loss = train_scalars["loss"]
    assert sorted(loss) == [10, 20, 30]
    assert all(math.isfinite(value) for value in loss.values()), loss
    assert loss[30] < loss[10] - MIN_LOSS_DROP, loss
    eval_loss = read_scalars(tmp_path / "run" / "eval")["loss"]
    assert sorted(eval_loss) == [30] and math.isfinite(eval_loss[30])
    assert result.results["precision"] == precision

    # Dynamic loss scaling only for float16 (bfloat16 has float32's exponent range). Keras starts the scale at
    # 2**15 and only ever doubles or halves it.
    if precision == "mixed_float16":
        scales = train_scalars["loss_scale"]
        assert sorted(scales) == [10, 20, 30]
        assert all(value >= 1 and math.log2(value).is_integer() for value in scales.values()), scales
    else:
        assert "loss_scale" not in train_scalars

    variables = result.model.named_weights()
    assert {name: v.dtype for name, v in variables.items()} == {name: tf.float32 for name in variables}
    assert all(v.dtype == tf.float32 for v in result.model.trainable_variables)
    images = tf.cast(tiny_mnist.x_test[:2], tf.float32) / 255.0
    assert result.model(images, training=False).dtype == compute_dtype


@pytest.fixture(scope="module")
def plain_first_losses(tiny_mnist):
    """impl -> ``first_losses`` without XLA, computed once, when a test first asks (the reference network's only
    for a slow test)."""
    class Losses(dict):
        def __missing__(self, impl):
            self[impl] = first_losses(tiny_mnist, impl, jit_compile=False)
            return self[impl]

    return Losses()


def first_losses(dataset, impl, jit_compile):
    """The per-step losses of the first ``XLA_STEPS`` steps, from the trainer's own pieces; also returns whether
    the compiled loop holds a function that XLA must compile."""
    config = TrainConfig(dataset="mnist", arch=ARCH, impl=impl, batch_size=BATCH_SIZE, seed=0,
                         jit_compile=jit_compile)
    strategy = tf.distribute.get_strategy()
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        parts = parts_lib.build_parts(config, dataset, total_steps=XLA_STEPS)
    train_loop = loop_lib.make_train_loop(parts.network, parts.optimizer, parts.per_example_loss,
                                          parts.train_metrics, strategy, BATCH_SIZE, jit_compile)
    iterator = iter(pipeline.distributed_train_dataset(strategy, dataset.x_train, dataset.y_train, BATCH_SIZE,
                                                       config.seed, parts.train_preprocess))
    losses = train_loop(iterator, tf.constant(XLA_STEPS)).numpy()
    library = train_loop.get_concrete_function(iterator, tf.constant(XLA_STEPS)).graph.as_graph_def().library
    uses_xla = any(function.attr["_XlaMustCompile"].b for function in library.function)
    return losses, uses_xla


@pytest.mark.slow  # XLA is off unless asked for (--jit_compile, or chosen by --precision=auto where it is faster)
@pytest.mark.parametrize("impl", IMPLS)
def test_xla_gives_the_losses_of_the_plain_train_step(tiny_mnist, plain_first_losses, impl):
    plain, plain_uses_xla = plain_first_losses[impl]
    compiled, compiled_uses_xla = first_losses(tiny_mnist, impl, jit_compile=True)
    assert (plain_uses_xla, compiled_uses_xla) == (False, True)
    assert plain.shape == (XLA_STEPS,) and np.all(np.isfinite(plain))
    assert len(set(plain.tolist())) == XLA_STEPS  # the steps differ, so agreeing is not trivial
    np.testing.assert_allclose(compiled, plain, rtol=0, atol=XLA_LOSS_ATOL)


@pytest.mark.slow
def test_jit_compile_reaches_the_train_step_through_train(tmp_path, tiny_mnist, plain_first_losses):
    """``train(jit_compile=True)`` logs the mean of the first losses of the plain step."""
    plain, _ = plain_first_losses["keras"]
    config = config_for(tmp_path, impl="keras", jit_compile=True, train_steps=XLA_STEPS, log_every=XLA_STEPS,
                        steps_per_loop=XLA_STEPS)
    trainer.train(config, dataset=tiny_mnist)
    logged = read_scalars(tmp_path / "run" / "train")["loss"]
    # Equal batches, so the mean over all examples of 5 steps is the mean of the 5 per-step mean losses.
    assert logged == {XLA_STEPS: pytest.approx(float(np.mean(plain)), abs=XLA_LOSS_ATOL)}
