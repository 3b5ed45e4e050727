"""VM disks: which disks a job finds, how partitions are read and judged, what counts as
xenlvm's when tearing down. (The real thing runs in tests/system/test_vmdisks.py.)"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import pytest

from tests.unit.fakes import FakeRunner, recorded
from xenlvm.config.load import parse_config
from xenlvm.config.model import AUTO, Job, VmDiskSettings, parse_size
from xenlvm.core import ownership
from xenlvm.core.undo import UndoStack
from xenlvm.errors import ConfigError, PreflightFailed
from xenlvm.host.lvm import LogicalVolume, VolumeGroup
from xenlvm.host.mount import MountEntry
from xenlvm.host.xl import Xl
from xenlvm.vmdisks import expose as vmdisks
from xenlvm.vmdisks import target as vmdisk_target
from xenlvm.vmdisks import teardown as vmdisk_teardown
from xenlvm.vmdisks.model import Exposure
from xenlvm.xen import domains as xen

# Real partx output (util-linux 2.38) for the system tests' disks, taken in the guest.
PARTX_DOS = "1 2048 16777216 0x83\n2 34816 4194304 0x82\n3 43008 45088768 0x83\n"
PARTX_GPT = ("1 2048 16777216 0fc63daf-8483-4772-8e79-3d69d8477de4\n"
             "2 34816 23051776 e6d6d379-f507-44c2-a23c-238f2a3df928\n")
PARTX_EXTENDED = "1 2048 8388608 0x83\n2 18432 33554432 0x5\n5 20480 16777216 0x83\n"
# The same table as sfdisk --json (util-linux 2.38) shows it, for the layout pre writes.
SFDISK_DOS_EXTENDED = json.dumps({"partitiontable": {
    "label": "dos", "id": "0x5e1f3a07", "device": "/dev/system/vm2-disk.xenlvm", "unit": "sectors",
    "sectorsize": 512, "partitions": [
        {"node": "/dev/system/vm2-disk.xenlvm1", "start": 2048, "size": 16384, "type": "82"},
        {"node": "/dev/system/vm2-disk.xenlvm2", "start": 18432, "size": 65536, "type": "5"},
        {"node": "/dev/system/vm2-disk.xenlvm5", "start": 20480, "size": 32768, "type": "83"}]}})


def lv(name: str, major_minor: tuple[int, int] | None, *, vg: str = "system", pool: str = "",
       attr: str = "-wi-ao----", origin: str = "", tags: frozenset[str] = frozenset()) -> LogicalVolume:
    major, minor = major_minor if major_minor else (None, None)
    return LogicalVolume(vg=vg, name=name, attr=attr, size=64 << 20, origin=origin, pool=pool, tags=tags,
                         data_percent=None, snapshot_invalid=False, active=True, major=major, minor=minor,
                         dm_path=f"/dev/mapper/{vg}-{name}", created="")


VGS = {"system": VolumeGroup("system", 1 << 30, 2 << 30, 4 << 20, {
    "vm2-disk": lv("vm2-disk", (254, 1)),
    "vm3-disk": lv("vm3-disk", (254, 2)),
    "thin-disk": lv("thin-disk", (254, 3), pool="pool", attr="Vwi-aotz--"),
    "xenvm": lv("xenvm", (254, 0)),
})}
DEVICES = {"/dev/system/vm2-disk": (254, 1), "/dev/system/vm3-disk": (254, 2),
           "/dev/system/thin-disk": (254, 3), "/dev/sdb": (8, 16)}


def disk(path: str, vdev: str, **extra) -> dict:
    """One disk of `xl list -l` as libxl prints it (fields at their default, like is_cdrom 0, left out)."""
    return {"pdev_path": path, "vdev": vdev, "backend": "phy", "format": "raw", "readwrite": 1, **extra}


def xl_for(domains: dict[str, list[dict]]) -> Xl:
    """xl on a host running Domain-0 and the given domains with their disks: `xl list` and
    `xl list -l` in the layout of the recorded Xen 4.17 output (tests/unit/data)."""
    names = ["Domain-0", *domains]
    listing = "Name                                        ID   Mem VCPUs\tState\tTime(s)\n" + "".join(
        f"{name:<40} {domid:5d}  1024     1     -b----      12.0\n" for domid, name in enumerate(names))
    records = [{"domid": domid, "config": {"c_info": {"type": "pv", "name": name},
                                           **({"disks": domains[name]} if domains.get(name) else {})}}
               for domid, name in enumerate(names)]
    runner = FakeRunner().on("xl list", listing).on("xl list -l", json.dumps(records, indent=4))
    return Xl(runner, 5.0)


def job(domains=AUTO, missing="warn", expose="files") -> Job:
    return Job(name="disks", mountpoint="/mnt/vmdisks", volumes=(),
               vmdisks=VmDiskSettings(domains=domains, size=parse_size("16M"), missing=missing,
                                      expose=expose))


def discover(job: Job, xl: Xl, vgs: dict[str, VolumeGroup]) -> list[vmdisk_target.VmDiskTarget]:
    """The job's VM disk targets, from xl's answers as pre's inventory reads them."""
    return vmdisk_target.discover(job, xl.view(), vgs)


