"""The hostile-guest tier: a guest's root owns every byte of its disks. The suite's sandbox (one
boot per worker), many crafted guest disks (built once on this machine by hostile_disks.py,
copied onto logical volumes in the guest); each case runs pre, a full read of the tree as
sesam reads it, and post, beside a well-behaved domain. For each: the kernel does not panic,
oops or BUG (dmesg), the run ends within a bounded time, the good domain is exposed as it
should be, post leaves nothing behind.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox.world import XEN_SETTINGS, XL, World
from tests.system import hostile_disks
from tests.system.conftest import TESTS

pytestmark = pytest.mark.system

TREE = "/mnt/hostile"
METRICS = "/run/xenlvm-metrics.prom"
CONFIG = XEN_SETTINGS.replace("settings:\n", f"settings:\n  metrics_file: {METRICS}\n") + """\
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

# domain -> (how its disk is built, the size of its LV in MiB)
DISKS: dict[str, tuple[Callable[[Path], dict[str, str]], int]] = {
    "hpanic": (hostile_disks.panic_on_error, 16),
    "hrefuse": (hostile_disks.refused, 24),
    "hbtrfs": (hostile_disks.btrfs, 16),
    "hoverlap": (hostile_disks.overlapping, 16),
    "hpastend": (hostile_disks.past_the_end, 16),
    "hebrloop": (hostile_disks.looping_extended, 16),
    "hgpt128": (hostile_disks.gpt_128, 16),
    "hnames": (hostile_disks.control_characters, 16),
    "huuid1": (hostile_disks.same_uuid("one"), 48),
    "huuid2": (hostile_disks.same_uuid("two"), 48),
    "hxfsdirty": (hostile_disks.xfs_marked, 32),
    "hmany": (hostile_disks.many_files, 48),
    "hlinks": (hostile_disks.links_and_nodes, 16),
}
# Made dirty in the guest: written to, then shut down without flushing its log (xfs_io godown).
# (shutdown -f: the log is written first, so it holds transactions and no unmount record)
DIRTY_XFS = """mkdir -p /run/dirty && mount /dev/system/hxfsdirty-disk /run/dirty
echo written before the shutdown > /run/dirty/unflushed
xfs_io -x -c "shutdown -f" /run/dirty && umount /run/dirty
"""


def good_disk(path: Path) -> dict[str, str]:
    hostile_disks.ext4(path, 16 * hostile_disks.MIB)
    hostile_disks.write_file(path, "marker", "good marker\n")
    return {"marker": "good marker"}


@pytest.fixture
def hostile(world) -> Callable[..., World]:
    """The manual's world in this worker's guest; hostile(*domains) puts each named domain's
    crafted disk (and the good domain's) on an LV of its own and starts a (stand-in) domain
    with it. The images are built on this machine, once (hostile_disks.cached)."""
    def make(*domains: str) -> World:
        script = [f"mkdir -p {TREE}"]
        for name in ("good", *domains):
            build, mib = (good_disk, 16) if name == "good" else DISKS[name]
            image, _ = hostile_disks.cached(name, build)
            script.append(f"lvcreate -q -y -L {mib}M -n {name}-disk system >/dev/null && "
                          f"dd if={image} of=/dev/system/{name}-disk bs=1M status=none && "
                          f"{XL} fake-create {name} --disk /dev/system/{name}-disk,xvda >/dev/null")
        if "hxfsdirty" in domains:
            script.append(DIRTY_XFS)
        world.guest.sh("\n".join(script) + "\nsync", timeout=600)
        return world
    return make


def kernel_log(world: World) -> str:
    """What the kernel logged since the last call (dmesg, then cleared)."""
    return world.guest.run(["dmesg", "--read-clear"], check=True).stdout


def back_up(world: World, *domains: str, post_rc: int = 0, during: Callable[[], None] | None = None) -> dict:
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
    if during is not None:
        during()
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
    world = hostile("hpanic")
    read = back_up(world, "hpanic")
    assert markers(read, "hpanic") == {"hpanic/xvda/marker": "panic marker"}
    # the read went through the corrupt directory: ext4 saw the error, and went on
    assert "ext4_readdir" in read["kernel"] and "hpanic/xvda/victim" in read["kernel"], read["kernel"]


def test_a_filesystem_the_kernel_refuses_leaves_the_rest_exposed_and_its_disk_backed_up_as_an_image(hostile):
    world = hostile("hrefuse")
    disk = f"{TREE}/hrefuse/xvda"

    def while_backing_up():
        # the partition the kernel mounts is there as files; the whole disk as its raw image
        assert world.guest.read(f"{disk}/p1/marker") == "refused p1 marker\n"
        origin = world.guest.run(["sha256sum", "/dev/system/hrefuse-disk", f"{disk}.img"], check=True)
        assert len(set(origin.stdout.split()[::2])) == 1, origin
        note = world.guest.read(f"{disk}.NOT-EXPOSED.txt")
        assert "partition 2: could not mount" in note and "hrefuse/xvda.img" in note, note
        layout = json.loads(world.guest.read(f"{disk}/layout.json"))
        assert [(c["partition"], c["exposed_as"], c.get("reason")) for c in layout["contents"]] == [
            (1, "p1", None), (2, None, "refused")]
        status = world.xenlvm("status")
        assert "NOT EXPOSED as files: hrefuse/xvda: partition 2: could not mount" in status.stdout, status
        assert 'xenlvm_disks_not_exposed{job="hostile"} 1' in world.guest.read(METRICS)

    read = back_up(world, "hrefuse", post_rc=3, during=while_backing_up)
    assert markers(read, "hrefuse") == {"hrefuse/xvda/p1/marker": "refused p1 marker"}
    assert "hrefuse/xvda: partition 2: could not mount" in read["pre"].stderr
    assert "the backup of job hostile is partial" in read["post"].stderr, read["post"]
    assert 'xenlvm_last_run_exit_code{job="hostile",phase="post"} 3' in world.guest.read(METRICS)
    assert "FAILED (exit 3): the backup of job hostile is partial" in world.xenlvm("status").stdout


