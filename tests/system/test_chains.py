"""Chains through the hooks (vmdisks.incremental: thin) on real dm-thin: pre writes each run's
file of a thin VM disk (its full image, or an increment read with thin_delta over the base that
the post before kept), post keeps the run's snapshot as the next base; restore-image of each
run's file, from a folder holding what sesam backed up, is byte-identical to the disk at that
run. A deleted base, a resized disk, full_every and cleanup --bases give full images, with the
reason recorded; a run killed with -9 between reserve and release is released by the next."""

from __future__ import annotations

import json
import signal

import pytest

from sandbox.chain import BLOCK, sha256
from sandbox.world import XEN_SETTINGS, XL
from tests.system.test_increments import SIZE, WRITES, held, touched_blocks, write
from xenlvm.increments import fileformat

pytestmark = pytest.mark.system

TREE = "/mnt/vmbackup"
BACKUP = "/srv/backup/vm5"  # what sesam backed up of the tree, each run's file restored into one folder
RECORD = "/var/lib/xenlvm/disks/increments.json"
CONFIG = XEN_SETTINGS + """\
  disks:
    mountpoint: /mnt/vmbackup
    tasks: [xen_vm1]
    unmount_timeout: 4s
    vmdisks:
      domains: [vm5]
      size: 16M
      expose: image-copy
      image_dir: /var/tmp/images
      incremental: thin
      full_every: {full_every}
    xen:
      domains: auto
      timeout: 20s
"""


def chained_world(world, full_every: int = 7):
    """The thin world with domain vm5 on the thin LV system/vm5-disk, an empty thin target
    system/restored of the same size, and the job 'disks' that chains vm5's disk."""
    world.build(layout="thin", config=None)
    world.guest.sh(f"lvcreate -q -y -V {SIZE}b -T system/pool -n vm5-disk >/dev/null\n"
                   f"lvcreate -q -y -V {SIZE}b -T system/pool -n restored >/dev/null\n"
                   f"rm -rf /var/tmp/images /srv/backup; mkdir -p -m 700 /var/tmp/images; mkdir -p {BACKUP}\n"
                   f"{XL} fake-create vm5 --disk /dev/system/vm5-disk,xvda >/dev/null")
    world.write_config(CONFIG.format(full_every=full_every))
    return world


def backup_run(world, writes) -> tuple[str, dict]:
    """The VM writes, then one backup: pre, sesam copying the disk's one file into BACKUP, post.
    Return the disk's SHA-256 as of the run and pre's record of the file."""
    write(world, writes)
    world.guest.sh("sync")
    expected = sha256(world, "/dev/system/vm5-disk")
    pre = world.pre()
    assert pre.rc == 0, pre
    [entry] = json.loads(world.guest.read(RECORD))["disks"]
    listed = world.guest.run(["ls", f"{TREE}/vm5"], check=True).stdout.split()
    assert [name for name in listed if name.startswith("xvda.")] == [entry["file"].rsplit("/", 1)[1]], listed
    world.guest.run(["cp", entry["file"], BACKUP], check=True)
    post = world.post()
    assert post.rc == 0, post
    return expected, entry


def base_of_disk(world) -> list[tuple[str, dict]]:
    return [(name, row) for name, row in world.lvs().items() if name.startswith("vm5-disk.xenlvm-base.")]


def restore(world, entry: dict):
    name = entry["file"].rsplit("/", 1)[1]
    return world.xenlvm("restore-image", f"{BACKUP}/{name}", "--to", "system/restored", "--yes")