@pytest.fixture(autouse=True)
def devices(monkeypatch):
    monkeypatch.setattr(vmdisks.mount, "device_numbers", DEVICES.get)


def test_each_disk_on_an_lv_becomes_a_snapshot_spec_below_domain_and_disk():
    xl = xl_for({"vm2": [disk("/dev/system/vm2-disk", "xvda")],
                 "vm3": [disk("/dev/system/vm3-disk", "xvda"), disk("/dev/system/thin-disk", "xvdb")]})
    specs = discover(job(), xl, VGS)
    assert [(s.domain, s.disk, str(s.origin), s.spec.snapshot, s.spec.mountpoint) for s in specs] == [
        ("vm2", "xvda", "system/vm2-disk", "vm2-disk.xenlvm", "/mnt/vmdisks/vm2/xvda"),
        ("vm3", "xvda", "system/vm3-disk", "vm3-disk.xenlvm", "/mnt/vmdisks/vm3/xvda"),
        ("vm3", "xvdb", "system/thin-disk", "thin-disk.xenlvm", "/mnt/vmdisks/vm3/xvdb"),
    ]
    assert [s.spec.size.text if s.spec.size else None for s in specs] == ["16M", "16M", None]  # thin: no size
    assert {s.how for s in specs} == {"files"}


def test_with_incremental_thin_a_thin_disk_is_chained_and_a_classic_one_exposed_whole_with_a_warning(caplog):
    xl = xl_for({"vm3": [disk("/dev/system/vm3-disk", "xvda"), disk("/dev/system/thin-disk", "xvdb")]})
    chained = dataclasses.replace(job(expose="image-copy"), vmdisks=VmDiskSettings(
        domains=AUTO, size=parse_size("16M"), expose="image-copy", image_dir="/srv/images",
        incremental="thin"))
    with caplog.at_level(logging.WARNING, "xenlvm"):
        specs = discover(chained, xl, VGS)
    assert [(s.disk, s.how) for s in specs] == [("xvda", "image-copy"), ("xvdb", Exposure.CHAIN)]
    assert ("disk xvda of domain vm3 (/dev/system/vm3-disk): not a thin LV, so no increments (thin_delta "
            "reads thin pools only): its whole image xvda.img every run") in caplog.text


def test_disks_that_are_not_lvs_are_reported_and_fail_pre_when_asked(caplog):
    xl = xl_for({"vm2": [disk("/dev/system/vm2-disk", "xvda"), disk("/dev/sdb", "xvdb"),
                         disk("/srv/vm2/disk.img", "xvdc", backend="qdisk"),
                         disk("/dev/sr0", "xvdd", is_cdrom=1)]})
    with caplog.at_level(logging.WARNING, "xenlvm"):
        specs = discover(job(), xl, VGS)
    assert [s.disk for s in specs] == ["xvda"]
    assert "disk xvdb of domain vm2 (/dev/sdb): not a logical volume" in caplog.text
    assert "disk xvdc of domain vm2 (/srv/vm2/disk.img): not a logical volume" in caplog.text
    assert "xvdd" not in caplog.text  # a CD-ROM is no disk to back up
    with pytest.raises(PreflightFailed, match="vmdisks.missing is 'fail'"):
        discover(job(missing="fail"), xl, VGS)


def test_named_domains_only_and_missing_ones_reported():
    xl = xl_for({"vm2": [disk("/dev/system/vm2-disk", "xvda")],
                 "vm3": [disk("/dev/system/vm3-disk", "xvda")]})
    assert [s.domain for s in discover(job(domains=("vm3",)), xl, VGS)] == ["vm3"]
    with pytest.raises(PreflightFailed, match="domain 'vm9' does not exist or is not running"):
        discover(job(domains=("vm3", "vm9"), missing="fail"), xl, VGS)


