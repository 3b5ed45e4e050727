"""The hostile-guest tier: a guest's root owns every byte of its disks. One sandbox boot, many
crafted guest disks (built on this machine by hostile_disks.py, copied onto logical volumes in
the guest); each case runs pre, a full read of the tree as sesam reads it, and post, beside a
well-behaved domain. For each: the kernel does not panic, oops or BUG (dmesg), the run ends
within a bounded time, the good domain is exposed as it should be, post leaves nothing behind.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.system import hostile_disks
from tests.system.conftest import TESTS, XEN_SETTINGS, XL, World
from tests.system.sandbox import Guest, SandboxError

pytestmark = pytest.mark.system

TREE = "/mnt/hostile"
CONFIG = XEN_SETTINGS + """\
  hostile:
    mountpoint: /mnt/hostile
    tasks: [xen_vm1]
    unmount_timeout: 4s
    vmdisks:
      domains: [good, {domains}]
      size: 16M
    xen:
      domains: auto
      timeout: 20s
"""
BOUND = 120.0  # seconds for pre, the read and post of one case (a hang fails the case)
KERNEL_TROUBLE = re.compile(r"Kernel panic|BUG:|Oops|kernel BUG|Call Trace|WARNING: CPU")
GOOD = {"good/xvda/marker": "good marker"}

# domain -> (how its disk is built, its size in MiB)
DISKS: dict[str, tuple[Callable[[Path], dict[str, str]], int]] = {
    "hpanic": (hostile_disks.panic_on_error, 16),
}


def good_disk(path: Path) -> dict[str, str]:
    hostile_disks.ext4(path, 16 * hostile_disks.MIB)
    hostile_disks.write_file(path, "marker", "good marker\n")
    return {"marker": "good marker"}


@pytest.fixture(scope="module")
def hostile() -> World:
    """One guest for the whole tier, with every crafted disk on an LV of its own and a running
    (stand-in) domain for each, plus the domain "good"."""
    machine = Guest("hostile")
    try:
        machine.boot()
    except SandboxError as exc:
        pytest.fail(str(exc), pytrace=False)
    world = World(machine)
    world.build(config=None)
    images = machine.work / "disks"
    images.mkdir()
    world.expected = {}  # type: ignore[attr-defined]
    script = []
    for name, (build, mib) in {"good": (good_disk, 16), **DISKS}.items():
        world.expected[name] = build(images / f"{name}.img")  # type: ignore[attr-defined]
        script.append(f"lvcreate -q -y -L {mib}M -n {name}-disk system >/dev/null && "
                      f"dd if={images}/{name}.img of=/dev/system/{name}-disk bs=1M status=none && "
                      f"{XL} fake-create {name} --disk /dev/system/{name}-disk,xvda >/dev/null")
    machine.sh(f"mkdir -p {TREE}\n" + "\n".join(script) + "\nsync")
    yield world
    machine.halt()


def kernel_log(world: World) -> str:
    """What the kernel logged since the last call (dmesg, then cleared)."""
    return world.guest.run(["dmesg", "--read-clear"], check=True).stdout


def back_up(world: World, *domains: str, post_rc: int = 0) -> dict:
    """pre, a full read of the tree, post for the good domain and domains; return the read.
    Checks on the way: each step succeeds, all of it within BOUND, the kernel stays sound,
    the good domain's files are there and nothing is left afterwards."""
    kernel_log(world)
    world.write_config(CONFIG.format(domains=", ".join(domains)))
    started = time.monotonic()
    pre = world.pre()
    assert pre.rc == 0, pre
    done = world.guest.run([world.guest.python, TESTS / "guest" / "read_tree.py", TREE], timeout=BOUND)
    assert done.rc == 0, done
    read = json.loads(done.stdout)
    post = world.post()
    assert post.rc == post_rc, post
    assert time.monotonic() - started < BOUND
    kernel = kernel_log(world)
    assert [line for line in kernel.splitlines() if KERNEL_TROUBLE.search(line)] == []
    assert {k: v for k, v in read["markers"].items() if k.startswith("good/")} == GOOD
    assert_nothing_left(world)
    read["pre"], read["post"], read["kernel"] = pre, post, kernel
    return read


def assert_nothing_left(world: World) -> None:
    lvs = world.lvs()
    assert not [name for name, row in lvs.items() if "xenlvm" in row["lv_tags"].split(",")], lvs
    assert world.guest.run(["losetup", "--list", "--noheadings"], check=True).stdout == ""
    assert not [line for line in world.guest.read("/proc/mounts").splitlines() if f" {TREE}" in line]
    assert world.guest.run(["ls", "-A", TREE], check=True).stdout == ""
    assert world.guest.run(["pgrep", "-f", "^qemu-storage-daemon "]).stdout == ""


def markers(read: dict, domain: str) -> dict[str, str]:
    return {k: v for k, v in read["markers"].items() if k.startswith(f"{domain}/")}


def test_a_guest_that_asks_for_a_panic_on_error_and_corrupts_a_directory_cannot_stop_the_host(hostile):
    read = back_up(hostile, "hpanic")
    assert markers(read, "hpanic") == {"hpanic/xvda/marker": "panic marker"}
    # the read went through the corrupt directory: ext4 saw the error, and went on
    assert "ext4_readdir" in read["kernel"] and "hpanic/xvda/victim" in read["kernel"], read["kernel"]
