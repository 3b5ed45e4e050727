"""Thin pools on real dm-thin: a backup must never take the VMs down. pre refuses a pool that is
already too full; during the backup the pool guard grows a pool that fills up, or, when the VG
has no room, drops the job's thin snapshot so that the VM's writes keep going (and post fails
the backup). No write fails, and the kernel never sees the pool run out of data space.

Each test builds a small pool of its own: system/tpool (64 MiB data, 4 MiB metadata) with the
thin volume system/tvm (256 MiB, ext4, mounted at /srv/tvm), 36 MiB of data in /srv/tvm/data."""

from __future__ import annotations

import json
import signal

import pytest

from tests.system.conftest import PRE_STEPS, SESAM_ARGS

pytestmark = pytest.mark.system

MiB = 1 << 20

THIN_CONFIG = """\
settings:
  lock_timeout: 5s
jobs:
  tvm:
    volume: system/tvm
    snapshot: tvmbackup
    mountpoint: /mnt/vmbackup
    tasks: [xen_vm1]
    unmount_timeout: 4s
"""

# A 64 MiB pool whose thin volume holds an ext4 (few inodes, small journal: little metadata)
# with 36 MiB of data, synced: the pool is then about 65% full.
SMALL_POOL = """
set -e
lvcreate -q -y -L 64M -T system/tpool >/dev/null
lvcreate -q -y -V 256M -T system/tpool -n tvm >/dev/null
mkfs.ext4 -q -N 1024 -J size=4 -E lazy_itable_init=0,lazy_journal_init=0 /dev/system/tvm
mkdir -p /srv/tvm && mount /dev/system/tvm /srv/tvm
dd if=/dev/urandom of=/srv/tvm/data bs=1M count=36 2>/dev/null && sync
dmesg -C
"""


def build(world, config: str = THIN_CONFIG) -> None:
    world.guest.sh(SMALL_POOL, timeout=120)
    world.write_config(config)


def pool(world) -> dict:
    out = world.guest.run(["lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o",
                           "lv_size,data_percent,metadata_percent,lv_metadata_size", "system/tpool"],
                          check=True).stdout
    row = json.loads(out)["report"][0]["lv"][0]
    return {"size": int(row["lv_size"]), "data": float(row["data_percent"]),
            "metadata": float(row["metadata_percent"]), "metadata_size": int(row["lv_metadata_size"])}


def fill_the_vg(world) -> None:
    """Take every free extent of the VG, so that the pool cannot grow."""
    world.guest.sh("lvcreate -q -y -l 100%FREE -n filler system >/dev/null")


def overwrite(world, mib: int = 36, chunk_mib: int = 1, pause: float = 0.5) -> float:
    """Overwrite /srv/tvm/data in place (the VM writing): each chunk written, synced, then a
    pause; every write must succeed. Overwriting blocks the snapshot shares takes new blocks
    from the pool. Return the rate in MiB/s."""
    wait = f" sleep {pause};" if pause else ""
    done = world.guest.sh(f"set -e; for i in $(seq 0 {mib // chunk_mib - 1}); do dd if=/dev/zero "
                          f"of=/srv/tvm/data bs=1M count={chunk_mib} seek=$((i * {chunk_mib})) "
                          f"conv=notrunc,fsync 2>/dev/null;{wait} done", timeout=600)
    assert done.rc == 0, done
    return mib / done.duration


def assert_the_pool_never_ran_out(world) -> None:
    kernel = world.guest.run(["dmesg"], check=True).stdout
    assert "out-of-data-space" not in kernel and "no free data space" not in kernel.lower(), kernel[-2000:]
    assert "read-only" not in kernel.lower() and "I/O error" not in kernel, kernel[-2000:]


def assert_nothing_left(world) -> None:
    lvs = world.lvs()
    assert "tvmbackup" not in lvs, lvs
    assert "/mnt/vmbackup" not in world.mounts()
    assert not [name for name, row in lvs.items() if "xenlvm" in row["lv_tags"].split(",")]
    assert world.guest.run(["sh", "-c", "ls /run/xenlvm/*.poolguard.* 2>/dev/null"]).stdout == ""


def guard_pid(world) -> int:
    return int(world.guest.read("/run/xenlvm/tvm.poolguard.pid"))