def test_a_disk_shared_by_two_domains_is_backed_up_once():
    xl = xl_for({"vm2": [disk("/dev/system/vm2-disk", "xvda")],
                 "vm3": [disk("/dev/system/vm2-disk", "xvdb")]})
    assert [(s.domain, s.disk) for s in discover(job(), xl, VGS)] == [("vm2", "xvda")]


@pytest.mark.parametrize("name", ["..", ".hidden", "a/b", "-rf", "vm 2", "x" * 65])
def test_names_that_are_not_one_plain_directory_name_are_refused(name):
    xl = xl_for({name: [disk("/dev/system/vm2-disk", "xvda")], "vm3": [disk("/dev/system/vm3-disk", name)]})
    specs = discover(job(), xl, VGS)
    assert specs == []
    with pytest.raises(PreflightFailed):
        discover(job(missing="fail"), xl, VGS)


def test_partx_output_gives_byte_offsets_and_sizes():
    assert [(p.number, p.offset, p.size, p.type) for p in vmdisks.parse_partx(PARTX_DOS)] == [
        (1, 1048576, 16777216, "0x83"), (2, 17825792, 4194304, "0x82"), (3, 22020096, 45088768, "0x83")]
    gpt = vmdisks.parse_partx(PARTX_GPT)
    assert [p.offset for p in gpt] == [1048576, 17825792]
    assert gpt[1].type == "e6d6d379-f507-44c2-a23c-238f2a3df928"
    assert vmdisks.parse_partx("") == []


def probe_runner(whole: str, by_offset: dict[int, str], partx: str) -> FakeRunner:
    """blkid answers by offset (the whole disk without one), partx with the partition table;
    any changing command fails the test (no loop device is made when nothing is mountable)."""
    def blkid(argv):
        return by_offset.get(int(argv[argv.index("--offset") + 1]), "") if "--offset" in argv else whole
    return FakeRunner().on("blkid", blkid).on("partx", partx)


def test_swap_guest_lvm_extended_and_unknown_partitions_never_get_a_device(tmp_path, caplog):
    runner = probe_runner("PTTYPE=dos\n", {1048576: "TYPE=swap\n", 9437184: "TYPE=LVM2_member\n",
                                          10485760: "TYPE=crypto_LUKS\n"}, PARTX_EXTENDED)
    runner.on("sfdisk", SFDISK_DOS_EXTENDED)
    spec = discover(job(), xl_for({"vm2": [disk("/dev/system/vm2-disk", "xvda")]}), VGS)[0]
    spec.spec = dataclasses.replace(spec.spec, mountpoint=str(tmp_path / "vm2" / "xvda"))
    with caplog.at_level(logging.INFO, "xenlvm"):
        vmdisks.expose(runner, job(), spec, UndoStack())
    assert not [a for a in runner.argvs if a[0] in ("losetup", "mount")]
    assert "vm2/xvda partition 1 is swap: nothing to back up" in caplog.text
    assert "vm2/xvda partition 2: an extended partition" in caplog.text
    assert "vm2/xvda partition 5 holds crypto_LUKS, which xenlvm does not mount" in caplog.text
    runner = probe_runner("TYPE=LVM2_member\n", {}, "")
    with caplog.at_level(logging.WARNING, "xenlvm"):
        vmdisks.expose(runner, job(), spec, UndoStack())
    assert "vm2/xvda holds guest LVM" in caplog.text and "dangerous" in caplog.text


@pytest.mark.parametrize("probed, expected", [
    ({"TYPE": "ext4"}, "ext4"), ({"TYPE": "ext3"}, "ext3"), ({"TYPE": "xfs"}, "xfs"),
    ({"TYPE": "btrfs"}, None), ({"TYPE": "swap"}, None), ({"TYPE": "LVM2_member"}, None),
    ({"TYPE": "ntfs"}, None), ({}, None),
])
def test_only_filesystems_xenlvm_can_mount_read_only_are_mounted(probed, expected):
    assert vmdisks._usable("vm2/xvda", probed) == expected


