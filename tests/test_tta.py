"""Test-time augmentation: the views it averages, and evaluation through it in a run."""

import numpy as np
import pytest
import tensorflow as tf

from training.loop import augmented_logits

ATOL = 1e-6  # float32 weighted sums of up to 6 logits in another order


class Recorder:
    """A stand-in network: logits are the mean of each view's first row, and every view is kept for checking."""

    def __init__(self):
        self.views = []

    def __call__(self, images, training=False):
        self.views.append(images.numpy())
        return tf.reduce_mean(images[:, 0, :, :], axis=[1, 2])[:, tf.newaxis] * tf.ones((1, 3))


def reflect_shift(x, down_right):
    """x (B, H, W, C) shifted by one pixel down-right (or up-left), the uncovered row and column reflected."""
    height, width = x.shape[1:3]
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
    return padded[:, :height, :width] if down_right else padded[:, 2:, 2:]


@pytest.mark.parametrize("mode", ["none", "flip", "flip_translate"])
def test_the_views_and_their_weights_are_airbench94s(mode):
    images = tf.constant(np.arange(2 * 4 * 5 * 1, dtype=np.float32).reshape(2, 4, 5, 1))
    model = Recorder()
    logits = augmented_logits(model, images, mode)
    x = images.numpy()

    def mirror(v):
        return v[:, :, ::-1]

    # (view, weight): the image and its mirror share half the weight, the two shifts with theirs the other half.
    expected = {"none": [(x, 1.0)], "flip": [(x, 0.5), (mirror(x), 0.5)]}
    shifted = [reflect_shift(x, True), reflect_shift(x, False)]
    expected["flip_translate"] = ([(x, 0.25), (mirror(x), 0.25)]
                                  + [(view, 0.125) for s in shifted for view in (s, mirror(s))])
    assert len(model.views) == len(expected[mode])
    for view, (want, _) in zip(model.views, expected[mode]):
        np.testing.assert_array_equal(view, want)
    mean = sum(weight * v[:, 0].mean(axis=(1, 2)) for v, weight in expected[mode])
    np.testing.assert_allclose(logits.numpy()[:, 0], mean, atol=ATOL)
    # The first shift moves the content one pixel down and right: its row 1 is the image's row 0.
    np.testing.assert_array_equal(shifted[0][:, 1, 1:], x[:, 0, :-1])


def test_a_run_evaluates_through_flip_tta(tmp_path, tiny_config, tiny_mnist):
    from training.trainer import train
    result = train(tiny_config(tmp_path, test_time_augmentation="flip"), dataset=tiny_mnist)
    images = tf.cast(tiny_mnist.x_test, tf.float32) / 255.0
    labels = tf.constant(tiny_mnist.y_test)

    def loss(logits):
        return float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)))

    # The run's test loss is that of the mean logits of each image and its mirror, not of the image alone.
    assert result.results["test_loss"] == pytest.approx(loss(augmented_logits(result.model, images, "flip")),
                                                        abs=1e-5)
    assert result.results["test_loss"] != pytest.approx(loss(augmented_logits(result.model, images)), abs=1e-4)
