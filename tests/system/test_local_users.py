"""dom0's local users against what xenlvm does as root (issue 23): they cannot read a guest's
files in the tree or hold a mount of it busy, and nothing they make in image_dir lets root's
copy of a VM disk write through their link or give them the copy. On real LVM, with the VM
disks of guest/vmdisks.sh."""

from __future__ import annotations

import pytest

from tests.system.conftest import TESTS
from tests.system.test_vmdisks import MARKERS, TREE, VMDISK_CONFIG, assert_disks_clean

pytestmark = pytest.mark.system

USER = ["setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups", "--"]  # a local user
IMAGE_DIR = "/var/tmp/images"
IMAGE_COPY = VMDISK_CONFIG.format(extra=f"      expose: image-copy\n      image_dir: {IMAGE_DIR}\n")


@pytest.fixture
def disks(world):
    world.guest.run([TESTS / "guest" / "vmdisks.sh"], check=True)
    world.write_config(VMDISK_CONFIG.format(extra=""))
    return world


def as_user(world, *argv: str):
    return world.guest.run([*USER, *argv], env={"PATH": "/usr/bin:/bin", "HOME": "/"})


def test_a_local_user_can_neither_read_the_guests_files_nor_enter_the_tree(disks):
    pre = disks.pre()
    assert pre.rc == 0, pre
    guest_file = f"{TREE}/vm2/xvda/p1/marker"
    disks.guest.sh(f"test $(stat -c %a {TREE}) = 700 && test $(stat -c %a {TREE}/vm2) = 700 "
                   f"&& test $(stat -c %a {TREE}/vm2/xvda) = 700")
    assert disks.guest.read(guest_file).strip() == MARKERS["vm2/xvda/p1/marker"]  # sesam is root
    assert as_user(disks, "cat", guest_file).rc != 0
    assert as_user(disks, "ls", TREE).rc != 0
    # A shell of theirs inside a guest's mount would hold it busy and fail every post.
    entered = as_user(disks, "/bin/sh", "-c", f"cd {TREE}/vm2/xvda/p1 && echo inside")
    assert entered.rc != 0 and "inside" not in entered.stdout, entered
    post = disks.post()
    assert post.rc == 0, post
    assert_disks_clean(disks)


def test_an_image_dir_others_can_write_to_is_refused_before_any_change(disks):
    disks.write_config(IMAGE_COPY)
    disks.guest.sh(f"mkdir -p {IMAGE_DIR} && chmod 1777 {IMAGE_DIR}")  # like /var/tmp itself
    pre = disks.pre()
    assert pre.rc == 1, pre
    assert f"vmdisks.image_dir {IMAGE_DIR} must be root's alone" in pre.stderr
    assert f"Fix: chmod go-w {IMAGE_DIR}" in pre.stderr and "Nothing was changed" in pre.stderr
    assert not [name for name in disks.lvs() if name.endswith(".xenlvm")]

    disks.guest.sh(f"mount -t tmpfs -o size=1m tmpfs {IMAGE_DIR} && chmod 755 {IMAGE_DIR}")
    try:  # room: pre checks it before any change (it used to find out by cp's ENOSPC)
        pre = disks.pre()
        assert pre.rc == 1, pre
        assert "may need up to" in pre.stderr and "Nothing was changed" in pre.stderr
        assert not [name for name in disks.lvs() if name.endswith(".xenlvm")]
    finally:
        disks.guest.sh(f"umount {IMAGE_DIR}")


def test_a_staging_folder_a_local_user_planted_is_refused_and_nothing_written_through_it(disks):
    disks.write_config(IMAGE_COPY)
    # Made while image_dir was open to everyone: a link to a folder of root's, through which
    # root's cp would write the VM's disk.
    staging = f"{IMAGE_DIR}/xenlvm-disks"
    disks.guest.sh(f"mkdir -p {IMAGE_DIR} /root/victim && chmod 755 {IMAGE_DIR} && "
                   f"ln -s /root/victim {staging} && chown -h 1000:1000 {staging}")
    pre = disks.pre()
    assert pre.rc == 1, pre
    assert f"{IMAGE_DIR}/xenlvm-disks is not xenlvm's private image folder" in pre.stderr
    assert disks.guest.run(["ls", "-A", "/root/victim"], check=True).stdout == ""
    assert_disks_clean(disks)

    disks.guest.sh(f"rm {IMAGE_DIR}/xenlvm-disks && mkdir -m 0755 {IMAGE_DIR}/xenlvm-disks && "
                   f"chown 1000:1000 {IMAGE_DIR}/xenlvm-disks")  # or a folder of theirs: they read the copy
    pre = disks.pre()
    assert pre.rc == 1, pre
    assert "owned by uid 1000 with mode 755" in pre.stderr
    assert disks.guest.run(["ls", "-A", f"{IMAGE_DIR}/xenlvm-disks"], check=True).stdout == ""
    assert_disks_clean(disks)

    disks.guest.sh(f"rmdir {IMAGE_DIR}/xenlvm-disks")
    pre = disks.pre()
    assert pre.rc == 0, pre
    disks.guest.sh(f"test $(stat -c %u:%a {IMAGE_DIR}/xenlvm-disks) = 0:700")
    assert as_user(disks, "cat", f"{IMAGE_DIR}/xenlvm-disks/vm2.xvda.img").rc != 0
    post = disks.post()
    assert post.rc == 0, post
    assert_disks_clean(disks)
    assert disks.guest.run(["ls", "-A", IMAGE_DIR], check=True).stdout == ""


def test_check_warns_when_local_users_can_reach_a_volumes_snapshot(world):
    warning = "WARN [xenvm] mountpoint: dom0's other users can reach the snapshot at /mnt/vmbackup"
    check = world.xenlvm("check")
    assert check.rc == 0, check
    assert warning in check.stdout and "'mkdir -m 700 /mnt/xenlvm'" in check.stdout
    world.guest.sh("chmod 700 /mnt")  # a folder on the way, closed to them
    try:
        check = world.xenlvm("check")
        assert check.rc == 0 and "can reach" not in check.stdout, check
    finally:
        world.guest.sh("chmod 755 /mnt")