def test_only_lvs_with_all_three_tags_are_the_jobs_disk_snapshots():
    tags = frozenset({"xenlvm", "xenlvm_vmdisk", "xenlvm_job_disks"})
    group = VolumeGroup("system", 0, 0, 0, {
        "a.xenlvm": lv("a.xenlvm", (254, 5), origin="a", tags=tags),
        "b.xenlvm": lv("b.xenlvm", (254, 6), origin="b", tags=tags - {"xenlvm_vmdisk"}),
        "c.xenlvm": lv("c.xenlvm", (254, 7), origin="c", tags=tags - {"xenlvm"}),
        "d.xenlvm": lv("d.xenlvm", (254, 8), origin="d", tags=frozenset({"xenlvm", "xenlvm_vmdisk",
                                                                           "xenlvm_job_other"})),
    })
    found = ownership.vm_disk_snapshots(job(), {"system": group})
    assert [s.name for s in found] == ["a.xenlvm"]
    spec = ownership.vm_disk_spec(job(), found[0])
    assert ownership.owns(job(), spec, found[0])


def test_a_disk_snapshot_renamed_out_of_xenlvms_naming_is_not_the_jobs_whatever_its_tags(caplog):
    # An admin keeps a snapshot by renaming it (lvrename keeps the tags): it must survive
    # the next pre and post, as a volume's renamed snapshot does.
    tags = frozenset({"xenlvm", "xenlvm_vmdisk", "xenlvm_job_disks", "xenlvm_run_20261206T010000_42"})
    kept = lv("vm2-disk.keep-for-forensics", (254, 9), origin="vm2-disk", tags=tags)
    group = VolumeGroup("system", 0, 0, 0, {kept.name: kept})
    with caplog.at_level(logging.DEBUG, "xenlvm"):
        assert ownership.vm_disk_snapshots(job(), {"system": group}) == []
    assert "renamed to be kept, so xenlvm leaves it alone" in caplog.text
    # and the proof of ownership checks the name too: the spec is xenlvm's, not the LV's
    spec = ownership.vm_disk_spec(job(), kept)
    assert spec.snapshot == "vm2-disk.xenlvm"
    assert not ownership.owns(job(), spec, kept)


def test_loop_devices_are_ours_only_when_backed_by_our_snapshot(tmp_path, monkeypatch):
    sys_block = tmp_path / "block"
    for name, backing, dev in [("loop0", "/dev/mapper/system-a.xenlvm", "7:0"),
                               ("loop1", "/srv/other.img", "7:1"), ("loop2", None, "7:2")]:
        (sys_block / name).mkdir(parents=True)
        (sys_block / name / "dev").write_text(dev + "\n")
        if backing:
            (sys_block / name / "loop").mkdir()
            (sys_block / name / "loop" / "backing_file").write_text(backing + "\n")
    (sys_block / "sda").mkdir()
    numbers = {"/dev/mapper/system-a.xenlvm": (254, 5), "/srv/other.img": None}
    monkeypatch.setattr(vmdisks.mount, "device_numbers", numbers.get)
    assert vmdisk_teardown.loops_of([(254, 5)], str(sys_block)) == {"/dev/loop0": (7, 0)}
    assert vmdisk_teardown.loops_of([(254, 9)], str(sys_block)) == {}


def test_an_image_bind_is_recognised_by_its_filesystem_and_directory(tmp_path, monkeypatch):
    staging = tmp_path / "xenlvm-disks"
    staging.mkdir()
    device = staging.stat().st_dev
    major, minor = os.major(device), os.minor(device)
    entry = MountEntry(major, minor, "/mnt/vmdisks/vm2/xvda.img", ("ro",), "ext4", "/dev/sda1",
                       "/images/xenlvm-disks/vm2.xvda.img")
    assert vmdisk_teardown.is_image_bind(entry, str(staging))
    assert not vmdisk_teardown.is_image_bind(dataclasses.replace(entry, minor=minor + 1), str(staging))
    elsewhere = MountEntry(major, minor, "/mnt/vmdisks/vm2/xvda.img", ("ro",), "ext4", "/dev/sda1",
                           "/images/other/vm2.xvda.img")
    assert not vmdisk_teardown.is_image_bind(elsewhere, str(staging))
    assert not vmdisk_teardown.is_image_bind(entry, None)


def config_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/xenlvm/config.yaml")
    return str(info.value)


BASE = "jobs:\n  disks:\n    mountpoint: /mnt/vmdisks\n    vmdisks:\n      domains: auto\n      size: 16M\n"


