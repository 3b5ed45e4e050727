"""Failures on real LVM: whatever fails in pre, nothing is left behind; post cleans up what it
can, waits for a busy mount point, and says when the backup cannot be trusted."""

from __future__ import annotations

import signal

import pytest

from sandbox.world import DEFAULT_CONFIG, PRE_STEPS, SESAM_ARGS
from tests.system.conftest import assert_lock_free, assert_nothing_left

pytestmark = pytest.mark.system

HOLDER = "/run/xenlvm-hold"  # a copy of sleep, so that its process name is recognisable


def _hold_mountpoint(world) -> int:
    """Start a process whose working directory is inside the mounted snapshot."""
    world.guest.run(["cp", "/bin/sleep", HOLDER], check=True)
    return world.guest.spawn([HOLDER, "600"], env={"PATH": "/bin"}, cwd="/mnt/vmbackup/vm1")


@pytest.mark.parametrize("tool, rule, expected", [
    ("lvs", "fail 5", "lvs --reportformat json"),
    ("blkid", "fail 4", "blkid"),
    ("lvcreate", "fail 5", "lvcreate --snapshot"),
    ("lvcreate", "after-fail 5", "lvcreate --snapshot"),
    ("mount", "fail 32", "could not mount the snapshot"),
])
def test_every_failure_point_in_pre_is_rolled_back(world, tool, rule, expected):
    world.write_config(DEFAULT_CONFIG, faults=True)
    if tool == "blkid":
        world.guest.run(["umount", "/srv/xenvm"], check=True)  # blkid runs when the origin is not mounted
    world.inject(tool, rule)
    pre = world.pre()
    assert pre.rc == 1, pre
    assert expected in pre.stderr
    assert "injected failure" in pre.stderr
    assert_nothing_left(world)


def test_failed_undo_is_reported_beside_the_original_error(world):
    world.write_config(DEFAULT_CONFIG, faults=True)
    world.inject("mount", "fail 32")
    world.inject("lvremove", "fail 5")
    pre = world.pre()
    assert pre.rc == 1, pre
    assert "could not mount the snapshot" in pre.stderr  # the original error comes first
    assert "Undoing pre ALSO failed" in pre.stderr
    world.inject("lvremove", "")
    assert world.post().rc == 0  # and post, as the message says, cleans it up
    assert_nothing_left(world)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_pre_leaves_nothing_behind(world, signum):
    """The signal arrives while each of pre's commands runs in turn: a query is cut short, a
    change (lvcreate, mount) finishes first; either way pre undoes everything and exits 1."""
    world.write_config(DEFAULT_CONFIG, faults=True)
    for step in PRE_STEPS:
        if step == "blkid":  # pre runs it only for an origin that is not mounted
            world.guest.run(["umount", "/srv/xenvm"], check=True)
        output = world.interrupt_at("sbc_pre", step, signum)
        assert f"interrupted by {signal.Signals(signum).name}" in output, (step, output)
        assert_nothing_left(world)
        assert_lock_free(world)
        if step == "blkid":
            world.guest.run(["mount", "/dev/system/xenvm", "/srv/xenvm"], check=True)


def test_post_fails_when_snapshot_overflowed_and_still_cleans_up(world):
    assert world.pre().rc == 0
    world.guest.sh("head -c 83886080 /dev/urandom > /srv/xenvm/vm1/big; sync")  # 80M into a 64M snapshot
    assert world.lvs()["vmbackup"]["lv_attr"][4] == "I"
    post = world.post()
    assert post.rc == 1, post
    assert "overflowed" in post.stderr and "cannot be trusted" in post.stderr
    assert "size:" in post.stderr
    assert_nothing_left(world)


def test_post_reports_how_full_the_snapshot_was(world):
    world.write_config(DEFAULT_CONFIG.replace("unmount_timeout: 4s",
                                              "unmount_timeout: 4s\n    fill_warning: 50"))
    assert world.pre().rc == 0
    world.guest.sh("head -c 41943040 /dev/urandom > /srv/xenvm/vm1/new; sync")  # 40M of 64M: over 50%
    post = world.post()
    assert post.rc == 0, post
    assert "full before removal - close to overflowing" in post.stderr
    assert_nothing_left(world)


def test_busy_mountpoint_is_retried_and_post_names_the_holder(world):
    assert world.pre().rc == 0
    holder = _hold_mountpoint(world)
    post = world.post()
    assert post.rc == 1, post
    assert "still busy after 4 s" in post.stderr
    assert f"xenlvm-hold[{holder}]" in post.stderr
    assert "vmbackup" in world.lvs()  # nothing removed under a live mount

    world.guest.signal(holder, signal.SIGKILL)
    world.guest.wait(holder)
    assert world.post().rc == 0
    assert_nothing_left(world)


def test_busy_mountpoint_released_during_the_wait_lets_post_succeed(world):
    world.write_config(DEFAULT_CONFIG.replace("unmount_timeout: 4s", "unmount_timeout: 60s"))
    assert world.pre().rc == 0
    holder = _hold_mountpoint(world)
    post_pid = world.guest.spawn(["/opt/sesam/bin/sesam/sbc_post", *SESAM_ARGS], env={},
                                 log="/run/post.out")
    world.wait_for("is busy", "/run/post.out")
    world.guest.signal(holder, signal.SIGKILL)
    assert world.guest.wait(post_pid) == 0, world.guest.read("/run/post.out")
    assert "retrying" in world.guest.read("/run/post.out")
    assert_nothing_left(world)


def test_concurrent_run_waits_for_the_lock_then_fails_clearly(world):
    world.write_config(DEFAULT_CONFIG.replace("lock_timeout: 5s", "lock_timeout: 1s"), faults=True)
    world.inject("lvcreate", "sleep 4")
    first = world.guest.spawn(["/opt/sesam/bin/sesam/sbc_pre", *SESAM_ARGS], env={}, log="/run/first.out")
    world.wait_for(" lvcreate ")
    second = world.pre()
    assert second.rc == 1, second
    assert "is busy: another xenlvm run" in second.stderr
    assert f"pid {first}" in second.stderr
    assert world.guest.wait(first) == 0, world.guest.read("/run/first.out")
    assert "/mnt/vmbackup" in world.mounts()  # the first run was not disturbed
    assert world.post().rc == 0
