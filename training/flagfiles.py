"""The flagfiles a command line names, nested ones included, read as absl reads them but checked first.

absl opens a ``--flagfile`` blindly: a named pipe blocks it for ever, ``/dev/zero`` fills the memory. A run's
``flags.txt`` is what the README reruns a run from, so such a file planted there must be refused in one line
before absl (or the console's verbosity peek) reads it. Seeds and races also pin what a recipe trains by its
flags with the nested flagfiles' expanded (``resolved_flags``): a changed base flagfile is another recipe.
"""

import errno
import os

from training import run_files

# The largest flagfile read: the project's are under 4 KiB; a run's flags.txt lists every flag, about 8 KiB.
MAX_FLAGFILE_BYTES = 2**20
_FLAGFILE = ("--flagfile", "-flagfile")


def _flagfile_value(argument):
    """The path of a ``--flagfile=<path>`` argument or line, ``~`` expanded as absl expands it, else None."""
    name, equals, value = argument.strip().partition("=")
    return os.path.expanduser(value) if equals and name in _FLAGFILE else None


def named(argv):
    """The flagfile paths ``argv`` names, as ``--flagfile=<path>`` or ``--flagfile <path>``."""
    paths = []
    for index, argument in enumerate(argv):
        if argument in _FLAGFILE and index + 1 < len(argv):
            paths.append(os.path.expanduser(argv[index + 1]))
        elif (value := _flagfile_value(argument)) is not None:
            paths.append(value)
    return paths


def read(path):
    """The text of the flagfile ``path``: ``run_files.read_small_file``'s ``OSError``s; undecodable bytes are
    replaced (the parse that follows says which byte is not UTF-8)."""
    return run_files.read_small_file(path, MAX_FLAGFILE_BYTES, "any flagfile").decode("utf-8", "replace")


def flag_lines(text):
    """The flag lines of a flagfile's ``text``, without its comments (``#`` or ``//``, as absl reads them) and
    blank lines: what a recipe trains."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith(("#", "//"))]


def problem(argv):
    """One line saying why a flagfile ``argv`` names, or one those name in turn, cannot be read as flags (a
    named pipe, a device, a directory, too large, unreadable); None when each can. A missing file is left to
    absl's own error."""
    pending, seen = named(argv), set()
    while pending:
        path = pending.pop()
        if os.path.abspath(path) in seen or not os.path.lexists(path):
            continue
        seen.add(os.path.abspath(path))
        try:
            text = read(path)
        except OSError as error:
            what = f"is {error.strerror}" if error.errno in (errno.EINVAL, errno.EFBIG) else \
                f"cannot be read ({error.strerror})"
            return f"--flagfile {path} {what}"
        pending += [value for line in flag_lines(text) if (value := _flagfile_value(line)) is not None]
    return None


def resolved_flags(path, _including=()):
    """``flag_lines`` of the flagfile ``path`` with each nested ``--flagfile=`` line replaced by that file's
    lines, in place, as absl reads them (a nested path relative to the working directory). ``OSError`` when one
    cannot be read; ``ValueError`` when one includes itself."""
    if os.path.abspath(path) in _including:
        raise ValueError(f"{path} includes itself through --flagfile")
    lines = []
    for line in flag_lines(read(path)):
        nested = _flagfile_value(line)
        lines += [line] if nested is None else resolved_flags(nested, (*_including, os.path.abspath(path)))
    return lines
