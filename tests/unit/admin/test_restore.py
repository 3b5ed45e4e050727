"""restore-disk and restore-image: the layout they read, every refusal before a write (each its
own test), and what they run, in order, with a fake runner. (The real drill, on real LVM, is
tests/system/test_restore.py.) The runner is tests/unit/fakes.FakeRunner: lvs rows and xl list -l as
recorded on real hosts (tests/unit/data), every other command scripted."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from tests.unit.fakes import Answer, FakeRunner, lvs_with, recorded
from tests.unit.increments import test_chain
from xenlvm.admin import rebuild, restore
from xenlvm.errors import CommandFailed, IncrementInvalid, LockTimeout, SafetyRefusal, UsageError
from xenlvm.host import mount
from xenlvm.host.lvm import device_path
from xenlvm.host.mount import MountEntry
from xenlvm.increments import chain
from xenlvm.increments import fileformat as increment
from xenlvm.vmdisks import layout

# sfdisk --json of a GPT disk (util-linux 2.38.1, taken in the test guest)
SFDISK_GPT = """{
   "partitiontable": {
      "label": "gpt", "id": "8CCD5256-3A4E-2D48-BE86-0E40900D95F5", "device": "/dev/system/g",
      "unit": "sectors", "firstlba": 2048, "lastlba": 131038, "sectorsize": 512,
      "partitions": [
         {"node": "/dev/system/g1", "start": 2048, "size": 32768,
          "type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "uuid": "A78C56D8-03E1-4947-AA59-C7EEB4E44311",
          "name": "root fs"},
         {"node": "/dev/system/g3", "start": 34816, "size": 94208,
          "type": "E6D6D379-F507-44C2-A23C-238F2A3DF928", "uuid": "EDB0D012-0ED6-9547-B5E2-68FAE79E609A"}
      ]
   }
}"""
SIZE = 64 << 20
NUMBERS = (250, 7)  # the target LV's device numbers
DEVICE = "/dev/mapper/system-vm2--disk"
TARGET_PATHS = {"/dev/vg/vm2-disk": NUMBERS, DEVICE: NUMBERS}  # another name for the target, its own


def disk_layout(**changes) -> dict:
    table = layout.parse_sfdisk_json(SFDISK_GPT)
    base = {"format": "xenlvm-disk-layout", "format_version": 1, "xenlvm_version": "0.1.0",
            "written": "2026-12-01T20:00:00Z", "domain": "vm2", "disk": "xvda", "origin": "system/vm2-disk",
            "size": SIZE, "table": table, "table_error": None, "contents": [
                {"partition": 1, "type": "ext4", "uuid": "0b7c3b0e-6b7e-4c47-9f7a-2f0c1d1e5a10",
                 "label": "root", "exposed_as": "p1", "mount_options": "ro,nodev,nosuid,noexec"},
                {"partition": 3, "type": "swap", "uuid": "5f1d6c1a-9c7e-4b1e-8d6b-1a2b3c4d5e6f",
                 "label": None, "exposed_as": None, "reason": "swap", "detail": "swap: nothing to back up"}]}
    base.update(changes)
    return base


@pytest.fixture
def restored(tmp_path):
    """A restored vm2/xvda folder as sesam gives it back."""
    folder = tmp_path / "vm2" / "xvda"
    (folder / "p1" / "etc").mkdir(parents=True)
    (folder / "layout.json").write_text(json.dumps(disk_layout()))
    return folder


# An active LV as LVM 2.03.16 shows it (the recorded row of system/xenvm, every field there).
_RECORDED_ROW = json.loads(recorded("lvs_no_snapshot.json"))["report"][0]["lv"][0]


def lvs_row(name: str, *, attr: str = "-wi-a-----", size: int = SIZE, origin: str = "",
            numbers: tuple[int, int] | None = NUMBERS, pool: str = "") -> dict:
    """The recorded row with this LV's name, attributes, size, origin, pool and device numbers
    (None: inactive, as LVM shows an inactive LV)."""
    major, minor = numbers if numbers else ("-1", "-1")
    return {**_RECORDED_ROW, "lv_name": name, "vg_name": "system", "lv_attr": attr, "lv_size": str(size),
            "origin": origin, "pool_lv": pool, "lv_kernel_major": str(major), "lv_kernel_minor": str(minor),
            "lv_active": "active" if numbers else "", "lv_dm_path": device_path("system", name)}


# what restore-disk and restore-image change with
RESTORE_COMMANDS = ("sfdisk", "wipefs", "losetup", "mkfs.ext4", "mkfs.xfs", "mount", rebuild.COPY[0],
                    "umount", "mkswap", "blkdiscard", "dd")


def host_runner(rows: list[dict], *, dry_run: bool = False, fail: str | None = None) -> FakeRunner:
    """lvs shows rows (VG system); xl list -l shows the recorded domains of Xen 4.17, none with
    the target as a disk (see domain_has_the_target); every change succeeds, silent, and
    losetup --show prints /dev/loop7; fail names a command that exits 1 instead."""
    runner = FakeRunner(dry_run=dry_run)
    runner.on("lvs", lvs_with("lvs_no_snapshot.json", drop=["xenvm"], rows=rows))
    runner.on("xl list -l", recorded("xl_list_l_xen-4.17.json"))
    for command in RESTORE_COMMANDS:
        runner.on(command, "")
    runner.on("losetup --find --show", "/dev/loop7\n")
    if fail:
        runner.on(fail, Answer(stderr="injected failure", returncode=1))
    return runner


def domain_has_the_target(monkeypatch) -> None:
    """Domain vm2's recorded disk /dev/dm-5 (xl given the device-mapper name) is the target."""
    paths = {**TARGET_PATHS, "/dev/dm-5": NUMBERS}
    monkeypatch.setattr(mount, "device_numbers", lambda path: paths.get(path))


