"""The benchmark's variants by name, apart from the TensorFlow code that runs them (``experiments/throughput.py``),
so that its flags parse before TensorFlow is imported."""

# name -> (implementation, loop, XLA)
VARIANTS = {
    "custom": ("keras", "custom", False),
    "fit": ("keras", "fit", False),
    "reference": ("reference", "custom", False),
    "custom_xla": ("keras", "custom", True),
    "fit_xla": ("keras", "fit", True),
    "reference_xla": ("reference", "custom", True),
}
# Any variant with this suffix also crops and flips its training images (``config.crop_padding``, ``config.flip``)
# in the input pipeline, as ``--augment`` does in a run: its ratio to the same variant without says what the
# augmentation costs where the pipeline and the steps share the cores.
AUGMENTED = "_augmented"
VARIANT_NAMES = (*VARIANTS, *(name + AUGMENTED for name in VARIANTS))


def parse(name):
    """``(implementation, loop, XLA, augmented)`` of the variant called ``name``."""
    return (*VARIANTS[name.removesuffix(AUGMENTED)], name.endswith(AUGMENTED))
