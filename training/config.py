"""The frozen description of one training run. Each field is declared once, here: type, default, help, the
values it allows, and whether a resumed run may change it. ``flags/train_flags.py`` generates the flags of
``python -m training.train`` from these declarations; tests and notebooks build a ``TrainConfig`` directly.
"""

import dataclasses
import hashlib
import math
import os

from models import architecture
from models.architecture import GRAMMAR, PRESETS
from models.network import CAPABILITIES, IMPLEMENTATIONS, PRECISIONS
from training import image_folder, prepared_tfds
from training.choices import (
    FLIP_MODES,
    IMAGE_FITS,
    LOOPS,
    OPTIMIZERS,
    SCHEDULES,
    STARTUP_TIMEOUT,
    STRATEGIES,
    TTA_MODES,
)
from training.dataset_info import (
    DATASET_CHOICES,
    DATASET_SETTINGS,
    FOLDER,
    FROM_DISK,
    TFDS,
    describe,
    describe_settings,
)
from training.errors import DataDirError, OneLineError

# What a resumed run may do with a field. FIXED fields define the computation (weights, data order, update
# rule): a run directory resumed with another value would no longer be one run, so the change is refused unless
# the user allows it. FREE fields are budgets, intervals, paths and devices.
FIXED, FREE = "fixed", "free"
MAX_STEPS = 2**31 - 1  # step counters and schedules are int32/float32 inside TensorFlow
MAX_SEED = 2**32 - 1  # keras.utils.set_random_seed and NumPy take seeds below 2**32
VALIDATION_SPLIT_SEED = 0  # one held-out set for every run, so validation accuracies compare across runs
AUTO_PRECISION = "auto"  # --precision chosen by timing the train step (training/numerics.py)
# Logical CPU devices, each traced apart and all sharing the machine's cores: the first call of a tiny net took
# 16 s with 4 of them, 53 s with 16, and over 11 minutes with 256 (2-core AMD EPYC), with no line meanwhile.
MAX_CPU_DEVICES = 16
MAX_BATCH = 2**20  # images per global batch; far beyond any dataset here, and far below int32 overflow
MAX_IMAGE_SIDE = 4096  # pixels; a folder's images held in memory at a larger size would be a few at most


class ConfigError(OneLineError, ValueError):
    """A setting a run cannot have, alone or with the others; the message names it and what it allows."""


def _field(default, help, *, choices=None, check=None, resume=FIXED, flag=None, item=None, on_disk=False):
    """A ``TrainConfig`` field. ``check`` is ``(predicate, "must be ...")``; ``choices`` an iterable of allowed
    values (a registry's keys); ``flag`` the flag's name when it is not the field's; ``item`` the element type
    of a tuple field. An ``on_disk`` check looks at the file system: it runs when a run starts and when the flag
    is parsed, not when a config is built, so a saved run's config stays readable on another machine."""
    metadata = dict(help=help, choices=tuple(choices) if choices else None, check=check, resume=resume,
                    flag=flag, item=item, on_disk=on_disk)
    return dataclasses.field(default=default, metadata=metadata)


def _positive(limit):
    return (lambda v: 0 < v <= limit, f"must be a positive integer, at most {limit}")


