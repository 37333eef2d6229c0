"""What every entry point shares: parsing flags with a one-line error instead of a usage dump."""

import os
import sys

from absl import flags as absl_flags


def parse_or_exit(argv):
    """absl's flag parser for ``app.run``; a bad flag prints ``<program>: error: <why>`` and exits with 2."""
    try:
        return absl_flags.FLAGS(argv)
    except absl_flags.Error as error:
        print(f"{os.path.basename(argv[0])}: error: {error}", file=sys.stderr)
        sys.exit(2)


def fail(program, message, status=1):
    """Prints ``<program>: error: <message>`` on stderr and exits with ``status``."""
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(status)


def check(name, predicate, message):
    """Registers a parse-time check of flag ``name``; a failure reads ``--<name> <message>``."""
    absl_flags.register_validator(name, predicate, message=f"--{name} {message}")


def register_arch_validator(arch_flag="arch", dataset_flag="dataset"):
    """Refuses, at parse time, an architecture that is malformed or does not fit the dataset's images; the
    message names the token and the shapes (from ``models.architecture.plan``)."""
    from models import architecture
    from training.data import DATASETS

    @absl_flags.multi_flags_validator([arch_flag, dataset_flag], message="")
    def _arch_fits(values):
        info = DATASETS[values[dataset_flag]]
        try:
            architecture.plan(values[arch_flag], info.image_shape, info.num_classes)
        except ValueError as error:
            raise absl_flags.ValidationError(f"--{arch_flag} {error}") from None
        return True
