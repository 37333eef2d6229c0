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
# A variant with this suffix computes in bfloat16 (--precision=mixed_bfloat16: variables, batch-norm statistics,
# the loss and the optimizer stay float32); without it, in float32.
BFLOAT16 = "_bf16"
# Any variant with this suffix (last) also crops and flips its training images (``config.crop_padding``,
# ``config.flip``) in the input pipeline, as ``--augment`` does in a run: its ratio to the same variant without
# says what the augmentation costs where the pipeline and the steps share the cores.
AUGMENTED = "_augmented"
# A Keras variant with this suffix (after the precision's) trains its batch norm with Keras' own call rather than
# the fused kernel one replica takes (``models/batch_norm.py``): its ratio to the same variant without says what
# the fused kernel buys. The reference network never fuses, so it has no such variant.
UNFUSED_BATCH_NORM = "_unfusedbn"
VARIANT_NAMES = tuple(f"{name}{bf16}{unfused}{augmented}" for name, (impl, _, _) in VARIANTS.items()
                      for bf16 in ("", BFLOAT16)
                      for unfused in (("", UNFUSED_BATCH_NORM) if impl == "keras" else ("",))
                      for augmented in ("", AUGMENTED))


def parse(name):
    """``(implementation, loop, XLA, augmented, precision, fused batch norm)`` of the variant called ``name``."""
    augmented = name.endswith(AUGMENTED)
    name = name.removesuffix(AUGMENTED)
    fused = not name.endswith(UNFUSED_BATCH_NORM)
    name = name.removesuffix(UNFUSED_BATCH_NORM)
    precision = "mixed_bfloat16" if name.endswith(BFLOAT16) else "float32"
    return (*VARIANTS[name.removesuffix(BFLOAT16)], augmented, precision, fused)
