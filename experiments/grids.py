"""Named grids of training runs: each a list of points, a label and the ``TrainConfig`` fields it overrides.

``experiments/runner.py`` trains every point with seeds 0..n-1 at the grid's step budget; ``experiments/report.py``
writes the markdown table; ``python -m experiments.sweep`` is the command.
"""

import dataclasses
import inspect
import re

from models import analysis, architecture
from training.config import MAIN_JOB, TrainConfig
from training.dataset_info import describe

# Optimizer steps per run: 76,800 images at batch 128, 1.42 epochs of the 54,000 MNIST or Fashion-MNIST images
# a sweep trains on (SWEEP_VALIDATION_SPLIT holds out 6,000 of the 60,000). On the 2-core Intel Xeon of the
# MNIST tables (sweeps/optimizer-mnist.md, sweeps/cnn_vs_mlp-mnist.md) small_cnn trained at 12.6-13.8k images/s
# (about 7 s a run) and the default mnist_cnn at 2.9-3.2k images/s (26-29 s a run).
DEFAULT_TRAIN_STEPS = 600
DEFAULT_BATCH_SIZE = 128  # global batch size, images per step
# Every sweep run holds out this fraction of the training set (the same images in every run: TrainConfig's
# validation split is fixed by seed 0); tables pick their best point on it, not on the test set.
SWEEP_VALIDATION_SPLIT = 0.1
# Labels name run directories: letters, digits and . _ + - only.
_LABEL = re.compile(r"[A-Za-z0-9._+-]+")
# The sweep sets these for every run; a point may not override them.
_SET_BY_SWEEP = ("dataset", "data_dir", "seed", "train_steps", "epochs", "batch_size", "logdir", "resume",
                 "validation_split")
# A grid whose budget is in epochs (train_steps=0) leaves these to its points, and each point names its epochs:
# recipes that differ in how long or at what batch size they train, each run as `python3 -m training.train`
# would run it with those flags.
_SET_BY_POINT_IN_EPOCHS = ("epochs", "batch_size")
SMALL_CNN = "c16k5-m2-c32k5-m2-d128"  # 215,370 weights on MNIST; ~4x cheaper per image than mnist_cnn

@dataclasses.dataclass(frozen=True)
class Grid:
    """Points to train, each ``(label, overrides)`` with ``overrides`` a dict of ``TrainConfig`` fields."""

    name: str
    description: str  # what the grid compares and the rule that makes its points
    points: tuple
    # Per run, unless the sweep is given another budget; 0: each point's own epochs (``_SET_BY_POINT_IN_EPOCHS``).
    train_steps: int = DEFAULT_TRAIN_STEPS
    batch_size: int = DEFAULT_BATCH_SIZE
    validation_split: float = SWEEP_VALIDATION_SPLIT
    # Whether the table names the point of best validation accuracy: a grid of choices does; an ablation, each of
    # whose points takes one piece out of a recipe, measures what each piece buys and picks nothing.
    picks_a_point: bool = True
    # Whether each point is trained at several learning rates (labels <point>-lr<rate>, ``tuned``) and compared
    # with the others at the rate validation picks for it.
    tuned: bool = False

    def __post_init__(self):
        fields = {field.name for field in dataclasses.fields(TrainConfig)}
        labels = [label for label, _ in self.points]
        if not labels or len(set(labels)) != len(labels):
            raise ValueError(f"grid {self.name}: labels must be present and distinct, got {labels}")
        set_by_sweep = [name for name in _SET_BY_SWEEP
                        if self.budget_in_steps or name not in _SET_BY_POINT_IN_EPOCHS]
        for label, overrides in self.points:
            if not _LABEL.fullmatch(label):
                raise ValueError(f"grid {self.name}: label '{label}' may hold only letters, digits and . _ + -")
            unknown = set(overrides) - fields
            reserved = set(overrides) & set(set_by_sweep)
            if unknown or reserved:
                raise ValueError(f"grid {self.name}, point {label}: cannot override {sorted(unknown | reserved)}; "
                                 f"points set TrainConfig fields other than {', '.join(set_by_sweep)}")
            if not self.budget_in_steps and "epochs" not in overrides:
                raise ValueError(f"grid {self.name}, point {label}: the grid's budget is each point's epochs "
                                 "(train_steps=0), and this point sets none")

    @property
    def budget_in_steps(self):
        """Whether every run trains ``train_steps`` steps; else each point trains for its own ``epochs``."""
        return self.train_steps > 0

    @property
    def varied(self):
        """The settings besides ``arch`` that differ between points (a value, or being set at all), in order of
        first appearance: table columns. Settings every point shares are the grid's, named in its description."""
        names = []
        for _, overrides in self.points:
            names += [name for name in overrides if name != "arch" and name not in names]
        missing = object()
        return [name for name in names
                if len({repr(overrides.get(name, missing)) for _, overrides in self.points}) > 1]


