"""A stop asked for while a run trains: the run ends at the end of its current chunk of steps, with a checkpoint.

Outside training, SIGINT and SIGTERM stop an entry point at once (``flags.cli.run``): what was trained since the
last checkpoint is lost. While a loop trains, ``stop_requests`` turns the first of them into a request instead;
the loop's bookkeeping finishes the steps it is running (and an evaluation under way), saves a checkpoint with
the run's clock, and then stops the way a signal stops every entry point (``KeyboardInterrupt``; here its subclass
``Stopped``, which says what was kept). A second signal
stops at once, for a run whose chunk or evaluation would take too long. A scheduler's SIGTERM followed by SIGKILL
after a grace period thus keeps the run's work when one chunk (``--max_seconds_per_loop``) fits in that period.
"""

import contextlib
import os
import signal
import threading
import time


class Stopped(KeyboardInterrupt):
    """A stop that a signal asked for, made: the message says at which step and what was kept."""


class StopRequest:
    """Which signal asked the run to stop (``signal_name``, e.g. "SIGTERM"), or None while none has."""

    def __init__(self):
        self.signal_name = None


@contextlib.contextmanager
def stop_requests(enabled=True):
    """Yields a ``StopRequest`` that SIGINT and SIGTERM fill in while the block runs (the second signal raises
    ``KeyboardInterrupt``); the earlier handlers come back after. Not ``enabled``, or outside the main thread
    (where Python sets no handlers), it changes nothing and no request is ever made. Signals ignored at start (a
    background job's SIGINT) stay ignored."""
    request = StopRequest()

    def ask(number, frame):
        del frame
        if request.signal_name is not None:
            raise KeyboardInterrupt
        # Only a note here: the loop logs and saves in its own time, not inside the handler.
        request.signal_name = signal.Signals(number).name
        acknowledge(f"{request.signal_name}: stopping after the steps or evaluation under way, with a checkpoint; "
                    f"a second signal stops at once")

    with handling_stop_signals(ask if enabled else None):
        yield request


def acknowledge(text):
    """Prints ``HH:MM:SS <text>`` on stderr at once, from a signal handler: the steps under way may take minutes (a
    first call compiling: 11 minutes with 256 logical CPU devices, silent until then). ``os.write``, not logging:
    the handler may have interrupted the main thread inside a logging call."""
    with contextlib.suppress(OSError):  # no stderr (closed, or a terminal gone): nothing to tell
        os.write(2, f"{time.strftime('%H:%M:%S')} {text}\n".encode())


@contextlib.contextmanager
def handling_stop_signals(handler):
    """Makes ``handler(number, frame)`` handle SIGINT and SIGTERM while the block runs, then puts the earlier
    handlers back. Signals ignored at start stay ignored; with ``handler`` None, or outside the main thread (where
    Python sets no handlers), nothing changes."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    previous = {number: earlier for number, earlier in previous.items() if earlier is not signal.SIG_IGN}
    for number in previous:
        signal.signal(number, handler)
    try:
        yield
    finally:
        for number, earlier in previous.items():
            signal.signal(number, signal.SIG_DFL if earlier is None else earlier)
