"""The one backoff of every retry loop (xenlvm.host.retry)."""

from __future__ import annotations

from tests.unit.fakehost import FakeClock
from xenlvm.host.retry import Backoff


def test_a_wait_within_the_deadline_is_cut_to_the_time_left():
    clock = FakeClock()
    backoff = Backoff(4.0, first=3.0, clock=clock)
    assert backoff.wait(within_deadline=True) == 3.0
    assert backoff.wait(within_deadline=True) == 1.0  # 6 s asked, 1 s left
    assert clock.slept == [3.0, 1.0] and backoff.expired()


def test_a_deadline_that_passed_after_the_last_look_waits_nothing_instead_of_failing():
    """A loaded host: the caller saw time left, then the deadline passed before the wait."""
    clock = FakeClock()
    backoff = Backoff(4.0, first=0.5, clock=clock)
    assert not backoff.expired()
    clock.now += 5.0  # the deadline passed 1 s ago
    assert backoff.wait(within_deadline=True) == 0.0
    assert clock.slept == [0.0]


def test_waits_grow_by_factor_and_step_up_to_most():
    clock = FakeClock()
    backoff = Backoff(first=1.0, factor=2.0, step=0.5, most=4.0, clock=clock)
    assert [backoff.wait() for _ in range(4)] == [1.0, 2.5, 4.0, 4.0]