@pytest.fixture
def host(tmp_path, monkeypatch):
    """Nothing mounted, no loop device, no holder; /dev/vg/vm2-disk (another name for it) and
    the target's own path have the target's device numbers (domain_has_the_target gives a
    domain's disk them too); a private mount directory."""
    sys_root = tmp_path / "sys"
    (sys_root / "block").mkdir(parents=True)
    (sys_root / "dev" / "block" / "250:7" / "holders").mkdir(parents=True)
    monkeypatch.setattr(restore, "SYS", str(sys_root))
    monkeypatch.setattr(mount, "read_mounts", lambda: [])
    monkeypatch.setattr(mount, "device_numbers", lambda path: TARGET_PATHS.get(path))
    monkeypatch.setattr(rebuild.tempfile, "mkdtemp", lambda prefix: str(tmp_path / "mnt"))
    (tmp_path / "mnt").mkdir()
    return sys_root


def run_restore(runner, restored, tmp_path, *, yes=True):
    return rebuild.restore_disk(runner, str(restored), "system/vm2-disk", yes=yes, xl_timeout=5.0,
                                lock_dir=str(tmp_path / "locks"))


def refusal(runner, restored, tmp_path) -> str:
    with pytest.raises(SafetyRefusal) as raised:
        run_restore(runner, restored, tmp_path)
    assert runner.changes == []
    assert "Nothing was changed." in str(raised.value)
    return str(raised.value)


# ---------------------------------------------------------------------------------------------
# each refusal


def test_restore_disk_refuses_a_target_that_does_not_exist(restored, tmp_path, host):
    assert "the target system/vm2-disk does not exist: create it first" in \
        refusal(host_runner([lvs_row("other")]), restored, tmp_path)


def test_restore_disk_refuses_a_target_smaller_than_the_recorded_disk(restored, tmp_path, host):
    message = refusal(host_runner([lvs_row("vm2-disk", size=SIZE - 512)]), restored, tmp_path)
    assert f"has {SIZE - 512} bytes but the disk had {SIZE}" in message and "lvextend" in message


def test_restore_disk_refuses_a_target_that_is_not_active(restored, tmp_path, host):
    assert "is not active: lvchange -ay system/vm2-disk" in \
        refusal(host_runner([lvs_row("vm2-disk", attr="-wi-------", numbers=None)]), restored, tmp_path)


def test_restore_disk_refuses_a_target_that_a_domain_has_as_a_disk(restored, tmp_path, host, monkeypatch):
    domain_has_the_target(monkeypatch)
    runner = host_runner([lvs_row("vm2-disk")])
    assert "is a disk of domain 'vm2', which exists (running or paused): shut it down first" in \
        refusal(runner, restored, tmp_path)


def test_restore_disk_refuses_when_it_cannot_ask_xl_which_domains_have_which_disks(restored, tmp_path, host):
    runner = host_runner([lvs_row("vm2-disk")])
    runner.on("xl list -l", lambda argv: CommandFailed(argv, None, "", not_found=True))
    assert "cannot tell whether a domain has system/vm2-disk as a disk: could not run xl: program not found" \
        in refusal(runner, restored, tmp_path)
    assert runner.argvs_of("xl") == [["xl", "list", "-l"]]


