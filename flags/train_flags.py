"""Flags of ``python -m training.train``, generated from the ``TrainConfig`` field declarations, and the
``TrainConfig`` they make. Only entry points import this module; everything below them takes a ``TrainConfig``.
"""

from absl import flags as absl_flags

from flags import cli
from models import architecture
from training import config as config_lib
from training.config import TrainConfig

_DEFINE = {str: absl_flags.DEFINE_string, bool: absl_flags.DEFINE_bool, int: absl_flags.DEFINE_integer,
           float: absl_flags.DEFINE_float}


def flag_name(field):
    return field.metadata["flag"] or field.name


def define_flags():
    """Defines one flag per ``TrainConfig`` field on ``absl.flags.FLAGS`` (once per process), with its checks.

    A flag's default is the field's, or the main job's where ``config.MAIN_JOB`` names the field.
    """
    for field in config_lib.fields():
        meta, name = field.metadata, flag_name(field)
        default = config_lib.MAIN_JOB.get(field.name, field.default)
        if meta["choices"]:
            absl_flags.DEFINE_enum(name, default, list(meta["choices"]), meta["help"])
        elif field.type is tuple:
            absl_flags.DEFINE_list(name, [str(v) for v in default], meta["help"])
        else:
            _DEFINE[field.type](name, default, meta["help"])
        if meta["check"]:
            predicate, message = meta["check"]
            cli.check(name, _on_value(field, predicate), message)
    _register_cross_checks()


def _on_value(field, predicate):
    """The check of ``field`` applied to the flag's parsed value (a list flag's items converted first)."""
    def check(raw):
        try:
            return predicate(_value(field, raw))
        except (ValueError, OverflowError):
            return False
    return check


def _value(field, raw):
    if field.type is tuple:
        return tuple(field.metadata["item"](item) for item in raw)
    return raw


def _register_cross_checks():
    @absl_flags.multi_flags_validator(["train_steps", "epochs"],
                                      message="give either --train_steps or --epochs, not both")
    def _one_budget(values):
        del values  # Whether a flag was given matters here, not its value.
        return not (absl_flags.FLAGS["train_steps"].present and absl_flags.FLAGS["epochs"].present)

    @absl_flags.multi_flags_validator(["eval_every", "eval_every_epochs"],
                                      message="give either --eval_every or --eval_every_epochs, not both")
    def _one_eval_interval(values):
        return not (values["eval_every"] and values["eval_every_epochs"])

    @absl_flags.multi_flags_validator(["stop_at_target", "target_accuracy"],
                                      message="--stop_at_target needs a --target_accuracy above 0")
    def _stop_needs_target(values):
        return not values["stop_at_target"] or values["target_accuracy"] > 0

    cli.register_arch_validator()

    @absl_flags.multi_flags_validator(["impl", "loop"], message="--loop=fit trains Keras models only; use "
                                      "--impl=keras with --loop=fit, or --loop=custom with --impl=reference")
    def _fit_needs_keras(values):
        return not (values["impl"] == "reference" and values["loop"] == "fit")

    *others, last = [f"--{name}" for name in config_lib.CUSTOM_LOOP_ONLY]

    @absl_flags.multi_flags_validator(["loop", *config_lib.CUSTOM_LOOP_ONLY], message=f"{', '.join(others)} and "
                                      f"{last} act in the custom loop only; use --loop=custom")
    def _custom_loop_settings(values):
        return values["loop"] == "custom" or not config_lib.custom_loop_only_settings(values)

    @absl_flags.multi_flags_validator(["arch", "whitening_bias_epochs"], message="--whitening_bias_epochs freezes "
                                      "the bias of a whitening layer, which --arch does not have; start it with "
                                      "w{size}t (e.g. w2tg)")
    def _whitening_bias_to_freeze(values):
        return not values["whitening_bias_epochs"] or architecture.has_whitening_bias(values["arch"])

    @absl_flags.multi_flags_validator(["loop", "strategy"], message="--loop=fit runs on one machine; use "
                                      "--loop=custom with --strategy=multi_worker")
    def _fit_on_one_machine(values):
        return not (values["loop"] == "fit" and values["strategy"] == "multi_worker")

    @absl_flags.multi_flags_validator(["strategy", "num_cpu_devices", "batch_size", "eval_batch_size"],
                                      message="--batch_size and --eval_batch_size are global and must divide by "
                                      "--num_cpu_devices under --strategy=mirrored")
    def _batches_divide_over_cpus(values):
        if values["strategy"] != "mirrored":
            return True  # other counts of replicas are known only once devices are up; train() checks them
        return all(values[name] % values["num_cpu_devices"] == 0 for name in ("batch_size", "eval_batch_size"))


def config_from_flags(values):
    """The ``TrainConfig`` described by parsed flag ``values`` (``absl.flags.FLAGS``)."""
    fields = {}
    for field in config_lib.fields():
        fields[field.name] = _value(field, values[flag_name(field)].value)
    if not values["train_steps"].present:
        fields["train_steps"] = 0  # the budget is --epochs
    return TrainConfig(**fields)


def flagfile_text(values, config):
    """The training flags as a flagfile that reproduces the run (``--flagfile=<logdir>/flags.txt``).

    It names the run directory ``config`` resolved and only the step budget that was used.
    """
    unused_budget = "epochs" if config.train_steps else "train_steps"
    lines = []
    for flag in values.get_flags_for_module(__name__):
        if flag.name == "logdir":
            lines.append(f"--logdir={config.logdir}")
        elif flag.name != unused_budget:
            lines.append(flag.serialize())
    return "".join(f"{line}\n" for line in lines)

