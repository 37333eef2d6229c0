"""Pictures of a trained run: grid layout and normalisation on known arrays, then ``inspect_run`` end to end on
a tiny run trained in-process (PNG sizes and contents, TensorBoard image summaries, errors)."""

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import models
from experiments import inspection as inspect_lib
from experiments import visuals
from training import trainer
from training.config import TrainConfig

from conftest import CLI_TIMEOUT_SECONDS, REPO_ROOT, TINY_TEST

# Twenty Adam steps of 1e-10 move a weight by at most 2e-9; Glorot kernels of another draw differ by ~0.1.
INITIAL_KERNEL_ATOL = 1e-7
ARCH = "c4k3-m2-c4k3-d16"  # conv1 (28, 28, 4) -> maxpool1 (14, 14, 4) -> conv2 (14, 14, 4) -> dense1 -> logits
NUM_IMAGES, TOP_K, MAX_IMAGES, MAX_FILTERS = 3, 4, 100, 3


def test_image_grid_upscales_tiles_and_puts_separators_between_them():
    tiles = np.array([[[0, 1], [2, 3]], [[4, 5], [6, 7]]], np.uint8)[..., np.newaxis]  # two 2x2 tiles
    grid = visuals.image_grid(tiles, columns=2, scale=2, separator=1, separator_value=9)
    # Height 2 * 2 = 4; width 2 tiles of 4 plus one separator = 9.
    np.testing.assert_array_equal(grid[..., 0], [[0, 0, 1, 1, 9, 4, 4, 5, 5],
                                                 [0, 0, 1, 1, 9, 4, 4, 5, 5],
                                                 [2, 2, 3, 3, 9, 6, 6, 7, 7],
                                                 [2, 2, 3, 3, 9, 6, 6, 7, 7]])
    assert grid.shape == (4, 9, 1) and grid.dtype == np.uint8


def test_image_grid_fills_empty_slots_of_the_last_row_with_the_separator():
    tiles = np.arange(3, dtype=np.uint8).reshape(3, 1, 1, 1)
    grid = visuals.image_grid(tiles, columns=2, separator=1, separator_value=255)
    np.testing.assert_array_equal(grid[..., 0], [[0, 255, 1], [255, 255, 255], [2, 255, 255]])


def test_normalize_tile_maps_min_to_0_and_max_to_255():
    np.testing.assert_array_equal(visuals.normalize_tile([[-2.0, 0.0], [3.0, 0.5]]), [[0, 102], [255, 128]])
    # (0 + 2) * 255 / 5 = 102; (0.5 + 2) * 255 / 5 = 127.5, rounded half to even -> 128.
    assert visuals.normalize_tile(np.full((2, 2), 7.0)).tolist() == [[0, 0], [0, 0]]  # a dead map stays black


def test_filter_grid_draws_gray_kernels_on_coloured_separators():
    kernel = np.random.default_rng(0).normal(size=(5, 5, 1, 3)).astype(np.float32)
    grid = visuals.filter_grid(kernel, columns=8, tile_pixels=40)
    assert grid.shape == (40, 3 * 40 + 2, 3)  # 5x5 kernels at 8x; 3 filters in one row, 2 separators
    first = grid[:40, :40]
    np.testing.assert_array_equal(first[..., 0], first[..., 1])  # gray: R = G = B
    np.testing.assert_array_equal(first[..., 0], visuals.upscale(visuals.normalize_tile(kernel[..., 0, 0]), 8))
    assert tuple(grid[0, 40]) == visuals.FILTER_SEPARATOR_RGB


def test_top_k_indices_picks_the_largest_per_filter_lower_index_first_on_ties():
    activations = np.array([[0.1, 5], [0.9, 4], [0.5, 3], [0.9, 2], [0.0, 1], [0.3, 0]], np.float32)  # (6, 2)
    np.testing.assert_array_equal(visuals.top_k_indices(activations, 3), [[1, 3, 2], [0, 1, 2]])
    assert visuals.top_k_indices(activations, 10).shape == (2, 6)  # k beyond N is cut to N


