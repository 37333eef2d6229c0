"""``TrainConfig`` checks itself however it is made: in code, from config.json, for a sweep point, or from flags,
with the same one-line messages. No TensorFlow is imported here: a config is plain data."""

import dataclasses
import re

import pytest
from conftest import REPO_ROOT

from experiments import grids, runner
from training import config as config_lib
from training.config import ConfigError, TrainConfig

# Each entry: the settings, then the one line TrainConfig(**settings) raises.
REFUSED = {
    "negative_rate": (dict(learning_rate=-1), "setting learning_rate=-1.0: --learning_rate must be a finite "
                                              "number > 0"),
    "reference_under_fit": (dict(impl="reference", loop="fit"),
                            "settings impl='reference', loop='fit': --loop=fit trains Keras models only; use "
                            "--impl=keras with --loop=fit, or --loop=custom with --impl=reference"),
    "negative_epochs": (dict(epochs=-1), "setting epochs=-1.0: --epochs must be > 0 and at most 1e6"),
    "negative_steps": (dict(train_steps=-10), "setting train_steps=-10: --train_steps must be a non-negative "
                                              "integer, at most 2147483647"),
    "smoothing_above_one": (dict(label_smoothing=2), "setting label_smoothing=2.0: --label_smoothing must be in "
                                                     "[0, 1)"),
    "validation_most_of_the_data": (dict(validation_split=0.99), "setting validation_split=0.99: "
                                                                 "--validation_split must be in [0, 0.5]"),
    "negative_decay": (dict(weight_decay=-1), "setting weight_decay=-1.0: --weight_decay must be a finite number "
                                              ">= 0"),
    "checkpoint_every_zero": (dict(checkpoint_every=0), "setting checkpoint_every=0: --checkpoint_every must be a "
                                                        "positive integer, at most 2147483647"),
    "no_cpu_devices": (dict(num_cpu_devices=0), "setting num_cpu_devices=0: --num_cpu_devices must be a positive "
                                                "integer, at most 16"),
    "too_many_cpu_devices": (dict(num_cpu_devices=256), "setting num_cpu_devices=256: --num_cpu_devices must be a "
                                                        "positive integer, at most 16"),
    "unknown_tta": (dict(test_time_augmentation="bogus"), "setting test_time_augmentation='bogus': "
                                                          "--test_time_augmentation must be one of none, flip, "
                                                          "flip_translate"),
    "batch_zero": (dict(batch_size=0), "setting batch_size=0: --batch_size must be a positive integer, at most "
                                       "1048576"),
    "steps_per_loop_zero": (dict(steps_per_loop=0), "setting steps_per_loop=0: --steps_per_loop must be a positive "
                                                    "integer, at most 2147483647"),
    "negative_seed": (dict(seed=-1), "setting seed=-1: --seed must be a non-negative integer, at most 4294967295"),
    "batch_as_text": (dict(batch_size="128"), "setting batch_size='128': --batch_size must be an integer"),
    "bool_as_number": (dict(augment=1), "setting augment=1: --augment must be true or false"),
    "rate_as_bool": (dict(learning_rate=True), "setting learning_rate=True: --learning_rate must be a number"),
    "profile_as_text": (dict(profile_steps=("1", "2")), "setting profile_steps=('1', '2'): --profile_steps must "
                                                        "hold only integers"),
    "two_eval_intervals": (dict(eval_every=5, eval_every_epochs=1), "settings eval_every=5, eval_every_epochs=1.0: "
                                                                    "give either --eval_every or "
                                                                    "--eval_every_epochs, not both"),
    "arch_too_big": (dict(arch="c8k29v"), "settings arch='c8k29v', dataset='mnist': --arch architecture token "
                                          "'c8k29v': kernel size 29 does not fit its input of shape (28, 28, 1) "
                                          "(H, W, C) with valid padding"),
    # Before: an empty --arch (an unset shell variable, say) trained a linear classifier without a word.
    "arch_empty": (dict(arch=""), "settings arch='', dataset='mnist': --arch is empty: name a preset or an "
                                  "architecture string (a linear classifier is --arch=linear)"),
    "profile_past_the_end": (dict(train_steps=5, profile_steps=(3, 9)),
                             "settings profile_steps=(3, 9), train_steps=5: --profile_steps ends after the run's "
                             "last step 5"),
    "custom_loop_settings_under_fit": (
        dict(loop="fit", test_time_augmentation="flip", bn_bias_lr_scale=64),
        "settings loop='fit', test_time_augmentation='flip', bn_bias_lr_scale=64.0, lookahead_every=0, "
        "whitening_bias_epochs=0.0, max_seconds_per_loop=10.0: --test_time_augmentation, --bn_bias_lr_scale, "
        "--lookahead_every, --whitening_bias_epochs and --max_seconds_per_loop act in the custom loop only; use "
        "--loop=custom"),
    # A newline cut the rerun from flags.txt in two: "unexpected arguments x".
    "logdir_with_newline": (dict(logdir="runs/a\nx"), "setting logdir='runs/a\\nx': --logdir must not hold control "
                                                      "characters (a newline, a tab): flags.txt, which reruns the run, "
                                                      "holds one flag a line"),
    "no_bias_to_freeze": (dict(arch="w2g-B8-gmp", dataset="cifar10", whitening_bias_epochs=3),
                          "settings arch='w2g-B8-gmp', whitening_bias_epochs=3.0: --whitening_bias_epochs freezes "
                          "the bias of a whitening layer, which --arch does not have; start it with w{size}t "
                          "(e.g. w2tg)"),
}


