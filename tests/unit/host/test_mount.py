"""Mounts: the kernel's mount table, the snapshot's mount options, who keeps a mountpoint busy,
and the patient unmount."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from tests.unit.fakes import FakeRunner
from xenlvm.errors import CommandFailed, MountError
from xenlvm.host import mount
from xenlvm.host.lvm import parse_lvs_json
from xenlvm.host.mount import (
    MountEntry,
    filesystem_type,
    holders,
    mount_options,
    mount_snapshot,
    mounted_at,
    mounts_of,
    parse_mountinfo,
    unmount_with_retry,
)

DATA = Path(__file__).resolve().parents[1] / "data"

# A host with the snapshot (254:3) mounted at a path with a space, a tmpfs stacked on top of it,
# and the origin (254:0) mounted where the VMs run from.
MOUNTINFO = r"""22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/mapper/system-root rw,errors=remount-ro
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
40 22 254:0 / /srv/xen rw,relatime shared:28 master:3 - xfs /dev/mapper/system-xenvm rw,attr2,inode64
61 22 254:3 / /mnt/vm\040backup ro,nosuid,nodev,noexec shared:30 - xfs /dev/mapper/system-vmbackup ro,nouuid
62 61 0:45 / /mnt/vm\040backup rw,relatime shared:31 - tmpfs tmpfs rw,size=1024k
70 22 8:17 /export /mnt/odd\011tab\134back\012line rw - ext4 /dev/sdb\0401 rw
"""


def recorded_lvs() -> dict:
    text = (DATA / "lvs_snapshot_mounted.json").read_text(encoding="utf-8")
    return {lv.name: lv for lv, _ in parse_lvs_json(text)}


# ---------------------------------------------------------------------------------------------
# parse_mountinfo, mounted_at, mounts_of


def test_mountinfo_lines_become_entries_in_order():
    entries = parse_mountinfo(MOUNTINFO)
    assert [e.mountpoint for e in entries] == [
        "/", "/proc", "/sys", "/srv/xen", "/mnt/vm backup", "/mnt/vm backup", "/mnt/odd\ttab\\back\nline"]
    xen = entries[3]
    assert xen == MountEntry(254, 0, "/srv/xen", ("rw", "relatime"), "xfs", "/dev/mapper/system-xenvm")


def test_optional_fields_do_not_shift_the_filesystem_type():
    entries = parse_mountinfo(MOUNTINFO)
    assert entries[3].fstype == "xfs"  # two optional fields: shared:28 master:3
    assert entries[6].fstype == "ext4"  # none


def test_octal_escapes_are_decoded_in_mountpoint_and_source():
    entry = parse_mountinfo(MOUNTINFO)[6]
    assert entry.mountpoint == "/mnt/odd\ttab\\back\nline"
    assert entry.source == "/dev/sdb 1"


def test_escaped_backslash_followed_by_digits_is_decoded_once():
    entry = parse_mountinfo(r"80 22 8:1 / /mnt/a\134040b rw - ext4 /dev/sda1 rw")[0]
    assert entry.mountpoint == "/mnt/a\\040b"


def test_snapshot_mount_options_are_read():
    entry = parse_mountinfo(MOUNTINFO)[4]
    assert "ro" in entry.options and "noexec" in entry.options


def test_malformed_lines_are_skipped():
    text = "\n" + "garbage\n" + "1 2 3 4 5 6 7 8 9 10 11\n" + MOUNTINFO.splitlines()[0] + "\n"
    assert [e.mountpoint for e in parse_mountinfo(text)] == ["/"]


def test_mounted_at_returns_the_topmost_mount():
    entries = parse_mountinfo(MOUNTINFO)
    assert mounted_at("/mnt/vm backup", entries).fstype == "tmpfs"
    assert mounted_at("/srv/xen", entries).source == "/dev/mapper/system-xenvm"


@pytest.mark.parametrize("path", ["/mnt", "/mnt/vm", "/srv/xen/vm1", "/srv/xen/", "/nowhere"])
def test_mounted_at_matches_the_exact_path_only(path):
    assert mounted_at(path, parse_mountinfo(MOUNTINFO)) is None


def test_mounts_of_finds_the_snapshot_by_its_device_numbers():
    snapshot = recorded_lvs()["vmbackup"]  # 254:3
    [entry] = mounts_of(snapshot, parse_mountinfo(MOUNTINFO))
    assert entry.mountpoint == "/mnt/vm backup"
    assert entry.is_device(snapshot)


def test_inactive_volume_without_device_numbers_has_no_mounts():
    snapshot = dataclasses.replace(recorded_lvs()["vmbackup"], major=None, minor=None)
    assert mounts_of(snapshot, parse_mountinfo(MOUNTINFO)) == []


def test_read_mounts_reads_this_process_mount_table():
    entries = mount.read_mounts()
    assert any(e.mountpoint == "/" for e in entries)


# ---------------------------------------------------------------------------------------------
# Mount options and mounting


@pytest.mark.parametrize("fstype", ["xfs", "ext4", "btrfs"])
def test_snapshot_is_always_mounted_read_only_without_devices_setuid_or_exec(fstype):
    options = mount_options(fstype).split(",")
    assert {"ro", "nodev", "nosuid", "noexec"} <= set(options)
    assert "rw" not in options


def test_xfs_snapshot_gets_nouuid_because_it_shares_the_origins_uuid():
    assert "nouuid" in mount_options("xfs").split(",")


@pytest.mark.parametrize("fstype", ["ext4", "ext3", "btrfs", "xfs2"])
def test_other_filesystems_do_not_get_nouuid(fstype):
    assert "nouuid" not in mount_options(fstype).split(",")


@pytest.mark.parametrize("fstype", ["ext2", "ext3", "ext4"])
def test_a_guests_ext_filesystem_continues_on_errors_whatever_its_superblock_asks(fstype):
    # tune2fs -e panic in the guest would otherwise panic dom0 at the first error the backup reads
    assert mount_options(fstype, guest=True).split(",")[-1] == "errors=continue"
    assert "errors=continue" not in mount_options(fstype)  # the host's own: the admin's setting
    assert "errors=continue" not in mount_options("xfs", guest=True)


def test_mount_snapshot_mounts_read_only_with_the_filesystem_type():
    runner = FakeRunner().on("mount", "")
    mount_snapshot(runner, "/dev/mapper/system-vmbackup", "xfs", "/mnt/vmbackup")
    assert runner.argvs == [["mount", "-t", "xfs", "-o", "ro,nodev,nosuid,noexec,nouuid",
                             "/dev/mapper/system-vmbackup", "/mnt/vmbackup"]]


def test_failed_mount_is_a_mount_error_with_the_kernels_words():
    failure = CommandFailed(["mount"], 32, "mount: /mnt/vmbackup: wrong fs type, bad option, bad superblock")
    with pytest.raises(MountError) as caught:
        mount_snapshot(FakeRunner().on("mount", failure), "/dev/mapper/system-vmbackup", "xfs",
                       "/mnt/vmbackup")
    assert "bad superblock" in str(caught.value)
    assert "dmesg" in str(caught.value)


def test_filesystem_type_of_a_mounted_volume_comes_from_the_mount_table():
    runner = FakeRunner()  # answers nothing: a command would fail the test
    assert filesystem_type(runner, recorded_lvs()["xenvm"], parse_mountinfo(MOUNTINFO)) == "xfs"
    assert runner.argvs == []


def test_filesystem_type_of_an_unmounted_volume_comes_from_blkid():
    runner = FakeRunner().on("blkid", "ext4\n")
    assert filesystem_type(runner, recorded_lvs()["xenvm"], []) == "ext4"
    [argv] = runner.argvs
    assert argv[0] == "blkid" and argv[-1] == "/dev/mapper/system-xenvm"


def test_volume_without_a_filesystem_is_a_mount_error():
    with pytest.raises(MountError) as caught:
        filesystem_type(FakeRunner().on("blkid", ""), recorded_lvs()["xenvm"], [])
    assert "no filesystem found on system/xenvm" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# holders, on a fake /proc


def fake_process(proc: Path, pid: int, comm: str, cwd: str = "/", root: str = "/",
                 fds: tuple[str, ...] = ()) -> Path:
    base = proc / str(pid)
    (base / "fd").mkdir(parents=True)
    (base / "comm").write_text(comm + "\n")
    os.symlink(cwd, base / "cwd")
    os.symlink(root, base / "root")
    for number, target in enumerate(fds):
        os.symlink(target, base / "fd" / str(number))
    return base


@pytest.fixture
def proc(tmp_path) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    fake_process(proc, 1, "systemd", fds=("/dev/null", "socket:[1234]"))
    fake_process(proc, 100, "tar", cwd="/mnt/vmbackup/vm1")
    fake_process(proc, 200, "bash", cwd="/root", fds=("/dev/pts/0", "/mnt/vmbackup/disk.img (deleted)"))
    fake_process(proc, 300, "sshd", fds=("/mnt/vmbackup2/file", "/mnt/vmbackupfile"))
    fake_process(proc, 400, "chrooted", root="/mnt/vmbackup")
    fake_process(proc, 500, "sh", cwd="/mnt/vmbackup")
    (proc / "self").symlink_to(proc / "500")
    (proc / "meminfo").write_text("MemTotal: 1 kB\n")
    (proc / "sys").mkdir()
    return proc


def test_holders_names_every_process_using_the_mountpoint(proc):
    found = holders("/mnt/vmbackup", str(proc))
    assert sorted(found) == ["bash[200]", "chrooted[400]", "sh[500]", "tar[100]"]


def test_holders_ignores_paths_that_only_share_a_prefix(proc):
    assert "sshd[300]" not in holders("/mnt/vmbackup", str(proc))


def test_holders_accepts_a_trailing_slash(proc):
    assert sorted(holders("/mnt/vmbackup/", str(proc))) == sorted(holders("/mnt/vmbackup", str(proc)))


def test_holders_skips_processes_that_vanish_while_being_read(proc):
    half_gone = proc / "600"
    (half_gone / "fd").mkdir(parents=True)
    os.symlink("/mnt/vmbackup", half_gone / "cwd")  # no root link, no comm: the process ended
    fd_gone = fake_process(proc, 700, "rsync", cwd="/mnt/vmbackup")
    (fd_gone / "fd" / "9").write_text("")  # readlink fails on this one: an fd closed meanwhile
    found = holders("/mnt/vmbackup", str(proc))
    assert "rsync[700]" in found
    assert not any(h.endswith("[600]") for h in found)


def test_nobody_holds_an_unused_mountpoint(proc):
    assert holders("/mnt/databackup", str(proc)) == []


# ---------------------------------------------------------------------------------------------
# unmount_with_retry

BUSY = CommandFailed(["umount", "/mnt/vmbackup"], 32, "umount: /mnt/vmbackup: target is busy.")


@pytest.fixture
def no_sleep(monkeypatch):
    delays: list[float] = []
    monkeypatch.setattr(mount.time, "sleep", delays.append)
    monkeypatch.setattr(mount, "holders", lambda path: ["tar[4242]"])
    return delays


def test_unmount_succeeds_at_once_when_not_busy(no_sleep):
    runner = FakeRunner().on("umount", "")
    unmount_with_retry(runner, "/mnt/vmbackup", timeout=30)
    assert runner.argvs == [["umount", "/mnt/vmbackup"]]
    assert no_sleep == []


def test_unmount_retries_while_busy(no_sleep):
    runner = FakeRunner().on("umount", BUSY, BUSY, "")
    unmount_with_retry(runner, "/mnt/vmbackup", timeout=300)
    assert len(runner.argvs) == 3
    assert len(no_sleep) == 2 and no_sleep[1] > no_sleep[0]


def test_unmount_gives_up_naming_who_holds_the_mountpoint(no_sleep):
    with pytest.raises(MountError) as caught:
        unmount_with_retry(FakeRunner().on("umount", BUSY, ""), "/mnt/vmbackup", timeout=0)
    message = str(caught.value)
    assert "still busy" in message
    assert "tar[4242]" in message
    assert "unmount_timeout" in message


def test_unmount_failure_other_than_busy_is_not_retried(no_sleep):
    failure = CommandFailed(["umount", "/mnt/vmbackup"], 32, "umount: /mnt/vmbackup: not mounted.")
    runner = FakeRunner().on("umount", failure, "")
    with pytest.raises(MountError) as caught:
        unmount_with_retry(runner, "/mnt/vmbackup", timeout=300)
    assert "not mounted" in str(caught.value)
    assert len(runner.argvs) == 1
