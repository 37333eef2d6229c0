"""Pictures of a trained run: grid layout, labels, titles, colour bars and normalisation on known arrays, then
``inspect_run`` end to end on a tiny run trained in-process (PNG sizes and contents, TensorBoard image summaries,
errors)."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import CLI_TIMEOUT_SECONDS, REPO_ROOT, TINY_TEST
from PIL import Image

import models
import reference
from experiments import activation_max, visuals
from experiments import inspection as inspect_lib
from training import trainer
from training.config import TrainConfig
from training.trained_run import TrainedRun, TrainedRunError, read_config

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


def _text(text, width=None):
    """``text`` alone, black on white, as ``draw_text`` writes it into a band one line high."""
    band = np.full((visuals.LINE_PIXELS, width or visuals.text_width(text), 1), 255, np.uint8)
    visuals.draw_text(band, 0, 0, text)
    return band


def test_text_is_six_pixels_a_character_and_black_on_white():
    band = _text("conv1 f3")
    assert band.shape == (11, 48, 1)  # Pillow's bitmap font: 6 px per character, 11 px a line
    assert set(np.unique(band)) == {0, 255}  # 1-bit glyphs: no gray fringe
    assert not np.array_equal(band, _text("conv1 f8"))


def test_image_grid_writes_each_label_in_a_band_above_its_tile():
    tiles = np.zeros((3, 2, 30, 1), np.uint8)  # three black 2x30 tiles, two to a row
    labels = [["a"], ["b", "c"], ["d"]]
    grid = visuals.image_grid(tiles, columns=2, separator=1, separator_value=9, labels=labels)
    # Each row: a band of 2 lines (the longest label) of 11 px, then the tile: 2 * (22 + 2) + 1 = 49 px high.
    assert grid.shape == (49, 61, 1)
    np.testing.assert_array_equal(grid[:11, :30], _text("a", 30))
    np.testing.assert_array_equal(grid[11:22, :30], 255)  # "a" has one line; the second stays white
    np.testing.assert_array_equal(grid[11:22, 31:], _text("c", 30))
    assert (grid[22:24, :30] == 0).all() and (grid[22:24, 31:] == 0).all()  # the tiles under the band
    assert (grid[:24, 30] == 9).all()  # the separator runs past the band
    np.testing.assert_array_equal(grid[25:36, :30], _text("d", 30))
    assert (grid[25:, 31:] == 9).all()  # the empty slot of the last row


def test_filter_labels_name_the_layer_unless_a_tile_is_too_narrow():
    assert visuals.filter_labels("conv1", [3, 10], 60) == ["conv1 f3", "conv1 f10"]  # 54 px at most: fits
    assert visuals.filter_labels("conv1", [3, 10], 53) == ["f3", "f10"]  # one does not fit: none names the layer


def test_labels_keep_a_gap_and_widen_a_column_they_do_not_fit_above():
    # CIFAR tiles are 64 px: "block1 f10" (60 px) would touch its neighbour's label; "f10" leaves the gap.
    assert visuals.filter_labels("block1", [10, 11], 64) == ["f10", "f11"]
    tiles = np.zeros((4, 2, 10, 1), np.uint8)  # 10 px wide tiles, two to a row
    grid = visuals.image_grid(tiles, columns=2, separator=1, separator_value=9, labels=[["cat"], ["a"], ["b"], ["c"]])
    # Column 0 widens to "cat" and the gap: 18 + 6 = 24 px; column 1 keeps 10 ("a" + gap = 12 px > 10: 12).
    assert grid.shape == (2 * (11 + 2) + 1, 24 + 1 + 12, 1)
    np.testing.assert_array_equal(grid[:11, :24], _text("cat", 24))
    assert (grid[11:13, 10:24] == 9).all()  # beside the tile, the widened column is separator


def test_confusion_grid_names_both_axes_and_writes_counts_that_fit():
    matrix = np.array([[8, 2], [0, 10]])
    grid = visuals.confusion_grid(matrix, ("cat", "dog"))
    side = visuals.text_width("cat") + visuals.MARGIN  # 22 px of names left of and above the cells
    cell = visuals.CONFUSION_CELL_PIXELS
    assert grid.shape == (side + 2 * cell + 1, side + 2 * cell + 1, 1)
    # Shade by the share of the row: 8/10 -> 51, 2/10 -> 204, 0 -> 255 (white), 10/10 -> 0 (black).
    assert [grid[side + 1, side + 1 + c * cell, 0] for c in range(2)] == [51, 204]
    assert [grid[side + cell + 1, side + 1 + c * cell, 0] for c in range(2)] == [255, 0]
    assert (grid[side + 1:side + cell, side + 1:side + cell] == 255).any()  # "8" in white on the dark cell
    assert (grid[side + cell + 1:, side + 1:side + cell] == 0).any()  # "0" in black on the white cell
    assert (grid[side:, :side - visuals.MARGIN] == 0).any() and (grid[:side - visuals.MARGIN, side:] == 0).any()
    with pytest.raises(ValueError, match="is \\(2, 2\\)"):
        visuals.confusion_grid(np.zeros((3, 3)), ("cat", "dog"))


def test_tile_labels_differ_by_filter_and_carry_each_tile_range():
    kernel = np.arange(2 * 2 * 1 * 2, dtype=np.float32).reshape(2, 2, 1, 2)  # filter 0: 0, 2, 4, 6; filter 1: 1..7
    grid = visuals.filter_grid(kernel, tile_pixels=60, layer="conv1")
    # Labels of 3 lines (33 px) above 2x2 kernels at 30x (60 px); two tiles and one separator: 121 px wide.
    assert grid.shape == (93, 121, 3)
    first, second = grid[:33, :60, :1], grid[:33, 61:121, :1]
    np.testing.assert_array_equal(first[:11], _text("conv1 f0", 60))
    np.testing.assert_array_equal(second[:11], _text("conv1 f1", 60))
    assert not np.array_equal(first[:11], second[:11])
    np.testing.assert_array_equal(first[11:22], _text("max 6", 60))
    np.testing.assert_array_equal(second[22:33], _text("min 1", 60))


def test_shared_scale_draws_every_tile_on_the_kernel_range():
    kernel = np.array([0.0, 1.0, 2.0, 4.0], np.float32).reshape(1, 2, 1, 2)  # filter 0: (0, 2); filter 1: (1, 4)
    grid = visuals.filter_grid(kernel, tile_pixels=1, shared_scale=True)
    # One scale from 0 (black) to 4 (white): 2 -> 127.5 -> 128 (half to even), 1 -> 63.75 -> 64.
    np.testing.assert_array_equal(grid[0, :, 0], [0, 128, visuals.FILTER_SEPARATOR_RGB[0], 64, 255])
    own = visuals.filter_grid(kernel, tile_pixels=1)
    np.testing.assert_array_equal(own[0, :, 0], [0, 255, visuals.FILTER_SEPARATOR_RGB[0], 0, 255])


def test_value_bar_gives_the_values_of_black_and_white_or_says_each_tile_has_its_own():
    shared = visuals.value_bar([-0.5, 0.25, 2.0], True, "kernel weight")
    assert (shared.low, shared.high) == ("-0.5", "2")
    assert shared.caption == ("kernel weight; one scale for all tiles: -0.5 is black, 2 white",)
    own = visuals.value_bar([-0.5, 2.0], False, "kernel weight")
    assert (own.low, own.high) == ("tile min", "tile max") and "each tile has its own scale" in own.caption[0]


@pytest.mark.parametrize("value, text", [(0, "0"), (0.8789, ".88"), (-0.0963, "-.096"), (255, "255"),
                                         (99.6, "100"), (12345, "1.2e4"), (-1.2e-5, "-1.2e-5")])
def test_short_value_fits_a_label(value, text):
    assert visuals.short_value(value) == text


TITLE = ["conv1 kernels", "run r: mnist"]
BAR = visuals.ColourBar("-1", "2.5", ("kernel weight",))


def _annotated(title=TITLE, bar=BAR, grid=None):
    grid = np.full((20, 300, 1), 128, np.uint8) if grid is None else grid
    return visuals.annotate(grid, title, bar)


def test_annotate_stacks_title_grid_and_colour_bar_with_margins():
    picture = _annotated()
    m, line = visuals.MARGIN, visuals.LINE_PIXELS
    # Margins of 4 px above the title, the grid, the colour bar and below the caption; 2 title lines, the bar's
    # line and 1 caption line of 11 px; the 20 px grid. Width: the 300 px grid (the widest part) and 2 margins.
    assert picture.shape == (4 * m + 4 * line + 20, 300 + 2 * m, 1)
    top = 2 * m + 2 * line
    np.testing.assert_array_equal(picture[top:top + 20, m:m + 300], 128)
    wide = _annotated(title=["x" * 60])  # a 360 px title widens the picture
    assert wide.shape[1] == 360 + 2 * m


def test_a_title_darkens_pixels_in_the_title_band_only():
    titled, untitled = _annotated(), _annotated(title=["", ""])
    m, line = visuals.MARGIN, visuals.LINE_PIXELS
    changed = np.argwhere(titled != untitled)[:, :2]
    assert len(changed) > 0
    assert changed[:, 0].min() >= m and changed[:, 0].max() < m + 2 * line  # rows of the two title lines
    assert changed[:, 1].max() < m + visuals.text_width("conv1 kernels")
    np.testing.assert_array_equal(titled[m:m + line, m:m + 78], _text("conv1 kernels"))


def test_colour_bar_runs_from_black_to_white_between_its_labels():
    picture = _annotated()
    m, line = visuals.MARGIN, visuals.LINE_PIXELS
    y = 3 * m + 2 * line + 20  # the bar's line, under the grid
    row = picture[y:y + line, m:, 0]
    np.testing.assert_array_equal(row[:, :12], _text("-1")[..., 0])  # the low label, 2 characters
    ramp_x = 12 + m  # the frame's left edge
    ramp = row[1:-1, ramp_x + 1:ramp_x + 1 + visuals.COLOUR_BAR_PIXELS]
    assert (ramp[:, 0] == 0).all() and (ramp[:, -1] == 255).all()  # black at the low end, white at the high end
    assert (np.diff(ramp[0].astype(int)) >= 0).all() and (ramp == ramp[0]).all()  # brighter to the right
    assert (row[:, ramp_x] == 0).all() and (row[0, ramp_x:ramp_x + visuals.COLOUR_BAR_PIXELS + 2] == 0).all()
    high_x = ramp_x + visuals.COLOUR_BAR_PIXELS + 2 + m
    np.testing.assert_array_equal(row[:, high_x:high_x + 18], _text("2.5")[..., 0])
    np.testing.assert_array_equal(picture[y + line:y + 2 * line, m:m + 78], _text("kernel weight"))


def test_annotate_keeps_rgb_grids_rgb():
    picture = _annotated(grid=np.zeros((5, 10, 3), np.uint8))
    assert picture.shape[-1] == 3 and (picture[..., 0] == picture[..., 2]).all()  # gray text and bar, black grid


def test_filter_grid_draws_gray_kernels_on_coloured_separators():
    kernel = np.random.default_rng(0).normal(size=(5, 5, 1, 3)).astype(np.float32)
    grid = visuals.filter_grid(kernel, columns=8, tile_pixels=40)
    assert grid.shape == (40, 3 * 40 + 2, 3)  # 5x5 kernels at 8x; 3 filters in one row, 2 separators
    first = grid[:40, :40]
    np.testing.assert_array_equal(first[..., 0], first[..., 1])  # gray: R = G = B
    np.testing.assert_array_equal(first[..., 0], visuals.upscale(visuals.normalize_tile(kernel[..., 0, 0]), 8))
    assert tuple(grid[0, 40]) == visuals.FILTER_SEPARATOR_RGB


def test_feature_map_grid_on_one_scale_puts_the_same_value_at_the_same_gray():
    images = np.full((2, 2, 2, 1), 7, np.uint8)
    maps = np.array([0.0, 1.0, 2.0, 4.0], np.float32).reshape(2, 1, 1, 2)  # image 0: maps 0, 1; image 1: 2, 4
    grid = visuals.feature_map_grid(images, maps, tile_pixels=2, shared_scale=True)
    # 1x1 maps at 2x beside the 2x2 images; one scale from 0 to 4: 1 -> 64, 2 -> 128 (half to even), 4 -> 255.
    np.testing.assert_array_equal(grid[::3, ::3, 0], [[7, 0, 64], [7, 128, 255]])
    own = visuals.feature_map_grid(images, maps, tile_pixels=2)
    np.testing.assert_array_equal(own[::3, ::3, 0], [[7, 0, 0], [7, 0, 0]])  # each 1x1 map is flat on its own


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
    pooled = visuals.pooled_activations(model, [images[:4], images[4:]], ["conv1"])
    np.testing.assert_array_equal(pooled["max", "conv1"], np.max(conv1, axis=(1, 2)))  # a max has no rounding
    np.testing.assert_array_equal(pooled["mean", "conv1"], means["conv1"])
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
                                        top_k=TOP_K, max_images=MAX_IMAGES, max_filters=MAX_FILTERS,
                                        ascent=ASCENT)
    return dict(logdir=logdir, model=result.model, paths=paths)


ASCENT = activation_max.Ascent(steps=5)  # the pictures' layout, not the ascent (tests/test_activation_max.py)
# The grid of each picture of the tiny run (height, width, channels), its title lines and caption lines; a label
# line is 11 px, and the tiles are brought to about 64 px by an integer factor.
PICTURES = {
    # Labels of 3 lines (layer and filter, the tile's max, its min: 33 px) above 3x3 kernels at 21x (63 px);
    # the 4 filters in one row with 3 separators: 4 * 63 + 3 = 255. RGB.
    "filters_conv1": ((33 + 63, 255, 3), 2, 1),
    "filters_change_conv1": ((33 + 63, 255, 3), 2, 1),
    # A row per image, 3 * (33 + 56 + 1) - 1 = 269: the image, in a column widened to its label "test image 0"
    # (72 px) and the gap (6), then MAX_FILTERS maps: 78 + 3 * (1 + 56) = 249; 28x28 maps at 2x. The caption has a
    # second line about the image column.
    "feature_maps_conv1": ((269, 249, 1), 2, 2),
    # conv2's 14x14 maps at 4x fill the same 56 px tiles.
    "feature_maps_conv2": ((269, 249, 1), 2, 2),
    # A row per filter, labels of 3 lines (layer and filter, the score, the class), 3 * (33 + 56 + 1) - 1 = 269,
    # of TOP_K images at 2x (227).
    "top_k_mean_conv1": ((269, 227, 1), 2, 1),
    "top_k_max_conv1": ((269, 227, 1), 2, 1),
    "top_k_mean_conv2": ((269, 227, 1), 2, 1),
    "top_k_max_conv2": ((269, 227, 1), 2, 1),
    # MAX_FILTERS images in one row (3 * 56 + 2 = 170) under labels of 2 lines; a third title line: the settings.
    "activation_max_conv1": ((22 + 56, 170, 1), 3, 1),
    "activation_max_conv2": ((22 + 56, 170, 1), 3, 1),
}


def _decode(path):
    return _decode_bytes(tf.io.read_file(str(path)))


def _decode_bytes(png):
    return tf.io.decode_png(png).numpy()


def _grid(picture, name):
    """The grid part of a decoded picture: under its title lines, inside the margin."""
    (height, width, _), title_lines, _ = PICTURES[name]
    top = 2 * visuals.MARGIN + title_lines * visuals.LINE_PIXELS
    return picture[top:top + height, visuals.MARGIN:visuals.MARGIN + width]


def test_inspect_writes_each_picture_with_the_size_of_its_grid_title_and_colour_bar(tiny_run):
    folder = tiny_run["logdir"] / "inspect"
    assert sorted(tiny_run["paths"]) == sorted(str(folder / f"{name}.png") for name in PICTURES)
    for name, ((height, width, channels), title_lines, caption_lines) in PICTURES.items():
        picture = _decode(folder / f"{name}.png")
        # Four margins; the title, the colour bar's line and the caption; the grid. The title is wider than the
        # grid: the picture is as wide as its widest part.
        lines = title_lines + 1 + caption_lines
        assert picture.shape[0] == 4 * visuals.MARGIN + lines * visuals.LINE_PIXELS + height, name
        assert picture.shape[1] >= width + 2 * visuals.MARGIN and picture.shape[2] == channels, name
        title = picture[visuals.MARGIN:visuals.MARGIN + visuals.LINE_PIXELS]
        assert (title == 0).any() and (title == 255).any(), name  # black text on white


def test_inspect_restores_the_trained_weights(tiny_run):
    restored = TrainedRun.open(str(tiny_run["logdir"]))
    assert restored.step == 20
    trained = tiny_run["model"].named_weights()
    for name, variable in restored.network.named_weights().items():
        np.testing.assert_array_equal(variable.numpy(), trained[name].numpy(), err_msg=name)


def test_feature_maps_and_top_k_show_the_right_images(tiny_run, tiny_mnist):
    folder, model = tiny_run["logdir"] / "inspect", tiny_run["model"]
    images = tiny_mnist.x_test[:MAX_IMAGES]
    outputs = visuals.block_outputs(model, images.astype(np.float32) / 255.0, ["conv1"])["conv1"]
    maps = _grid(_decode(folder / "feature_maps_conv1.png"), "feature_maps_conv1")
    band = 33  # three label lines above each row
    np.testing.assert_array_equal(maps[band:band + 56, :56], visuals.upscale(images[0], 2))  # pixels unscaled
    # The image's column is 78 px wide (its label "test image 0" and the gap): the first map starts at 79.
    np.testing.assert_array_equal(maps[:11, :78], _text(str(tiny_mnist.y_test[0]), 78))  # its true class
    np.testing.assert_array_equal(maps[11:22, :78], _text("test image 0", 78))
    np.testing.assert_array_equal(maps[band:band + 56, 79:135, 0],
                                  visuals.upscale(visuals.normalize_tile(outputs[0, ..., 0]), 2))
    np.testing.assert_array_equal(maps[:11, 79:135], _text("conv1 f0", 56))
    np.testing.assert_array_equal(maps[11:22, 79:135],
                                  _text(f"max {visuals.short_value(outputs[0, ..., 0].max())}", 56))
    # Row 1, tile 1 of the top-k pictures: the test image with filter 1's largest mean (max) activation, at 2x,
    # labelled with that mean (max) and its true class.
    for pooling, pool in (("mean", np.mean), ("max", np.max)):
        scores = pool(outputs[..., 1], axis=(1, 2))
        best = int(np.argmax(scores))
        top_k = _grid(_decode(folder / f"top_k_{pooling}_conv1.png"), f"top_k_{pooling}_conv1")
        row = 33 + 56 + 1
        np.testing.assert_array_equal(top_k[row + 33:row + 89, :56], visuals.upscale(images[best], 2))
        np.testing.assert_array_equal(top_k[row + 11:row + 22, :56],
                                      _text(f"{pooling} {visuals.short_value(scores[best])}", 56))
        np.testing.assert_array_equal(top_k[row + 22:row + 33, :56], _text(str(tiny_mnist.y_test[best]), 56))


def test_feature_map_and_top_k_pngs_name_the_classes_of_their_images(tiny_run, tiny_mnist):
    folder = tiny_run["logdir"] / "inspect"
    names = [str(label) for label in tiny_mnist.y_test[:MAX_IMAGES]]  # MNIST's class names are its digits
    with Image.open(folder / "feature_maps_conv1.png") as picture:
        assert json.loads(picture.text["classes"]) == names[:NUM_IMAGES]  # a row's image each
    with Image.open(folder / "top_k_max_conv2.png") as picture:
        classes = json.loads(picture.text["classes"])  # each tile, row by row
    assert len(classes) == MAX_FILTERS * TOP_K and set(classes) <= set(names)
    with Image.open(folder / "filters_conv1.png") as picture:
        assert "classes" not in picture.text  # kernels show no images


def test_activation_max_picture_shows_what_the_ascent_finds(tiny_run, tiny_mnist):
    restored = TrainedRun.open(str(tiny_run["logdir"]))
    bounds = activation_max.pixel_bounds(restored.eval_preprocess(), 1)
    # The run does not standardise: its inputs are pixels / 255, so black is 0 and white 1.
    np.testing.assert_array_equal(bounds, ([0.0], [1.0]))
    found = activation_max.maximise(restored.network, "conv2", range(MAX_FILTERS), *bounds, ASCENT)
    grid = _grid(_decode(tiny_run["logdir"] / "inspect" / "activation_max_conv2.png"), "activation_max_conv2")
    np.testing.assert_array_equal(grid[22:, :56], visuals.upscale(found.pixels[0], 2))
    np.testing.assert_array_equal(grid[22:, 114:170], visuals.upscale(found.pixels[2], 2))
    np.testing.assert_array_equal(grid[:11, 114:170], _text("conv2 f2", 56))
    np.testing.assert_array_equal(grid[11:22, 114:170], _text(f"mean {visuals.short_value(found.final[2])}", 56))


def test_inspect_draws_on_one_scale_and_skips_the_ascent_when_asked(tiny_run, tiny_mnist_dir, tmp_path):
    run_dir = _run_copy(tiny_run, tmp_path)
    shutil.rmtree(run_dir / "inspect")
    paths = inspect_lib.inspect_run(str(run_dir), data_dir=str(tiny_mnist_dir), layers=["conv2"], num_images=1,
                                    top_k=1, max_images=10, max_filters=2, shared_scale=True, ascent=None)
    assert sorted(os.path.basename(path) for path in paths) == [
        "feature_maps_conv2.png", "filters_change_conv1.png", "filters_conv1.png", "top_k_max_conv2.png",
        "top_k_mean_conv2.png"]
    maps = _decode(run_dir / "inspect" / "feature_maps_conv2.png")
    # One label line per map tile on a shared scale (no ranges), two above the image (its class and index): the
    # grid is 22 + 56 px high, under 2 title lines.
    assert maps.shape[0] == 4 * visuals.MARGIN + 5 * visuals.LINE_PIXELS + 22 + 56


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
    assert sorted(images) == sorted(name.replace("_conv", "/conv") for name in PICTURES)
    for name in PICTURES:
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
    (["conv9"], "the model has no layer 'conv9'; its conv blocks are conv1, conv2"),
    (["conv1", "maxpool1"], "layer 'maxpool1' is a Pool layer, not a conv block; choose from conv1, conv2"),
])
def test_inspect_refuses_a_layer_that_is_not_a_conv_block(tiny_run, tiny_mnist_dir, layers, message):
    with pytest.raises(inspect_lib.InspectError) as error:
        inspect_lib.inspect_run(str(tiny_run["logdir"]), data_dir=str(tiny_mnist_dir), layers=layers)
    assert str(error.value) == message


def test_inspect_refuses_a_run_without_checkpoint_or_config(tiny_run, tmp_path):
    run_dir = _run_copy(tiny_run, tmp_path, checkpoints=False)
    with pytest.raises(TrainedRunError, match=f"^{run_dir}/checkpoints holds no checkpoint yet"):
        inspect_lib.inspect_run(str(run_dir))
    (run_dir / "config.json").unlink()
    with pytest.raises(TrainedRunError, match=f"^{run_dir} holds no config.json"):
        inspect_lib.inspect_run(str(run_dir))


def test_config_json_lists_become_tuples_again(tiny_run):
    config = read_config(str(tiny_run["logdir"]))
    saved = json.loads((tiny_run["logdir"] / "config.json").read_text())["config"]
    assert dataclasses.asdict(config) == {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
    assert isinstance(config.piecewise_boundaries, tuple) and isinstance(config.profile_steps, tuple)


def test_cli_names_a_missing_run_directory_in_one_line(tmp_path):
    missing = tmp_path / "no_such_run"
    process = subprocess.run([sys.executable, "-m", "experiments.inspect_run", f"--run_dir={missing}"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS)
    # Refused at parse time, before TensorFlow is imported.
    assert process.returncode == 2, process.stderr
    assert "Traceback" not in process.stderr
    assert process.stderr.splitlines()[-1] == (f"inspect_run.py: error: flag --run_dir={missing}: --run_dir must be "
                                               "an existing directory")
    assert process.stdout == ""


def test_an_airbench_network_shows_its_whitening_kernel_and_blocks(tmp_path, tiny_mnist, tiny_mnist_dir):
    logdir = tmp_path / "run"
    config = TrainConfig(arch="w2-B4-gmp-lin9", batch_size=64, train_steps=2, steps_per_loop=2, optimizer="sgd",
                         eval_batch_size=TINY_TEST, allow_download=False, logdir=str(logdir))
    trainer.train(config, dataset=tiny_mnist)
    paths = inspect_lib.inspect_run(str(logdir), data_dir=str(tiny_mnist_dir), num_images=2, top_k=2,
                                    max_images=16, ascent=activation_max.Ascent(steps=2))
    names = sorted(os.path.splitext(os.path.basename(path))[0] for path in paths)
    # The whitening kernel (2x2, 8 filters on one channel) is drawn; it is computed, not trained: no change.
    assert names == ["activation_max_block1", "activation_max_whiten1", "feature_maps_block1",
                     "feature_maps_whiten1", "filters_whiten1", "top_k_max_block1", "top_k_max_whiten1",
                     "top_k_mean_block1", "top_k_mean_whiten1"]


# A reference network against its Keras twin: float32, the same TF ops in the same order on CPU (bit for bit there);
# 1e-5 leaves room for kernels that sum in another order.
TWIN_TOL = 1e-5


@pytest.mark.slow
def test_a_reference_run_is_inspected_as_it_is(tmp_path, tiny_mnist, tiny_mnist_dir):
    logdir = tmp_path / "run"
    # A residual block first: its first kernel is the one of its first convolution (res1/conv1/kernel).
    config = TrainConfig(arch="r4-c4k3-gap", impl="reference", batch_size=64, train_steps=2, steps_per_loop=2,
                         optimizer="sgd", eval_batch_size=TINY_TEST, allow_download=False, logdir=str(logdir))
    trainer.train(config, dataset=tiny_mnist)
    paths = inspect_lib.inspect_run(str(logdir), data_dir=str(tiny_mnist_dir), num_images=2, top_k=2,
                                    max_images=16, ascent=activation_max.Ascent(steps=2))
    names = sorted(os.path.splitext(os.path.basename(path))[0] for path in paths)
    assert names == ["activation_max_conv1", "activation_max_res1", "feature_maps_conv1", "feature_maps_res1",
                     "filters_change_res1", "filters_res1", "top_k_max_conv1", "top_k_max_res1", "top_k_mean_conv1",
                     "top_k_mean_res1"]
    network = TrainedRun.open(str(logdir)).network
    assert isinstance(network, reference.ReferenceCNN)  # read as it is, not through a Keras copy
    twin = models.build_network("keras", config.arch, (28, 28, 1), 10)
    reference.copy_weights(network, twin)
    for side in (network, twin):
        name, kernel = inspect_lib.first_kernel(side)
        assert name == "res1" and kernel.shape == (3, 3, 1, 4)
    np.testing.assert_array_equal(inspect_lib.first_kernel(network)[1], inspect_lib.first_kernel(twin)[1])
    images = tiny_mnist.x_test[:4].astype(np.float32) / 255.0
    found, expected = (visuals.block_outputs(side, images, ["res1", "conv1"]) for side in (network, twin))
    assert list(found) == ["res1", "conv1"]  # plan order
    for name in found:
        np.testing.assert_allclose(found[name], expected[name], atol=TWIN_TOL, rtol=TWIN_TOL, err_msg=name)