def test_a_chain_of_full_images_and_increments_restores_each_run_byte_identical(world):
    chained_world(world, full_every=3)
    runs = [*WRITES, [(0, 4096), (SIZE - 4096, 4096), (7 * BLOCK - 1, 2)]]
    made = [backup_run(world, writes) for writes in runs]
    kinds = [(entry["kind"], entry["depth"]) for _, entry in made]
    assert kinds == [("full", 0), ("increment", 1), ("increment", 2), ("full", 0), ("increment", 1)], made
    assert made[0][1]["reason"].startswith("no base")
    assert "vmdisks.full_every is 3" in made[3][1]["reason"]
    for number, (_, entry) in enumerate(made):
        if entry["kind"] == "increment":
            assert entry["base_run"] == made[number - 1][1]["run"]
            data = touched_blocks(runs[number]) * BLOCK  # only the pool blocks written since the base
            assert entry["bytes"] <= data + 49 * 64 + fileformat.MAX_HEADER_BYTES, (number, entry)
    [(name, row)] = base_of_disk(world)  # one base: the last run's, the one before it removed
    run = made[-1][1]["run"]
    assert name == f"vm5-disk.xenlvm-base.{run}" and row["origin"] == "vm5-disk"
    assert {"xenlvm", "xenlvm_job_disks", "xenlvm_base", f"xenlvm_run_{run}", "xenlvm_depth_1"} <= \
        set(row["lv_tags"].split(","))
    assert row["lv_attr"][4] == "-", row  # inactive between runs
    assert not [n for n in world.lvs() if n.endswith(".xenlvm")]
    status = world.xenlvm("status")
    line = f"base of system/vm5-disk: system/{name} (run {run}, increment 1; inactive"
    assert line in status.stdout, status
    assert "(kept as a base until the next run)" in world.xenlvm("check").stdout
    for number, (expected, entry) in enumerate(made):
        done = restore(world, entry)
        assert done.rc == 0, (number, done)
        assert sha256(world, "/dev/system/restored") == expected, number
    assert world.guest.run(["ls", "-A", "/var/tmp/images"], check=True).stdout == ""


def test_a_deleted_base_a_resized_disk_and_cleanup_bases_give_full_images_with_the_reason(world):
    chained_world(world)
    backup_run(world, WRITES[0])
    [(name, _)] = base_of_disk(world)
    world.guest.run(["lvremove", "-q", "-f", f"system/{name}"], check=True)
    _, deleted = backup_run(world, WRITES[1])
    assert (deleted["kind"], deleted["reason"]) == (
        "full", "no base: the disk's first run in a chain, or its base was removed")
    _, after = backup_run(world, WRITES[2])
    assert after["kind"] == "increment"

    world.guest.run(["lvextend", "-q", "-L", f"{SIZE + (1 << 20)}b", "system/vm5-disk"], check=True)
    world.guest.run(["lvextend", "-q", "-L", f"{SIZE + (1 << 20)}b", "system/restored"], check=True)
    _, resized = backup_run(world, [(SIZE + 100, 5000)])
    assert resized["kind"] == "full" and "the disk was resized since its base run" in resized["reason"]
    expected, over = backup_run(world, [(SIZE + (1 << 20) - 1, 1)])
    assert over["kind"] == "increment"
    done = restore(world, over)
    assert done.rc == 0, done
    assert sha256(world, "/dev/system/restored") == expected

    done = world.xenlvm("cleanup", "--bases")
    assert done.rc == 0, done
    assert base_of_disk(world) == []
    # An LV named like a base but without xenlvm's tags is somebody else's: left alone.
    world.guest.sh("lvcreate -q -y -s -n vm5-disk.xenlvm-base.20200101T000000_1 system/vm5-disk >/dev/null")
    _, cleaned = backup_run(world, WRITES[1])
    assert cleaned["kind"] == "full" and "is named like one but does not carry its tags" in cleaned["reason"]
    names = [name for name, _ in base_of_disk(world)]
    assert sorted(names) == sorted(["vm5-disk.xenlvm-base.20200101T000000_1",
                                    f"vm5-disk.xenlvm-base.{cleaned['run']}"])
    world.guest.run(["lvremove", "-q", "-f", "system/vm5-disk.xenlvm-base.20200101T000000_1"], check=True)


def test_a_pre_killed_between_reserve_and_release_leaves_it_reserved_and_the_next_pre_releases_it(world):
    chained_world(world)
    backup_run(world, WRITES[0])
    write(world, WRITES[1])
    pid = world.start_held("sbc_pre", "thin_delta")  # the pool's metadata snapshot is reserved
    assert held(world)
    world.guest.signal(pid, signal.SIGKILL)
    world.guest.wait(pid)
    world.release("thin_delta")
    assert held(world)  # kill -9: nothing released it
    world.reset_faults()
    world.guest.sh("sync")
    expected = sha256(world, "/dev/system/vm5-disk")
    pre = world.pre()
    assert pre.rc == 0, pre
    assert "left over by an earlier run" in pre.stderr
    assert "that a killed xenlvm run left reserved" in pre.stderr
    assert not held(world)
    [entry] = json.loads(world.guest.read(RECORD))["disks"]
    assert entry["kind"] == "increment", entry
    world.guest.run(["cp", entry["file"], BACKUP], check=True)
    assert world.post().rc == 0
    done = restore(world, entry)
    assert done.rc == 0, done
    assert sha256(world, "/dev/system/restored") == expected
