"""The first SIGINT or SIGTERM during training only asks the loop to stop; the second stops at once.

The loop's side (a checkpoint at the step reached, then the stop) is in tests/test_training.py. The signals here
go to this process, whose handlers ``stop_requests`` replaces for the block: Python runs them in the main thread.
"""

import re
import signal
import threading

import pytest

from training import stopping


@pytest.fixture(autouse=True)
def known_handlers():
    """Handlers of this test's own for both signals while it runs, whatever the process running the tests had (a
    pytest-xdist worker ignores SIGINT): a signal that reaches one of them got past ``stop_requests``."""
    assert threading.current_thread() is threading.main_thread(), "needs the main thread to receive the signals"

    def escaped(number, frame):
        raise AssertionError(f"{signal.Signals(number).name} reached the handler from before the block")

    before = {number: signal.signal(number, escaped) for number in (signal.SIGINT, signal.SIGTERM)}
    yield
    for number, handler in before.items():
        signal.signal(number, handler)


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_the_first_signal_asks_and_the_second_stops_at_once(number, capfd):
    before = signal.getsignal(number)
    with pytest.raises(KeyboardInterrupt):
        with stopping.stop_requests() as request:
            assert request.signal_name is None
            signal.raise_signal(number)
            assert request.signal_name == number.name  # noted, and the block goes on
            # Said at once (before: nothing until the chunk ended, over 11 minutes for a first call compiling).
            assert re.fullmatch(rf"\d\d:\d\d:\d\d {number.name}: stopping after the steps or evaluation under way, "
                                r"with a checkpoint; a second signal stops at once\n", capfd.readouterr().err)
            signal.raise_signal(number)
            pytest.fail("the second signal did not stop the block")
    assert signal.getsignal(number) is before


def test_disabled_it_leaves_the_handlers_alone():
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    with stopping.stop_requests(enabled=False) as request:
        assert {number: signal.getsignal(number) for number in before} == before
    assert request.signal_name is None


def test_an_ignored_signal_stays_ignored():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    term_before = signal.getsignal(signal.SIGTERM)
    with stopping.stop_requests() as request:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.raise_signal(signal.SIGINT)
        assert request.signal_name is None
        assert signal.getsignal(signal.SIGTERM) is not term_before  # SIGTERM is still asked for
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