def test_restore_disk_refuses_a_target_that_another_restore_is_writing(restored, tmp_path, host):
    runner = host_runner([lvs_row("vm2-disk")])
    with restore.lock(runner, str(tmp_path / "locks"), "system/vm2-disk"), pytest.raises(LockTimeout):
        run_restore(runner, restored, tmp_path)
    assert runner.changes == []


def test_restore_disk_refuses_a_mounted_target(restored, tmp_path, host, monkeypatch):
    monkeypatch.setattr(mount, "read_mounts", lambda: [
        MountEntry(*NUMBERS, "/srv/vm2", ("rw",), "ext4", "/dev/mapper/system-vm2--disk")])
    assert "is mounted at /srv/vm2: unmount it first" in \
        refusal(host_runner([lvs_row("vm2-disk")]), restored, tmp_path)


def test_restore_disk_refuses_a_target_under_a_loop_device(restored, tmp_path, host):
    loop = host / "block" / "loop3"
    (loop / "loop").mkdir(parents=True)
    (loop / "loop" / "backing_file").write_text("/dev/vg/vm2-disk\n")
    (loop / "dev").write_text("7:3\n")
    assert "is in use by /dev/loop3" in refusal(host_runner([lvs_row("vm2-disk")]), restored, tmp_path)


def test_restore_disk_refuses_a_target_under_a_device_mapper_device(restored, tmp_path, host):
    (host / "dev" / "block" / "250:7" / "holders" / "dm-9").mkdir()
    assert "is in use by dm-9" in refusal(host_runner([lvs_row("vm2-disk")]), restored, tmp_path)


def test_restore_disk_refuses_a_target_with_snapshots(restored, tmp_path, host):
    rows = [lvs_row("vm2-disk", attr="owi-a-s---"), lvs_row("vm2-disk.xenlvm", attr="swi-a-s---",
                                                             origin="vm2-disk", numbers=(250, 8))]
    assert "has snapshots (vm2-disk.xenlvm): remove them first" in \
        refusal(host_runner(rows), restored, tmp_path)


def test_restore_disk_refuses_an_open_target(restored, tmp_path, host):
    assert "is open (lvs shows 'o' in its attributes)" in \
        refusal(host_runner([lvs_row("vm2-disk", attr="-wi-ao----")]), restored, tmp_path)


def test_restore_disk_refuses_without_yes(restored, tmp_path, host):
    runner = host_runner([lvs_row("vm2-disk")])
    with pytest.raises(SafetyRefusal, match="then with --yes to do it. Nothing was changed."):
        run_restore(runner, restored, tmp_path, yes=False)
    assert runner.changes == []


def test_restore_disk_refuses_a_folder_without_the_files_of_an_exposed_filesystem(restored, tmp_path, host):
    (restored / "p1" / "etc").rmdir()
    (restored / "p1").rmdir()
    runner = host_runner([lvs_row("vm2-disk")])
    with pytest.raises(UsageError, match="p1 is missing from the restored folder"):
        run_restore(runner, restored, tmp_path)
    assert runner.changes == []


@pytest.mark.parametrize("target", ["system", "system/", "/vm2", "system/../x", "system/-rf", "a/b/c"])
def test_restore_refuses_a_target_that_is_not_vg_slash_lv(target):
    with pytest.raises(UsageError, match=r"^--to '.*' is not a (logical volume|valid LVM)"):
        restore.parse_target(target)
    assert restore.parse_target("/dev/system/vm2-disk") == ("system", "vm2-disk")


# ---------------------------------------------------------------------------------------------
# what it runs


def test_a_dry_run_checks_everything_and_only_prints_each_command(restored, tmp_path, host):
    runner = host_runner([lvs_row("vm2-disk")], dry_run=True)
    report = run_restore(runner, restored, tmp_path, yes=False)
    assert [argv[0] for argv in runner.changes] == ["sfdisk", "losetup", "mkfs.ext4", "mount", "cp", "umount",
                                                    "losetup", "mkswap"]
    assert {call.kind for call in runner.calls} == {"query", "would change"}
    assert runner.inputs_of("sfdisk") == [rebuild.sfdisk_script(disk_layout()["table"])]
    assert runner.changes[2] == ["mkfs.ext4", "-q", "-F", "-U", "0b7c3b0e-6b7e-4c47-9f7a-2f0c1d1e5a10", "-L",
                                 "root", "/dev/loopN (partition 1)"]
    assert runner.changes[-1] == ["mkswap", "-U", "5f1d6c1a-9c7e-4b1e-8d6b-1a2b3c4d5e6f",
                                  "/dev/loopN (partition 3)"]
    assert report[0].startswith("restored vm2/xvda onto system/vm2-disk: partition table; partition 1")