@pytest.mark.parametrize("name", REFUSED)
def test_a_config_built_in_code_refuses_a_bad_setting_in_one_line(name):
    settings, message = REFUSED[name]
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        TrainConfig(**settings)


def test_replace_checks_too():
    with pytest.raises(ConfigError, match=re.escape("--learning_rate must be a finite number > 0")):
        dataclasses.replace(TrainConfig(), learning_rate=float("nan"))


def test_a_config_is_normalised_to_the_types_config_json_holds():
    config = TrainConfig(epochs=6, learning_rate=1, piecewise_boundaries=[0.25, 0.5])
    assert (config.epochs, config.learning_rate) == (6.0, 1.0)
    assert isinstance(config.epochs, float) and isinstance(config.learning_rate, float)
    assert config.piecewise_boundaries == (0.25, 0.5)


def test_a_damaged_saved_config_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=re.escape("setting batch_size='64': --batch_size must be an integer")):
        config_lib.from_json({**config_lib.as_json(TrainConfig()), "batch_size": "64"})


def test_the_data_folder_is_checked_at_the_start_not_when_a_saved_config_is_read(tmp_path):
    config = TrainConfig(data_dir=str(tmp_path / "gone"))  # readable: a run saved on another machine
    with pytest.raises(ConfigError, match=re.escape(f"setting data_dir='{tmp_path / 'gone'}': --data_dir must be an "
                                                    "existing directory")):
        config.check_on_disk()
    TrainConfig(data_dir=str(tmp_path)).check_on_disk()


def test_an_invalid_sweep_grid_point_is_refused_before_any_run_is_built(tmp_path):
    grid = grids.Grid("bad", "a grid with one bad point", (("ok", dict(arch="d8")),
                                                           ("fit_reference", dict(impl="reference", loop="fit"))))
    with pytest.raises(ConfigError, match=re.escape("--loop=fit trains Keras models only")):
        runner.sweep_runs(grid, "mnist", seeds=1, logdir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # nothing was created, let alone trained


def test_every_rule_is_registered_on_the_flags_it_names():
    # A rule registered on flags other than the ones it reads would see a KeyError, not a refusal.
    names = {field.name for field in config_lib.fields()}
    for rule in config_lib.RULES:
        assert set(rule.names) <= names, rule
        values = {field.name: field.default for field in config_lib.fields()}
        assert rule.problem({name: values[name] for name in rule.names}) is None, rule


def test_a_recipe_reads_into_the_config_its_command_would_train():
    from flags import train_flags

    config = train_flags.recipe_config(REPO_ROOT / "flags" / "cifar10_speed.cfg", "--batch_size=512")
    assert (config.arch, config.batch_size, config.precision, config.lookahead_every) == ("airbench94", 512, "auto", 5)
    with pytest.raises(ConfigError, match=re.escape("cifar10_speed.cfg: flag --batch_size=0: --batch_size must be "
                                                    "a positive integer")):
        train_flags.recipe_config(REPO_ROOT / "flags" / "cifar10_speed.cfg", "--batch_size=0")


def test_adam_takes_its_betas_from_the_config():
    from training import parts

    config = TrainConfig(adam_beta_1=0.7, adam_beta_2=0.9)
    optimizer = parts.make_optimizer(config, total_steps=10, variables=[])
    assert (optimizer.beta_1, optimizer.beta_2) == (0.7, 0.9)