# --- The named grids: each a function of the dataset's image shape (H, W, C) and class count. ---

def filter_size(image_shape, num_classes):
    """One conv stage with kernel sizes from 1 to the whole image, with `same` and with `valid` padding.

    Kernel sizes k = 1, 3, 5, 7, 9, H/2 and H for H x H images (H = 28 on MNIST: up to 14 and 28).
    `same-k{k}` is `c32k{k}-m2-d128`: 32 filters, a 2x2 max pool, 128 dense units; the conv output stays
    H x H, so every k feeds the same dense layer. `valid-k{k}` is `c32k{k}v-m2-d128`: the conv output shrinks
    to (H-k+1) x (H-k+1), and so does the dense layer's input; when it is smaller than 2x2 the pool is dropped
    (k = H: `c32k{H}v-d128`, a 1x1 output, i.e. a dense layer of 32 ReLU units in disguise). k = 1 has no
    valid point: a 1x1 kernel pads nothing, so it is `same-k1`.
    """
    del num_classes  # The same networks for any class count.
    height = min(image_shape[:2])
    kernels = sorted({1, 3, 5, 7, 9, height // 2, height})
    points = [(f"same-k{k}", {"arch": f"c32k{k}-m2-d128"}) for k in kernels]
    for k in kernels[1:]:
        pool = "-m2" if height - k + 1 >= 2 else ""
        points.append((f"valid-k{k}", {"arch": f"c32k{k}v{pool}-d128"}))
    return points


def downsampling(image_shape, num_classes):
    """Two 3x3 conv stages (32, 64 filters) downsampled by max pooling, average pooling, stride 2, or not at all.

    `max`: `c32k3-m2-c64k3-m2-d128`; `avg`: `c32k3-a2-c64k3-a2-d128`; `stride2`: `c32k3s2-c64k3s2-d128` (each
    halves H and W twice, so the dense layer sees (H/4) x (W/4) x 64 in all three). `none`: `c32k3-c64k3-d128`
    keeps H x W, so its dense layer is 16x larger (6.4M weights on MNIST) and its second conv, at H x W instead
    of H/2 x W/2 positions, 4x costlier.
    """
    del image_shape, num_classes  # Every dataset here is at least 28x28: all four fit.
    return [("max", {"arch": "c32k3-m2-c64k3-m2-d128"}), ("avg", {"arch": "c32k3-a2-c64k3-a2-d128"}),
            ("stride2", {"arch": "c32k3s2-c64k3s2-d128"}), ("none", {"arch": "c32k3-c64k3-d128"})]


def pooling(image_shape, num_classes):
    """One 5x5 conv stage (32 filters) followed by max pooling windows of 2, 4 and 7, a global max or average
    pool, or no pooling, then 128 dense units: the filter-size question asked of the pooling window.

    `max{k}`: `c32k5-m{k}-d128` (a k x k window with stride k: the 28x28 map of MNIST becomes 14x14, 7x7 or 4x4,
    so the dense layer sees 4x, 16x or 49x fewer inputs than `none`); `global_max`: `c32k5-gmp-d128` and
    `global_avg`: `c32k5-gap-d128` (one value per filter: 32 inputs, position discarded); `none`:
    `c32k5-d128` (the whole H x W x 32 map, 3.2M dense weights on MNIST). Windows larger than the image
    are left out.
    """
    del num_classes
    height = min(image_shape[:2])
    points = [(f"max{k}", {"arch": f"c32k5-m{k}-d128"}) for k in (2, 4, 7) if k <= height]
    return points + [("global_max", {"arch": "c32k5-gmp-d128"}), ("global_avg", {"arch": "c32k5-gap-d128"}),
                     ("none", {"arch": "c32k5-d128"})]


def cnn_vs_mlp(image_shape, num_classes):
    """CNNs against MLPs of about the same number of weights (within 2%), with 1 and with 2 hidden layers, each
    side with dropout and without.

    CNNs: `mnist_cnn` (the default), `keras_convnet` (the Keras example) and `small_cnn`
    (`c16k5-m2-c32k5-m2-d128`). For each, `mlp1_like_<cnn>` is `d{w}` and `mlp2_like_<cnn>` is `d{w}-d{w}`,
    with the width w whose weight count (biases included) is closest to the CNN's (`models.analysis.similar_mlp`).
    An MLP that no width brings within 2% is left out (2 hidden layers like `keras_convnet` on 32x32x3 images,
    where one more unit adds ~3k weights to its 42k). The two presets with dropout (`drop0.5`) are also trained
    without it (`<cnn>_nodrop`), and their MLPs also with it after each hidden layer (`mlp{k}_like_<cnn>_drop0.5`,
    the same weights): CNN against MLP with dropout on both sides and on neither. `small_cnn` has none.
    """
    points = []
    for label, arch in (("mnist_cnn", "mnist_cnn"), ("keras_convnet", "keras_convnet"), ("small_cnn", SMALL_CNN)):
        tokens = architecture.resolve(arch).split("-")
        dropout = next((token for token in tokens if token.startswith("drop")), None)
        points.append((label, {"arch": "-".join(tokens)}))
        if dropout:
            points.append((f"{label}_nodrop", {"arch": "-".join(t for t in tokens if not t.startswith("drop"))}))
        for depth in (1, 2):
            try:
                mlp = analysis.similar_mlp(arch, image_shape, num_classes, depth)
            except ValueError:  # no width within 2%
                continue
            points.append((f"mlp{depth}_like_{label}", {"arch": mlp}))
            if dropout:
                points.append((f"mlp{depth}_like_{label}_{dropout}",
                               {"arch": "-".join(f"{hidden}-{dropout}" for hidden in mlp.split("-"))}))
    return points


def optimizer(image_shape, num_classes):
    """Adam at its usual constant rate against SGD with Nesterov momentum and cosine decay at tuned rates.

    All points train `small_cnn` (`c16k5-m2-c32k5-m2-d128`). `adam-constant`: Adam, learning rate 1e-3,
    constant. `adam-cosine`: the same with cosine decay to 0, to separate the optimizer from the schedule.
    `sgd-lr{r}`: SGD, momentum 0.9, Nesterov, cosine decay from r to 0, for r in 0.01, 0.03, 0.1, 0.3
    (a grid by factors of ~3; its best point should not sit at an end).
    """
    del image_shape, num_classes
    adam = dict(arch=SMALL_CNN, optimizer="adam", learning_rate=1e-3)
    points = [("adam-constant", dict(adam, lr_schedule="constant")), ("adam-cosine", dict(adam, lr_schedule="cosine"))]
    for rate in (0.01, 0.03, 0.1, 0.3):
        points.append((f"sgd-lr{rate:g}", dict(arch=SMALL_CNN, optimizer="sgd", learning_rate=rate,
                                                lr_schedule="cosine", momentum=0.9, nesterov=True)))
    return points


# The cheaper CIFAR-10 speed recipe (flags/cifar10_fast.cfg) as TrainConfig fields, for the ablation grid;
# tests/test_presets.py checks that they are the flagfile's. Its budget: 4 epochs of the 45,000 images the
# sweep's validation split leaves, at batch 1024 (43 steps an epoch), with the triangle's peak at 23% of them.
# The numerics stay those the ablation table was measured in (float32, XLA), where the flagfile lets each
# machine choose (--precision=auto).
AIRBENCH_BATCH_SIZE = 1024
AIRBENCH_ABLATION_STEPS = 4 * (round(50_000 * (1 - SWEEP_VALIDATION_SPLIT)) // AIRBENCH_BATCH_SIZE)
AIRBENCH_FAST_RECIPE = dict(
    arch="airbench94", standardize=True, augment=True, crop_padding=2, flip="alternating", optimizer="sgd",
    learning_rate=1.5, momentum=0.85, nesterov=True, lr_schedule="triangle",
    warmup_steps=int(0.23 * AIRBENCH_ABLATION_STEPS),
    weight_decay=0.0089, bn_bias_lr_scale=64.0, decay_biases=True, whitening_bias_epochs=1.2, lookahead_every=5,
    lookahead_start_epochs=1.2, label_smoothing=0.2, test_time_augmentation="flip_translate",
    eval_batch_size=1000, jit_compile=True)


def airbench_ablation(image_shape, num_classes):
    """What each airbench94 piece buys: the cheaper CIFAR-10 speed recipe (`flags/cifar10_fast.cfg`, 4 epochs
    at batch 1024) and the same with one piece taken out at a time.

    `recipe`: every piece. `no_lookahead`: `lookahead_every=0`. `no_bias_lr_scale`: batch-norm biases at the
    base rate (`bn_bias_lr_scale=1`). `random_flip`: independent random flips instead of alternating ones.
    `flip_tta`: test-time augmentation over the image and its mirror only (airbench's level 1) instead of six
    views; `no_tta`: none. `no_label_smoothing`: `label_smoothing=0`. `no_whitening_bias`: `w2g` (no trained
    bias) instead of `w2tg`. `no_whitening`: a trained 2x2 valid convolution of the same 24 filters with bias and
    GELU (`c24k2vg`) in place of the frozen whitening layer. The identity initialisation of the block
    convolutions is part of the `B` token and is not taken out here.
    """
    del image_shape, num_classes  # airbench94's network fits every dataset here; it was made for CIFAR-10.
    blocks = "B64-B256-B256-gmp-lin9"
    changes = [("recipe", {}), ("no_lookahead", dict(lookahead_every=0)),
               ("no_bias_lr_scale", dict(bn_bias_lr_scale=1.0)), ("random_flip", dict(flip="random")),
               ("flip_tta", dict(test_time_augmentation="flip")), ("no_tta", dict(test_time_augmentation="none")),
               ("no_label_smoothing", dict(label_smoothing=0.0)),
               ("no_whitening_bias", dict(arch=f"w2g-{blocks}", whitening_bias_epochs=0.0)),
               ("no_whitening", dict(arch=f"c24k2vg-{blocks}", whitening_bias_epochs=0.0))]
    return [(label, dict(AIRBENCH_FAST_RECIPE, **change)) for label, change in changes]


# The MNIST one-cycle speed recipe (flags/mnist_onecycle.cfg) as TrainConfig fields, for its ablation grid;
# tests/test_presets.py checks that they are the flagfile's. Its budget is in epochs: the flagfile's 1.75 of the
# 54,000 images its (and every sweep's) validation split leaves.
MNIST_ONECYCLE_RECIPE = dict(
    arch="c16k5s2-c32k5s2-d128", optimizer="adam", learning_rate=0.01, adam_beta_1=0.7, adam_beta_2=0.9,
    lr_schedule="triangle", warmup_steps=88, label_smoothing=0.1, augment=False, batch_size=256, epochs=1.75,
    precision="float32")


def mnist_onecycle_ablation(image_shape, num_classes):
    """What each choice of the MNIST one-cycle speed recipe (`flags/mnist_onecycle.cfg`, 1.75 epochs at batch 256)
    buys: the recipe, and the same with one choice undone at a time.

    `recipe`: as the flagfile trains it. `keras_betas`: Adam's usual betas (0.9, 0.999) instead of (0.7, 0.9).
    `constant_rate`: the rate held at its peak after the warmup instead of the triangle's decay. `cosine`: a
    cosine decay to 0 after the warmup. `no_label_smoothing`: `label_smoothing=0`. `batch_norm`: batch norm after
    each convolution (`c16k5s2b-c32k5s2b-d128`). `mnist_fast`: the main job's wider net (`c24k5s2b-c48k5s2b-d128`).
    `batch128`: batch 128 at the same epochs (twice the steps, the warmup at the same share of them).
    """
    del image_shape, num_classes  # made for MNIST; every point fits Fashion-MNIST too
    changes = [("recipe", {}), ("keras_betas", dict(adam_beta_1=0.9, adam_beta_2=0.999)),
               ("constant_rate", dict(lr_schedule="constant")), ("cosine", dict(lr_schedule="cosine")),
               ("no_label_smoothing", dict(label_smoothing=0.0)), ("batch_norm", dict(arch="c16k5s2b-c32k5s2b-d128")),
               ("mnist_fast", dict(arch="mnist_fast")), ("batch128", dict(batch_size=128, warmup_steps=176))]
    return [(label, dict(MNIST_ONECYCLE_RECIPE, **change)) for label, change in changes]


def main_job(image_shape, num_classes):
    """The main job's recipe (`training.config.MAIN_JOB`) and the variants it was chosen from (WORKSPACE.md
    section 1), each trained as `python3 -m training.train` trains the main job, changed only where the point says.

    Every point: Adam at 3e-3, 30 warmup steps, cosine decay to 0, label smoothing 0.1, batch 128, no augmentation,
    unless its label says otherwise. `pool32`: `c32k5b-m2-c64k5b-m2-d128`; `pool16`: `c16k5b-m2-c32k5b-m2-d128`
    (5x5 convs with batch norm, each followed by a 2x2 max pool); `fast`: `mnist_fast` (`c24k5s2b-c48k5s2b-d128`,
    5x5 stride-2 convs with batch norm). `aug`: the main job's 2-pixel translations (reflected padding, no flip);
    `drop0.3`: dropout 0.3 before the logits; `nols`: no label smoothing; `b64`: batch 64; `e{n}`: n epochs.
    `main_job` is the recipe itself (`fast-aug-e6`). A budget of epochs, so each point trains as long as it did
    when the recipe was chosen.
    """
    del image_shape, num_classes  # Made for the bundled MNIST subset; every net here fits every dataset.
    recipe = dict(MAIN_JOB, batch_size=DEFAULT_BATCH_SIZE)
    plain = dict(recipe, augment=False)  # crop_padding and flip stay the recipe's; without augment they act on nothing
    pool32, pool16 = "c32k5b-m2-c64k5b-m2-d128", "c16k5b-m2-c32k5b-m2-d128"
    return [("pool32-e4", dict(plain, arch=pool32, epochs=4.0)),
            ("pool16-e4", dict(plain, arch=pool16, epochs=4.0)),
            ("pool32-drop0.3-nols-e5", dict(plain, arch=f"{pool32}-drop0.3", label_smoothing=0.0, epochs=5.0)),
            ("pool16-b64-e3", dict(plain, arch=pool16, batch_size=64, epochs=3.0)),
            ("pool16-aug-e5", dict(recipe, arch=pool16, epochs=5.0)),
            ("main_job", recipe),
            ("fast-aug-e4", dict(recipe, epochs=4.0))]


def cnn_vs_mlp_matched(image_shape, num_classes):
    """The points of `cnn_vs_mlp` (CNNs against MLPs of about as many weights, with and without dropout), and
    MLPs of about as many multiply-adds per image as each CNN (within 2%, `models.analysis.similar_mlp` with
    `by="macs"`): `mlp{depth}_macs_like_<cnn>`, 1 and 2 hidden layers, without dropout. A CNN reuses each weight
    at every position, so at equal weights an MLP computes far less per image (on MNIST 0.24x `mnist_cnn`'s
    multiply-adds, 0.07x `small_cnn`'s); these MLPs compute as much, with more weights (on MNIST 4.2x, 70x and
    14x those of `mnist_cnn`, `keras_convnet` and `small_cnn` for one hidden layer).
    """
    points = cnn_vs_mlp(image_shape, num_classes)
    for label, arch in (("mnist_cnn", "mnist_cnn"), ("keras_convnet", "keras_convnet"), ("small_cnn", SMALL_CNN)):
        for depth in (1, 2):
            try:
                mlp = analysis.similar_mlp(arch, image_shape, num_classes, depth, by="macs")
            except ValueError:  # no width within 2%
                continue
            points.append((f"mlp{depth}_macs_like_{label}", {"arch": mlp}))
    return points


# Sweeps that compare architectures rather than how fast each converges at one shared rate: every point at each
# of TUNED_RATES (Adam, a short warmup, then cosine decay to 0), for TUNED_TRAIN_STEPS; the table picks each
# point's rate on validation and compares the points at their picks (report.tuned_section).
TUNED_RATES = (3e-4, 1e-3, 3e-3)
TUNED_TRAIN_STEPS = 2100  # 5 epochs of the 54,000 MNIST or Fashion-MNIST images a sweep trains on, at batch 128
TUNED_RECIPE = dict(optimizer="adam", lr_schedule="cosine", warmup_steps=100)
TUNED_SUFFIX = "-lr"  # a tuned point's label: <point>-lr<rate>


def tuned(make_points):
    """A grid function training every point of ``make_points`` at each of ``TUNED_RATES``."""
    def make_tuned(image_shape, num_classes):
        return [(f"{label}{TUNED_SUFFIX}{rate:g}", dict(overrides, **TUNED_RECIPE, learning_rate=rate))
                for label, overrides in make_points(image_shape, num_classes) for rate in TUNED_RATES]

    make_tuned.__doc__ = (
        f"{inspect.getdoc(make_points)}\n\nEach point is trained at each Adam rate of "
        f"{', '.join(f'{rate:g}' for rate in TUNED_RATES)} (label `<point>{TUNED_SUFFIX}<rate>`), with "
        f"{TUNED_RECIPE['warmup_steps']} warmup steps and cosine decay to 0, for {TUNED_TRAIN_STEPS:,} steps; "
        "each point is compared at the rate that gives it the best mean validation accuracy.")
    return make_tuned


def base_label(label):
    """The point a tuned grid's label trains at one rate: ``small_cnn-lr0.001`` -> ``small_cnn``."""
    return label.rsplit(TUNED_SUFFIX, 1)[0]


ABLATIONS = ("airbench_ablation", "mnist_onecycle_ablation")  # tables that pick no point (Grid.picks_a_point)
TUNED = ("filter_size_tuned", "downsampling_tuned", "pooling_tuned", "cnn_vs_mlp_tuned")  # Grid.tuned
# name -> (function making the points, default optimizer steps per run (0: each point's epochs), batch size)
GRIDS = {
    "filter_size": (filter_size, DEFAULT_TRAIN_STEPS, DEFAULT_BATCH_SIZE),
    "downsampling": (downsampling, DEFAULT_TRAIN_STEPS, DEFAULT_BATCH_SIZE),
    "pooling": (pooling, DEFAULT_TRAIN_STEPS, DEFAULT_BATCH_SIZE),
    "cnn_vs_mlp": (cnn_vs_mlp, DEFAULT_TRAIN_STEPS, DEFAULT_BATCH_SIZE),
    "optimizer": (optimizer, DEFAULT_TRAIN_STEPS, DEFAULT_BATCH_SIZE),
    "airbench_ablation": (airbench_ablation, AIRBENCH_ABLATION_STEPS, AIRBENCH_BATCH_SIZE),
    "main_job": (main_job, 0, DEFAULT_BATCH_SIZE),  # 0: each point's own epochs, as the main job is given
    "mnist_onecycle_ablation": (mnist_onecycle_ablation, 0, MNIST_ONECYCLE_RECIPE["batch_size"]),
    "filter_size_tuned": (tuned(filter_size), TUNED_TRAIN_STEPS, DEFAULT_BATCH_SIZE),
    "downsampling_tuned": (tuned(downsampling), TUNED_TRAIN_STEPS, DEFAULT_BATCH_SIZE),
    "pooling_tuned": (tuned(pooling), TUNED_TRAIN_STEPS, DEFAULT_BATCH_SIZE),
    "cnn_vs_mlp_tuned": (tuned(cnn_vs_mlp_matched), TUNED_TRAIN_STEPS, DEFAULT_BATCH_SIZE),
}


def make_grid(name, dataset_name):
    """The named grid for ``dataset_name`` (a key of ``dataset_info.DATASETS``); its description is its docstring."""
    make_points, train_steps, batch_size = GRIDS[name]
    info = describe(dataset_name)
    points = tuple(make_points(info.image_shape, info.num_classes))
    return Grid(name, inspect.getdoc(make_points), points, train_steps=train_steps, batch_size=batch_size,
                picks_a_point=name not in ABLATIONS, tuned=name in TUNED)