def test_restore_disk_rebuilds_table_filesystems_files_and_swap_in_order(restored, tmp_path, host):
    runner = host_runner([lvs_row("vm2-disk")])
    report = run_restore(runner, restored, tmp_path)
    mnt = str(tmp_path / "mnt")
    assert runner.changes == [
        ["sfdisk", "--wipe", "always", "--no-tell-kernel", DEVICE],
        ["losetup", "--find", "--show", "--offset", str(2048 * 512), "--sizelimit", str(32768 * 512),
         DEVICE],
        ["mkfs.ext4", "-q", "-F", "-U", "0b7c3b0e-6b7e-4c47-9f7a-2f0c1d1e5a10", "-L", "root", "/dev/loop7"],
        ["mount", "-t", "ext4", "-o", "nodev,nosuid,noexec", "/dev/loop7", mnt],
        [*rebuild.COPY, str(restored / "p1"), mnt],
        ["umount", mnt],
        ["losetup", "--detach", "/dev/loop7"],
        ["losetup", "--find", "--show", "--offset", str(34816 * 512), "--sizelimit", str(94208 * 512),
         DEVICE],
        ["mkswap", "-U", "5f1d6c1a-9c7e-4b1e-8d6b-1a2b3c4d5e6f", "/dev/loop7"],
        ["losetup", "--detach", "/dev/loop7"],
    ]
    assert runner.inputs_of("sfdisk") == [rebuild.sfdisk_script(disk_layout()["table"])]
    assert [call.input for call in runner.calls if call.kind == "change"][1:] == [None] * 9  # sfdisk's only
    assert report == ["restored vm2/xvda onto system/vm2-disk: partition table; partition 1: ext4 with its "
                      "files; partition 3: swap"]
    assert not os.path.exists(mnt)


def test_a_failed_copy_stops_and_says_what_the_disk_holds(restored, tmp_path, host):
    runner = host_runner([lvs_row("vm2-disk")], fail="cp")
    with pytest.raises(restore.RestoreFailed) as raised:
        run_restore(runner, restored, tmp_path)
    message = str(raised.value)
    assert "restore-disk stopped at 'partition 1: ext4 with its files': copying the files of" in message
    assert "The filesystem is made but holds only part of the files" in message
    assert "Done before: partition table." in message and "run restore-disk again" in message
    assert [argv[0] for argv in runner.changes[-2:]] == ["umount", "losetup"]  # taken down again
    assert not any(argv[0] == "mkswap" for argv in runner.changes)


def test_guest_lvm_and_unknown_partitions_are_reported_and_left_alone(restored, tmp_path, host):
    contents = disk_layout()["contents"]
    contents[1] = {"partition": 3, "type": "LVM2_member", "uuid": "abc-123", "label": None,
                   "exposed_as": None, "reason": "guest-lvm",
                   "detail": "a physical volume of the guest's own LVM"}
    (restored / "layout.json").write_text(json.dumps(disk_layout(contents=contents)))
    runner = host_runner([lvs_row("vm2-disk")])
    report = run_restore(runner, restored, tmp_path)
    assert report[1] == ("partition 3 left as it is (a physical volume of the guest's own LVM); restore it "
                         "by hand if the VM needs it")
    assert not [argv for argv in runner.changes if "--offset" in argv and str(34816 * 512) in argv]


def test_a_bare_filesystem_disk_is_wiped_and_made_on_the_whole_lv(tmp_path, host):
    folder = tmp_path / "vm3" / "xvdb"
    folder.mkdir(parents=True)
    (folder / "layout.json").write_text("a guest's own file of that name is not the layout")
    bare = disk_layout(table=None, contents=[{"partition": None, "type": "xfs", "uuid": "1234-abcd",
                                              "label": None, "exposed_as": ".", "mount_options": "ro"}])
    (tmp_path / "vm3" / "xvdb.layout.json").write_text(json.dumps(bare))
    runner = host_runner([lvs_row("vm2-disk")])
    rebuild.restore_disk(runner, str(folder), "system/vm2-disk", yes=True, xl_timeout=5.0,
                         lock_dir=str(tmp_path / "locks"))
    assert runner.changes[:2] == [["wipefs", "--all", "--force", DEVICE],
                                  ["mkfs.xfs", "-q", "-f", "-m", "uuid=1234-abcd", DEVICE]]
    assert runner.changes[3] == [*rebuild.COPY, str(folder), str(tmp_path / "mnt")]


# ---------------------------------------------------------------------------------------------
# the layout


