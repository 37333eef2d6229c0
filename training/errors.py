"""The errors a command stops with: one line that says why, shown to the user without a traceback."""

import re

QUOTED_LINE_LIMIT = 200  # characters of another library's message that a one-line error quotes
# What TensorFlow wraps an op's message in: ``{{function_node __wrapped__X_device_...}}`` before it, `` [Op:X]``
# (and a `` name: ...``) after it.
_TF_WRAPPING = re.compile(r"^\{\{.*?\}\}\s*|\s*\[Op:\w+\](\s*name:.*)?$")
# An error raised inside a tf.function: this first line, then where (lines starting so), then what happened.
_TF_GRAPH_ERROR, _TF_TRACEBACK_LINES = "Graph execution error:", ("Detected at node", "File ")


class OneLineError(Exception):
    """An error whose message is the whole story for the user: entry points print it as one line and exit 1."""


class RunError(OneLineError, RuntimeError):
    """A run that cannot start or go on (an occupied run directory, a diverged loss); the message says why."""


class DataDirError(OneLineError, ValueError):
    """A ``--data_dir`` that cannot be read as the dataset a run names, found before any pixel is decoded: a folder
    that is no folder of class folders, a TensorFlow Datasets dataset that is not prepared there. The message names
    the folder or file."""


def first_line(error):
    """The part of ``error``'s message that a one-line error quotes: its first line that says something, without
    TensorFlow's wrapping and graph traceback, white space folded, at most ``QUOTED_LINE_LIMIT`` characters;
    the error's class name when the message is empty.

    The message is TensorFlow's ``error.message`` where there is one (its ``str`` adds the node), else the first
    argument when it is text (a ``tokenize.TokenError``'s second is where it happened), else ``str(error)``.
    """
    message = getattr(error, "message", None)
    if not isinstance(message, str):
        message = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
    lines = [" ".join(_TF_WRAPPING.sub("", line.strip()).split()) for line in message.splitlines()]
    lines = [line for line in lines if line]
    if lines and lines[0] == _TF_GRAPH_ERROR:
        lines = [line for line in lines[1:] if not line.startswith(_TF_TRACEBACK_LINES)]
    return lines[0][:QUOTED_LINE_LIMIT] if lines else type(error).__name__
