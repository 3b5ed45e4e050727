"""The sandbox itself: sound on this host, with and without the XSTATE shim, a sandbox that
cannot start says why, and this machine's directories kept in the guest stay untouched.

The shim (uml/xstate_shim.c) is needed on hosts with AVX-512 or AMX; these tests run its paths
on every host where they can: forced on (its pass-through and signal-frame paths), and told to
use only part of UML's FP buffer, which makes every guest stop take the resizing path that an
AMX host takes (which hosts can: test_guest_on_the_shims_resizing_path_is_sound). Each guest
proves at boot that its processes keep their vector registers.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from sandbox import uml_host
from sandbox.machine import Guest, SandboxError, work_root
from sandbox.world import World

# A workload whose result depends on glibc's vectorised string and memory functions.
HASH_WORKLOAD = ("import hashlib; data = b''.join(bytes([i % 251]) * 4096 for i in range(512)); "
                 "print(hashlib.sha256(data.replace(b'\\x07', b'xy')).hexdigest(), "
                 "data.find(b'\\xf0' * 4096))")


@pytest.fixture(scope="module")
def tools() -> uml_host.Tools:
    return uml_host.build_tools(work_root())


def expected_workload_output() -> str:
    """HASH_WORKLOAD's output, computed here on the host."""
    data = b"".join(bytes([i % 251]) * 4096 for i in range(512))
    digest = hashlib.sha256(data.replace(b"\x07", b"xy")).hexdigest()
    return f"{digest} {data.find(bytes([0xf0]) * 4096)}\n"


def boot_and_exercise(guest: Guest) -> dict[str, int]:
    """Boot guest, exercise it, halt it; what its XSTATE shim did."""
    guest.boot()
    try:
        exercise(guest)
        return guest.shim_stats
    finally:
        guest.halt()


def exercise(guest: Guest) -> None:
    """What the suite relies on: Python computes what it computes here, modules load, and a
    classic snapshot is made, mounted, read and removed."""
    done = guest.run([guest.python, "-c", HASH_WORKLOAD], check=True)
    assert done.stdout == expected_workload_output()
    guest.sh("lvcreate -q -L 64M -n origin system && mkfs.ext4 -q /dev/system/origin && "
             "mkdir -p /srv/o /mnt/s && mount /dev/system/origin /srv/o && "
             "head -c 1048576 /dev/urandom > /srv/o/data && sha256sum /srv/o/data > /run/sum && "
             "lvcreate -q -s -L 32M -n snap system/origin && mount -o ro /dev/system/snap /mnt/s && "
             "(cd /mnt/s && sed 's#/srv/o/#./#' /run/sum | sha256sum -c --quiet) && "
             "umount /mnt/s /srv/o && lvremove -qy system/snap system/origin")
    assert "0 failed" in (guest.work / "vregcheck.log").read_text()


def test_vregcheck_sees_a_register_that_changed(tools) -> None:
    done = subprocess.run([str(tools.vregcheck), "--must-fail"], capture_output=True, text=True)
    assert done.returncode == 1, done
    assert "deliberate change of xmm3" in done.stderr and "mm3 byte 0" in done.stderr, done.stderr


def test_vregcheck_passes_on_this_host(tools) -> None:
    done = subprocess.run([str(tools.vregcheck)], capture_output=True, text=True)
    assert done.returncode == 0, done
    assert f"{tools.cpu.level} registers" in done.stdout and ", 0 failed" in done.stdout, done.stdout


def test_shim_resizes_a_short_buffer_as_a_large_xsave_host_needs(tools, tmp_path: Path) -> None:
    """A tracer that passes a buffer shorter than this host's XSAVE area, as UML does on AMX
    hosts: refused by the host kernel on its own, handled with the shim."""
    short = 832 if tools.cpu.xsave_size > 832 else 576
    if tools.cpu.xsave_size > short:
        bare = subprocess.run([str(tools.selftest)], capture_output=True, text=True)
        assert bare.returncode == 1 and "SETREGSET failed (Bad address)" in bare.stderr, bare
    stats = tmp_path / "stats"
    done = subprocess.run([str(tools.selftest)], capture_output=True, text=True,
                          env={"LD_PRELOAD": str(tools.shim), "XENLVM_UML_SHIM_STATS": str(stats)})
    assert done.returncode == 0, done
    counters = uml_host.read_shim_stats(stats)
    assert counters["host_size"] == tools.cpu.xsave_size
    rounds_resized = 2 if tools.cpu.level != "sse" else 1
    assert counters["resized"] == 2 * rounds_resized, counters  # a GET and a SET per round
    assert counters["whole"] == 2 and counters["failures"] == 0, counters


