"""Every flagfile preset under flags/ parses with the training flags into the run it says it is."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO_ROOT / "flags").glob("*.cfg"))

# Parses each preset with the real flag definitions and validators (a fresh process: absl flags are global)
# and prints the TrainConfig fields each one sets.
_PARSE_ALL = """
import json, sys
from absl import flags
from flags import train_flags
train_flags.define_flags()
configs = {}
for path in sys.argv[1:]:
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train", f"--flagfile={path}"])
    config = train_flags.config_from_flags(flags.FLAGS)
    configs[path] = {k: v for k, v in vars(config).items() if isinstance(v, (str, int, float, bool))}
print(json.dumps(configs))
"""


def _flags_given(preset):
    """The flag names ``preset`` sets, with those of the flagfiles it includes (a variant of another preset)."""
    given = set()
    for line in preset.read_text().splitlines():
        if line.startswith("--flagfile="):
            given |= _flags_given(REPO_ROOT / line.split("=", 1)[1])
        elif line.startswith("--"):
            given.add(line.split("=")[0].lstrip("-"))
    return given


def test_every_preset_sets_what_the_command_line_defaults_to_the_main_job():
    # The command line's defaults are the main job's recipe (config.MAIN_JOB); a preset that left one of those
    # settings out would silently take the main job's value and no longer be the run its comment names.
    from training.config import MAIN_JOB
    for preset in PRESETS:
        given = _flags_given(preset)
        given |= {name[2:] for name in given if name.startswith("no")}  # --noaugment sets augment
        unused = ({"epochs"} if "train_steps" in given else set()) | (
            {"crop_padding", "flip"} if "noaugment" in given else set())  # settings of what the preset turns off
        missing = set(MAIN_JOB) - given - unused
        assert not missing, f"{preset.name} does not set {sorted(missing)}"


def test_every_preset_parses_into_the_run_its_comment_names():
    assert [p.name for p in PRESETS] == ["cifar100_speed.cfg", "cifar100_speed_curves.cfg", "cifar10_fast.cfg",
                                         "cifar10_resnet_small.cfg",
                                         "cifar10_speed.cfg", "cifar10_speed_10epochs_curves.cfg",
                                         "cifar10_speed_12epochs.cfg",
                                         "cifar10_speed_55c5129.cfg", "cifar10_speed_curves.cfg",
                                         "cifar10_speed_float32.cfg",
                                         "fashion_mnist_resnet_small.cfg", "fashion_mnist_resnet_small_curves.cfg",
                                         "keras_mnist_baseline.cfg", "main_job_curves.cfg", "mnist_full.cfg",
                                         "mnist_full_curves.cfg", "mnist_onecycle.cfg",
                                         "mnist_onecycle_bfloat16.cfg", "mnist_onecycle_curves.cfg", "mnist_speed.cfg"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run([sys.executable, "-c", _PARSE_ALL, *map(str, PRESETS)], cwd=REPO_ROOT, env=env,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    configs = json.loads(completed.stdout.strip().splitlines()[-1])
    cifar = configs[str(REPO_ROOT / "flags" / "cifar10_resnet_small.cfg")]
    assert (cifar["dataset"], cifar["arch"], cifar["optimizer"], cifar["lr_schedule"]) == (
        "cifar10", "resnet_small", "sgd", "cosine")
    assert (cifar["augment"], cifar["standardize"], cifar["nesterov"]) == (True, True, True)
    assert (cifar["epochs"], cifar["train_steps"], cifar["label_smoothing"]) == (30.0, 0, 0.1)
    fashion = configs[str(REPO_ROOT / "flags" / "fashion_mnist_resnet_small.cfg")]
    assert (fashion["dataset"], fashion["arch"], fashion["augment"], fashion["epochs"]) == (
        "fashion_mnist", "resnet_small", True, 10.0)
    # One epoch of warmup: 60,000 images at batch 128 make 468 full batches.
    assert (fashion["warmup_steps"], fashion["batch_size"]) == (468, 128)
    mnist = configs[str(REPO_ROOT / "flags" / "mnist_full.cfg")]
    assert (mnist["dataset"], mnist["arch"], mnist["epochs"], mnist["lr_schedule"]) == (
        "mnist", "mnist_cnn", 12.0, "cosine")
    assert mnist["logdir"] == "runs/mnist_full"
    speed = configs[str(REPO_ROOT / "flags" / "cifar10_speed.cfg")]
    assert (speed["arch"], speed["flip"], speed["crop_padding"], speed["test_time_augmentation"]) == (
        "airbench94", "alternating", 2, "flip_translate")
    # airbench's triangle peaks at 23% of the run: 10 epochs of 48 full batches of 1024 (50,000 images) = 480
    # steps, and 110 is the share the 12 epochs' 132 of 576 steps had.
    assert (speed["batch_size"], speed["epochs"], speed["warmup_steps"], speed["lr_schedule"]) == (
        1024, 10.0, 110, "triangle")
    assert (speed["bn_bias_lr_scale"], speed["lookahead_every"], speed["lookahead_start_epochs"]) == (64.0, 5, 3.0)
    assert (speed["decay_biases"], speed["whitening_bias_epochs"]) == (True, 3.0)
    # The variants that pair a recipe's seeds with other numerics differ from it in the numerics alone.
    # The CIFAR-10 ones keep the 12 epochs the recipe had when their seeds ran.
    twelve_epochs = {"epochs": 12.0, "warmup_steps": 132}
    for variant, base, precision, budget in (("cifar10_speed_float32", "cifar10_speed", "float32", twelve_epochs),
                                             ("mnist_onecycle_bfloat16", "mnist_onecycle", "mixed_bfloat16", {})):
        variant, base = (configs[str(REPO_ROOT / "flags" / f"{name}.cfg")] for name in (variant, base))
        assert {name for name in base if base[name] != variant[name]} == {"precision", "logdir", *budget}
        assert (variant["precision"], variant["jit_compile"]) == (precision, False)
        assert {name: variant[name] for name in budget} == budget
    # The race baseline: the recipe's flags at commit 55c5129, 12 epochs in float32 with XLA.
    baseline = configs[str(REPO_ROOT / "flags" / "cifar10_speed_55c5129.cfg")]
    assert {name for name in speed if speed[name] != baseline[name]} == {"precision", "jit_compile", "logdir",
                                                                         *twelve_epochs}
    assert (baseline["precision"], baseline["jit_compile"], baseline["epochs"], baseline["warmup_steps"]) == (
        "float32", True, 12.0, 132)
    # Its race candidate: the recipe over the same 12 epochs, so the two differ in their numerics alone.
    candidate = configs[str(REPO_ROOT / "flags" / "cifar10_speed_12epochs.cfg")]
    assert {name for name in speed if speed[name] != candidate[name]} == {"logdir", *twelve_epochs}
    assert {name for name in baseline if baseline[name] != candidate[name]} == {"precision", "jit_compile", "logdir"}
    # The learning-curve variants differ from their recipe in the held-out share and how often they evaluate.
    from training.config import MAIN_JOB
    main_job = configs[str(REPO_ROOT / "flags" / "main_job_curves.cfg")]
    assert {name: main_job[name] for name in MAIN_JOB} == MAIN_JOB
    assert (main_job["validation_split"], main_job["eval_every_epochs"]) == (0.1, 0.5)
    for variant, base, validation_split, every, budget in (
            ("cifar10_speed_curves", "cifar10_speed", 0.1, 2.0, twelve_epochs),
            ("cifar100_speed_curves", "cifar100_speed", 0.1, 2.0, {}),
            ("mnist_onecycle_curves", "mnist_onecycle", 0.1, 0.125, {}),
            ("mnist_full_curves", "mnist_full", 0.1, 1.0, {}),
            ("fashion_mnist_resnet_small_curves", "fashion_mnist_resnet_small", 0.1, 1.0, {})):
        variant, base = (configs[str(REPO_ROOT / "flags" / f"{name}.cfg")] for name in (variant, base))
        assert {name for name in base if base[name] != variant[name]} <= {"validation_split", "eval_every_epochs",
                                                                          "eval_every", "logdir", *budget}
        assert variant["eval_every"] == 0
        assert {name: variant[name] for name in budget} == budget
        assert (variant["validation_split"], variant["eval_every_epochs"]) == (validation_split, every)
    # The budget's shorter arm: 10 epochs, the warmup the same share of the steps (132 / 516 x 430 = 110).
    ten, twelve = (configs[str(REPO_ROOT / "flags" / f"{name}.cfg")] for name in ("cifar10_speed_10epochs_curves",
                                                                                  "cifar10_speed_curves"))
    assert {name for name in twelve if twelve[name] != ten[name]} == {"epochs", "warmup_steps", "logdir"}
    assert (ten["epochs"], ten["warmup_steps"], twelve["warmup_steps"]) == (10.0, 110, 132)
    # The MNIST ablation grid's recipe point is flags/mnist_onecycle.cfg's run.
    from experiments import grids
    onecycle = configs[str(REPO_ROOT / "flags" / "mnist_onecycle.cfg")]
    assert {name: onecycle[name] for name in grids.MNIST_ONECYCLE_RECIPE} == grids.MNIST_ONECYCLE_RECIPE
    assert onecycle["validation_split"] == grids.SWEEP_VALIDATION_SPLIT
    # The cheaper CIFAR-10 point: the speed recipe over 4 epochs, its epoch-timed parts scaled by 0.4.
    cheaper = configs[str(REPO_ROOT / "flags" / "cifar10_fast.cfg")]
    assert {name for name in speed if speed[name] != cheaper[name]} == {
        "epochs", "warmup_steps", "whitening_bias_epochs", "lookahead_start_epochs", "eval_every_epochs",
        "target_accuracy", "logdir"}
    # 4 epochs of 48 full batches = 192 steps; int(0.23 * 192) = 44.
    assert (cheaper["epochs"], cheaper["warmup_steps"], cheaper["whitening_bias_epochs"],
            cheaper["eval_every_epochs"]) == (4.0, 44, 1.2, 0.0)
    # The ablation grid's "recipe" point is this flagfile's run, but for the warmup: 23% of the grid's 172 steps
    # (4 epochs of the 45,000 images its validation split leaves) rather than of 192.
    from experiments import grids
    recipe = dict(grids.make_grid("airbench_ablation", "cifar10").points)["recipe"]
    # The grid keeps the numerics its table was measured in (float32 with XLA); the flagfile chooses them.
    assert {name: cheaper[name] for name in recipe} == dict(recipe, warmup_steps=44, jit_compile=False)
    assert (speed["precision"], cheaper["precision"], cheaper["jit_compile"]) == ("auto", "auto", False)
    assert recipe["warmup_steps"] == int(0.23 * grids.AIRBENCH_ABLATION_STEPS) == 39
    # CIFAR-100 trains the CIFAR-10 recipe as it was when its seeds ran (12 epochs): every other field but the
    # dataset and the run directory agrees.
    hundred = configs[str(REPO_ROOT / "flags" / "cifar100_speed.cfg")]
    differ = {name for name in speed if speed[name] != hundred[name]}
    assert differ == {"dataset", "logdir", "target_accuracy", *twelve_epochs} and hundred["dataset"] == "cifar100"
    assert {name: hundred[name] for name in twelve_epochs} == twelve_epochs
    fast = configs[str(REPO_ROOT / "flags" / "mnist_speed.cfg")]
    assert (fast["arch"], fast["batch_size"], fast["epochs"], fast["label_smoothing"]) == (
        "mnist_fast", 256, 3.0, 0.1)
    # The one-cycle MNIST recipe: the triangle peaks at 24% of 1.75 epochs of the 54,000 images validation_split=0.1
    # leaves at batch 256 (368 steps; int(0.24 * 368) = 88), on the baseline's training images.
    onecycle = configs[str(REPO_ROOT / "flags" / "mnist_onecycle.cfg")]
    assert (onecycle["arch"], onecycle["learning_rate"], onecycle["adam_beta_1"], onecycle["adam_beta_2"]) == (
        "c16k5s2-c32k5s2-d128", 0.01, 0.7, 0.9)
    assert (onecycle["lr_schedule"], onecycle["warmup_steps"], onecycle["epochs"], onecycle["batch_size"]) == (
        "triangle", 88, 1.75, 256)
    assert (onecycle["validation_split"], onecycle["eval_every_epochs"], onecycle["precision"]) == (
        0.1, 0.25, "float32")
    # keras-io: Adam 1e-3, batch 128, 15 epochs on the 54,000 images validation_split=0.1 leaves.
    keras_io = configs[str(REPO_ROOT / "flags" / "keras_mnist_baseline.cfg")]
    assert (keras_io["arch"], keras_io["optimizer"], keras_io["learning_rate"], keras_io["lr_schedule"]) == (
        "keras_convnet", "adam", 0.001, "constant")
    assert (keras_io["batch_size"], keras_io["epochs"], keras_io["validation_split"], keras_io["augment"]) == (
        128, 15.0, 0.1, False)
