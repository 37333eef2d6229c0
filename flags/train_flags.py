"""Flags of ``python -m training.train``, generated from the ``TrainConfig`` field declarations, and the
``TrainConfig`` they make. Only entry points import this module; everything below them takes a ``TrainConfig``.
"""

from absl import flags as absl_flags

from flags import cli
from training import config as config_lib
from training import dataset_info
from training.config import TrainConfig

_DEFINE = {str: absl_flags.DEFINE_string, bool: absl_flags.DEFINE_bool, int: absl_flags.DEFINE_integer,
           float: absl_flags.DEFINE_float}


def flag_name(field):
    return field.metadata["flag"] or field.name


_FIELDS = {field.name: field for field in config_lib.fields()}  # rules name fields, whose flags share the names


def define_flags(flag_values=absl_flags.FLAGS):
    """Defines one flag per ``TrainConfig`` field on ``flag_values`` (once per process). A flag is checked by
    its field's own check (``config.field_problem``), and the flags of each rule between settings by that rule
    (``config.RULES``): the code a ``TrainConfig`` built anywhere else runs.

    A flag's default is the field's, or the main job's where ``config.MAIN_JOB`` names the field.
    """
    for field in config_lib.fields():
        meta, name = field.metadata, flag_name(field)
        default = config_lib.MAIN_JOB.get(field.name, field.default)
        if meta["choices"]:
            absl_flags.DEFINE_enum(name, default, list(meta["choices"]), meta["help"], flag_values=flag_values)
        elif field.type is tuple:
            absl_flags.DEFINE_list(name, [str(v) for v in default], meta["help"], flag_values=flag_values)
        else:
            _DEFINE[field.type](name, default, meta["help"], flag_values=flag_values)
        absl_flags.register_validator(name, _field_check(field), message="", flag_values=flag_values)
    for rule in config_lib.RULES:
        absl_flags.register_multi_flags_validator(list(rule.names), _rule_check(rule), message="",
                                                  flag_values=flag_values)
    # The machine's memory, which a config built elsewhere may not be trained on.
    cli.register_arch_validator(flag_values=flag_values, describe=lambda values: _dataset_info(flag_values))

    @absl_flags.multi_flags_validator(["train_steps", "epochs"], flag_values=flag_values,
                                      message="give either --train_steps or --epochs, not both")
    def _one_budget(values):
        del values  # Whether a flag was given matters here, not its value: a config always has both fields.
        return not (flag_values["train_steps"].present and flag_values["epochs"].present)


def _field_check(field):
    def check(raw):
        try:
            value = config_lib.normalised(field, _value(field, raw))
        except (ValueError, OverflowError):  # a list item that is not a number: what the check asks for
            raise absl_flags.ValidationError(f"--{flag_name(field)} {field.metadata['check'][1]}") from None
        problem = config_lib.field_problem(field, value, on_disk=field.metadata["on_disk"])
        if problem:
            raise absl_flags.ValidationError(problem)
        return True
    return check


def _rule_check(rule):
    def check(values):
        try:
            values = {name: _normalised_flag(name, value) for name, value in values.items()}
        except (ValueError, OverflowError):
            return True  # the flag's own check reports it
        problem = rule.problem(values)
        if problem:
            raise absl_flags.ValidationError(problem)
        return True
    return check


def _normalised_flag(name, raw):
    field = _FIELDS[name]
    return config_lib.normalised(field, _value(field, raw))


def _dataset_info(flag_values):
    """The ``DatasetInfo`` of the dataset the parsed training flags name (a folder's is read from disk)."""
    return dataset_info.describe_settings({name: _normalised_flag(name, flag_values[name].value)
                                           for name in dataset_info.DATASET_SETTINGS})


def _value(field, raw):
    if field.type is tuple:
        return tuple(field.metadata["item"](item) for item in raw)
    return raw


def config_from_flags(values):
    """The ``TrainConfig`` described by parsed flag ``values`` (``absl.flags.FLAGS``)."""
    fields = {}
    for field in config_lib.fields():
        fields[field.name] = _value(field, values[flag_name(field)].value)
    if not values["train_steps"].present:
        fields["train_steps"] = 0  # the budget is --epochs
    return TrainConfig(**fields)


def recipe_config(flagfile, *overrides):
    """The ``TrainConfig`` that ``python -m training.train --flagfile=<flagfile> <overrides>`` would train, parsed
    and checked by the training flags themselves (in flag values of its own, so any command can read a recipe).
    Raises ``config.ConfigError`` with the parser's one line."""
    values = absl_flags.FlagValues()
    define_flags(values)
    try:
        values(["recipe", f"--flagfile={flagfile}", *overrides])
    except absl_flags.Error as error:
        raise config_lib.ConfigError(f"recipe {flagfile}: {error}") from None
    return config_from_flags(values)


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