def test_sfdisk_json_becomes_a_script_that_recreates_the_same_table():
    table = layout.parse_sfdisk_json(SFDISK_GPT)
    assert table["partitions"][1]["number"] == 3 and table["id"] == "8CCD5256-3A4E-2D48-BE86-0E40900D95F5"
    assert rebuild.sfdisk_script(table) == (
        "label: gpt\nunit: sectors\nsector-size: 512\nlabel-id: 8CCD5256-3A4E-2D48-BE86-0E40900D95F5\n"
        "first-lba: 2048\nlast-lba: 131038\n\n"
        "/dev/part1 : start=2048, size=32768, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, "
        'uuid=A78C56D8-03E1-4947-AA59-C7EEB4E44311, name="root fs"\n'
        "/dev/part3 : start=34816, size=94208, type=E6D6D379-F507-44C2-A23C-238F2A3DF928, "
        "uuid=EDB0D012-0ED6-9547-B5E2-68FAE79E609A\n")


@pytest.mark.parametrize("change, complaint", [
    ({"format_version": 2}, "format version 2; this xenlvm reads version 1 only"),
    ({"format": "something"}, "not a xenlvm disk layout"),
    ({"format": "xenlvm-domain-layout", "disks": {"xvda": "xvda/layout.json"}},
     "give one of its disks' folders (xvda)"),
    ({"size": None}, "the disk size is not recorded"),
    ({"table": None, "table_error": "the partition table could not be read: boom"}, "could not be read"),
    ({"contents": [{"partition": 1, "type": "ext4", "uuid": "1", "label": 'a"b', "exposed_as": "p1"}]},
     "label 'a\"b' is not valid"),
    ({"contents": [{"partition": 1, "type": "ext4", "uuid": "1", "label": None, "exposed_as": "../../etc"}]},
     "is not a path xenlvm writes"),
    ({"contents": [{"partition": 9, "type": "ext4", "uuid": "1", "label": None, "exposed_as": "p9"}]},
     "not in the table"),
])
def test_a_layout_that_cannot_be_trusted_is_refused(tmp_path, change, complaint):
    path = tmp_path / "layout.json"
    path.write_text(json.dumps(disk_layout(**change)))
    with pytest.raises(UsageError, match="is not usable") as raised:
        layout.read_disk_layout(str(path))
    assert complaint in str(raised.value)


def test_a_partition_name_with_a_quote_cannot_be_written_back(tmp_path):
    bad = disk_layout()
    bad["table"]["partitions"][0]["name"] = 'x", type=0'
    path = tmp_path / "layout.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(UsageError, match="name .* cannot be written back"):
        layout.read_disk_layout(str(path))


def test_no_layout_found_says_what_to_give(tmp_path):
    with pytest.raises(UsageError, match="no layout found"):
        layout.find_disk_layout(str(tmp_path / "vm2" / "xvda"))


DUMPE2FS = """Filesystem volume name:   root
Last mounted on:          /run/drillfs
Filesystem UUID:          0b7c3b0e-6b7e-4c47-9f7a-2f0c1d1e5a10
Filesystem magic number:  0xEF53
Filesystem revision #:    1 (dynamic)
Filesystem features:      has_journal ext_attr resize_inode dir_index filetype needs_recovery extent 64bit \
flex_bg sparse_super large_file dir_nlink extra_isize
Filesystem created:       Tue Dec  1 20:27:01 2026
Block size:               1024
Inode size:\t          256
"""


def test_an_ext_filesystems_features_and_sizes_are_recorded_without_its_runtime_flags():
    runner = FakeRunner().on("dumpe2fs", Answer(stdout=DUMPE2FS, stderr="dumpe2fs 1.47.0 (5-Feb-2023)\n"))
    assert layout.ext_parameters(runner, "/dev/loop3") == {
        "features": ["has_journal", "ext_attr", "resize_inode", "dir_index", "filetype", "extent", "64bit",
                     "flex_bg", "sparse_super", "large_file", "dir_nlink", "extra_isize"],
        "block_size": 1024, "inode_size": 256}
    assert [(c.kind, list(c.argv)) for c in runner.calls] == [("query", ["dumpe2fs", "-h", "/dev/loop3"])]


def test_an_ext_filesystem_is_made_again_with_exactly_its_recorded_features():
    entry = {"type": "ext4", "uuid": "0b7c3b0e", "label": None,
             "mkfs": {"features": ["has_journal", "extent"], "block_size": 4096, "inode_size": 256}}
    assert rebuild.mkfs_argv(entry, "/dev/loop7") == [
        "mkfs.ext4", "-q", "-F", "-U", "0b7c3b0e", "-b", "4096", "-I", "256", "-O", "none,has_journal,extent",
        "/dev/loop7"]


