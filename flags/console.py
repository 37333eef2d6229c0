"""A quiet console for an entry point: TensorFlow's harmless start-up notices are dropped, all else passes, and
this project's lines carry a short prefix (``15:04:05 ``) instead of absl's 52 characters.

TensorFlow's C++ code writes its notices straight to file descriptor 2 as its libraries load, some of them
before absl::InitializeLog and whatever TF_CPP_MIN_LOG_LEVEL says, so no logging setting reaches them. Here
descriptor 2 goes through a pipe to a small child process that drops the lines in ``HARMLESS`` and passes every
other byte on unchanged: errors, tracebacks and anything not listed get through. A child process rather than a
thread, so that lines written just before a crash (an F-level check failure aborts the process) still get
through: the child reads the pipe to its end after the job is gone.
"""

import atexit
import logging
import os
import re
import select
import signal
import sys
import threading
import time

from absl import flags as absl_flags
from absl import logging as absl_logging

from training.run_files import DISK_FAULTS

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# An absl C++ log line's prefix: severity and date, time, thread id, then "file.cc:line] ".
_CPP = rb"[IWEF]\d{4} \S+ +\d+ "

# (name, pattern of a whole line, name of a line that must have come first or None). Each line is harmless:
# it reports the machine or the library, not a problem with the job.
HARMLESS = (
    # absl's C++ notice that logging is not initialised; TensorFlow never initialises it, so this comes with the
    # first C++ log line of every process (once per library that bundles absl).
    ("absl_not_initialised",
     re.compile(rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"),
     None),
    # No CUDA driver on this machine, so the job runs on the CPU: what a machine without a GPU does anyway.
    ("no_cuda_driver",
     re.compile(_CPP + rb"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, GPU will not be used\."),
     None),
    # TensorFlow's attempt to initialise CUDA anyway, which cannot succeed without a driver. Dropped only after
    # the line above: on a machine with a driver, a failing cuInit is a real error and shows.
    ("cuinit_without_driver", re.compile(_CPP + rb"cuda_platform\.cc:\d+\] failed call to cuInit: .*"),
     "no_cuda_driver"),
    # The CPU has instructions (AVX2, FMA, ...) that TensorFlow's generic kernels do not use; its tuned kernels
    # (oneDNN, Eigen) do. Nothing to act on.
    ("cpu_features",
     re.compile(_CPP + rb"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized to use available CPU "
                       rb"instructions in performance-critical operations\."),
     None),
    # The second line of that notice.
    ("cpu_features_rebuild",
     re.compile(rb"To enable the following instructions: .*, in other operations, rebuild TensorFlow with the "
                rb"appropriate compiler flags\."),
     "cpu_features"),
    # On CPUs where TensorFlow turns its oneDNN kernels on by default (Intel's with AVX-512, for one), each of
    # its libraries says so as it loads: a fact about the machine, and the job's float results already depend on
    # the machine's kernels.
    ("onednn_on",
     re.compile(_CPP + rb"port\.cc:\d+\] oneDNN custom operations are on\. You may see slightly different "
                       rb"numerical results due to floating-point round-off errors from different computation "
                       rb"orders\. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`\."),
     None),
    # XLA (--jit_compile) compiles TensorFlow's own internal Assert ops away, once per compiled function.
    ("xla_ignores_assert", re.compile(_CPP + rb"assert_op\.cc:\d+\] Ignoring Assert operator \S+"), None),
    # One buffer is large next to free memory (5 such lines start the CIFAR speed recipe, batch 1,024).
    # Not a failure: when memory does run out, TensorFlow's ResourceExhausted error gets through.
    ("large_allocation",
     re.compile(_CPP + rb"cpu_allocator_impl\.cc:\d+\] Allocation of \d+ exceeds 10% of free system memory\."),
     None),
)

# The operating system's words for a write that failed for want of room or permission (run_files.DISK_FAULTS).
_DISK_WORDS = b"(?:" + b"|".join(re.escape(os.strerror(number).encode()) for number in DISK_FAULTS) + b")"
# What TensorFlow's C++ code logs when one of its writes fails so (a checkpoint's files, an events file): the
# error the job then stops with says it again, in one line naming the folder and what to do
# (RunDir.tensorflow_writes), so these lines are dropped as repeats. With --verbosity=1 they show.
REPEATED_BY_THE_ERROR = (
    ("failed_write", re.compile(_CPP + rb"op_kernel\.cc:\d+\] OP_REQUIRES failed at \S+ : [A-Z_]+: \S+; "
                                + _DISK_WORDS), None),
    ("rendezvous_aborts", re.compile(_CPP + rb"local_rendezvous\.cc:\d+\] Local rendezvous is aborting with "
                                     rb"status: [A-Z_]+: \S+; " + _DISK_WORDS), "failed_write"),
    # The second and third lines of each of those two for an events file.
    ("events_not_flushed", re.compile(rb"\tFailed to flush \d+ events to \S+"), "failed_write"),
    ("events_file_not_flushed", re.compile(rb"\tCould not flush events file\."), "failed_write"),
)

# A partial line (a prompt, a progress bar without its newline) is passed on after waiting this long for the rest.
PARTIAL_LINE_SECONDS = 0.5
# At exit, how long the job waits for the filter to pass on what is left in the pipe.
DRAIN_SECONDS = 5.0


def quiet(argv):
    """Unless ``argv`` sets absl's ``--verbosity`` to 1 or more: drops the ``HARMLESS`` and
    ``REPEATED_BY_THE_ERROR`` lines from descriptor 2, information logged through absl by code outside this
    project (TensorFlow's "Sharding callback duration" at every checkpoint, Keras' "Downloading data from ..."),
    and prefixes each line with its time only (``ShortFormatter``). Call it before TensorFlow is imported."""
    if requested_verbosity(argv) >= 1:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # the C++ INFO lines that do honour it (oneDNN notices)
    handler = absl_logging.get_absl_handler()
    handler.addFilter(only_ours_below_warning)
    handler.setFormatter(ShortFormatter())
    filter_stderr(LineFilter().keep)


class ShortFormatter(logging.Formatter):
    """``15:04:05 message``, and ``15:04:05 warning: message`` from warnings up: the time is what a person
    reading a run's progress needs; absl's date, microseconds, thread id, file and line (``--verbosity=1``) are
    for debugging."""

    def format(self, record):
        prefix = time.strftime("%H:%M:%S ", time.localtime(record.created))
        if record.levelno >= logging.WARNING:
            prefix += f"{record.levelname.lower()}: "
        return prefix + super().format(record)


def requested_verbosity(argv):
    """absl's ``--verbosity`` (``-v``) as ``argv`` and its flagfiles give it, read before the program's flags are
    defined; 0 when absent or malformed (the real parse reports a malformed value)."""
    peek = absl_flags.FlagValues()
    absl_flags.DEFINE_integer("verbosity", 0, "absl's logging verbosity", short_name="v", flag_values=peek)
    try:
        peek(list(argv), known_only=True)
    except (absl_flags.Error, UnicodeDecodeError):  # a flagfile that is not text: the real parse says so
        return 0
    return peek.verbosity


def only_ours_below_warning(record):
    """Keeps warnings and errors from anywhere, and information from this project's code only."""
    path = os.path.abspath(record.pathname)
    ours = path.startswith(PROJECT_ROOT + os.sep) and f"{os.sep}site-packages{os.sep}" not in path
    return record.levelno >= logging.WARNING or ours


class LineFilter:
    """``keep(line)`` says whether a line (bytes, without its newline) reaches the console."""

    def __init__(self, harmless=HARMLESS + REPEATED_BY_THE_ERROR):
        self.harmless, self.seen = harmless, set()

    def keep(self, line):
        for name, pattern, after in self.harmless:
            if (after is None or after in self.seen) and pattern.fullmatch(line):
                self.seen.add(name)
                return False
        return True


def filter_stderr(keep):
    """Routes descriptor 2 of this process (and of the processes it starts) through a child process that passes on
    the lines ``keep`` accepts; at exit, the job waits for the child to pass on the rest."""
    # fork copies only the calling thread: a lock held by another thread would stay locked in the child.
    if not hasattr(os, "fork") or threading.active_count() > 1:
        return
    try:
        console = os.dup(2)  # put back on descriptor 2 at exit
    except OSError:  # no descriptor 2 (started with 2>&-): nothing to filter
        return
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(console)
        _run_filter(read_end, write_end, keep)
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    atexit.register(_stop_filter, pid, console)


def _run_filter(read_end, write_end, keep):
    """The child process: forwards from ``read_end`` to descriptor 2 until every writer has closed the pipe."""
    try:
        # Ctrl-C and a signal to the whole process group reach the filter too; it keeps forwarding, so that the
        # job's reply to the signal is shown, and ends with the job.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.close(write_end)
        # Whoever reads the job's stdout sees its end when the job ends, not when the filter does. (closerange
        # ignores a descriptor that is already closed: an error here would end the filter and lose stderr.)
        os.closerange(0, 2)
        forward(read_end, 2, keep)
    finally:
        os._exit(0)


def forward(source, sink, keep):
    """Copies ``source`` to ``sink`` line by line, dropping the lines ``keep`` refuses, until end of file."""
    pending = b""
    while True:
        if pending and not select.select([source], [], [], PARTIAL_LINE_SECONDS)[0]:
            _write(sink, pending)
            pending = b""
        chunk = os.read(source, 1 << 16)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        _write(sink, b"".join(line + b"\n" for line in lines if keep(line)))
    _write(sink, pending)


def _write(fd, data):
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:  # the console is gone (a closed terminal, a reader that quit): keep emptying the pipe
        pass


def _stop_filter(pid, console):
    """At exit: puts the console back on descriptor 2, which closes this process's end of the pipe, then waits
    for the filter to pass on what the pipe still holds (a process this one started may hold the pipe open
    longer; the wait is bounded)."""
    sys.stderr.flush()
    os.dup2(console, 2)
    os.close(console)
    deadline = time.monotonic() + DRAIN_SECONDS
    try:
        while not os.waitpid(pid, os.WNOHANG)[0] and time.monotonic() < deadline:
            time.sleep(0.01)
    except ChildProcessError:
        pass