def test_guest_with_the_shim_forced_on_is_sound(tools) -> None:
    stats = boot_and_exercise(Guest("shim-on", shim="on", shim_uml_bytes=0))
    assert stats["uml_size"] == uml_host.UML_FP_SIZE, stats
    if tools.cpu.xsave_size <= uml_host.UML_FP_SIZE:
        assert stats["whole"] > 0 and stats["resized"] == 0, stats  # passed through unchanged
    else:
        assert stats["resized"] > 0 and stats["whole"] == 0, stats
    # Signal handlers ran in the guest and returned: their frames' states were written back.
    assert stats["deliveries"] > 0 and stats["restored"] > 0 and stats["failures"] == 0, stats


def test_guest_on_the_shims_resizing_path_is_sound(tools) -> None:
    """Every guest stop goes through the path an AMX host needs, XSTATE_BV rule included (taking
    the host's bits instead fails vregcheck). The shim uses as much of UML's buffer as holds
    every component the guest's processes use, and no more than leaves one they do not use
    beyond it (uml_host.resize_bytes, from this host's CPUID layout). Which hosts run what:

    - AMX (Intel Sapphire Rapids, 11008 bytes): the whole buffer; UML's 2696 bytes are short
      there anyway: the real path, no simulation;
    - PKRU or MPX after the vector state (AMD Zen 3 with AVX2, 2440 bytes: 2432; Intel
      AVX-512, 2696 bytes: 2688; AMD Zen 4 with PKRU, 2440 bytes: 2432): that many bytes, so
      PKRU (or MPX) takes the place of the AMX tiles;
    - every component in use (AVX2 without PKRU, 832 bytes; AMD AVX-512 without PKRU, 2432
      bytes): skipped, with the layout. No shorter buffer holds what the guest uses, and the
      area fits UML's buffer, so such a host never takes this path; the shim's resizing itself
      is still run there, without UML, by test_shim_resizes_a_short_buffer_as_a_large_xsave_host_needs.
    """
    size = uml_host.resize_bytes(tools.cpu)
    if size is None:
        pytest.skip(f"no part of UML's FP buffer both holds every XSAVE component the guest uses and "
                    f"leaves one out on this host: {tools.cpu.layout()}; the area fits UML's buffer, so "
                    "this host never resizes (the shim's resizing runs here without UML: "
                    "test_shim_resizes_a_short_buffer_as_a_large_xsave_host_needs)")
    stats = boot_and_exercise(Guest("shim-resize", shim="on", shim_uml_bytes=size))
    assert stats["uml_size"] == size and stats["resized"] > 1000 and stats["whole"] == 0, stats
    assert stats["failures"] == 0, stats


def test_a_guest_whose_processes_lose_registers_does_not_start() -> None:
    guest = Guest("unsound", vregcheck_args="--must-fail")
    with pytest.raises(SandboxError) as raised:
        guest.boot()
    message = str(raised.value)
    assert "lose vector registers" in message and "every result computed in the guest" in message
    assert "deliberate change of xmm3" in message, message  # the check's own words
    assert "What to do:" in message
    assert guest.proc.poll() is not None  # no guest left running
    guest.halt()


def test_a_guest_that_panics_says_why() -> None:
    guest = Guest("panics", init=Path("/nonexistent/init"))
    with pytest.raises(SandboxError) as raised:
        guest.boot()
    message = str(raised.value)
    assert "the guest stopped" in message and "Kernel panic: " in message, message
    assert "Likely cause: the guest's init script could not be started" in message, message
    assert "Last lines of the console" in message and "(no init log)" not in message
    guest.halt()


def test_building_the_world_leaves_this_machines_directories_below_srv_alone(guest) -> None:
    """A checkout in /srv or /mnt is bound back into the guest (guest_paths.py); world.sh, which
    unmounts and empties both before every test, must leave it and its files alone."""
    kept = guest.work / "kept-below-srv"
    kept.mkdir(exist_ok=True)
    (kept / "file").write_text("this machine's\n")
    guest.sh(f"mkdir -p /srv/checkout/x && mount --bind {kept} /srv/checkout/x")
    try:
        World(guest).build()
        assert (kept / "file").read_text() == "this machine's\n"
        assert " /srv/checkout/x hostfs " in guest.read("/proc/mounts")
    finally:
        guest.sh("umount /srv/checkout/x", check=False)
