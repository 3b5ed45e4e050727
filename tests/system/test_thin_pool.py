"""Thin pools on real dm-thin: a backup must never take the VMs down. pre refuses a pool that is
already too full; during the backup the pool guard grows a pool that fills up, or, when the VG
has no room, drops the job's thin snapshot so that the VM's writes keep going (and post fails
the backup). No write fails, and the kernel never sees the pool run out of data space.

Each test builds a small pool of its own (sandbox/thin_pool.py): system/tpool (64 MiB data,
4 MiB metadata) with the thin volume system/tvm (256 MiB, ext4, mounted at /srv/tvm), 36 MiB of
data in /srv/tvm/data."""

from __future__ import annotations

import json
import signal

import pytest

from sandbox.thin_pool import THIN_CONFIG, build, pool
from sandbox.world import PRE_STEPS, SESAM_ARGS, XL
from tests.system.test_restore import DRILL_CONFIG

pytestmark = pytest.mark.system

MiB = 1 << 20


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
    assert post.rc == 1, post  # the pools were unguarded for part of the backup
    assert "the thin pool guard of job 'tvm' crashed or was killed" in post.stderr + post.stdout
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


# A pool whose metadata fills up: meta/mpool (12 GiB data in 64 KiB chunks without zeroing,
# 2 MiB metadata, on a sparse loop device with 1 MiB extents) holds the job's volume meta/mvm
# (ext4, mounted at /srv/mvm) and meta/scratch, another VM's disk, raw. 24000 scattered chunks
# written to scratch and two rounds of (thin snapshot of scratch, one write into each leaf of
# its mapping tree, which copies the leaf: about 0.2% of the metadata each; the second round
# half of them) bring the metadata to about 72%.
METADATA_POOL = """
set -e
truncate -s 16G /run/meta.img
dev=$(losetup -f --show /run/meta.img)
pvcreate -q "$dev" >/dev/null && vgcreate -q -s 1M meta "$dev" >/dev/null
lvcreate -q -y -L 12G -Zn -c 64k --poolmetadatasize 2M -T meta/mpool >/dev/null 2>&1
lvcreate -q -y -V 64M -T meta/mpool -n mvm >/dev/null 2>&1
lvcreate -q -y -V 8G -T meta/mpool -n scratch >/dev/null 2>&1
mkfs.ext4 -q -N 1024 -E lazy_itable_init=0,lazy_journal_init=0 /dev/meta/mvm
mkdir -p /srv/mvm && mount /dev/meta/mvm /srv/mvm && echo data > /srv/mvm/file && sync
"$1" /run/scratch-writer fill 24000
lvcreate -q -y -s -n other1 meta/scratch >/dev/null 2>&1
"$1" /run/scratch-writer touch 0 100 0
lvcreate -q -y -s -n other2 meta/scratch >/dev/null 2>&1
"$1" /run/scratch-writer touch 0 50 0
dmesg -C
"""

# Writes into meta/scratch: "fill N" maps N chunks; "touch FIRST COUNT PAUSE" writes one
# chunk into each of COUNT leaves (250 mappings apart), synced in steps of 5, with a pause.
SCRATCH_WRITER = """\
import os, sys, time
fd = os.open("/dev/meta/scratch", os.O_WRONLY)
if sys.argv[1] == "fill":
    for i in range(int(sys.argv[2])):
        os.pwrite(fd, b"x" * 4096, i * 65536)
else:
    first, count, pause = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    for n in range(first, first + count):
        os.pwrite(fd, b"y" * 4096, (n * 250 + 7) % 24000 * 65536)
        if n % 5 == 4:
            os.fsync(fd)
            time.sleep(pause)
os.fsync(fd)
"""

METADATA_CONFIG = THIN_CONFIG.replace("system/tvm", "meta/mvm").replace("tvmbackup", "mvmbackup")


def metadata_pool(world) -> dict:
    out = world.guest.run(["lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o",
                           "data_percent,metadata_percent,lv_metadata_size", "meta/mpool"], check=True).stdout
    row = json.loads(out)["report"][0]["lv"][0]
    return {"metadata": float(row["metadata_percent"]), "metadata_size": int(row["lv_metadata_size"])}


