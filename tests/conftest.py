"""Order of the whole suite: the longest system tests first, the unit tests last.

`make test` runs pytest-xdist with `--dist load --maxschedchunk 1`: each worker keeps at most
two tests queued and takes the next in collection order as it finishes one, so starting the
long tests first and ending with the many short ones keeps the workers busy to the end instead
of leaving one finishing a long test alone (longest-first scheduling). Without
--maxschedchunk 1 xdist hands each worker a quarter of its share up front, in order: the first
worker got nearly all the slow modules. Only the order changes; every test still runs.
"""

from __future__ import annotations

# Slowest first, by the median duration of their tests (see `pytest --durations`).
SLOW_FIRST = ("test_restore", "test_deb", "test_watchdog", "test_vmdisks", "test_hostile_guests",
              "test_io_errors", "test_xen", "test_multivolume", "test_hardening", "test_faults",
              "test_admin", "test_cycle", "test_sandbox", "test_refusals")


def _rank(item) -> int:
    package, _, module = item.module.__name__.rpartition(".")
    if not package.endswith("system"):
        return len(SLOW_FIRST) + 1  # unit tests
    return SLOW_FIRST.index(module) if module in SLOW_FIRST else len(SLOW_FIRST)


def pytest_collection_modifyitems(items) -> None:
    items.sort(key=_rank)  # stable: the order within a module is kept