def test_btrfs_is_not_mounted_its_disk_is_backed_up_as_an_image_and_the_tree_says_why(hostile):
    world = hostile("hbtrfs")

    def while_backing_up():
        assert world.guest.run(["findmnt", "-t", "btrfs"]).stdout == ""
        assert world.guest.run(["test", "-f", f"{TREE}/hbtrfs/xvda.img"]).rc == 0
        note = world.guest.read(f"{TREE}/hbtrfs/xvda.NOT-EXPOSED.txt")
        assert "btrfs stops dom0's kernel" in note, note

    read = back_up(world, "hbtrfs", post_rc=3, during=while_backing_up)
    assert "hbtrfs/xvda holds btrfs, which xenlvm does not mount" in read["pre"].stderr


def test_overlapping_partitions_each_show_what_lies_there(hostile):
    world = hostile("hoverlap")
    read = back_up(world, "hoverlap")
    assert markers(read, "hoverlap") == {"hoverlap/xvda/p1/marker": "overlap marker",
                                         "hoverlap/xvda/p3/marker": "overlap marker"}


def test_a_partition_past_the_end_of_the_disk_is_passed_over_and_the_rest_exposed(hostile):
    world = hostile("hpastend")

    def while_backing_up():
        layout = json.loads(world.guest.read(f"{TREE}/hpastend/xvda/layout.json"))
        assert [(c["partition"], c["exposed_as"]) for c in layout["contents"]] == [(1, "p1"), (2, None)]

    read = back_up(world, "hpastend", during=while_backing_up)
    assert markers(read, "hpastend") == {"hpastend/xvda/p1/marker": "past marker"}


def test_a_looping_chain_of_extended_partitions_ends(hostile):
    world = hostile("hebrloop")
    read = back_up(world, "hebrloop")
    assert markers(read, "hebrloop") == {"hebrloop/xvda/p1/marker": "ebr marker"}


def test_a_gpt_with_all_128_entries_used(hostile):
    world = hostile("hgpt128")
    read = back_up(world, "hgpt128")
    assert markers(read, "hgpt128") == {"hgpt128/xvda/p128/marker": "gpt128 marker"}


def test_names_and_labels_with_newlines_and_control_characters(hostile):
    world = hostile("hnames")

    def while_backing_up():
        layout = json.loads(world.guest.read(f"{TREE}/hnames/xvda/layout.json"))
        assert layout["table"]["partitions"][0]["name"] is not None
        assert layout["contents"][0]["exposed_as"] == "p1"

    read = back_up(world, "hnames", during=while_backing_up)
    assert markers(read, "hnames") == {"hnames/xvda/p1/marker": "names marker"}
    assert read["files"] >= 7 and read["error_count"] == 0, read


def test_two_guests_with_the_same_filesystem_uuids_each_show_their_own_data(hostile):
    world = hostile("huuid1", "huuid2")
    read = back_up(world, "huuid1", "huuid2")
    for domain, text in (("huuid1", "one"), ("huuid2", "two")):
        assert markers(read, domain) == {f"{domain}/xvda/p1/marker": f"{text} ext4",
                                         f"{domain}/xvda/p2/marker": f"{text} xfs"}


def test_an_xfs_with_a_dirty_log_is_replayed_into_the_snapshot_only(hostile):
    world = hostile("hxfsdirty")
    before = world.guest.run(["sha256sum", "/dev/system/hxfsdirty-disk"], check=True).stdout
    read = back_up(world, "hxfsdirty")
    assert markers(read, "hxfsdirty") == {"hxfsdirty/xvda/marker": "xfs dirty marker"}
    assert "Starting recovery" in read["kernel"], read["kernel"]
    assert world.guest.run(["sha256sum", "/dev/system/hxfsdirty-disk"], check=True).stdout == before


def test_a_tree_of_100000_files_is_read_to_the_end(hostile):
    world = hostile("hmany")
    read = back_up(world, "hmany")
    assert markers(read, "hmany") == {"hmany/xvda/marker": "many marker"}
    assert read["files"] >= 100_001 and read["error_count"] == 0, {k: read[k] for k in ("files", "errors")}


def test_symlink_loops_fifos_device_nodes_and_setuid_files_are_inert(hostile):
    world = hostile("hlinks")

    def while_backing_up():
        links = f"{TREE}/hlinks/xvda"
        for path in (f"{links}/loops/a", f"{links}/loops/self"):  # ELOOP, not a hang
            assert world.guest.run(["cat", path], timeout=30).rc != 0
        assert world.guest.run(["dd", f"if={links}/disk", "of=/dev/null", "count=1"]).rc != 0  # nodev
        assert world.guest.run(["dd", f"if={links}/mem", "of=/dev/null", "count=1"]).rc != 0
        assert world.guest.run([f"{links}/suid"]).rc != 0  # noexec

    read = back_up(world, "hlinks", during=while_backing_up)
    assert markers(read, "hlinks") == {"hlinks/xvda/marker": "links marker"}
    assert read["other"] >= 9, read  # six links, the FIFO and two device nodes: listed, never opened
