"""The kernel of the frozen patch-whitening layer ``w{size}`` (airbench94), computed from training images.

``whitening_kernel`` is pure numpy. Over every ``size`` x ``size`` patch of the images (stride 1, flattened in
(h, w, c) order, the HWI order of a kernel) it takes the second-moment matrix ``S = E[p p^T]`` and its
eigendecomposition ``S = V diag(lambda) V^T``; filter ``i`` is ``v_i / sqrt(lambda_i + eps)``, largest eigenvalue
first, and the ``2 * C * size**2`` filters are these followed by their negations (+V, -V), so that the activation
after the layer keeps both signs of every whitened coordinate. On the preprocessed (per-channel standardised)
images the mean patch is close to 0, so ``S`` is close to the covariance; like airbench94 the mean is not
subtracted. ``eps`` caps the gain of the directions of least variance, which are mostly noise.

``initialise_whitening(network, images)`` assigns that kernel to every whitening layer it finds in
``network.plan``, through ``network.named_weights()``, so it works for the Keras CNN and the reference alike.
Call it once, after building the network and before the first step (and not after restoring a checkpoint,
which holds the kernel), with a sample of the preprocessed training images (airbench94 uses 5,000).
"""

import numpy as np

from models import architecture as A

# Added to every eigenvalue before the inverse square root (airbench94's value): on standardised CIFAR images
# the weakest 2x2-patch directions get a gain of at most 1 / sqrt(5e-4) ~ 45 instead of an unbounded one.
WHITENING_EPSILON = 5e-4
# Images per chunk while summing p p^T: a chunk of 256 CIFAR images is 246,016 patches of 12 float64 values
# (~24 MB), whatever the sample size.
_CHUNK_IMAGES = 256


def _patches(images, size):
    """(N, H, W, C) -> (N * (H - size + 1) * (W - size + 1), size * size * C), each row one patch in HWC order."""
    windows = np.lib.stride_tricks.sliding_window_view(images, (size, size), axis=(1, 2))  # (N, H', W', C, k, k)
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, size * size * images.shape[3])


def patch_second_moment(images, size):
    """``E[p p^T]`` over every ``size`` x ``size`` patch ``p`` (HWC-flattened) of ``images`` (N, H, W, C), float64."""
    images = np.asarray(images, dtype=np.float64)
    dim = size * size * images.shape[3]
    total, count = np.zeros((dim, dim)), 0
    for start in range(0, len(images), _CHUNK_IMAGES):
        patches = _patches(images[start:start + _CHUNK_IMAGES], size)
        total += patches.T @ patches
        count += len(patches)
    return total / count


def whitening_kernel(images, size, eps=WHITENING_EPSILON):
    """The HWIO kernel (size, size, C, 2 * C * size**2), float64, that whitens the patches of ``images``.

    ``images`` is (N, H, W, C), as the network receives them (preprocessed). Raises ``ValueError`` when they are
    not a non-empty batch of images at least ``size`` pixels high and wide, or ``eps`` is negative.
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"whitening_kernel: images must be a non-empty (N, H, W, C) batch, got shape {images.shape}")
    if not 1 <= size <= min(images.shape[1:3]):
        raise ValueError(f"whitening_kernel: patch size {size} does not fit images of shape {images.shape[1:]} "
                         f"(H, W, C)")
    if eps < 0:
        raise ValueError(f"whitening_kernel: eps must be non-negative, got {eps}")
    channels = images.shape[3]
    eigenvalues, eigenvectors = np.linalg.eigh(patch_second_moment(images, size))  # ascending, columns
    order = np.argsort(eigenvalues)[::-1]  # largest first, as airbench94
    # eigh may return -1e-17 for a direction of zero variance; clipped so that eps alone sets its gain.
    eigenvalues = np.maximum(eigenvalues[order], 0.0)
    scaled = eigenvectors[:, order] / np.sqrt(eigenvalues + eps)  # (k*k*C, k*k*C), one filter per column
    filters = np.concatenate([scaled, -scaled], axis=1)  # (k*k*C, 2*k*k*C)
    return filters.reshape(size, size, channels, 2 * size * size * channels)


def initialise_whitening(network, images, eps=WHITENING_EPSILON):
    """Sets the kernel of every ``w{size}`` layer of ``network`` (either implementation) from ``images``.

    ``images`` is a (N, H, W, C) sample of preprocessed training images (numpy or tensor). Returns the names of
    the variables assigned, ``[]`` when the network has no whitening layer. Raises ``ValueError`` when the images
    do not have the channels the layer takes.
    """
    images = np.asarray(images, dtype=np.float64)
    named = network.named_weights()
    assigned = []
    for layer in network.plan:
        if not isinstance(layer.spec, A.Whitening):
            continue
        # The parser puts a whitening layer first, so its input is the network's input.
        if images.ndim != 4 or images.shape[3] != layer.input_shape[2]:
            raise ValueError(f"initialise_whitening: layer '{layer.spec.name}' takes images of shape "
                             f"{layer.input_shape} (H, W, C), got a batch of shape {images.shape}")
        name = f"{layer.spec.name}/conv/kernel"
        variable = named[name]
        kernel = whitening_kernel(images, layer.spec.kernel_size, eps)
        variable.assign(kernel.astype(np.asarray(variable).dtype))
        assigned.append(name)
    return assigned