def test_mean_activations_average_the_block_outputs_over_space():
    model = models.build_model(ARCH, (28, 28, 1), 10)
    images = np.random.default_rng(0).uniform(size=(6, 28, 28, 1)).astype(np.float32)
    conv1 = model.stack[0](images)
    np.testing.assert_array_equal(visuals.block_outputs(model, images, ["conv1"])["conv1"], conv1)
    means = visuals.mean_activations(model, [images[:4], images[4:]], ["conv1", "conv2"])
    assert means["conv2"].shape == (6, 4)
    np.testing.assert_allclose(means["conv1"], np.mean(conv1, axis=(1, 2)), rtol=1e-6)  # summation order
    with pytest.raises(ValueError, match="no layer named conv9"):
        visuals.block_outputs(model, images, ["conv9"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_mnist, tiny_mnist_dir):
    """A 20-step run of ARCH on tiny MNIST (no dataset from this machine's Keras cache) and its trained model."""
    logdir = tmp_path_factory.mktemp("inspect") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras_home")))
        config = TrainConfig(arch=ARCH, batch_size=64, train_steps=20, steps_per_loop=10,
                             eval_batch_size=TINY_TEST, allow_download=False, logdir=str(logdir))
        result = trainer.train(config, dataset=tiny_mnist)
        paths = inspect_lib.inspect_run(str(logdir), data_dir=str(tiny_mnist_dir), num_images=NUM_IMAGES,
                                        top_k=TOP_K, max_images=MAX_IMAGES, max_filters=MAX_FILTERS)
    return dict(logdir=logdir, model=result.model, paths=paths)


# (height, width, channels) of each picture of the tiny run, from the grid layout:
EXPECTED_SHAPES = {
    # 3x3 kernels at 40 // 3 = 13x (39 px); its 4 filters in one row with 3 separators: 4 * 39 + 3 = 159. RGB.
    "filters_conv1": (39, 159, 3),
    "filters_change_conv1": (39, 159, 3),
    # A row per image (3 * 28 + 2 = 86): the image, then MAX_FILTERS maps (4 * 28 + 3 = 115); 28x28 maps at 1x.
    "feature_maps_conv1": (86, 115, 1),
    # conv2's 14x14 maps at 2x fill the same 28 px tiles.
    "feature_maps_conv2": (86, 115, 1),
    # A row per filter (3 * 56 + 2 = 170) of TOP_K images at 2x (4 * 56 + 3 = 227).
    "top_k_conv1": (170, 227, 1),
    "top_k_conv2": (170, 227, 1),
}


def _decode(path):
    return _decode_bytes(tf.io.read_file(str(path)))


def _decode_bytes(png):
    return tf.io.decode_png(png).numpy()


def test_inspect_writes_each_picture_with_the_size_of_its_grid(tiny_run):
    folder = tiny_run["logdir"] / "inspect"
    assert sorted(tiny_run["paths"]) == sorted(str(folder / f"{name}.png") for name in EXPECTED_SHAPES)
    for name, shape in EXPECTED_SHAPES.items():
        assert _decode(folder / f"{name}.png").shape == shape, name


def test_inspect_restores_the_trained_weights(tiny_run):
    restored = inspect_lib.restore_run(str(tiny_run["logdir"]))
    assert restored.step == 20
    trained = tiny_run["model"].named_weights()
    for name, variable in restored.model.named_weights().items():
        np.testing.assert_array_equal(variable.numpy(), trained[name].numpy(), err_msg=name)


def test_feature_maps_and_top_k_show_the_right_images(tiny_run, tiny_mnist):
    folder, model = tiny_run["logdir"] / "inspect", tiny_run["model"]
    images = tiny_mnist.x_test[:MAX_IMAGES]
    outputs = visuals.block_outputs(model, images.astype(np.float32) / 255.0, ["conv1"])["conv1"]
    maps = _decode(folder / "feature_maps_conv1.png")
    np.testing.assert_array_equal(maps[:28, :28], images[0])  # the input image, unscaled
    np.testing.assert_array_equal(maps[:28, 29:57, 0], visuals.normalize_tile(outputs[0, ..., 0]))
    # Row 1, tile 1 of the top-k picture: the test image with filter 1's largest mean activation, at 2x.
    best = int(np.argmax(outputs[..., 1].mean(axis=(1, 2))))
    top_k = _decode(folder / "top_k_conv1.png")
    np.testing.assert_array_equal(top_k[57:113, :56], visuals.upscale(images[best], 2))


def test_tensorboard_holds_one_image_summary_per_picture(tiny_run):
    folder = tiny_run["logdir"] / "inspect"
    images = {}
    for path in folder.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "images"
                assert event.step == 20
                width, height, png = tf.make_ndarray(value.tensor)  # tf.summary.image: width, height, PNG
                images[value.tag] = _decode_bytes(png)
                assert images[value.tag].shape[:2] == (int(height), int(width))
    assert sorted(images) == sorted(name.replace("_conv", "/conv") for name in EXPECTED_SHAPES)
    for name in EXPECTED_SHAPES:
        np.testing.assert_array_equal(images[name.replace("_conv", "/conv")], _decode(folder / f"{name}.png"))


def test_initial_kernel_is_the_one_training_started_from(tmp_path, tiny_mnist):
    config = TrainConfig(arch=ARCH, batch_size=64, train_steps=20, steps_per_loop=10, learning_rate=1e-10,
                         eval_batch_size=TINY_TEST, allow_download=False, seed=3, logdir=str(tmp_path))
    model = trainer.train(config, dataset=tiny_mnist).model
    np.testing.assert_allclose(inspect_lib.initial_kernel(config), model.stack[0].conv.kernel.numpy(), rtol=0,
                               atol=INITIAL_KERNEL_ATOL)


def _run_copy(tiny_run, tmp_path, checkpoints=True):
    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run["logdir"], run_dir, ignore=None if checkpoints else shutil.ignore_patterns("ckpt-*",
                                                                                                      "checkpoint"))
    return run_dir