@pytest.fixture
def metadata_world(world):
    world.guest.write("/run/scratch-writer", SCRATCH_WRITER)
    try:
        world.guest.run(["/bin/sh", "-c", METADATA_POOL, "sh", world.guest.python], check=True, timeout=300)
        world.write_config(METADATA_CONFIG)
        yield world
    finally:
        world.guest.sh("for m in /mnt/vmbackup /srv/mvm; do ! mountpoint -q $m || umount $m; done; "
                       "vgchange -q -an meta >/dev/null 2>&1; vgremove -q -f -y meta >/dev/null 2>&1; "
                       "for l in $(losetup -j /run/meta.img | cut -d: -f1); do "
                       "pvremove -q -ff -y $l >/dev/null 2>&1; losetup -d $l; done; rm -f /run/meta.img; "
                       "! dmsetup ls | grep -q '^meta-'")


def test_a_pool_whose_metadata_fills_up_gets_more_metadata_and_post_succeeds(metadata_world):
    world = metadata_world
    before = metadata_pool(world)
    assert 60 < before["metadata"] < 80, before
    pre = world.pre()
    assert pre.rc == 0, pre
    # A third round, paced: 10 leaves (about 2% of the metadata) a second.
    world.guest.run(["lvcreate", "-q", "-y", "-s", "-n", "other3", "meta/scratch"], check=True)
    world.guest.run([world.guest.python, "/run/scratch-writer", "touch", "0", "100", "1"], check=True,
                    timeout=300)
    after = metadata_pool(world)
    print(f"metadata {before['metadata']:.1f}% of {before['metadata_size'] // MiB} MiB -> "
          f"{after['metadata']:.1f}% of {after['metadata_size'] // MiB} MiB")
    assert after["metadata_size"] > before["metadata_size"]
    post = world.post()
    assert post.rc == 0, post
    assert "the pool guard grew the metadata of thin pool meta/mpool from 2.0 MiB to" in world.log()
    kernel = world.guest.run(["dmesg"], check=True).stdout
    assert "out-of-metadata-space" not in kernel and "read-only" not in kernel.lower(), kernel[-2000:]


def test_pre_refuses_a_pool_whose_metadata_is_nearly_full(metadata_world):
    world = metadata_world
    world.guest.run(["lvcreate", "-q", "-y", "-s", "-n", "other3", "meta/scratch"], check=True)
    world.guest.run([world.guest.python, "/run/scratch-writer", "touch", "0", "70", "0"], check=True)
    assert 80 <= metadata_pool(world)["metadata"] < 95
    pre = world.pre()
    assert pre.rc == 1, pre
    assert "thin pool meta/mpool is" in pre.stderr and "full (metadata;" in pre.stderr
    assert "lvextend --poolmetadatasize +SIZE meta/mpool" in pre.stderr


THIN_DISK = f"""
set -e
lvcreate -q -y -L 64M -T system/tpool >/dev/null
lvcreate -q -y -V 128M -T system/tpool -n vm4-disk >/dev/null
mkfs.ext4 -q -N 1024 -J size=4 -E lazy_itable_init=0,lazy_journal_init=0 /dev/system/vm4-disk
mkdir -p /run/vmfs && mount /dev/system/vm4-disk /run/vmfs && echo "vm4 xvda" > /run/vmfs/marker
dd if=/dev/urandom of=/run/vmfs/data bs=1M count=36 2>/dev/null && umount /run/vmfs
{XL} fake-create vm4 --disk /dev/system/vm4-disk,xvda >/dev/null
sync
dmesg -C
"""
THIN_DISK_CONFIG = DRILL_CONFIG.format(extra="")  # a vmdisks job of domain vm4


def test_the_pool_of_a_thin_vm_disk_is_guarded_and_grown(world):
    world.guest.sh(THIN_DISK, timeout=120)
    world.write_config(THIN_DISK_CONFIG)
    pre = world.pre()
    assert pre.rc == 0, pre
    assert "thin pool guard started" in pre.stdout
    assert world.guest.read("/mnt/vmbackup/vm4/xvda/marker") == "vm4 xvda\n"
    # The VM writes 48 MiB over its disk (the snapshot keeps what it shares): more than the
    # 64 MiB pool has free.
    world.guest.sh("set -e; for i in $(seq 0 47); do dd if=/dev/zero of=/dev/system/vm4-disk bs=1M count=1 "
                   "seek=$i conv=notrunc oflag=direct 2>/dev/null; sleep 0.5; done", timeout=300)
    assert pool(world)["size"] > 64 * MiB
    assert world.guest.read("/mnt/vmbackup/vm4/xvda/marker") == "vm4 xvda\n"  # the backup still reads
    post = world.post()
    assert post.rc == 0, post
    assert "the pool guard grew the data of thin pool system/tpool" in world.log()
    assert_the_pool_never_ran_out(world)
    assert not [n for n, row in world.lvs().items() if "xenlvm" in row["lv_tags"].split(",")]
