"""Test-time augmentation: the views it averages, and evaluation through it in a run."""

import numpy as np
import pytest
import tensorflow as tf

from training.loop import augmented_logits

ATOL = 1e-6  # float32 sums of 2 or 4 logits in another order


class Recorder:
    """A stand-in network: logits are the mean of each view's first row, and every view is kept for checking."""

    def __init__(self):
        self.views = []

    def __call__(self, images, training=False):
        self.views.append(images.numpy())
        return tf.reduce_mean(images[:, 0, :, :], axis=[1, 2])[:, tf.newaxis] * tf.ones((1, 3))


@pytest.mark.parametrize("mode, count", [("none", 1), ("flip", 2), ("flip_translate", 4)])
def test_the_views_are_the_image_its_mirror_and_both_shifted(mode, count):
    images = tf.constant(np.arange(2 * 4 * 5 * 1, dtype=np.float32).reshape(2, 4, 5, 1))
    model = Recorder()
    logits = augmented_logits(model, images, mode)
    assert len(model.views) == count
    x = images.numpy()
    expected = [x, x[:, :, ::-1]][:count]
    if count == 4:  # one pixel down and right, the new first row and column reflected from the second
        shifted = [np.pad(v, [(0, 0), (1, 0), (1, 0), (0, 0)], mode="reflect")[:, :4, :5] for v in expected]
        expected += shifted
    for view, want in zip(model.views, expected):
        np.testing.assert_array_equal(view, want)
    mean = np.mean([v[:, 0].mean(axis=(1, 2)) for v in expected], axis=0)
    np.testing.assert_allclose(logits.numpy()[:, 0], mean, atol=ATOL)


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