def test_vmdisks_configuration():
    config = parse_config(BASE + "      expose: image-copy\n      image_dir: /var/tmp/images\n")
    settings = config.jobs["disks"].vmdisks
    assert settings == VmDiskSettings(AUTO, parse_size("16M"), "image-copy", "warn", "/var/tmp/images")
    assert config.jobs["disks"].volumes == ()
    assert "expose: image-copy needs 'image_dir:'" in config_error(BASE + "      expose: image-copy\n")
    fuse = parse_config(BASE + "      expose: image\n").jobs["disks"].vmdisks
    assert fuse is not None and fuse.expose == "image"  # served through FUSE: no image_dir
    assert "must lie outside the job's mountpoint" in config_error(
        BASE + "      expose: image-copy\n      image_dir: /mnt/vmdisks/images\n")
    assert "'blocks' is not one of: files, image, image-copy" in config_error(BASE + "      expose: blocks\n")
    assert "the key 'size' is required" in config_error(BASE.replace("      size: 16M\n", ""))
    assert "give its volumes as a 'volumes:' list" in config_error(
        BASE + "    volume: system/xenvm\n    snapshot: vmbackup\n    size: 1G\n")
    both = parse_config(BASE + "    volumes:\n      - {volume: system/xenvm, snapshot: vmbackup, size: 1G}\n")
    assert [s.mountpoint for s in both.jobs["disks"].volumes] == ["/mnt/vmdisks/xenvm"]


def test_post_deletes_only_the_image_files_it_wrote(tmp_path):
    staging = tmp_path / "xenlvm-disks"
    staging.mkdir(mode=0o700)  # as pre makes it (test_image_copy.py: any other is left alone)
    (staging / "vm2.xvda.img").write_bytes(b"\0" * 10)
    vmdisk_teardown._remove_images(str(staging))
    assert not staging.exists()
    staging.mkdir(mode=0o700)
    (staging / "vm2.xvda.img").write_bytes(b"\0")
    (staging / "notes.txt").write_text("an admin's file")
    (staging / "link.img").symlink_to(tmp_path / "elsewhere.img")
    (tmp_path / "elsewhere.img").write_text("not ours")
    vmdisk_teardown._remove_images(str(staging))
    assert sorted(p.name for p in staging.iterdir()) == ["link.img", "notes.txt"]
    assert (tmp_path / "elsewhere.img").read_text() == "not ours"
    vmdisk_teardown._remove_images(str(tmp_path / "missing"))  # nothing there: nothing to do


def test_a_btrfs_mount_is_recognised_by_its_source_device_not_its_anonymous_number(monkeypatch):
    monkeypatch.setattr(vmdisks.mount, "device_numbers", {"/dev/loop3": (7, 3)}.get)
    btrfs = MountEntry(0, 52, "/mnt/vmdisks/vm2/xvda/p1", ("ro",), "btrfs", "/dev/loop3")
    assert vmdisks._shows(btrfs, "/dev/loop3")
    assert not vmdisks._shows(dataclasses.replace(btrfs, source="/dev/loop4"), "/dev/loop3")
    ext4 = MountEntry(7, 3, "/mnt/vmdisks/vm2/xvda/p1", ("ro",), "ext4", "/dev/loop3")
    assert vmdisks._shows(ext4, "/dev/loop3")
    assert not vmdisks._shows(dataclasses.replace(ext4, minor=4), "/dev/loop3")
    assert not vmdisks._shows(None, "/dev/loop3")


# ---------------------------------------------------------------------------------------------
# The recorded xl output of two Xen releases (tests/unit/data): disks given every way xl shows them

RECORDED_VGS = {"system": VolumeGroup("system", 1 << 30, 2 << 30, 4 << 20, {
    "vm1-disk": lv("vm1-disk", (254, 11)),
    "vm1-swap": lv("vm1-swap", (254, 12)),
    "vm2-root": lv("vm2-root", (254, 13)),
    "vm2-home": lv("vm2-home", (254, 5)),
    "vm3-disk": lv("vm3-disk", (254, 3)),
})}
# How the host resolves each path xl shows: /dev/vg/lv, /dev/mapper/vg-lv, /dev/dm-N
RECORDED_DEVICES = {"/dev/system/vm1-disk": (254, 11), "/dev/mapper/system-vm1--swap": (254, 12),
                    "/dev/system/vm2-root": (254, 13), "/dev/dm-5": (254, 5), "/dev/dm-3": (254, 3)}


