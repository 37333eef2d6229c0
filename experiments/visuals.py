"""Pictures of what a trained CNN computes: image grids of kernels, feature maps and top-activating images.

Grid helpers take and return NumPy arrays (uint8 HWC images); the activation helpers take a network of either
implementation (``models.build_network``) and batches of preprocessed images. Nothing here reads flags or files.

A grid given a ``layer`` labels each tile above it (``"conv1 f3"``: layer and filter index, or ``"f3"`` when the
layer's name does not fit); a column is widened where a label would not fit above its tile, so labels never run
into their neighbours. ``annotate`` then
puts a title above the grid and a colour bar below it, with the values black and white stand for and whether
the tiles share that scale. Text is drawn with Pillow's built-in bitmap font; Pillow comes with TensorBoard.
"""

import dataclasses
import io
import json
import math

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

# Displayed sizes, in pixels: every kind of tile is brought to about 64 px by an integer factor (a 5x5 kernel at
# 12x, a 28x28 digit or map at 2x, a 14x14 map at 4x, a 32x32 CIFAR image at 2x), so "conv1 f3" fits above it.
FILTER_TILE_PIXELS = 64
MAP_TILE_PIXELS = 64
IMAGE_TILE_PIXELS = 64
FILTER_COLUMNS = 8  # tiles per row in the kernel and activation-maximisation grids
SEPARATOR = 1  # pixels between tiles
SEPARATOR_VALUE = 255  # white lines: they stand out against the dark (zero) background of ReLU maps and digits
# Kernel tiles span black to white, so no gray line would stand out between them: kernel grids are RGB with
# coloured lines (gray tiles for 1-channel kernels).
FILTER_SEPARATOR_RGB = (230, 60, 40)

# Text: black on white, in Pillow's bitmap font (Pillow >= 10.1 calls it load_default_imagefont; before, plain
# load_default returned it). Its glyphs are 1-bit, so they stay sharp at 1x on any background, and every
# character is 6 px wide, so a label's width is known before it is drawn.
FONT = getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)()
LINE_PIXELS = 11  # height of a line of text, descenders included
TEXT_VALUE = 0
BACKGROUND_VALUE = 255
MARGIN = 4  # white pixels around an annotated picture and between its title, grid and colour bar
COLOUR_BAR_PIXELS = 128  # width of the black-to-white ramp, frame excluded
LABEL_GAP = 6  # white pixels, one character, kept right of every label line: "block1 f10block1 f11" never happens


