"""Pictures of what a trained CNN computes: image grids of kernels, feature maps and top-activating images.

Grid helpers take and return NumPy arrays (uint8 HWC images); the activation helpers take a Keras CNN from
``models.build_model`` and batches of preprocessed images. Nothing here reads flags or files.
"""

import math

import numpy as np
import tensorflow as tf

# Displayed sizes, in pixels: a 5x5 kernel is drawn 8x larger (40 px); a 28x28 map at 1x, a 14x14 map at 2x.
FILTER_TILE_PIXELS = 40
MAP_TILE_PIXELS = 28
IMAGE_TILE_PIXELS = 56  # the top-k images: an MNIST digit at 2x, a CIFAR image at 1x
FILTER_COLUMNS = 8  # tiles per row in the kernel grid
SEPARATOR = 1  # pixels between tiles
SEPARATOR_VALUE = 255  # white lines: they stand out against the dark (zero) background of ReLU maps and digits
# Kernel tiles span black to white, so no gray line would stand out between them: kernel grids are RGB with
# coloured lines (gray tiles for 1-channel kernels).
FILTER_SEPARATOR_RGB = (230, 60, 40)


def integer_scale(size, target_pixels):
    """The integer nearest-neighbour factor that brings ``size`` pixels closest to ``target_pixels`` from below
    (at least 1)."""
    return max(1, target_pixels // size)


def normalize_tile(tile):
    """Maps a tile's own min to 0 and max to 255 (uint8); a constant tile (e.g. a dead ReLU map) becomes 0."""
    tile = np.asarray(tile, np.float64)
    low, high = tile.min(), tile.max()
    if high == low:
        return np.zeros(tile.shape, np.uint8)
    return np.round((tile - low) * (255.0 / (high - low))).astype(np.uint8)


def upscale(tile, factor):
    """Nearest-neighbour upscaling of an HWC tile by an integer ``factor`` along height and width."""
    return np.repeat(np.repeat(tile, factor, axis=0), factor, axis=1)


def image_grid(tiles, columns, scale=1, separator=SEPARATOR, separator_value=SEPARATOR_VALUE):
    """Lays out equal-size uint8 tiles ``(N, h, w, c)`` row by row, ``columns`` to a row, each upscaled by
    ``scale``, with ``separator`` pixels of ``separator_value`` (a number, or one per channel) between tiles
    (none around the border).

    Returns a ``(rows * h * scale + (rows - 1) * separator, columns * w * scale + (columns - 1) * separator, c)``
    uint8 image with ``rows = ceil(N / columns)``; slots after the last tile are left at ``separator_value``.
    """
    tiles = np.asarray(tiles)
    if tiles.ndim != 4 or tiles.dtype != np.uint8:
        raise ValueError(f"tiles must be a uint8 array (N, h, w, c), got {tiles.dtype} {tiles.shape}")
    count, height, width, channels = tiles.shape
    rows = math.ceil(count / columns)
    step_y, step_x = height * scale + separator, width * scale + separator
    grid = np.full((rows * step_y - separator, columns * step_x - separator, channels), separator_value, np.uint8)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        y, x = row * step_y, column * step_x
        grid[y:y + height * scale, x:x + width * scale] = upscale(tile, scale)
    return grid


def filter_grid(kernel, columns=FILTER_COLUMNS, tile_pixels=FILTER_TILE_PIXELS):
    """The kernels ``(kh, kw, in, out)`` of a first layer as a grid, one tile per output filter.

    Each tile is scaled by its own min/max over all its channels (so colours keep their balance within a
    filter); 1-channel kernels are drawn gray, 3-channel kernels in colour. Returns an RGB image.
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 4 or kernel.shape[2] not in (1, 3):
        raise ValueError(f"filter_grid draws kernels of shape (kh, kw, 1 or 3, filters), got {kernel.shape}")
    tiles = np.stack([normalize_tile(kernel[..., f]) for f in range(kernel.shape[-1])])  # (out, kh, kw, in)
    tiles = np.repeat(tiles, 3 // tiles.shape[-1], axis=-1)  # gray -> gray RGB
    return image_grid(tiles, min(columns, len(tiles)), integer_scale(kernel.shape[0], tile_pixels),
                      separator_value=FILTER_SEPARATOR_RGB)


def _resize_nearest(image, height, width):
    """A uint8 HWC image resized to ``(height, width)`` by nearest neighbour (an exact repeat when integral)."""
    if image.shape[:2] == (height, width):
        return image
    return tf.image.resize(image, (height, width), method="nearest").numpy().astype(np.uint8)


def feature_map_grid(images, maps, tile_pixels=MAP_TILE_PIXELS):
    """One row per image: the uint8 input image ``(N, H, W, C)``, then each map of ``maps`` ``(N, h, w, F)``.

    Each map tile is scaled by its own min/max and upscaled by an integer factor to about ``tile_pixels``;
    the input is resized (nearest neighbour) to the same tile size. RGB inputs turn the map tiles to gray RGB.
    """
    images, maps = np.asarray(images), np.asarray(maps)
    scale = integer_scale(maps.shape[1], tile_pixels)
    height, width = maps.shape[1] * scale, maps.shape[2] * scale
    channels = images.shape[-1]
    tiles = []
    for image, image_maps in zip(images, maps):
        tiles.append(_resize_nearest(image, height, width))
        for f in range(image_maps.shape[-1]):
            tile = upscale(normalize_tile(image_maps[..., f])[..., np.newaxis], scale)  # (h, w) -> (h*s, w*s, 1)
            tiles.append(np.repeat(tile, channels, axis=-1))
    return image_grid(np.stack(tiles), columns=1 + maps.shape[-1])


def top_k_grid(images, indices, tile_pixels=IMAGE_TILE_PIXELS):
    """One row per filter: the uint8 images ``(N, H, W, C)`` at ``indices`` ``(filters, k)``, left to right."""
    images, indices = np.asarray(images), np.asarray(indices)
    tiles = images[indices.reshape(-1)]  # (filters * k, H, W, C), row-major: filter by filter
    return image_grid(tiles, columns=indices.shape[1], scale=integer_scale(images.shape[1], tile_pixels))


def top_k_indices(activations, k):
    """Indices of the ``k`` largest values of each column of ``activations`` ``(N, filters)``, largest first.

    Returns ``(filters, k)``; ties go to the lower index. ``k`` larger than N is cut to N.
    """
    activations = np.asarray(activations)
    order = np.argsort(-activations, axis=0, kind="stable")  # (N, filters), each column descending
    return order[:k].T


def block_outputs(model, images, layer_names):
    """Outputs of the named blocks of a Keras CNN (``models.CNN``) for one batch of preprocessed images.

    Runs ``model.stack`` in inference mode up to the last named layer; returns ``{name: (B, H, W, F) float32}``.
    """
    wanted = set(layer_names)
    outputs = {}
    x = tf.convert_to_tensor(images, dtype=model.compute_dtype)
    for layer in model.stack:
        if len(outputs) == len(wanted):
            break
        x = layer(x, training=False)
        if layer.name in wanted:
            outputs[layer.name] = np.asarray(x, np.float32)
    missing = wanted - set(outputs)
    if missing:
        raise ValueError(f"the model has no layer named {', '.join(sorted(missing))}")
    return outputs


def mean_activations(model, batches, layer_names):
    """Each filter's activation averaged over spatial positions, for every image of ``batches``.

    ``batches`` yields preprocessed image batches; returns ``{name: (N, F) float32}`` in image order.
    """
    means = {name: [] for name in layer_names}
    for batch in batches:
        for name, output in block_outputs(model, batch, layer_names).items():
            means[name].append(output.mean(axis=(1, 2)))  # (B, H, W, F) -> (B, F)
    return {name: np.concatenate(parts) for name, parts in means.items()}
