"""expose: image without copying: each VM disk snapshot is a read-only file served through FUSE by
one qemu-storage-daemon that lives from pre to post (xenlvm.vmdisks.image_server). The disks are those
of guest/vmdisks.sh, as in test_vmdisks.py.
"""

from __future__ import annotations

import json
import signal

import pytest

from sandbox.world import SESAM_ARGS
from tests.system.conftest import TESTS
from tests.system.test_vmdisks import TREE, VMDISK_CONFIG, assert_disks_clean

pytestmark = pytest.mark.system

IMAGES = {f"{TREE}/vm2/xvda.img": "/dev/system/vm2-disk.xenlvm",
          f"{TREE}/vm3/xvda.img": "/dev/system/vm3-disk.xenlvm",
          f"{TREE}/vm3/xvdb.img": "/dev/system/vm3-data.xenlvm"}
ORIGINS = ["/dev/system/vm2-disk", "/dev/system/vm3-disk", "/dev/system/vm3-data"]
IMAGE_CONFIG = VMDISK_CONFIG.format(extra="      expose: image\n")


@pytest.fixture
def disks(world):
    """The VM disks of guest/vmdisks.sh, in a job with expose: image."""
    world.guest.run([TESTS / "guest" / "vmdisks.sh"], check=True)
    world.write_config(IMAGE_CONFIG)
    return world


def server_pids(world) -> list[str]:
    return world.guest.run(["pgrep", "-f", "^qemu-storage-daemon "]).stdout.split()


def sha256(world, paths) -> list[str]:
    return world.guest.run(["sha256sum", *paths], check=True).stdout.split()[::2]


def image_status(world) -> dict:
    done = world.xenlvm("status", "--json")
    assert done.rc == 0, done
    reports = json.loads(done.stdout)
    return next(r for r in reports if r["job"] == "disks")["image_server"]


def assert_all_gone(world) -> None:
    assert_disks_clean(world)
    assert server_pids(world) == []
    assert world.guest.run(["ls", "/run/xenlvm"], check=True).stdout.split().count("disks.images.pid") == 0


def test_pre_serves_each_disk_snapshot_as_a_read_only_file_without_a_copy_and_post_stops_it(disks):
    before = sha256(disks, ORIGINS)
    pre = disks.pre()
    assert pre.rc == 0, pre
    # The VMs write on: the images stay as of the snapshot.
    disks.guest.sh("echo changed | dd of=/dev/system/vm2-disk bs=512 seek=4000 conv=notrunc 2>/dev/null")
    assert sha256(disks, IMAGES) == before
    assert sha256(disks, IMAGES.values()) == before
    for image in IMAGES:
        assert disks.guest.run(["test", "-f", image, "-a", "!", "-L", image]).rc == 0
        assert disks.guest.sh(f"echo x >> {image}", check=False).rc != 0  # read-only
    mounts = disks.guest.read("/proc/mounts")
    assert all(f" {image} fuse ro," in mounts for image in IMAGES), mounts
    server = image_status(disks)
    assert server["running"] and sorted(server["exports"]) == sorted(IMAGES), server
    assert server_pids(disks) == [str(server["pid"])]
    assert "image server (pid" in disks.xenlvm("status").stdout
    layout = json.loads(disks.guest.read(f"{TREE}/vm3/layout.json"))
    assert layout["disks"] == {"xvda": "xvda.img", "xvdb": "xvdb.img"}
    post = disks.post()
    assert post.rc == 0, post
    assert "image server (pid" in post.stdout + post.stderr
    assert_all_gone(disks)


def test_a_server_that_dies_during_the_backup_fails_the_reads_and_post_cleans_up_and_says_so(disks):
    assert disks.pre().rc == 0
    pid = image_status(disks)["pid"]
    disks.guest.run(["kill", "-KILL", str(pid)], check=True)
    image = f"{TREE}/vm2/xvda.img"
    read = disks.guest.run(["dd", f"if={image}", "of=/dev/null", "bs=1M"])
    assert read.rc != 0, read  # sesam's read fails: it does not get a short or empty file
    assert image_status(disks)["running"] is False
    assert "NOT RUNNING" in disks.xenlvm("status").stdout
    post = disks.post()
    assert post.rc == 1, post
    said = post.stdout + post.stderr
    assert "died during the backup" in said and "cannot be trusted" in said
    assert_all_gone(disks)
    again = disks.post()
    assert again.rc == 0, again


def test_a_failing_pre_stops_the_server_and_leaves_nothing(disks):
    disks.reset_faults()
    disks.inject("mount", "fail-call 3")  # the tree, the first image's read-only remount, the second's
    pre = disks.pre()
    assert pre.rc == 1, pre
    assert "injected failure" in pre.stdout + pre.stderr
    assert_all_gone(disks)
    disks.reset_faults()


def kill_pre_with_the_server_running(world) -> None:
    """Start pre and kill -9 it (and its commands) once the server runs, at the read-only
    remount of the first image."""
    world.reset_faults()
    world.inject("mount", "hold-match remount,bind,ro")
    pid = world.guest.spawn(["/opt/sesam/bin/sesam/sbc_pre", *SESAM_ARGS], env={}, log="/run/killed-pre.out")
    world.wait_for("remount,bind,ro")
    world.guest.signal(pid, signal.SIGKILL, group=True)
    world.guest.wait(pid)
    world.reset_faults()
    assert len(server_pids(world)) == 1  # detached: it outlives the killed pre


def test_a_killed_pre_is_cleaned_up_by_post_and_recovered_by_the_next_pre(disks):
    kill_pre_with_the_server_running(disks)
    post = disks.post()
    assert post.rc == 0, post
    assert_all_gone(disks)

    kill_pre_with_the_server_running(disks)
    old = server_pids(disks)
    pre = disks.pre()
    assert pre.rc == 0, pre
    assert "left over by an earlier run" in pre.stdout + pre.stderr
    now = server_pids(disks)
    assert len(now) == 1 and now != old
    assert disks.guest.run(["cmp", f"{TREE}/vm3/xvdb.img", "/dev/system/vm3-data.xenlvm"]).rc == 0
    assert disks.post().rc == 0
    assert_all_gone(disks)
