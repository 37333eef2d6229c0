"""Augmentation is a function of the seed and of each example's place in the run, not of the process.

So the training batches of a resumed run (``skip_batches=k``) equal batches k, k+1, ... of the uninterrupted run,
and the replicas' parts of a global batch put together equal the one-device batch: both bit for bit, with
augmentation on. Comparisons are exact (no tolerance): the same ops run on the same values in the same order.
"""

import numpy as np
import pytest

from training import data as data_lib
from training import pipeline

# 20 random 8x8 RGB images (padding 4 < 8, so REFLECT works) in batches of 8: batches straddle epochs, and 16
# batches cover 6.4 epochs. The label is the example's index, which identifies it across runs.
NUM_EXAMPLES, BATCH, NUM_BATCHES = 20, 8, 16
IMAGES = np.random.default_rng(0).integers(0, 256, (NUM_EXAMPLES, 8, 8, 3), dtype=np.uint8)
LABELS = np.arange(NUM_EXAMPLES, dtype=np.int32)
MEAN, STD = pipeline.channel_stats(IMAGES)


def _batches(seed=0, num_batches=NUM_BATCHES, skip_batches=0, replicas=(0, 1, 1), augment=True, **options):
    """The first ``num_batches`` elements of the pipeline, as NumPy ``(images, labels)``."""
    preprocess = pipeline.make_preprocess(MEAN, STD, augment=augment, **options)
    batches = pipeline.train_pipeline(IMAGES, LABELS, BATCH, seed, preprocess, skip_batches, replicas)
    return [(images.numpy(), labels.numpy()) for images, labels in batches.take(num_batches)]


def _assert_bitwise_equal(got, want):
    assert len(got) == len(want)
    for (got_images, got_labels), (want_images, want_labels) in zip(got, want):
        np.testing.assert_array_equal(got_labels, want_labels)
        assert got_images.tobytes() == want_images.tobytes()  # bit for bit, -0.0 and NaN included


@pytest.mark.parametrize("flip", ["random", "alternating"])
def test_a_resumed_pipeline_augments_like_the_uninterrupted_one(flip):
    full = _batches(flip=flip)
    for skip in (3, 9):  # inside the first epoch; past two reshuffles
        _assert_bitwise_equal(_batches(num_batches=NUM_BATCHES - skip, skip_batches=skip, flip=flip), full[skip:])


@pytest.mark.parametrize("workers", [
    [(0, 1, 2), (1, 1, 2)],  # two workers, one replica each
    [(0, 2, 4), (2, 2, 4)],  # two workers, two replicas each
    [(0, 1, 4), (1, 1, 4), (2, 1, 4), (3, 1, 4)],  # four workers, one replica each
], ids=["2x1", "2x2", "4x1"])
def test_the_replicas_parts_put_together_are_the_one_device_batch(workers):
    skip, num_batches = 5, 6  # resumed too, so the parts' draws must come from the global batch index
    one_device = _batches(num_batches=num_batches, skip_batches=skip)
    # Worker (first, count, total) yields its `count` parts of each global batch one after another.
    per_worker = [_batches(num_batches=num_batches * count, skip_batches=skip, replicas=(first, count, total))
                  for first, count, total in workers]
    joined = []
    for k in range(num_batches):
        parts = [part for worker, (_, count, _) in zip(per_worker, workers)
                 for part in worker[k * count:(k + 1) * count]]
        joined.append((np.concatenate([images for images, _ in parts]),
                       np.concatenate([labels for _, labels in parts])))
    _assert_bitwise_equal(joined, one_device)


def _by_example(batches, epoch=0):
    """{example: its augmented image} in the given epoch (the stream's positions 20 * epoch .. 20 * epoch + 19)."""
    window = slice(epoch * NUM_EXAMPLES, (epoch + 1) * NUM_EXAMPLES)
    images = np.concatenate([images for images, _ in batches])[window]
    labels = np.concatenate([labels for _, labels in batches])[window]
    assert sorted(labels.tolist()) == list(range(NUM_EXAMPLES))  # each example once per epoch
    return {int(label): image for label, image in zip(labels, images)}


def _num_differing(first, second):
    return sum(not np.array_equal(first[example], second[example]) for example in range(NUM_EXAMPLES))


def test_augmentation_changes_images_and_depends_on_the_seed():
    # Over 20 examples, the chance that an image comes out unchanged is 1/162 (offset (4, 4) and no flip) under
    # a fair draw, so "at least 15 of 20 differ" fails only if the augmentation is broken.
    plain = _by_example(_batches(num_batches=3, augment=False))
    seed0 = _by_example(_batches(seed=0, num_batches=3))
    seed1 = _by_example(_batches(seed=1, num_batches=3))
    assert _num_differing(seed0, plain) >= 15
    assert _num_differing(seed0, seed1) >= 15


def test_an_example_is_augmented_afresh_in_each_epoch():
    batches = _batches(num_batches=5)  # 40 examples: epochs 0 and 1 exactly
    assert _num_differing(_by_example(batches, epoch=0), _by_example(batches, epoch=1)) >= 15


# End to end through the trainer: with augmentation on, a run stopped at a checkpoint and resumed ends with the
# weights of the run that went straight through. Deterministic kernels make the two bit-identical; 1e-6 only
# allows for float32 rounding of the O(0.1) weights should a kernel ever change.
RESUME_ATOL = 1e-6


@pytest.mark.slow
def test_an_augmented_run_resumed_from_a_checkpoint_ends_like_the_straight_run(tmp_path, bundled_mnist):
    from training.config import TrainConfig
    from training.trainer import train

    dataset = data_lib.Dataset("mnist", bundled_mnist["x_train"][:256, ..., np.newaxis],
                               bundled_mnist["y_train"][:256].astype(np.int32),
                               bundled_mnist["x_test"][:64, ..., np.newaxis],
                               bundled_mnist["y_test"][:64].astype(np.int32), source="first 256 bundled MNIST")

    def run(logdir, train_steps):
        config = TrainConfig(dataset="mnist", arch="c4k3-m2-d16", batch_size=32, train_steps=train_steps,
                             checkpoint_every=8, steps_per_loop=4, log_every=4, augment=True, deterministic=True,
                             seed=5, logdir=str(logdir))
        weights = train(config, dataset=dataset).model.named_weights()
        return {name: variable.numpy() for name, variable in weights.items()}

    after_8 = run(tmp_path / "resumed", 8)
    resumed = run(tmp_path / "resumed", 16)  # restores step 8, then trains on batches 8 .. 15
    straight = run(tmp_path / "straight", 16)
    assert list(resumed) == list(straight)
    # The last 8 steps moved the weights far more than the tolerance, so a resume that skipped them would fail.
    assert max(np.abs(straight[name] - after_8[name]).max() for name in after_8) > 1000 * RESUME_ATOL
    for name, value in straight.items():
        np.testing.assert_allclose(resumed[name], value, atol=RESUME_ATOL, err_msg=name)
