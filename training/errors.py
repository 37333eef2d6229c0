"""The errors a command stops with: one line that says why, shown to the user without a traceback."""


class OneLineError(Exception):
    """An error whose message is the whole story for the user: entry points print it as one line and exit 1."""


class RunError(OneLineError, RuntimeError):
    """A run that cannot start or go on (an occupied run directory, a diverged loss); the message says why."""