def _non_negative(limit):
    return (lambda v: 0 <= v <= limit, f"must be a non-negative integer, at most {limit}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # What to train.
    dataset: str = _field("mnist", "Dataset to train and test on; folder: your own images, one folder per class "
                          "in --data_dir (training/image_folder.py); tfds: the TensorFlow Datasets dataset "
                          "--tfds_name, prepared in --data_dir (training/prepared_tfds.py).", choices=DATASET_CHOICES)
    data_dir: str = _field("", "Folder holding <dataset>.npz (x_train, y_train, x_test, y_test); empty: "
                           "tf.keras.datasets, then the MNIST subset bundled in bundled_data/. With --dataset=folder: "
                           "the folder of class folders (or of train/ and test/, each of class folders). With "
                           "--dataset=tfds: TensorFlow Datasets' data_dir, holding <name>/[<config>/]<version>/.",
                           resume=FREE,
                           # A name with control characters gets _data_dir_printable's message instead.
                           check=(lambda v: not v or not v.isprintable() or os.path.isdir(v),
                                  "must be an existing directory"), on_disk=True)
    tfds_name: str = _field("", "With --dataset=tfds: NAME[/CONFIG][:VERSION] of an image classification dataset "
                            "TensorFlow Datasets prepared in --data_dir (an image and a class label); no VERSION: the "
                            "highest prepared there. Read with TensorFlow alone, never downloaded.",
                            check=(prepared_tfds.valid_name, "must be NAME[/CONFIG][:VERSION], e.g. mnist:3.0.1 or "
                                   "imagenette/320px-v2"))
    allow_download: bool = _field(True, "Let tf.keras.datasets download a dataset it has not cached.",
                                  resume=FREE, flag="download")
    image_size: tuple = _field((), "With --dataset=folder or tfds: HEIGHT,WIDTH in pixels that every image is "
                               "brought to (--image_fit says how); empty: the images' own, which must then all be "
                               "the same.",
                               item=int, check=(lambda v: not v or (len(v) == 2 and all(
                                   1 <= side <= MAX_IMAGE_SIDE for side in v)),
                                   f"must be HEIGHT,WIDTH in pixels, each 1 to {MAX_IMAGE_SIDE}, e.g. 64,64"))
    image_channels: int = _field(0, "With --dataset=folder or tfds: 1 (grey) or 3 (RGB), every image converted to "
                                 "it; 0: the images' own, which must then all be the same. An alpha channel is "
                                 "dropped.",
                                 check=(lambda v: v in (0, 1, 3), "must be 0 (the images' own), 1 (grey) or 3 "
                                        "(RGB)"))
    image_fit: str = _field("stretch", "With --image_size: stretch (resized, aspect ratio not kept, as "
                            "keras.utils.image_dataset_from_directory does by default) or crop (the largest central "
                            "crop of the target's aspect ratio, then resized: its crop_to_aspect_ratio). Bilinear, "
                            "antialiased; predict fits its images the same way.", choices=IMAGE_FITS)
    arch: str = _field("mnist_cnn", f"Architecture string ({GRAMMAR}, joined by '-') or a preset: "
                       f"{', '.join(PRESETS)}.")
    impl: str = _field("keras", "keras: subclassed Keras model; reference: low-level tf.nn network.",
                       choices=IMPLEMENTATIONS)
    standardize: bool = _field(False, "Standardise each channel with the training set's mean and std instead of "
                               "scaling to [0, 1].")
    validation_split: float = _field(0.0, "Fraction of the training set held out as a validation set, the same "
                                     "examples in every run (a permutation fixed by seed 0, not --seed), evaluated "
                                     "with the test set (validation/ in TensorBoard; at the end: results.json "
                                     "validation_accuracy); 0: none.",
                                     check=(lambda v: 0 <= v <= 0.5, "must be in [0, 0.5]"))
    augment: bool = _field(False, "Random crop (--crop_padding) and horizontal flip (--flip) of training images.")
    crop_padding: int = _field(4, "With --augment: pixels of reflected padding around each image before it is cropped "
                               "back to its size at a random offset; 0: no translation.",
                               check=(lambda v: 0 <= v <= 16, "must be an integer in [0, 16]"))
    flip: str = _field("random", "With --augment: random (a fair coin per image and step), alternating (each image "
                       "flipped in every other epoch, airbench94's choice) or none.", choices=FLIP_MODES)

    # Optimisation.
    optimizer: str = _field("adam", "Optimizer.", choices=OPTIMIZERS)
    learning_rate: float = _field(1e-3, "Peak learning rate, per update.",
                                  check=(lambda v: 0 < v < math.inf, "must be a finite number > 0"))
    momentum: float = _field(0.9, "SGD momentum coefficient, in [0, 1) (ignored by Adam).",
                             check=(lambda v: 0 <= v < 1, "must be in [0, 1)"))
    nesterov: bool = _field(False, "Use Nesterov momentum with SGD.")
    adam_beta_1: float = _field(0.9, "Adam's decay of its mean of gradients, in [0, 1) (Keras' default 0.9).",
                                check=(lambda v: 0 <= v < 1, "must be in [0, 1)"))
    adam_beta_2: float = _field(0.999, "Adam's decay of its mean of squared gradients, in [0, 1) (Keras' default "
                                "0.999).", check=(lambda v: 0 <= v < 1, "must be in [0, 1)"))
    lr_schedule: str = _field("constant", "Decay after the warmup.", choices=SCHEDULES)
    warmup_steps: int = _field(0, "Steps of linear warmup from 0 to --learning_rate.", check=_non_negative(MAX_STEPS))
    decay_rate: float = _field(0.1, "exponential: factor per --decay_steps; piecewise: factor at each boundary. "
                               "In (0, 1].", check=(lambda v: 0 < v <= 1, "must be in (0, 1]"))
    decay_steps: int = _field(1000, "Period of the exponential decay, in steps.", check=_positive(MAX_STEPS))
    piecewise_boundaries: tuple = _field(
        (0.5, 0.75), "piecewise: increasing fractions of the training steps where the rate is multiplied by "
        "--decay_rate.", item=float,
        check=(lambda v: all(0 < f < 1 for f in v) and list(v) == sorted(set(v)),
               "must be increasing fractions in (0, 1), e.g. 0.5,0.75"))
    weight_decay: float = _field(0.0, "Decoupled weight decay of conv and dense kernels (and of biases with "
                                 "--decay_biases), per update, scaled by the learning rate.",
                                 check=(lambda v: 0 <= v < math.inf, "must be a finite number >= 0"))
    decay_biases: bool = _field(False, "Apply --weight_decay to biases and batch-norm offsets as well, as airbench94 "
                                "does; off: conv and dense kernels only.")
    bn_bias_lr_scale: float = _field(1.0, "Multiplier of the gradients of batch-norm biases (beta): with SGD, their "
                                     "learning rate times this (airbench94: 64); Adam normalises it away.",
                                     check=(lambda v: 0 < v < math.inf, "must be a finite number > 0"))
    lookahead_every: int = _field(0, "airbench94's lookahead: every this many steps the weights move to a running "
                                  "average of themselves (decay 0.95**k x (step/total)**3), and after the last "
                                  "step they are set to the average; 0: off. Custom loop only.",
                                  check=_non_negative(MAX_STEPS))
    lookahead_start_epochs: float = _field(3.0, "Epochs before the lookahead's first sync.",
                                           check=(lambda v: 0 <= v <= 1e6, "must be >= 0 and at most 1e6"))
    whitening_bias_epochs: float = _field(0.0, "Epochs after which the trained bias of the whitening layer "
                                          "(w{size}t) is frozen, as airbench94 does after 3; 0: it trains "
                                          "throughout. Custom loop only.",
                                          check=(lambda v: 0 <= v <= 1e6, "must be >= 0 and at most 1e6"))
    label_smoothing: float = _field(0.0, "Label smoothing, in [0, 1).",
                                    check=(lambda v: 0 <= v < 1, "must be in [0, 1)"))

    # Budget and loop.
    batch_size: int = _field(128, "Global batch size across all replicas, images per step.",
                             check=_positive(MAX_BATCH))
    train_steps: int = _field(0, "Optimizer steps to train for (instead of --epochs); 0: use --epochs.",
                              resume=FREE, check=_non_negative(MAX_STEPS))
    epochs: float = _field(10.0, "Passes over the training set (instead of --train_steps).", resume=FREE,
                           check=(lambda v: 0 < v <= 1e6, "must be > 0 and at most 1e6"))
    eval_every: int = _field(0, "Steps between test-set evaluations; 0 (with --eval_every_epochs 0 too): every k "
                             "epochs, k the fewest whole epochs whose training costs at least 10x an evaluation "
                             "(progress.default_eval_every), or only at the end with --target_accuracy.",
                             resume=FREE,
                             check=_non_negative(MAX_STEPS))
    eval_every_epochs: float = _field(0.0, "Epochs between test-set evaluations, instead of --eval_every: runs "
                                      "with different batch sizes are then evaluated after the same numbers of "
                                      "images.", resume=FREE,
                                      check=(lambda v: 0 <= v <= 1e6, "must be >= 0 and at most 1e6"))
    target_accuracy: float = _field(0.0, "Test accuracy in (0, 1] whose first evaluation at or above it is "
                                    "recorded in results.json (seconds_to_target, steps_to_target, "
                                    "images_to_target); 0: no target.", resume=FREE,
                                    check=(lambda v: 0 <= v <= 1, "must be in [0, 1]"))
    stop_at_target: bool = _field(False, "End the run at the first evaluation that reaches --target_accuracy "
                                  "(a checkpoint and results.json are still written).", resume=FREE)
    log_every: int = _field(100, "Steps between console lines and train/ TensorBoard scalars.", resume=FREE,
                            check=_positive(MAX_STEPS))
    checkpoint_every: int = _field(1000, "Steps between checkpoints; one is always written at the end.",
                                   resume=FREE, check=_positive(MAX_STEPS))
    steps_per_loop: int = _field(10, "Train steps per tf.function call (or fit's steps_per_execution). The custom "
                                 "loop ends a call at every log, eval and checkpoint interval; fit rounds those up "
                                 "to it.", resume=FREE, check=_positive(MAX_STEPS))
    max_seconds_per_loop: float = _field(
        10.0, "Custom loop on one machine: fewer than --steps_per_loop steps per call when calls would last longer "
        "than this, as the last call's time per step says, so console lines come and a stop signal (Ctrl-C, "
        "SIGTERM) is acted on about this often; 0: always --steps_per_loop.", resume=FREE,
        check=(lambda v: 0 <= v <= 1e6, "must be >= 0 and at most 1e6"))
    loop: str = _field("custom", "custom: tf.function training loop; fit: Keras compile/fit/evaluate on the same "
                       "model, as a cross-check.", choices=LOOPS)
    test_time_augmentation: str = _field(
        "none", "Evaluation logits averaged over views of each image: none; flip (the image and its mirror); "
        "flip_translate (airbench94's six views: weight 1/2 on those two, 1/2 on both shifted by one pixel "
        "up-left and down-right).",
        choices=TTA_MODES, resume=FREE)
    eval_batch_size: int = _field(1000, "Global batch size for evaluation.", resume=FREE, check=_positive(MAX_BATCH))
    seed: int = _field(0, "Seed of weight initialisation, data order, dropout and augmentation.",
                       check=_non_negative(MAX_SEED))
    deterministic: bool = _field(False, "Use deterministic kernels: bit-reproducible, slower.", resume=FREE)
    jit_compile: bool = _field(False, "Compile the train step with XLA (with --precision=auto: only XLA numerics "
                               "are timed).", resume=FREE)

    # Devices and numerics.
    strategy: str = _field("default", "tf.distribute strategy. auto: mirrored on 2+ GPUs, one_device on 1 GPU, "
                           "default on CPU; multi_worker reads TF_CONFIG.", choices=STRATEGIES,
                           resume=FREE)
    num_cpu_devices: int = _field(1, "Split the CPU into this many logical devices (mirrored training over CPU "
                                  "replicas).", resume=FREE, check=_positive(MAX_CPU_DEVICES))
    startup_timeout: int = _field(STARTUP_TIMEOUT, "Multi-worker runs: seconds to wait at start-up for "
                                  "the other tasks of TF_CONFIG's cluster before stopping.", resume=FREE,
                                  check=_positive(7 * 24 * 3600))
    tf32: bool = _field(True, "Allow TensorFloat-32 matmuls and convolutions on Ampere and newer GPUs "
                        "(TensorFlow's default).", resume=FREE)
    precision: str = _field("float32", "Compute dtype; variables, batch-norm statistics, the loss and the "
                            "optimizer stay float32. mixed_float16 scales the loss dynamically. auto: the fastest "
                            "train step on this machine of float32 and mixed_bfloat16 (where bfloat16 is native), "
                            "each with and without XLA (only with XLA under --jit_compile), timed on the run's own "
                            "step at its first start and cached per machine (training/numerics.py).",
                            choices=(*PRECISIONS, AUTO_PRECISION))
    profile_steps: tuple = _field((), "FIRST,LAST: record a TensorBoard profile of these training steps (1-based, "
                                  "inclusive) into <logdir>/plugins/profile.", resume=FREE, item=int,
                                  check=(lambda v: not v or (len(v) == 2 and 1 <= v[0] <= v[1]),
                                         "must be FIRST,LAST with 1 <= FIRST <= LAST, e.g. 5,10"))

    # Where the run lives.
    logdir: str = _field("", "Run directory for TensorBoard logs, checkpoints, flags and results.json; empty: "
                         "runs/<dataset>-<arch>-<impl>-<loop>.", resume=FREE,
                         check=(str.isprintable, "must not hold control characters (a newline, a tab): flags.txt, "
                                "which reruns the run, holds one flag a line"))
    resume: bool = _field(True, "Continue from the last checkpoint in --logdir; --noresume refuses a --logdir that "
                          "already holds a run.", resume=FREE)
    allow_config_change: bool = _field(False, "Resume a run although a setting that changes what it computes "
                                       "(learning rate, seed, augmentation, ...) differs from the run's own; the "
                                       "change is recorded in config.json.", resume=FREE)

    def __post_init__(self):
        """Checks every setting and every rule between settings (``ConfigError``, naming them), so a config is
        valid however it was made: from flags, in a sweep, in a test or in a notebook."""
        for field in fields():
            value = normalised(field, getattr(self, field.name))
            object.__setattr__(self, field.name, value)
            problem = field_problem(field, value)
            if problem:
                raise ConfigError(f"setting {field.name}={value!r}: {problem}")
        _check_rules(vars(self), on_disk=False)
        if not self.logdir:
            object.__setattr__(self, "logdir", default_logdir(self))

    def check_on_disk(self):
        """Runs the checks that look at the file system (``ConfigError``); ``train`` calls it at the start."""
        for field in fields():
            if field.metadata["on_disk"]:
                problem = field_problem(field, getattr(self, field.name), on_disk=True)
                if problem:
                    raise ConfigError(f"setting {field.name}={getattr(self, field.name)!r}: {problem}")
        _check_rules(vars(self), on_disk=True)

    def dataset_info(self):
        """The ``DatasetInfo`` of the run's dataset (``dataset_info.describe``): a built-in's, or what the
        ``--data_dir`` of a ``--dataset=folder`` or ``tfds`` run holds now, read from disk (an
        ``errors.DataDirError`` when it cannot be)."""
        return describe_settings(vars(self))


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", tuple: "a sequence"}
_ITEMS = {int: "integers", float: "numbers"}


def _is_a(kind, value):
    """Whether ``value`` is a ``kind`` as a setting means it: bools are not numbers, integers are numbers."""
    if isinstance(value, bool) or kind is bool:
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def normalised(field, value):
    """``value`` in the field's own type where that loses nothing: a list as a tuple (JSON has no tuples), an
    integer as a float in a float field (config.json then reads the same however the config was made)."""
    if field.type is tuple and isinstance(value, list):
        value = tuple(value)
    if field.type is tuple and field.metadata["item"] is float and isinstance(value, tuple):
        value = tuple(float(v) if _is_a(float, v) else v for v in value)
    if field.type is float and _is_a(float, value):
        return float(value)
    return value


def field_problem(field, value, on_disk=False):
    """What is wrong with ``value`` for ``field`` ("must be ..."), or None: its type, its choices, its check.
    The check of an ``on_disk`` field runs only when ``on_disk`` is asked for."""
    name = f"--{field.metadata['flag'] or field.name}"
    if not _is_a(field.type, value):
        return f"{name} must be {_KINDS[field.type]}"
    item = field.metadata["item"]
    if item and not all(_is_a(item, v) for v in value):
        return f"{name} must hold only {_ITEMS[item]}"
    if field.metadata["choices"] and value not in field.metadata["choices"]:
        return f"{name} must be one of {', '.join(field.metadata['choices'])}"
    check = field.metadata["check"]
    if check and field.metadata["on_disk"] == on_disk:
        predicate, message = check
        try:
            holds = predicate(value)
        except (TypeError, ValueError, OverflowError):
            holds = False
        if not holds:
            return f"{name} {message}"
    return None


# What ``python -m training.train`` runs when a flag is not given: the main job, a fast MNIST recipe (two 5x5
# stride-2 convs with batch norm, Adam with warmup and cosine decay, label smoothing, 2-pixel translations, 6
# epochs; WORKSPACE.md section 1). A ``TrainConfig`` built in code keeps the plain defaults above (mnist_cnn,
# constant Adam 1e-3, 10 epochs), which tests and sweep tables are written against.
MAIN_JOB = dict(arch="mnist_fast", learning_rate=3e-3, lr_schedule="cosine", warmup_steps=30,
                label_smoothing=0.1, augment=True, crop_padding=2, flip="none", epochs=6.0)


# Settings that act in the custom training loop only: a fit-loop config that sets them is refused.
CUSTOM_LOOP_ONLY = ("test_time_augmentation", "bn_bias_lr_scale", "lookahead_every", "whitening_bias_epochs",
                    "max_seconds_per_loop")


def custom_loop_only_settings(values):
    """``name=value`` of each ``CUSTOM_LOOP_ONLY`` setting that ``values`` (field name -> value) sets away from
    its default."""
    defaults = {field.name: field.default for field in fields()}
    return [f"{name}={values[name]!r}" for name in CUSTOM_LOOP_ONLY if values[name] != defaults[name]]


@dataclasses.dataclass(frozen=True)
class Rule:
    """A rule between settings: ``problem(values)`` says what is wrong (one sentence) or returns None. The flag
    parser registers each one on the flags of ``names``, so flags and configs built in code obey the same rules.
    An ``on_disk`` rule looks at the file system: like an ``on_disk`` field's check, it runs when the flags are
    parsed and when a run starts (``check_on_disk``), not when a config is built."""

    names: tuple
    problem: object
    on_disk: bool = False


RULES = []


def _rule(*names, on_disk=False):
    def register(problem):
        RULES.append(Rule(names, problem, on_disk))
        return problem
    return register


def _check_rules(values, on_disk):
    """Raises ``ConfigError`` with the first problem of the rules that do (``on_disk``) or do not look at disk."""
    for rule in RULES:
        if rule.on_disk == on_disk:
            problem = rule.problem(values)
            if problem:
                shown = ", ".join(f"{name}={values[name]!r}" for name in rule.names)
                raise ConfigError(f"settings {shown}: {problem}")


@_rule("eval_every", "eval_every_epochs")
def _one_eval_interval(values):
    if values["eval_every"] and values["eval_every_epochs"]:
        return "give either --eval_every or --eval_every_epochs, not both"


@_rule("stop_at_target", "target_accuracy")
def _stop_needs_target(values):
    if values["stop_at_target"] and not values["target_accuracy"] > 0:
        return "--stop_at_target needs a --target_accuracy above 0"


@_rule("arch", "dataset")
def _arch_fits(values):
    if not values["arch"]:
        return f"--arch {architecture.EMPTY_ARCH}"
    if values["dataset"] in FROM_DISK:
        return None  # its images' shape is on disk: _network_and_crops_fit_the_images
    info = describe(values["dataset"])
    try:
        architecture.plan(values["arch"], info.image_shape, info.num_classes)
    except ValueError as error:
        return f"--arch {error}"


@_rule("data_dir")
def _data_dir_printable(values):
    if not values["data_dir"].isprintable():
        return ("--data_dir must not hold control characters (a newline, a tab): flags.txt, which reruns the run, "
                "holds one flag a line")


@_rule("dataset", "data_dir", "image_size", "image_channels", "image_fit")
def _image_settings_for_a_folder(values):
    if values["dataset"] == FOLDER and not values["data_dir"]:
        return "--dataset=folder reads the class folders in --data_dir; give --data_dir=<folder of class folders>"
    if values["dataset"] == TFDS and not values["data_dir"]:
        return ("--dataset=tfds reads a dataset TensorFlow Datasets prepared in --data_dir; give --data_dir=<its "
                "data_dir> (TFDS's default is ~/tensorflow_datasets)")
    if values["dataset"] in FROM_DISK:
        if values["image_fit"] != "stretch" and not values["image_size"]:
            return f"--image_fit={values['image_fit']} fits images to --image_size; give --image_size=HEIGHT,WIDTH"
    elif values["image_size"] or values["image_channels"] or values["image_fit"] != "stretch":
        return ("--image_size, --image_channels and --image_fit shape the images of --dataset=folder and "
                "--dataset=tfds; the built-in datasets keep their own")


@_rule("dataset", "tfds_name")
def _tfds_name_for_tfds(values):
    if values["dataset"] == TFDS and not values["tfds_name"]:
        return "--dataset=tfds reads the dataset --tfds_name names; give --tfds_name=NAME[/CONFIG][:VERSION]"
    if values["dataset"] != TFDS and values["tfds_name"]:
        return f"--tfds_name names the dataset of --dataset=tfds, not of --dataset={values['dataset']}"


@_rule("dataset", "data_dir", on_disk=True)
def _folder_is_a_dataset(values):
    if values["dataset"] == FOLDER and values["data_dir"]:
        try:
            image_folder.image_header(image_folder.scan(values["data_dir"]).train_files[0])
        except image_folder.FolderError as error:
            return str(error)


@_rule("dataset", "data_dir", "tfds_name", on_disk=True)
def _tfds_is_prepared(values):
    if values["dataset"] == TFDS and values["data_dir"] and values["tfds_name"]:
        try:
            prepared_tfds.scan(values["data_dir"], values["tfds_name"])
        except prepared_tfds.TfdsError as error:
            return str(error)


@_rule("arch", *DATASET_SETTINGS, "augment", "crop_padding", on_disk=True)
def _network_and_crops_fit_the_images(values):
    if values["dataset"] not in FROM_DISK or not values["data_dir"]:
        return None
    try:
        info = describe_settings(values)
    except DataDirError:
        return None  # _folder_is_a_dataset or _tfds_is_prepared says why
    try:
        architecture.plan(values["arch"], info.image_shape, info.num_classes)
    except ValueError as error:
        return f"--arch {error}"
    if values["augment"] and values["crop_padding"] >= min(info.height, info.width):
        whose = "the folder's" if values["dataset"] == FOLDER else f"{values['tfds_name']}'s"
        return (f"--crop_padding {values['crop_padding']} must be smaller than {whose} {info.height}x"
                f"{info.width} images, to reflect; lower it or give a larger --image_size")


@_rule("impl", "loop")
def _fit_needs_keras(values):
    if values["loop"] == "fit" and not CAPABILITIES[values["impl"]].runs_under_fit:
        return ("--loop=fit trains Keras models only; use --impl=keras with --loop=fit, or --loop=custom with "
                f"--impl={values['impl']}")


@_rule("loop", *CUSTOM_LOOP_ONLY)
def _custom_loop_settings(values):
    if values["loop"] != "custom" and custom_loop_only_settings(values):
        *others, last = [f"--{name}" for name in CUSTOM_LOOP_ONLY]
        return f"{', '.join(others)} and {last} act in the custom loop only; use --loop=custom"


@_rule("arch", "whitening_bias_epochs")
def _whitening_bias_to_freeze(values):
    if values["whitening_bias_epochs"] and not architecture.has_whitening_bias(values["arch"]):
        return ("--whitening_bias_epochs freezes the bias of a whitening layer, which --arch does not have; start "
                "it with w{size}t (e.g. w2tg)")


@_rule("loop", "strategy")
def _fit_on_one_machine(values):
    if values["loop"] == "fit" and values["strategy"] == "multi_worker":
        return "--loop=fit runs on one machine; use --loop=custom with --strategy=multi_worker"


@_rule("strategy", "num_cpu_devices", "batch_size", "eval_batch_size")
def _batches_divide_over_cpus(values):
    # Other counts of replicas are known only once devices are up; train() checks them.
    if values["strategy"] == "mirrored" and any(values[name] % values["num_cpu_devices"]
                                                for name in ("batch_size", "eval_batch_size")):
        return ("--batch_size and --eval_batch_size are global and must divide by --num_cpu_devices under "
                "--strategy=mirrored")


@_rule("precision", "loop", "strategy")
def _auto_precision_where_it_is_timed(values):
    # The probe times the custom loop's step; the workers of a multi-worker run would each time their own and
    # could choose differently.
    if values["precision"] == AUTO_PRECISION and (values["loop"] != "custom" or values["strategy"] == "multi_worker"):
        return "--precision=auto times the custom loop's step on one machine; give --precision explicitly"


@_rule("profile_steps", "train_steps")
def _profile_within_budget(values):
    # An --epochs budget is known in steps only once the data is loaded; train() checks that case.
    if values["profile_steps"] and values["train_steps"] and values["profile_steps"][1] > values["train_steps"]:
        return f"--profile_steps ends after the run's last step {values['train_steps']}"


def default_logdir(config):
    """``runs/<dataset>-<arch>-<impl>-<loop>``; a long architecture string is cut and given a short hash, so the
    directory name stays within what file systems allow."""
    arch = config.arch
    if len(arch) > 60:
        arch = f"{arch[:40]}-{hashlib.sha1(arch.encode()).hexdigest()[:8]}"
    dataset = config.dataset
    if dataset == FOLDER:  # folders of different images get directories of their own
        dataset = f"{FOLDER}-{os.path.basename(os.path.abspath(config.data_dir))}"
    elif dataset == TFDS:  # and so do TFDS datasets: mnist/config:3.0.1 -> tfds-mnist-config-3.0.1
        dataset = f"{TFDS}-{config.tfds_name.replace('/', '-').replace(':', '-')}"
    return os.path.join("runs", f"{dataset}-{arch}-{config.impl}-{config.loop}")


def fields():
    """The declared fields, in order."""
    return dataclasses.fields(TrainConfig)


def fixed_changes(earlier, config):
    """``{field: (earlier value, value)}`` for the FIXED fields on which the saved config dict ``earlier`` and
    ``config`` differ. A field the earlier run did not record (a run of older code) had the field's default: a
    new field's default is what older code computed, so a resume that asks for another value is a change."""
    now = as_json(config)
    before = {**as_json(TrainConfig()), **earlier}
    return {f.name: (before[f.name], now[f.name]) for f in fields()
            if f.metadata["resume"] == FIXED and before[f.name] != now[f.name]}


def as_json(config):
    """The config as plain JSON values (tuples become lists), as config.json holds it."""
    return {name: list(value) if isinstance(value, tuple) else value
            for name, value in dataclasses.asdict(config).items()}


def from_json(saved):
    """A ``TrainConfig`` from config.json's values; JSON lists become tuples again. Fields this code does not
    know are returned separately as ``(config, unknown_names)``: a run written by other code can still be read."""
    declared = {f.name for f in fields()}
    values = {name: tuple(value) if isinstance(value, list) else value
              for name, value in saved.items() if name in declared}
    return TrainConfig(**values), sorted(set(saved) - declared)