@pytest.mark.parametrize("layers, message", [
    (["conv9"], "the model has no layer 'conv9'; its conv and residual blocks are conv1, conv2"),
    (["conv1", "maxpool1"], "layer 'maxpool1' is a Pool layer, not a conv or residual block; choose from conv1, "
                            "conv2"),
])
def test_inspect_refuses_a_layer_that_is_not_a_conv_block(tiny_run, tiny_mnist_dir, layers, message):
    with pytest.raises(inspect_lib.InspectError) as error:
        inspect_lib.inspect_run(str(tiny_run["logdir"]), data_dir=str(tiny_mnist_dir), layers=layers)
    assert str(error.value) == message


def test_inspect_refuses_a_run_without_checkpoint_or_config(tiny_run, tmp_path):
    run_dir = _run_copy(tiny_run, tmp_path, checkpoints=False)
    with pytest.raises(inspect_lib.InspectError, match=f"^{run_dir}/checkpoints holds no checkpoint yet"):
        inspect_lib.inspect_run(str(run_dir))
    (run_dir / "config.json").unlink()
    with pytest.raises(inspect_lib.InspectError, match=f"^{run_dir} holds no config.json"):
        inspect_lib.inspect_run(str(run_dir))


def test_config_json_lists_become_tuples_again(tiny_run):
    config = inspect_lib.load_config(str(tiny_run["logdir"]))
    saved = json.loads((tiny_run["logdir"] / "config.json").read_text())["config"]
    assert dataclasses.asdict(config) == {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
    assert isinstance(config.piecewise_boundaries, tuple) and isinstance(config.profile_steps, tuple)


def test_cli_names_a_missing_run_directory_in_one_line(tmp_path):
    missing = tmp_path / "no_such_run"
    process = subprocess.run([sys.executable, "-m", "experiments.inspect_run", f"--run_dir={missing}"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS)
    assert process.returncode == 1, process.stderr
    assert "Traceback" not in process.stderr
    assert process.stderr.splitlines()[-1] == f"inspect_run: error: run directory {missing} does not exist"
    assert process.stdout == ""