def test_recorded_mkfs_parameters_that_could_smuggle_options_are_refused(tmp_path):
    bad = disk_layout()
    bad["contents"][0]["mkfs"] = {"features": ["has_journal", "^x,-E,root_owner"], "block_size": 4096,
                                  "inode_size": 256}
    path = tmp_path / "layout.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(UsageError, match="partition 1: mkfs .* is not valid"):
        layout.read_disk_layout(str(path))


XFS_INFO = """meta-data=/dev/loop1             isize=512    agcount=4, agsize=19200 blks
         =                       sectsz=512   attr=2, projid32bit=1
         =                       crc=1        finobt=1, sparse=1, rmapbt=0
         =                       reflink=0    bigtime=0 inobtcount=0 nrext64=0
data     =                       bsize=4096   blocks=76800, imaxpct=25
         =                       sunit=0      swidth=0 blks
naming   =version 2              bsize=4096   ascii-ci=0, ftype=1
log      =internal log           bsize=4096   blocks=1368, version=2
         =                       sectsz=512   sunit=0 blks, lazy-count=1
realtime =none                   extsz=4096   blocks=0, rtextents=0
"""


def test_an_xfs_filesystem_is_recorded_and_made_again_with_its_flags():
    runner = FakeRunner().on("xfs_info", XFS_INFO)
    made = layout.xfs_parameters(runner, "/dev/loop1")
    assert [(c.kind, list(c.argv)) for c in runner.calls] == [("query", ["xfs_info", "/dev/loop1"])]
    assert made == {"block_size": 4096, "inode_size": 512, "flags": {
        "crc": 1, "finobt": 1, "sparse": 1, "rmapbt": 0, "reflink": 0, "bigtime": 0, "inobtcount": 0,
        "nrext64": 0, "ftype": 1}}
    entry = {"type": "xfs", "uuid": "4e0c", "label": "data", "mkfs": made}
    assert rebuild.mkfs_argv(entry, "/dev/loop7") == [
        "mkfs.xfs", "-q", "-f", "-b", "size=4096", "-i", "size=512,sparse=1,nrext64=0", "-n", "ftype=1",
        "-m", "uuid=4e0c,crc=1,finobt=1,rmapbt=0,reflink=0,bigtime=0,inobtcount=0", "-L", "data",
        "/dev/loop7"]
    v4 = {**made, "flags": {"crc": 0, "finobt": 0, "sparse": 0, "ftype": 1}}
    assert rebuild.mkfs_argv({**entry, "mkfs": v4}, "/dev/loop7")[3:10] == [
        "-b", "size=4096", "-i", "size=512", "-n", "ftype=1", "-m"]


# ---------------------------------------------------------------------------------------------
# restore-image


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "xvda.img"
    path.write_bytes(b"\0" * 4096 + b"MBR and more" + b"\0" * 4084)
    return path


def run_image(runner, image, tmp_path, monkeypatch, found="same"):
    sums = {str(image): "same", DEVICE: found}
    monkeypatch.setattr(restore, "sha256_of", lambda path, length: sums[path])
    return restore.restore_image(runner, str(image), "system/vm2-disk", yes=True, xl_timeout=5.0,
                                 lock_dir=str(tmp_path / "locks"))


def test_restore_image_copies_onto_a_classic_lv_every_block_then_compares(image, tmp_path, host, monkeypatch):
    runner = host_runner([lvs_row("vm2-disk", size=8192)])
    report = run_image(runner, image, tmp_path, monkeypatch)
    assert runner.changes == [["dd", f"if={image}", f"of={DEVICE}", "bs=4M", "conv=fsync", "status=none"]]
    assert report == [f"restored {image} onto system/vm2-disk: 8192 bytes, SHA-256 same verified"]


def test_restore_image_keeps_a_thin_lv_thin(image, tmp_path, host, monkeypatch):
    runner = host_runner([lvs_row("vm2-disk", attr="Vwi-a-tz--", size=1 << 20, pool="pool")])
    report = run_image(runner, image, tmp_path, monkeypatch)
    assert runner.changes == [["blkdiscard", DEVICE],
                              ["dd", f"if={image}", f"of={DEVICE}", "bs=4M", "conv=sparse,fsync",
                               "status=none"]]
    assert "bytes larger than the image; the rest was left as it was" in report[1]


