"""The mission path on real LVM: pre snapshots and mounts, the backup reads the snapshot,
post cleans up; for ext4, XFS and thin volumes; and post is safe whatever came before it."""

from __future__ import annotations

import pytest

from tests.system.conftest import assert_nothing_left

pytestmark = pytest.mark.system

THIN_CONFIG = """\
settings:
  lock_timeout: 5s
jobs:
  xenvm:
    volume: /dev/system/xenvm
    snapshot: vmbackup
    mountpoint: /mnt/vmbackup
    tasks: [xen_vm1]
"""


def _digest(world, path: str) -> str:
    return world.guest.run(["sha256sum", path], check=True).stdout.split()[0]


def _write_after_snapshot(world) -> None:
    world.guest.sh("head -c 1048576 /dev/urandom | dd of=/srv/xenvm/vm1/disk.img conv=notrunc 2>/dev/null;"
                   " echo new > /srv/xenvm/vm1/written-after-snapshot; sync")


@pytest.mark.parametrize("fstype", ["ext4", "xfs"])
def test_full_cycle_backs_up_data_as_of_snapshot_time(world, fstype):
    if fstype != "ext4":
        world.build(fstype)
    before = _digest(world, "/srv/xenvm/vm1/disk.img")

    pre = world.pre()
    assert pre.rc == 0, pre
    snapshot = world.lvs()["vmbackup"]
    assert snapshot["origin"] == "xenvm"
    assert {"xenlvm", "xenlvm_job_xenvm"} <= set(snapshot["lv_tags"].split(","))
    options = set(world.mounts()["/mnt/vmbackup"].split(","))
    assert {"ro", "nodev", "nosuid", "noexec"} <= options
    if fstype == "xfs":
        assert "nouuid" in options

    _write_after_snapshot(world)
    assert _digest(world, "/mnt/vmbackup/vm1/disk.img") == before
    assert world.guest.run(["test", "-e", "/mnt/vmbackup/vm1/written-after-snapshot"]).rc == 1
    assert world.guest.run(["touch", "/mnt/vmbackup/vm1/probe"]).rc != 0

    post = world.post()
    assert post.rc == 0, post
    assert_nothing_left(world)
    assert _digest(world, "/srv/xenvm/vm1/disk.img") != before  # the origin kept its new data


def test_thin_origin_gets_an_active_thin_snapshot_without_size(world):
    world.build(layout="thin", config=THIN_CONFIG)
    pre = world.pre()
    assert pre.rc == 0, pre
    snapshot = world.lvs()["vmbackup"]
    assert snapshot["lv_attr"].startswith("V") and snapshot["lv_attr"][4] == "a"
    assert "/mnt/vmbackup" in world.mounts()
    _write_after_snapshot(world)
    assert world.guest.run(["test", "-e", "/mnt/vmbackup/vm1/written-after-snapshot"]).rc == 1
    post = world.post()
    assert post.rc == 0, post
    assert_nothing_left(world)
    assert "pool" in world.lvs() and "xenvm" in world.lvs()


def test_every_command_is_logged_with_arguments_status_and_duration(world):
    assert world.pre().rc == 0
    assert world.post().rc == 0
    log = world.log()
    assert "run: lvcreate --snapshot --name vmbackup" in log
    assert "run: mount -t ext4 -o ro,nodev,nosuid,noexec /dev/mapper/system-vmbackup /mnt/vmbackup" in log
    assert "run: umount /mnt/vmbackup" in log
    assert "run: lvremove --force --select lv_tags=xenlvm_job_xenvm system/vmbackup" in log
    assert "exit 0 after" in log
    assert "'xen_vm1' '/mnt/vmbackup'" in log  # sesam's arguments


def test_post_without_pre_does_nothing_and_succeeds(world):
    post = world.post()
    assert post.rc == 0, post
    assert "nothing to clean up" in post.stdout
    assert set(world.lvs()) == {"xenvm"}


def test_post_twice_succeeds_and_second_does_nothing(world):
    assert world.pre().rc == 0
    assert world.post().rc == 0
    second = world.post()
    assert second.rc == 0, second
    assert "nothing to clean up" in second.stdout
    assert_nothing_left(world)


def test_pre_twice_replaces_the_first_snapshot_and_one_post_cleans_up(world):
    assert world.pre().rc == 0
    first_tags = world.lvs()["vmbackup"]["lv_tags"]
    again = world.pre()
    assert again.rc == 0, again
    assert "left over by an earlier run" in again.stderr
    assert world.lvs()["vmbackup"]["lv_tags"] != first_tags  # a fresh snapshot of this run
    assert world.post().rc == 0
    assert_nothing_left(world)
