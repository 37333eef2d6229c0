"""The error a run stops with: one line that says why, shown to the user without a traceback."""


class RunError(RuntimeError):
    """A run that cannot start or go on (an occupied run directory, a diverged loss); the message says why."""
