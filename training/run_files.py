"""A run directory's file names, reading its JSON files, whether a folder is a run, and the one safe way to write
a run file, without TensorFlow: commands that only start runs and read what they left (``experiments.seeds``,
``experiments.race``) then never import it, which spares each such command TensorFlow's start-up and, for the
hours it waits, the ~600 MiB TensorFlow holds (WORKSPACE.md section 14). ``training/rundir.py`` owns everything
else a run directory is: its lock, its writing, its checkpoints.
"""

import contextlib
import errno
import json
import os
import re
import tempfile

from training.errors import RunError

CONFIG, RESULTS, FLAGFILE, CHECKPOINTS, LOCK = "config.json", "results.json", "flags.txt", "checkpoints", ".lock"
CLOCK = "clock.json"
PREPROCESSING = "preprocessing.json"  # a standardised run's per-channel mean and std, as it trained with them
SUMMARIES = ("train", "eval")
# Every name a run writes at its top level: none of them may be a symbolic link (see refuse_symlinks).
RUN_FILES = (CONFIG, RESULTS, FLAGFILE, CLOCK, PREPROCESSING, LOCK, CHECKPOINTS, *SUMMARIES)

# config.json's "format": the mark that a folder is a run directory of training.train. A folder is recognised by
# this mark, never by the names of the files in it, so a folder of someone's notes is not taken for a run.
RUN_FORMAT = "cnn-lab run 1"
# The shapes of config.json written before the mark, by runs that must still resume (sweeps/runs/ holds 300 of
# them): {"config", "history"} (2026-11-27), then with "network" (2026-11-28).
_OLDER_RUN_KEYS = ({"config", "history"}, {"config", "network", "history"})

TEMPORARY_SUFFIX = ".tmp"  # write_atomically's temporary files are ``.<name>.<random>.tmp`` beside ``<name>``


class RunFileError(RunError):
    """A run file that cannot be written (full disk, read-only or forbidden folder) or is a symbolic link."""


def read_saved(run_path):
    """config.json as ``{"config": {...}, "history": [...]}`` (a run of older code held the config alone). A
    file that carries the run mark but not those two, each of its type, stops with one line naming it."""
    saved = _read_config_json(run_path)
    if saved.get("format") != RUN_FORMAT and "config" not in saved:
        return {"config": saved, "history": []}
    path = os.path.join(run_path, CONFIG)
    if not isinstance(saved.get("config"), dict):
        raise RunError(f"{path}: its config is a JSON {type(saved.get('config')).__name__}, not an object; move the "
                       "run directory away")
    history = saved.get("history")
    if not (isinstance(history, list) and all(isinstance(start, dict) for start in history)):
        raise RunError(f"{path}: its history is not a list of starts; move the run directory away")
    return saved


def is_run(run_path):
    """Whether ``run_path`` holds a config.json that training.train wrote: the mark, or the exact shape of an
    older run's. A config.json that is not JSON, or JSON but no object, stops with one line, as ``read_saved``."""
    if not os.path.isfile(os.path.join(run_path, CONFIG)):
        return False
    saved = _read_config_json(run_path)  # as written: read_saved takes a bare object for an older run's config
    if saved.get("format") == RUN_FORMAT:
        return True
    return (set(saved) in _OLDER_RUN_KEYS and isinstance(saved["config"], dict)
            and isinstance(saved["history"], list))


def read_results(run_path):
    """results.json of a finished run, or None while there is none."""
    path = os.path.join(run_path, RESULTS)
    if not os.path.exists(path):
        return None
    with open(path) as file:
        return json.load(file)