def test_pre_refuses_a_pool_at_95_percent_and_says_which_how_full_and_what_to_do(world):
    world.guest.sh("set -e; lvcreate -q -y -L 64M -T system/tpool >/dev/null; "
                   "lvcreate -q -y -V 256M -T system/tpool -n tvm >/dev/null; "
                   "dd if=/dev/zero of=/dev/system/tvm bs=1M count=61 oflag=direct 2>/dev/null")
    world.write_config(THIN_CONFIG.replace("    unmount_timeout: 4s\n", ""))
    pre = world.pre()
    assert pre.rc == 1, pre
    assert "thin pool system/tpool is 95.3% full (data;" in pre.stderr
    assert "at or above refuse_above 80% of job 'tvm'" in pre.stderr
    assert "lvextend -L +SIZE system/tpool" in pre.stderr and "Nothing was changed" in pre.stderr
    assert "tvmbackup" not in world.lvs()
    check = world.xenlvm("check")
    assert "thin pool system/tpool is 95.3% full" in check.output, check


def test_a_filling_pool_is_grown_from_the_vg_and_post_succeeds(world):
    build(world)
    before = pool(world)
    pre = world.pre()
    assert pre.rc == 0, pre
    assert "thin pool guard started" in pre.stdout
    rate = overwrite(world)  # 36 MiB more into a pool with 22 MiB free
    after = pool(world)
    print(f"overwrote 36 MiB at {rate:.1f} MiB/s; pool {before['size'] // MiB} -> "
          f"{after['size'] // MiB} MiB, {after['data']:.1f}% full")
    assert after["size"] > before["size"] and after["data"] < 100
    post = world.post()
    assert post.rc == 0, post
    assert "the pool guard grew the data of thin pool system/tpool from 64.0 MiB to" in world.log()
    assert_the_pool_never_ran_out(world)
    assert_nothing_left(world)


def test_a_filling_pool_without_room_loses_the_snapshot_not_the_vm_and_post_fails(world):
    build(world)
    pre = world.pre()
    assert pre.rc == 0, pre
    fill_the_vg(world)
    rate = overwrite(world)
    print(f"overwrote 36 MiB at {rate:.1f} MiB/s; the pool is now {pool(world)['data']:.1f}% full")
    assert "tvmbackup" not in world.lvs()  # dropped during the backup, the VM's writes all went through
    assert "/mnt/vmbackup" not in world.mounts()
    assert pool(world)["data"] < 90
    post = world.post()
    assert post.rc == 1, post
    assert "the backup of job 'tvm' is incomplete: thin pool system/tpool reached" in post.stderr
    assert "system/tvmbackup were removed" in post.stderr
    assert_the_pool_never_ran_out(world)
    assert_nothing_left(world)
    assert world.post().rc == 0  # the next post has nothing left to say


def test_a_reader_of_the_dropped_snapshot_is_stopped_and_the_vm_keeps_writing(world):
    build(world)
    assert world.pre().rc == 0
    fill_the_vg(world)
    world.guest.run(["cp", "/bin/sleep", "/run/xenlvm-reader"], check=True)
    reader = world.guest.spawn(["/run/xenlvm-reader", "600"], env={"PATH": "/bin"}, cwd="/mnt/vmbackup")
    overwrite(world)
    assert "tvmbackup" not in world.lvs()
    assert world.guest.wait(reader, timeout=30) is not None
    assert "which still reads the snapshot system/tvmbackup" in world.log()
    assert world.post().rc == 1
    assert_the_pool_never_ran_out(world)
    assert_nothing_left(world)


def test_post_cleans_up_after_the_guard_was_killed(world):
    build(world)
    assert world.pre().rc == 0
    pid = guard_pid(world)
    world.guest.run(["kill", "-9", str(pid)], check=True)
    post = world.post()
    assert post.rc == 0, post
    assert "the pool guard was no longer running at post" in post.stderr + post.stdout + world.log()
    assert_nothing_left(world)


def test_post_cleans_up_after_pre_was_killed(world):
    build(world)
    world.write_config(THIN_CONFIG, faults=True)
    pid = world.start_held("sbc_pre", "mount")  # the thin snapshot is made, not yet mounted
    assert PRE_STEPS[-1] == "mount"
    world.guest.signal(pid, signal.SIGKILL)
    world.guest.wait(pid)
    world.release("mount")
    assert "tvmbackup" in world.lvs()
    post = world.post(*SESAM_ARGS)
    assert post.rc == 0, post
    assert_nothing_left(world)