def integer_scale(size, target_pixels):
    """The integer nearest-neighbour factor that brings ``size`` pixels closest to ``target_pixels`` from below
    (at least 1)."""
    return max(1, target_pixels // size)


def normalize_tile(tile, low=None, high=None):
    """Maps ``low`` to 0 and ``high`` to 255 (uint8), by default the tile's own min and max; a constant tile (e.g. a
    dead ReLU map) becomes 0."""
    tile = np.asarray(tile, np.float64)
    low = tile.min() if low is None else low
    high = tile.max() if high is None else high
    if high == low:
        return np.zeros(tile.shape, np.uint8)
    return np.round(np.clip((tile - low) * (255.0 / (high - low)), 0, 255)).astype(np.uint8)


def upscale(tile, factor):
    """Nearest-neighbour upscaling of an HWC tile by an integer ``factor`` along height and width."""
    return np.repeat(np.repeat(tile, factor, axis=0), factor, axis=1)


def text_width(text):
    """Width in pixels of ``text`` in ``FONT``."""
    return int(FONT.getbbox(text)[2]) if text else 0


def glyph_mask(text):
    """``(LINE_PIXELS, text_width(text))`` bool array, True where ``FONT`` inks one line of ``text``."""
    glyphs = Image.new("L", (text_width(text), LINE_PIXELS), 0)
    ImageDraw.Draw(glyphs).text((0, 0), text, font=FONT, fill=255)
    return np.asarray(glyphs) > 0


def draw_text(canvas, y, x, text, value=TEXT_VALUE, upward=False):
    """Writes one line of ``text`` into the HWC uint8 ``canvas`` in place, its top-left corner at ``(y, x)``;
    what falls outside the canvas is cut off. ``upward`` turns it a quarter left, to read from bottom to top."""
    if not text:
        return
    mask = glyph_mask(text)
    if upward:
        mask = np.rot90(mask)  # (width, LINE_PIXELS): the first character at the bottom
    mask = mask[:max(0, canvas.shape[0] - y), :max(0, canvas.shape[1] - x)]
    canvas[y:y + mask.shape[0], x:x + mask.shape[1]][mask] = value


def image_grid(tiles, columns, scale=1, separator=SEPARATOR, separator_value=SEPARATOR_VALUE, labels=None):
    """Lays out equal-size uint8 tiles ``(N, h, w, c)`` row by row, ``columns`` to a row, each upscaled by
    ``scale``, with ``separator`` pixels of ``separator_value`` (a number, or one per channel) between tiles
    (none around the border).

    Without labels, returns a ``(rows * h * scale + (rows - 1) * separator, columns * w * scale + (columns - 1) *
    separator, c)`` uint8 image with ``rows = ceil(N / columns)``; slots after the last tile are left at
    ``separator_value``. ``labels``, one list of text lines per tile, adds a white band of ``LINE_PIXELS`` per line
    (as many as the longest label has) above each row, each tile's lines written above it; a column whose widest
    line and ``LABEL_GAP`` are wider than a tile is widened to fit them, the tile at its left, the rest
    ``separator_value``.
    """
    tiles = np.asarray(tiles)
    if tiles.ndim != 4 or tiles.dtype != np.uint8:
        raise ValueError(f"tiles must be a uint8 array (N, h, w, c), got {tiles.dtype} {tiles.shape}")
    count, height, width, channels = tiles.shape
    if labels is not None and len(labels) != count:
        raise ValueError(f"image_grid got {len(labels)} labels for {count} tiles")
    band = LINE_PIXELS * max((len(lines) for lines in labels), default=0) if labels else 0
    rows = math.ceil(count / columns)
    widths = [width * scale] * columns
    for index, lines in enumerate(labels or ()):
        widths[index % columns] = max([widths[index % columns]] + [text_width(t) + LABEL_GAP for t in lines])
    starts = np.cumsum([0] + [w + separator for w in widths])  # x of each column, and past the last
    step_y = band + height * scale + separator
    grid = np.full((rows * step_y - separator, starts[-1] - separator, channels), separator_value, np.uint8)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        y, x = row * step_y, starts[column]
        if band:
            above = grid[y:y + band, x:x + widths[column]]  # a view: text drawn into it lands in the grid
            above[:] = BACKGROUND_VALUE
            for line, text in enumerate(labels[index]):
                draw_text(above, line * LINE_PIXELS, 0, text)
        grid[y + band:y + band + height * scale, x:x + width * scale] = upscale(tile, scale)
    return grid


def filter_labels(layer, filters, width):
    """``"<layer> f<index>"`` for each index of ``filters``, or ``"f<index>"`` for all when one of the long
    labels and ``LABEL_GAP`` are wider than ``width`` pixels (the picture's title names the layer then)."""
    long = [f"{layer} f{f}" for f in filters]
    if max(map(text_width, long), default=0) + LABEL_GAP <= width:
        return long
    return [f"f{f}" for f in filters]


def format_value(value):
    """A number in at most 3 significant digits, e.g. ``-0.123``, ``2.35``, ``1.2e+03``."""
    return f"{float(value):.3g}"


def short_value(value):
    """A number in 2 significant digits and few characters, for labels above a 56 px tile: ``-.12``, ``2.4``,
    ``255``, ``1.2e4``."""
    if 99.5 <= abs(value) < 9999.5:  # whole numbers, not 2.6e2
        return str(round(float(value)))
    text = f"{float(value):.2g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")
    return text.replace("0.", ".", 1) if text.startswith(("0.", "-0.")) else text


def range_lines(values):
    """A tile's own range as label lines: ``["max 2.35", "min 0"]``."""
    return [f"max {short_value(np.max(values))}", f"min {short_value(np.min(values))}"]


def _labels(layer, filters, width, extra=None):
    """Label lines per tile: the filter label, then ``extra[i]`` lines (or none)."""
    names = filter_labels(layer, filters, width)
    return [[name] + (list(extra[i]) if extra is not None else []) for i, name in enumerate(names)]


