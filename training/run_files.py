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
import stat
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
    return read_json(path)


# Bytes of JSON this code reads from one file at most: a run's files are kilobytes (config.json grows ~300 bytes a
# start, the numerics cache ~300 an entry), so a larger one is no file this code wrote.
MAX_JSON_BYTES = 64 * 2**20
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def read_small_file(path, limit, written_by="any JSON file this code writes"):
    """The bytes of the file ``path``. ``OSError`` when it cannot be read, is no regular file (a named pipe would
    block the reader for ever, ``/dev/zero`` fill the memory: both were planted as run files, the numerics cache
    and flagfiles) or is larger than ``limit`` bytes, the most that ``written_by`` holds.

    The file is opened without blocking (a named pipe swapped in after a check) and checked on the descriptor.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            kind = next((kind for is_kind, kind in _KINDS if is_kind(status.st_mode)), "a special file")
            raise OSError(errno.EINVAL, f"{kind}, not a regular file", path)
        if status.st_size > limit:
            raise OSError(errno.EFBIG, f"{status.st_size:,} bytes, more than the {limit:,} of {written_by}", path)
        file = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    with file:
        return file.read(limit + 1)


def read_json(path):
    """The JSON value in the file ``path``: ``read_small_file``'s ``OSError``s, at most ``MAX_JSON_BYTES``;
    ``ValueError`` when it is not JSON."""
    text = read_small_file(path, MAX_JSON_BYTES)
    try:
        return json.loads(text)
    except RecursionError:  # "[[[[..." a hundred thousand deep: not JSON any command here wrote
        raise ValueError("JSON nested too deeply") from None


# What a refused link's line says to do, for a run's own file.
RUN_LINK_REMEDY = "a run writes only its own files: remove the link, or choose a new --logdir"


def write_atomically(path, text, link_remedy=RUN_LINK_REMEDY):
    """Replaces the file ``path`` by ``text`` (a str, or bytes such as a PNG's): a reader, or a start after a
    crash, sees the old file or the new, never half of one, and a failed write leaves the old file as it was.

    Nothing is written through a symbolic link planted in the folder: the temporary file gets a fresh name
    (``mkstemp`` opens with O_CREAT | O_EXCL, which never follows a link), and the rename replaces the name
    ``path`` itself. ``path`` being a link is refused (``link_remedy`` says what to do), so a run never swaps
    someone's link for its own file.
    A failing write (full disk, read-only filesystem, no permission) stops with one line naming the file.
    """
    folder, name = os.path.split(path)
    refuse_symlinks(folder, [name], link_remedy)
    temporary = None
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=TEMPORARY_SUFFIX, dir=folder or ".")
        os.fchmod(descriptor, new_file_mode())  # mkstemp's 0o600 would hide the run from the group's readers
        with os.fdopen(descriptor, "wb" if isinstance(text, bytes) else "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())  # a full disk shows here on filesystems that allocate late, before the rename
        os.replace(temporary, path)
    except OSError as error:
        if temporary is not None and os.path.lexists(temporary):
            os.remove(temporary)
        raise RunFileError(cannot_write(path, error)) from None


def make_folder(folder, otherwise):
    """Makes ``folder`` (and its parents) if need be; one ``RunFileError`` when it cannot be made (a file in the
    way, a read-only or full parent: the folder that refused is named), saying what to do or ``otherwise``."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        refused = os.path.dirname(error.filename) if isinstance(error.filename, str) else folder
        raise RunFileError(f"cannot make {folder} ({error.strerror}): {remedy(refused or '.', error)}, or "
                           f"{otherwise}") from None


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


def failed_write(error):
    """The ``OSError`` behind ``error`` when ``error`` is a write failed for want of room or permission (one of
    ``DISK_FAULTS``): the error itself, or what a TensorFlow error's message reports (``disk_fault``); else None."""
    if isinstance(error, OSError):
        return error if error.errno in DISK_FAULTS else None
    message = getattr(error, "message", None)
    return disk_fault(message) if isinstance(message, str) else None


@contextlib.contextmanager
def failed_writes_stop(folder_of, then):
    """Turns a write that fails in the block for want of room or permission (``failed_write``: this code's, or
    TensorFlow's or Keras' own) into one ``RunFileError``: ``cannot write <folder> (<why>): <remedy>, then
    <then()>``, ``folder_of(path of the failed file, or None)`` naming the folder. Any other error passes."""
    try:
        yield
    except Exception as error:  # noqa: BLE001  (TensorFlow's errors and Python's OSError alike)
        fault = failed_write(error)
        if fault is None:
            raise
        folder = folder_of(fault.filename if isinstance(fault.filename, str) else None)
        raise RunFileError(f"cannot write {folder} ({fault.strerror}): {remedy(folder, fault)}, then {then()}") \
            from None


def disk_fault(message):
    """The ``OSError`` (errno, words, path) that a TensorFlow error ``message`` reports, or None when it reports no
    failed write of a file (an out-of-memory error is also TensorFlow's ``ResourceExhaustedError``)."""
    for number in DISK_FAULTS:
        match = re.search(rf"(\S+); {re.escape(os.strerror(number))}", message)
        if match:
            return OSError(number, os.strerror(number), match[1])
    return None


def refuse_symlinks(folder, names=RUN_FILES, remedy=RUN_LINK_REMEDY):
    """Stops with one line (ending with ``remedy``) when one of ``names`` in ``folder`` is a symbolic link:
    writing it (or into it) would change a file outside the run directory."""
    for name in names:
        path = os.path.join(folder, name)
        if os.path.islink(path):
            raise RunFileError(f"{path} is a symbolic link (to {os.readlink(path)}); {remedy}")


def write_leftovers(folder, names=RUN_FILES):
    """The temporary files of ``names`` that ``write_atomically`` left in ``folder`` when its process was killed
    mid-write."""
    return [found for found in os.listdir(folder) if found.endswith(TEMPORARY_SUFFIX)
            and any(found.startswith(f".{name}.") for name in names)]


def _read_config_json(run_path):
    path = os.path.join(run_path, CONFIG)
    try:
        saved = read_json(path)
    except OSError as error:
        raise RunError(f"{path}: cannot be read ({error.strerror})") from None
    except ValueError as error:
        raise RunError(f"{path}: not valid JSON ({error}); move it away or choose a new --logdir") from None
    if not isinstance(saved, dict):
        raise RunError(f"{path}: holds no run configuration; move it away or choose a new --logdir")
    return saved