def test_restore_image_fails_when_the_lv_does_not_hold_the_image_after_it(image, tmp_path, host, monkeypatch):
    with pytest.raises(restore.RestoreFailed, match="does not hold the image after the copy .* do not start"):
        run_image(host_runner([lvs_row("vm2-disk")]), image, tmp_path, monkeypatch, found="other")


def test_restore_image_makes_the_same_refusals(image, tmp_path, host, monkeypatch):
    runner = host_runner([lvs_row("vm2-disk", size=4096)])
    with pytest.raises(SafetyRefusal, match="has 4096 bytes but the disk had 8192"):
        run_image(runner, image, tmp_path, monkeypatch)
    domain_has_the_target(monkeypatch)
    runner = host_runner([lvs_row("vm2-disk")])
    with pytest.raises(SafetyRefusal, match="is a disk of domain 'vm2'"):
        run_image(runner, image, tmp_path, monkeypatch)
    assert runner.changes == []


# ---------------------------------------------------------------------------------------------
# restore-image of an increment: its chain


@pytest.fixture
def chain_folder(tmp_path) -> tuple[list, list[bytes]]:
    """vm2's xvda backed up 4 times (a full image, 3 increments) into one folder."""
    folder = tmp_path / "vm2"
    folder.mkdir()
    states = test_chain.history(4)
    return test_chain.write_chain(folder, states), states


def run_chain(runner, path, tmp_path, monkeypatch, *, fill=b"\xff"):
    """restore-image path onto system/vm2-disk, whose device is the file tmp_path/device."""
    device = tmp_path / "device"
    device.write_bytes(fill * test_chain.SIZE)
    monkeypatch.setattr(restore, "device_path", lambda vg, lv: str(device))
    return restore.restore_image(runner, str(path), "system/vm2-disk", yes=True, xl_timeout=5.0,
                                 lock_dir=str(tmp_path / "locks"))


def test_restore_image_of_an_increment_writes_the_disk_as_of_its_run(chain_folder, tmp_path, host,
                                                                      monkeypatch):
    paths, states = chain_folder
    report = run_chain(host_runner([lvs_row("vm2-disk")]), paths[2], tmp_path, monkeypatch)
    assert (tmp_path / "device").read_bytes() == states[2]
    assert report[0].startswith("the chain, oldest first")
    assert report[1].strip().startswith(f"full image {paths[0]}")
    assert report[-2] == ("restored the disk as of run 20261206T020000_102 onto system/vm2-disk: 1024 bytes, "
                          f"SHA-256 {hashlib.sha256(states[2]).hexdigest()} verified")
    assert report[-1].startswith(f"note: system/vm2-disk is {SIZE - 1024} bytes larger than the image")


def test_restore_image_dry_run_lists_the_chain_and_writes_nothing(chain_folder, tmp_path, host, monkeypatch):
    paths, _ = chain_folder
    runner = host_runner([lvs_row("vm2-disk")], dry_run=True)
    report = run_chain(runner, paths[3], tmp_path, monkeypatch)
    assert [line.split(" (")[0].strip() for line in report[1:5]] == [
        f"full image {paths[0]}", f"increment {paths[1]}", f"increment {paths[2]}", f"increment {paths[3]}"]
    assert report[-1].startswith("dry run: would write the disk as of run 20261206T030000_103")
    assert (tmp_path / "device").read_bytes() == b"\xff" * test_chain.SIZE
    assert runner.changes == []


def test_restore_image_of_an_increment_makes_the_same_refusals(chain_folder, tmp_path, host, monkeypatch):
    paths, _ = chain_folder
    runner = host_runner([lvs_row("vm2-disk", size=1000)])
    with pytest.raises(SafetyRefusal, match="has 1000 bytes but the disk had 1024"):
        run_chain(runner, paths[3], tmp_path, monkeypatch)
    domain_has_the_target(monkeypatch)
    runner = host_runner([lvs_row("vm2-disk")])
    with pytest.raises(SafetyRefusal, match="is a disk of domain 'vm2'"):
        run_chain(runner, paths[3], tmp_path, monkeypatch)
    assert runner.changes == []


def test_restore_image_refuses_a_chain_with_a_gap_before_it_looks_at_the_target(chain_folder, tmp_path, host,
                                                                                 monkeypatch):
    paths, _ = chain_folder
    paths[1].unlink()
    runner = host_runner([lvs_row("vm2-disk")])
    with pytest.raises(chain.ChainBroken, match="run 20261206T010000_101 is missing"):
        run_chain(runner, paths[3], tmp_path, monkeypatch)
    assert runner.calls == []
    assert (tmp_path / "device").read_bytes() == b"\xff" * test_chain.SIZE


