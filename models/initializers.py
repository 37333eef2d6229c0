"""Initial weights that both implementations draw the same way: airbench94's convolution and logits init.

PyTorch's default for conv and linear layers is uniform in +-1/sqrt(fan_in), a smaller range than Keras'
Glorot uniform; under scale-free batch norm a kernel's size sets its effective learning rate, so airbench's
tuned rates assume this range. Its convolutions also start with their first min(in, out) filters set to the
identity (a centred Dirac kernel), which makes each block begin close to a residual map.
"""

import math

import numpy as np


def fan_in_limit(shape):
    """Bound of PyTorch's default uniform init for a kernel of ``shape`` (kh, kw, in, out) or (in, out)."""
    return 1.0 / math.sqrt(math.prod(shape[:-1]))


def with_identity_filters(kernel):
    """``kernel`` (kh, kw, in, out), a NumPy array, with its first min(in, out) output filters replaced by the
    identity: filter i is 1 at the centre tap of input channel i and 0 elsewhere."""
    kh, kw, channels_in, channels_out = kernel.shape
    count = min(channels_in, channels_out)
    kernel = np.array(kernel, copy=True)
    kernel[..., :count] = 0
    kernel[kh // 2, kw // 2, np.arange(count), np.arange(count)] = 1
    return kernel
