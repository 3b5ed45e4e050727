"""Waiting between attempts: the one backoff that every retry loop in xenlvm uses."""

from __future__ import annotations

import math
import time

TYPE_CHECKING = False  # xenlvm/__init__.py says why
if TYPE_CHECKING:
    from typing import Protocol

    class Clock(Protocol):
        """What Backoff needs of the time module."""

        def monotonic(self) -> float: ...

        def sleep(self, seconds: float, /) -> None: ...


class Backoff:
    """The waits of one retry loop: the first wait is first seconds, each next one is the last
    times factor plus step, at most most seconds, until timeout seconds after the start.

    clock is the time module of the caller (its monotonic and sleep), so that a test that gives
    a module a fake clock also makes its retries wait on it."""

    def __init__(self, timeout: float = math.inf, *, first: float, factor: float = 2.0, step: float = 0.0,
                 most: float = math.inf, clock: Clock = time) -> None:
        self.clock = clock
        self.deadline = clock.monotonic() + timeout
        self.delay = first
        self.factor = factor
        self.step = step
        self.most = most

    def remaining(self) -> float:
        """Seconds left until the deadline (0 or less once it has passed)."""
        return self.deadline - self.clock.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def wait(self, *, within_deadline: bool = False) -> float:
        """Sleep the current wait (cut to the time left when within_deadline), then lengthen the
        next one; return the seconds asked for."""
        # The deadline may pass between the caller's last look and this line (a loaded host):
        # then there is nothing left to wait, not a negative sleep (ValueError).
        seconds = max(0.0, min(self.delay, self.remaining())) if within_deadline else self.delay
        self.clock.sleep(seconds)
        self.delay = min(self.delay * self.factor + self.step, self.most)
        return seconds
