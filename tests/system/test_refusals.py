"""pre refuses, before changing anything, when the host is not ready; xenlvm never touches
what it did not create; invocations for other tasks are left alone."""

from __future__ import annotations

import pytest

from sandbox.world import DEFAULT_CONFIG
from tests.system.conftest import assert_nothing_left

pytestmark = pytest.mark.system


def test_foreign_lv_with_the_snapshot_name_is_never_touched(world):
    world.guest.run(["lvcreate", "-q", "-y", "-L", "8M", "-n", "vmbackup", "system"], check=True)
    pre = world.pre()
    assert pre.rc == 1, pre
    assert "xenlvm did not create" in pre.stderr
    post = world.post()
    assert post.rc == 0, post
    assert "left untouched" in post.stderr
    assert world.lvs()["vmbackup"]["lv_tags"] == ""  # still there, unchanged
    assert "/mnt/vmbackup" not in world.mounts()


def test_pre_fails_without_changes_when_the_vg_has_no_room(world):
    world.guest.run(["lvcreate", "-q", "-y", "-l", "100%FREE", "-n", "filler", "system"], check=True)
    pre = world.pre()
    assert pre.rc == 1, pre
    assert "free" in pre.stderr and "system" in pre.stderr
    assert "Nothing was changed" in pre.stderr
    assert "lvcreate" not in world.log()
    assert_nothing_left(world)


@pytest.mark.parametrize("volume, message", [
    ("system/missing", "logical volume system/missing not found"),
    ("novg/xenvm", "volume group 'novg' not found"),
])
def test_pre_fails_clearly_when_the_origin_is_missing(world, volume, message):
    world.write_config(DEFAULT_CONFIG.replace("system/xenvm", volume))
    pre = world.pre()
    assert pre.rc == 1, pre
    assert message in pre.stderr
    assert_nothing_left(world)


def test_pre_fails_when_the_origin_is_inactive(world):
    world.guest.run(["umount", "/srv/xenvm"], check=True)
    world.guest.run(["lvchange", "-an", "system/xenvm"], check=True)
    pre = world.pre()
    assert pre.rc == 1, pre
    assert "not active" in pre.stderr and "lvchange -ay" in pre.stderr
    assert_nothing_left(world)


def test_thick_origin_without_size_is_refused(world):
    world.write_config(DEFAULT_CONFIG.replace("    size: 64M\n", ""))
    pre = world.pre()
    assert pre.rc == 1, pre
    assert "set 'size:'" in pre.stderr
    assert_nothing_left(world)


@pytest.mark.parametrize("prepare, message", [
    ("rmdir /mnt/vmbackup", "does not exist"),
    ("rmdir /mnt/vmbackup && mkdir /mnt/real && ln -s /mnt/real /mnt/vmbackup", "symbolic link"),
    ("rmdir /mnt/vmbackup && touch /mnt/vmbackup", "not a directory"),
    ("mount -t tmpfs other /mnt/vmbackup", "already has other (tmpfs) mounted"),
])
def test_pre_refuses_an_unusable_mountpoint(world, prepare, message):
    world.guest.sh(prepare)
    pre = world.pre()
    assert pre.rc == 1, pre
    assert message in pre.stderr
    assert "vmbackup" not in world.lvs()


def test_post_leaves_a_foreign_mount_on_the_mountpoint_alone(world):
    world.guest.sh("mount -t tmpfs other /mnt/vmbackup")
    post = world.post()
    assert post.rc == 0, post
    assert "not xenlvm's snapshot; left alone" in post.stderr
    assert "/mnt/vmbackup" in world.mounts()


def test_invocation_for_another_task_is_a_logged_no_op(world):
    pre = world.pre("other_task", "/srv/other", "FULL")
    assert pre.rc == 0, pre
    assert "nothing to do" in pre.stdout
    post = world.post("other_task", "/srv/other", "FULL")
    assert post.rc == 0, post
    assert set(world.lvs()) == {"xenvm"}


def test_job_is_selected_by_mountpoint_or_explicitly(world):
    assert world.pre("some-task", "/mnt/vmbackup/").rc == 0
    assert "vmbackup" in world.lvs()
    assert world.hook("sbc_post", "--job", "xenvm").rc == 0
    assert_nothing_left(world)


@pytest.mark.parametrize("config, where", [
    (DEFAULT_CONFIG.replace("tasks:", "taks:"), "config.yaml:9: jobs.xenvm.taks: unknown key"),
    (DEFAULT_CONFIG.replace("64M", "64 apples"), "config.yaml:7: jobs.xenvm.size: '64 apples' is not a size"),
    (DEFAULT_CONFIG.replace("mountpoint: /mnt/vmbackup", "mountpoint: [/mnt"),
     "config.yaml:9: YAML syntax error"),
    (DEFAULT_CONFIG.replace("snapshot: vmbackup", "snapshot: --force"),
     "config.yaml:6: jobs.xenvm.snapshot: '--force' is not a valid LVM"),
])
def test_bad_configuration_exits_2_before_any_command(world, config, where):
    world.write_config(config)
    pre = world.pre()
    assert pre.rc == 2, pre
    assert where in pre.stderr
    assert "lvs" not in world.log()
    assert_nothing_left(world)


def test_missing_configuration_exits_2_and_says_what_to_do(world):
    world.guest.run(["rm", "/etc/xenlvm/config.yaml"], check=True)
    pre = world.pre()
    assert pre.rc == 2, pre
    assert "configuration file not found" in pre.stderr


def test_dry_run_changes_nothing_and_prints_the_commands(world):
    before = (world.lvs(), world.mounts())
    dry = world.hook("sbc_pre", "--dry-run", "xen_vm1")
    assert dry.rc == 0, dry
    assert "would run: lvcreate --snapshot --name vmbackup" in dry.stderr
    assert "would run: mount -t ext4 -o ro,nodev,nosuid,noexec" in dry.stderr
    assert (world.lvs(), world.mounts()) == before