def recorded_xl(release: str) -> Xl:
    runner = FakeRunner().on("xl list", recorded(f"xl_list_xen-{release}.txt"))
    return Xl(runner.on("xl list -l", recorded(f"xl_list_l_xen-{release}.json")), 5.0)


@pytest.mark.parametrize("release", ["4.11", "4.17"])
def test_vm_disks_are_found_in_recorded_xl_output_however_xl_names_them(monkeypatch, caplog, release):
    monkeypatch.setattr(vmdisks.mount, "device_numbers", RECORDED_DEVICES.get)
    with caplog.at_level(logging.WARNING, "xenlvm"):
        specs = discover(job(), recorded_xl(release), RECORDED_VGS)
    assert [(s.domain, s.disk, str(s.origin)) for s in specs] == [
        ("vm1", "xvda", "system/vm1-disk"),   # phy: /dev/vg/lv
        ("vm1", "xvdb", "system/vm1-swap"),   # phy: /dev/mapper/vg-lv
        ("vm2", "xvda1", "system/vm2-root"),  # a PV guest given partitions as disks
        ("vm2", "xvda2", "system/vm2-home"),  # phy: /dev/dm-N
        ("vm3", "hda", "system/vm3-disk"),    # an HVM domain (paused: still running for xl)
    ]
    assert "disk xvdc of domain vm1 (/srv/xenvm/vm1/data.img): not a logical volume" in caplog.text  # qdisk
    assert "disk hdb of domain vm3 (/var/lib/xen/images/vm3-data.qcow2): not a logical volume" in caplog.text
    assert "hdc" not in caplog.text and "Domain-0" not in caplog.text  # the empty CD-ROM; dom0 has no disks


@pytest.mark.parametrize("release", ["4.11", "4.17"])
def test_named_domains_are_found_in_recorded_xl_output(monkeypatch, release):
    monkeypatch.setattr(vmdisks.mount, "device_numbers", RECORDED_DEVICES.get)
    specs = discover(job(domains=("vm2",)), recorded_xl(release), RECORDED_VGS)
    assert [s.spec.mountpoint for s in specs] == ["/mnt/vmdisks/vm2/xvda1", "/mnt/vmdisks/vm2/xvda2"]


def test_xl_set_to_sxp_output_fails_discovery_saying_what_to_set():
    runner = FakeRunner().on("xl list", recorded("xl_list_xen-4.17.txt"))
    xl = Xl(runner.on("xl list -l", recorded("xl_list_l_sxp_xen-4.17.txt")), 5.0)
    with pytest.raises(xen.XenError, match="set output_format to json in /etc/xen/xl.conf"):
        discover(job(), xl, RECORDED_VGS)


def test_the_layout_says_what_each_partition_holds_and_why_it_was_not_exposed(tmp_path):
    runner = probe_runner("PTTYPE=dos\n", {1048576: "TYPE=swap\nUUID=5f1d6c1a-9c7e\nLABEL=swap\n",
                                          10485760: "TYPE=LVM2_member\nUUID=abc-123\n"}, PARTX_EXTENDED)
    runner.on("sfdisk", SFDISK_DOS_EXTENDED)
    spec = discover(job(), xl_for({"vm2": [disk("/dev/system/vm2-disk", "xvda")]}), VGS)[0]
    spec.spec = dataclasses.replace(spec.spec, mountpoint=str(tmp_path / "vm2" / "xvda"))
    vmdisks.expose(runner, job(), spec, UndoStack())
    written = json.loads((tmp_path / "vm2" / "xvda" / "layout.json").read_text())
    assert (written["format"], written["format_version"], written["domain"], written["disk"]) == \
        ("xenlvm-disk-layout", 1, "vm2", "xvda")
    assert written["table"]["id"] == "0x5e1f3a07"
    assert [p["number"] for p in written["table"]["partitions"]] == [1, 2, 5]
    contents = written["contents"]
    assert [(c["partition"], c["type"], c["uuid"], c["exposed_as"], c["reason"]) for c in contents] == [
        (1, "swap", "5f1d6c1a-9c7e", None, "swap"), (2, None, None, None, "extended"),
        (5, "LVM2_member", "abc-123", None, "guest-lvm")]
    assert written["table_error"] is None and written["size"] is None  # no such device on this machine