def filter_grid(kernel, columns=FILTER_COLUMNS, tile_pixels=FILTER_TILE_PIXELS, layer=None, shared_scale=False):
    """The kernels ``(kh, kw, in, out)`` of a first layer as a grid, one tile per output filter.

    Each tile is scaled by its own min/max over all its channels (so colours keep their balance within a
    filter), or with ``shared_scale`` all by the kernel's min/max; 1-channel kernels are drawn gray, 3-channel
    kernels in colour. With a ``layer`` name, each tile is labelled with it and its filter index (and its own
    range, when tiles have their own scales). Returns an RGB image.
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 4 or kernel.shape[2] not in (1, 3):
        raise ValueError(f"filter_grid draws kernels of shape (kh, kw, 1 or 3, filters), got {kernel.shape}")
    low, high = (kernel.min(), kernel.max()) if shared_scale else (None, None)
    filters = range(kernel.shape[-1])
    tiles = np.stack([normalize_tile(kernel[..., f], low, high) for f in filters])  # (out, kh, kw, in)
    tiles = np.repeat(tiles, 3 // tiles.shape[-1], axis=-1)  # gray -> gray RGB
    scale = integer_scale(kernel.shape[0], tile_pixels)
    labels = None
    if layer is not None:
        labels = _labels(layer, filters, kernel.shape[1] * scale,
                         None if shared_scale else [range_lines(kernel[..., f]) for f in filters])
    return image_grid(tiles, min(columns, len(tiles)), scale, separator_value=FILTER_SEPARATOR_RGB, labels=labels)


def _resize_nearest(image, height, width):
    """A uint8 HWC image resized to ``(height, width)`` by nearest neighbour (an exact repeat when integral)."""
    if image.shape[:2] == (height, width):
        return image
    return tf.image.resize(image, (height, width), method="nearest").numpy().astype(np.uint8)


def feature_map_grid(images, maps, tile_pixels=MAP_TILE_PIXELS, layer=None, shared_scale=False, image_labels=None):
    """One row per image: the uint8 input image ``(N, H, W, C)``, then each map of ``maps`` ``(N, h, w, F)``.

    Each map tile is scaled by its own min/max, or with ``shared_scale`` all by the min/max of ``maps``, and
    upscaled by an integer factor to about ``tile_pixels``; the input is resized (nearest neighbour) to the same
    tile size, its pixels unscaled. RGB inputs turn the map tiles to gray RGB. With a ``layer`` name, the input
    is labelled with its lines of ``image_labels`` (one list per image; default ``image <n>``) and each map with
    the layer and its filter index (and its own range, when tiles have their own scales).
    """
    images, maps = np.asarray(images), np.asarray(maps)
    scale = integer_scale(maps.shape[1], tile_pixels)
    height, width = maps.shape[1] * scale, maps.shape[2] * scale
    channels = images.shape[-1]
    low, high = (maps.min(), maps.max()) if shared_scale else (None, None)
    filters = range(maps.shape[-1])
    tiles, labels = [], []
    for number, (image, image_maps) in enumerate(zip(images, maps)):
        tiles.append(_resize_nearest(image, height, width))
        for f in filters:
            tile = upscale(normalize_tile(image_maps[..., f], low, high)[..., np.newaxis], scale)  # (h*s, w*s, 1)
            tiles.append(np.repeat(tile, channels, axis=-1))
        if layer is not None:
            ranges = None if shared_scale else [range_lines(image_maps[..., f]) for f in filters]
            first = [f"image {number}"] if image_labels is None else list(image_labels[number])
            labels += [first] + _labels(layer, filters, width, ranges)
    return image_grid(np.stack(tiles), columns=1 + maps.shape[-1], labels=labels if layer is not None else None)


def top_k_grid(images, indices, tile_pixels=IMAGE_TILE_PIXELS, layer=None, scores=None, statistic="mean",
               image_labels=None):
    """One row per filter: the uint8 images ``(N, H, W, C)`` at ``indices`` ``(filters, k)``, left to right.

    With a ``layer`` name, each tile is labelled with it and the filter index, with ``scores`` ``(filters, k)``
    also with the image's score, e.g. ``"max 2.35"`` for ``statistic="max"``, and with ``image_labels`` (one text
    per image of ``images``, e.g. its class) also with its image's.
    """
    images, indices = np.asarray(images), np.asarray(indices)
    tiles = images[indices.reshape(-1)]  # (filters * k, H, W, C), row-major: filter by filter
    scale = integer_scale(images.shape[1], tile_pixels)
    labels = None
    if layer is not None:
        filters, k = indices.shape
        names = filter_labels(layer, range(filters), images.shape[2] * scale)
        labels = [[names[f]] + ([f"{statistic} {short_value(scores[f, rank])}"] if scores is not None else [])
                  + ([image_labels[indices[f, rank]]] if image_labels is not None else [])
                  for f in range(filters) for rank in range(k)]
    return image_grid(tiles, columns=indices.shape[1], scale=scale, labels=labels)


def activation_max_grid(images, layer, filters, reached, columns=FILTER_COLUMNS, tile_pixels=IMAGE_TILE_PIXELS):
    """The uint8 images ``(F, H, W, C)`` that maximise each filter of ``filters``, ``columns`` to a row, each
    labelled with the layer, the filter index and the mean activation it ``reached``."""
    images = np.asarray(images)
    scale = integer_scale(images.shape[1], tile_pixels)
    labels = _labels(layer, filters, images.shape[2] * scale, [[f"mean {short_value(r)}"] for r in reached])
    return image_grid(images, min(columns, len(images)), scale, labels=labels)


@dataclasses.dataclass(frozen=True)
class ColourBar:
    """What black and white stand for in a picture's tiles, and caption lines saying which tiles share that."""

    low: str  # written left of the black end
    high: str  # written right of the white end
    caption: tuple = ()