def write_atomically(path, text):
    """Replaces the file ``path`` by ``text``: a reader, or a start after a crash, sees the old file or the new,
    never half of one, and a failed write leaves the old file as it was.

    Nothing is written through a symbolic link planted in the folder: the temporary file gets a fresh name
    (``mkstemp`` opens with O_CREAT | O_EXCL, which never follows a link), and the rename replaces the name
    ``path`` itself. ``path`` being a link is refused, so a run never swaps someone's link for its own file.
    A failing write (full disk, read-only filesystem, no permission) stops with one line naming the file.
    """
    folder, name = os.path.split(path)
    refuse_symlinks(folder, [name])
    temporary = None
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=TEMPORARY_SUFFIX, dir=folder or ".")
        os.fchmod(descriptor, new_file_mode())  # mkstemp's 0o600 would hide the run from the group's readers
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())  # a full disk shows here on filesystems that allocate late, before the rename
        os.replace(temporary, path)
    except OSError as error:
        if temporary is not None and os.path.lexists(temporary):
            os.remove(temporary)
        raise RunFileError(cannot_write(path, error)) from None


def new_file_mode():
    """The mode ``open(path, "w")`` gives a new file: 0o666 less the process's umask."""
    with contextlib.suppress(OSError, StopIteration, ValueError):  # Linux shows the umask without changing it
        with open("/proc/self/status") as status:
            return 0o666 & ~int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def cannot_write(path, error):
    """The one line of a failed write of ``path``: why, what to do, and that nothing was lost."""
    kept = f"the previous {os.path.basename(path)} is unchanged" if os.path.exists(path) else "nothing was written"
    return (f"cannot write {path} ({error.strerror or error}): {remedy(os.path.dirname(path) or '.', error)}, then "
            f"run the same command again to resume from the last checkpoint; {kept}")


def remedy(folder, error):
    """What to do about ``error`` (an ``OSError``) writing into ``folder``."""
    return {errno.ENOSPC: "free space on its disk", errno.EDQUOT: "free space within your disk quota",
            errno.EROFS: f"{folder} is on a read-only filesystem: remount it writable or copy the run elsewhere",
            errno.EACCES: f"make {folder} writable for this user", errno.EPERM: f"make {folder} writable for "
            f"this user"}.get(error.errno, "fix the cause")


# The failed writes that are the disk's or the folder's doing, not the program's: TensorFlow's file system reports
# them as ``<path>; <the operating system's words>`` (``.../ckpt-60_temp/part-...; No space left on device``).
DISK_FAULTS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO)


def disk_fault(message):
    """The ``OSError`` (errno, words, path) that a TensorFlow error ``message`` reports, or None when it reports no
    failed write of a file (an out-of-memory error is also TensorFlow's ``ResourceExhaustedError``)."""
    for number in DISK_FAULTS:
        match = re.search(rf"(\S+); {re.escape(os.strerror(number))}", message)
        if match:
            return OSError(number, os.strerror(number), match[1])
    return None


def refuse_symlinks(folder, names=RUN_FILES):
    """Stops with one line when one of ``names`` in ``folder`` is a symbolic link: writing it (or into it) would
    change a file outside the run directory."""
    for name in names:
        path = os.path.join(folder, name)
        if os.path.islink(path):
            raise RunFileError(f"{path} is a symbolic link (to {os.readlink(path)}); a run writes only its own "
                               f"files: remove the link, or choose a new --logdir")


def write_leftovers(folder, names=RUN_FILES):
    """The temporary files of ``names`` that ``write_atomically`` left in ``folder`` when its process was killed
    mid-write."""
    return [found for found in os.listdir(folder) if found.endswith(TEMPORARY_SUFFIX)
            and any(found.startswith(f".{name}.") for name in names)]


def _read_config_json(run_path):
    path = os.path.join(run_path, CONFIG)
    try:
        with open(path) as file:
            saved = json.load(file)
    except OSError as error:
        raise RunError(f"{path}: cannot be read ({error.strerror})") from None
    except ValueError as error:
        raise RunError(f"{path}: not valid JSON ({error}); move it away or choose a new --logdir") from None
    if not isinstance(saved, dict):
        raise RunError(f"{path}: holds no run configuration; move it away or choose a new --logdir")
    return saved
