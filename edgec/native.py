"""Native code and signals: Ctrl-C or SIGTERM while a target's native library runs is held until it returns."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any

from .errors import Terminated


@contextlib.contextmanager
def native_section():
    """Ctrl-C (or SIGTERM) while a target's native library runs (TVM builds and runs through C++ callbacks into
    Python, where a KeyboardInterrupt aborts the process, is swallowed, or comes back as another error) is held
    until the library returns, then raised (KeyboardInterrupt, or :class:`edgec.errors.Terminated`); a second
    signal raises at once. Outside the main thread (no signal handlers there) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous: dict[int, Any] = {}

    def interrupt(signum: int) -> BaseException:
        return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def held(signum, frame):
        if pending:  # the second signal: the user insists
            for sig, h in previous.items():
                signal.signal(sig, h)
            raise interrupt(signum)
        pending.append(signum)
        print(
            "edgec: interrupt received; stopping when the target's native code returns (Ctrl-C again to force)",
            file=sys.stderr,
            flush=True,
        )

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, held)
    if previous[signal.SIGINT] is None:
        previous[signal.SIGINT] = signal.default_int_handler
    if previous[signal.SIGTERM] is None:
        previous[signal.SIGTERM] = signal.SIG_DFL
    try:
        yield
    except BaseException:
        if pending:
            raise interrupt(pending[0]) from None
        raise
    finally:
        for sig, h in previous.items():
            if signal.getsignal(sig) is held:
                signal.signal(sig, h)
    if pending:
        raise interrupt(pending[0])