def value_bar(values, shared_scale, what):
    """The colour bar of tiles showing ``values`` (kernel weights, activations): their min and max when the tiles
    share one scale, else ``tile min`` / ``tile max`` with each tile's range under its label."""
    if shared_scale:
        low, high = format_value(np.min(values)), format_value(np.max(values))
        return ColourBar(low, high, (f"{what}; one scale for all tiles: {low} is black, {high} white",))
    return ColourBar("tile min", "tile max", (f"{what}; each tile has its own scale: its min is black, its max "
                                              "white (printed under its label)",))


PIXEL_BAR = ColourBar("0", "255", ("pixel value; the images as they are, one scale for all tiles",))


def colour_bar_row(bar, channels):
    """One line: ``bar.low``, a framed black-to-white ramp ``COLOUR_BAR_PIXELS`` wide, ``bar.high``."""
    low_width = text_width(bar.low)
    ramp_x = low_width + MARGIN
    row = np.full((LINE_PIXELS, ramp_x + COLOUR_BAR_PIXELS + 2 + MARGIN + text_width(bar.high), channels),
                  BACKGROUND_VALUE, np.uint8)
    draw_text(row, 0, 0, bar.low)
    row[:, ramp_x:ramp_x + COLOUR_BAR_PIXELS + 2] = TEXT_VALUE  # the frame
    ramp = np.round(np.linspace(0, 255, COLOUR_BAR_PIXELS)).astype(np.uint8)  # the tiles' 0..255 scale
    row[1:-1, ramp_x + 1:ramp_x + 1 + COLOUR_BAR_PIXELS] = ramp[np.newaxis, :, np.newaxis]
    draw_text(row, 0, ramp_x + COLOUR_BAR_PIXELS + 2 + MARGIN, bar.high)
    return row


def annotate(grid, title, bar):
    """``grid`` with the ``title`` lines above it and the colour ``bar`` (and its caption) below, on white with a
    ``MARGIN`` around each part; as wide as the widest part, the grid at the left."""
    grid = np.asarray(grid)
    channels = grid.shape[-1]
    bar_row = colour_bar_row(bar, channels)
    lines = list(title) + [None] + list(bar.caption)  # None: where the colour bar goes
    width = 2 * MARGIN + max([grid.shape[1], bar_row.shape[1]] + [text_width(t) for t in lines if t])
    height = 4 * MARGIN + LINE_PIXELS * len(lines) + grid.shape[0]
    picture = np.full((height, width, channels), BACKGROUND_VALUE, np.uint8)
    y = MARGIN
    for text in title:
        draw_text(picture, y, MARGIN, text)
        y += LINE_PIXELS
    y += MARGIN
    picture[y:y + grid.shape[0], MARGIN:MARGIN + grid.shape[1]] = grid
    y += grid.shape[0] + MARGIN
    picture[y:y + LINE_PIXELS, MARGIN:MARGIN + bar_row.shape[1]] = bar_row
    for text in bar.caption:
        y += LINE_PIXELS
        draw_text(picture, y, MARGIN, text)
    return picture


def png_bytes(image, text=None):
    """The uint8 HWC ``image`` (1 or 3 channels) as PNG file contents, with ``text`` ``{key: str}`` as its tEXt
    chunks (``PIL.Image.open(path).text`` reads them back)."""
    image = np.asarray(image)
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def class_text(class_names):
    """``{"classes": JSON list}``: the PNG text chunk naming the classes a picture shows, in its order."""
    return {"classes": json.dumps(list(class_names))}


# Confusion matrix cells: 32 px holds a count of 4 digits (24 px) and a line of text; beyond 20 classes
# (CIFAR-100) cells of 12 px keep the picture about 1,300 px wide, and only 1-digit counts fit in them.
CONFUSION_CELL_PIXELS = 32
CONFUSION_SMALL_CELL_PIXELS = 12
CONFUSION_SMALL_ABOVE = 20  # classes
CONFUSION_LINE_VALUE = 160  # gray lines between cells: visible on white and on black cells


