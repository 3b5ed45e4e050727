"""System tests: the real hooks against real LVM in a User-Mode Linux guest (the sandbox
package: sandbox/machine.py, sandbox/world.py).

One guest boots per test session; every test starts from a freshly built world.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.machine import Guest, SandboxError
from sandbox.world import World

TESTS = Path(__file__).resolve().parent  # its guest/ holds the tests' own scripts for the guest


@pytest.fixture(scope="session")
def guest():
    machine = Guest("system")
    try:
        machine.boot()
    except SandboxError as exc:
        # The message says why and what to do; a traceback of the fixture would only hide it.
        pytest.fail(str(exc), pytrace=False)
    yield machine
    stats = machine.shim_stats
    machine.halt()
    # Where UML ran with the XSTATE shim, none of its intercepted calls may have failed.
    assert stats.get("failures", 0) == 0, f"the XSTATE shim reported failed calls: {stats}"


@pytest.fixture
def world(guest) -> World:
    manual = World(guest)
    manual.build()
    return manual


def assert_lock_free(world: World, job: str = "xenvm") -> None:
    """No process holds the job's lock (flock -n succeeds at once)."""
    lock = f"/run/xenlvm/{job}.lock"
    done = world.guest.run(["/bin/sh", "-c", '[ ! -e "$1" ] || flock -n "$1" true', "sh", lock])
    assert done.rc == 0, f"{lock} is still held: {done}"


def assert_nothing_left(world: World) -> None:
    """No snapshot, no mount of ours, no LV with xenlvm's tag (the lock: see assert_lock_free)."""
    lvs = world.lvs()
    assert "vmbackup" not in lvs, lvs
    assert "/mnt/vmbackup" not in world.mounts()
    assert not [name for name, row in lvs.items() if "xenlvm" in row["lv_tags"].split(",")]