def test_restore_image_refuses_a_damaged_increment_and_writes_nothing(chain_folder, tmp_path, host,
                                                                      monkeypatch):
    paths, _ = chain_folder
    raw = bytearray(paths[2].read_bytes())
    raw[len(raw) // 2] ^= 1
    paths[2].write_bytes(raw)
    runner = host_runner([lvs_row("vm2-disk")])
    with pytest.raises(IncrementInvalid, match="Restore that file again from the backup"):
        run_chain(runner, paths[3], tmp_path, monkeypatch)
    assert runner.changes == []
    assert (tmp_path / "device").read_bytes() == b"\xff" * test_chain.SIZE


def test_a_chain_file_that_shrinks_while_it_is_written_says_the_target_holds_a_partial_copy(
        chain_folder, tmp_path, host, monkeypatch):
    """The files are verified before the first write; one truncated after that (a second sesam
    restore into the folder, a failing disk) stops the write with what the target now holds."""
    paths, _ = chain_folder
    real_resolve = chain.resolve

    def resolve_then_truncate(path):
        found = real_resolve(path)
        os.truncate(paths[2], os.path.getsize(paths[2]) // 2)
        return found

    monkeypatch.setattr(chain, "resolve", resolve_then_truncate)
    with pytest.raises(restore.RestoreFailed, match="now holds a partial copy and is not usable") as caught:
        run_chain(host_runner([lvs_row("vm2-disk")]), paths[3], tmp_path, monkeypatch)
    assert str(paths[2]) in str(caught.value)


def test_a_chain_file_that_changes_after_its_checks_stops_the_write_instead_of_restoring_it(
        chain_folder, tmp_path, host, monkeypatch):
    """Rot or a second writer between the checks and the write: the bytes are proven again as
    they are written, so the restore fails instead of reporting a verified copy of other data."""
    paths, _ = chain_folder
    real_resolve = chain.resolve

    def resolve_then_change(path):
        found = real_resolve(path)
        with open(paths[0], "r+b") as f:  # the full image, in place: its size stays the same
            f.write(b"\0\0\0\0")
        return found

    monkeypatch.setattr(chain, "resolve", resolve_then_change)
    with pytest.raises(restore.RestoreFailed, match=f"{paths[0]}: bytes 0 to 1024 of it changed since they "
                       "were verified.*now holds a partial copy and is not usable"):
        run_chain(host_runner([lvs_row("vm2-disk")]), paths[3], tmp_path, monkeypatch)


def test_restore_image_of_an_increment_keeps_a_thin_lv_thin(tmp_path, host, monkeypatch):
    """After blkdiscard (the device reads as zeros), blocks of zeros are not written."""
    folder = tmp_path / "vm2"
    folder.mkdir()
    block = test_chain.BLOCK
    first = bytes(3 * block) + b"d" * block + bytes(12 * block)
    states = [first, first[:5 * block] + b"e" * block + first[6 * block:]]
    paths = test_chain.write_chain(folder, states)
    runner = host_runner([lvs_row("vm2-disk", attr="Vwi-a-tz--", pool="pool")])
    monkeypatch.setattr(increment, "CHUNK", block)  # written in blocks of the pool's size
    written = []
    real_pwrite = os.pwrite
    monkeypatch.setattr(restore.os, "pwrite",
                        lambda fd, data, at: written.append(at) or real_pwrite(fd, data, at))
    run_chain(runner, paths[1], tmp_path, monkeypatch, fill=b"\0")
    assert runner.changes == [["blkdiscard", str(tmp_path / "device")]]
    assert written == [3 * block, 5 * block]
    assert (tmp_path / "device").read_bytes() == states[1]


def test_the_checksum_is_of_the_first_bytes_only(tmp_path):
    path = tmp_path / "device"
    path.write_bytes(b"abc" + b"tail")
    assert restore.sha256_of(str(path), 3) == hashlib.sha256(b"abc").hexdigest()
    with pytest.raises(restore.RestoreFailed, match="ended 3 bytes short of 10"):
        restore.sha256_of(str(path), 10)


def test_a_label_that_blkid_escaped_is_recorded_as_it_is():
    disk = layout.DiskLayout("vm2", "xvda", "system/vm2-disk", SIZE)
    disk.add(1, {"TYPE": "ext4", "UUID": "0b7c", "LABEL": "my\\ root"}, exposed_as="p1", mount_options="ro")
    assert disk.contents[0]["label"] == "my root"
    assert rebuild.mkfs_argv(disk.contents[0], "/dev/loop7")[-3:] == ["-L", "my root", "/dev/loop7"]