def confusion_grid(matrix, class_names):
    """The confusion ``matrix`` ``(classes, classes)`` of counts, rows the true class, as a gray uint8 image.

    Each cell is shaded by its share of its row (white: none, black: all of its row's images) and holds its count
    where the count fits (black on light cells, white on dark); the true classes are named left of the rows, the
    predicted classes above the columns, reading upward.
    """
    matrix = np.asarray(matrix, np.int64)
    count = len(class_names)
    if matrix.shape != (count, count):
        raise ValueError(f"a confusion matrix of {count} classes is ({count}, {count}), got {matrix.shape}")
    cell = CONFUSION_CELL_PIXELS if count <= CONFUSION_SMALL_ABOVE else CONFUSION_SMALL_CELL_PIXELS
    name_pixels = max(map(text_width, class_names)) + MARGIN
    left, top = name_pixels, name_pixels
    grid = np.full((top + count * cell + 1, left + count * cell + 1, 1), BACKGROUND_VALUE, np.uint8)
    totals = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    shades = np.round(255 - 255 * matrix / totals).astype(np.uint8)  # (classes, classes): share of the row
    grid[top:, left:] = CONFUSION_LINE_VALUE
    for row in range(count):
        y = top + row * cell
        draw_text(grid, y + (cell - LINE_PIXELS) // 2 + 1, left - MARGIN - text_width(class_names[row]),
                  class_names[row])
        draw_text(grid, top - MARGIN - text_width(class_names[row]), left + row * cell + (cell - LINE_PIXELS) // 2 + 1,
                  class_names[row], upward=True)
        for column in range(count):
            x = left + column * cell
            grid[y + 1:y + cell, x + 1:x + cell] = shades[row, column]
            number = str(matrix[row, column])
            if text_width(number) + 2 <= cell - 1 and LINE_PIXELS <= cell - 1:
                value = BACKGROUND_VALUE if shades[row, column] < 128 else TEXT_VALUE
                draw_text(grid, y + 1 + (cell - 1 - LINE_PIXELS) // 2, x + 1 + (cell - 1 - text_width(number)) // 2,
                          number, value)
    return grid


CONFUSION_BAR = ColourBar("all of its row", "none", (
    "cell shade: the share of the row's images (its true class) predicted as the column's class; counts in the "
    "cells where they fit",))


def top_k_indices(activations, k):
    """Indices of the ``k`` largest values of each column of ``activations`` ``(N, filters)``, largest first.

    Returns ``(filters, k)``; ties go to the lower index. ``k`` larger than N is cut to N.
    """
    activations = np.asarray(activations)
    order = np.argsort(-activations, axis=0, kind="stable")  # (N, filters), each column descending
    return order[:k].T


def block_outputs(model, images, layer_names):
    """Outputs of the named layers of a network (``models.network.Network``, either implementation) for one batch
    of preprocessed images, in inference mode: ``{name: (B, H, W, F) float32}``."""
    return {name: np.asarray(output, np.float32) for name, output in model.layer_outputs(images, layer_names).items()}


# How a filter's map is summed up per image for ranking: the mean favours images with much ink (many weak
# responses), the max an image where the filter's pattern occurs once, strongly.
POOLINGS = {"mean": lambda output: output.mean(axis=(1, 2)), "max": lambda output: output.max(axis=(1, 2))}


def pooled_activations(model, batches, layer_names, poolings=tuple(POOLINGS)):
    """Each filter's activation pooled over spatial positions (``POOLINGS``), for every image of ``batches``.

    ``batches`` yields preprocessed image batches; returns ``{(pooling, name): (N, F) float32}`` in image order.
    """
    pooled = {(pooling, name): [] for pooling in poolings for name in layer_names}
    for batch in batches:
        for name, output in block_outputs(model, batch, layer_names).items():
            for pooling in poolings:
                pooled[pooling, name].append(POOLINGS[pooling](output))  # (B, H, W, F) -> (B, F)
    return {key: np.concatenate(parts) for key, parts in pooled.items()}


def mean_activations(model, batches, layer_names):
    """Each filter's activation averaged over spatial positions, for every image of ``batches``.

    ``batches`` yields preprocessed image batches; returns ``{name: (N, F) float32}`` in image order.
    """
    pooled = pooled_activations(model, batches, layer_names, ("mean",))
    return {name: pooled["mean", name] for name in layer_names}
