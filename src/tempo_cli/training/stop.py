"""SIGINT/SIGTERM during training: finish the current step, save, then stop (exit 130).

The first signal only sets a flag that the loop polls between steps, so the saved
checkpoint is always a consistent state. A second SIGINT raises KeyboardInterrupt at once
(the user insists; the last saved checkpoint stays valid).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

#: What `signal.getsignal` returns and `signal.signal` takes (typeshed's `_HANDLER`).
Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class StopRequest:
    """Context manager that turns SIGINT/SIGTERM into a `requested` flag.

    Outside the main thread (where Python cannot install handlers) it does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, Handler] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class InterruptSeen:
    """Context manager that remembers a SIGINT (`.seen`) and then lets the handler that was
    installed before it act as usual (Python's default raises KeyboardInterrupt at once).

    For a sequence of jobs (`tempo study`): a job that swallows the KeyboardInterrupt
    somewhere inside (library code with a bare `except`, a finaliser) would otherwise let
    the sequence run on; checking `.seen` between jobs stops it there. A job that installs
    its own `StopRequest` takes the signal over while it runs, as before.
    """

    def __init__(self) -> None:
        self.seen = False
        self._previous: Handler = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.seen = True
        if callable(self._previous):
            self._previous(signum, frame)

    def __enter__(self) -> InterruptSeen:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
