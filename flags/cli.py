"""What every entry point shares: parsing flags with a one-line error instead of a usage dump."""

import os
import sys

from absl import flags


def parse_or_exit(argv):
    """absl's flag parser for ``app.run``; a bad flag prints ``<program>: error: <why>`` and exits with 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        print(f"{os.path.basename(argv[0])}: error: {error}", file=sys.stderr)
        sys.exit(2)


def fail(program, message, status=1):
    """Prints ``<program>: error: <message>`` on stderr and exits with ``status``."""
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(status)
