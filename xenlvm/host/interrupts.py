"""Turn SIGTERM, SIGINT and SIGHUP into an exception, so every undo step still runs.

While a changing command runs (see runner.Runner.change) the exception is held back until the
command has finished: otherwise we could not know whether, say, lvcreate had created the
snapshot, and could leave it behind. After the first signal, further ones are ignored so that
the cleanup itself cannot be interrupted half-way.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

from xenlvm.errors import XenlvmError

TYPE_CHECKING = False  # xenlvm/__init__.py says why
if TYPE_CHECKING:
    from typing import Any

_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# depth: nested deferred() blocks; pending: the signal they hold back; seen: one was raised
_state: dict[str, Any] = {"depth": 0, "pending": None, "seen": False}


class Interrupted(XenlvmError):
    """xenlvm was asked to stop by a signal; what it had done is undone."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}; undoing what was done")


def _handle(signum: int, _frame: object) -> None:
    if _state["seen"]:
        return  # already unwinding: let the cleanup finish
    if _state["depth"]:
        _state["pending"] = signum
        return
    _state["seen"] = True
    raise Interrupted(signum)


def install() -> None:
    """Install the handlers; call once, early, in the process that runs the hooks."""
    for signum in _HANDLED:
        signal.signal(signum, _handle)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold back a signal until the block has finished, then raise it."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
    if not _state["depth"] and _state["pending"] is not None and not _state["seen"]:
        signum, _state["pending"] = _state["pending"], None
        _state["seen"] = True
        raise Interrupted(signum)
