"""The kinds of target (xenlvm/phases/kinds.py, xenlvm/targets/base.py): which a job has, what of
the host they ask for, what each finds of a job on the host from the configuration and the
inventory alone (as post, status and pre's sweep do, in other processes than pre), and that a
kind registered in one line goes through post's whole loop."""

from __future__ import annotations

import dataclasses
import types

from tests.unit.vmdisks.test_vmdisks import VGS, job, lv
from xenlvm.admin import status
from xenlvm.config.load import parse_config
from xenlvm.config.model import SnapshotSpec, Volume
from xenlvm.core import context as context_mod
from xenlvm.core.inventory import Inventory, Scope
from xenlvm.core.ownership import OWNER_TAG, VMDISK_TAG, job_tag
from xenlvm.host.lvm import VolumeGroup
from xenlvm.host.mount import MountEntry
from xenlvm.phases import kinds, post
from xenlvm.targets.base import Artefacts, Kind, Removal, Shown
from xenlvm.targets.volume import VolumeKind
from xenlvm.vmdisks import image_server
from xenlvm.vmdisks import teardown as vmdisk_teardown
from xenlvm.vmdisks.kind import DiskArtefacts, VmDiskKind

TAGS = frozenset({OWNER_TAG, job_tag("disks")})
DISK_TAGS = TAGS | {VMDISK_TAG}
SNAPSHOT_ATTR = "swi-aos---"


def both(tmp_path):
    """A job 'disks' with one volume (system/xenvm at <mountpoint>/data) and VM disks."""
    return parse_config(f"settings:\n  lock_dir: {tmp_path}\njobs:\n  disks:\n    mountpoint: /mnt/vmdisks\n"
                        "    volumes:\n      - {volume: system/xenvm, snapshot: xenvm-snap, size: 16M, "
                        "name: data}\n    vmdisks: {domains: auto, size: 16M}\n")


def host_after_pre() -> Inventory:
    """The host as a pre of job 'disks' left it, and what is not the job's beside it."""
    made = {
        "xenvm-snap": lv("xenvm-snap", (254, 10), attr=SNAPSHOT_ATTR, origin="xenvm", tags=TAGS),
        "vm2-disk.xenlvm": lv("vm2-disk.xenlvm", (254, 11), attr=SNAPSHOT_ATTR, origin="vm2-disk",
                              tags=DISK_TAGS),
        "vm3-disk.xenlvm": lv("vm3-disk.xenlvm", (254, 12), attr=SNAPSHOT_ATTR, origin="vm3-disk",
                              tags=DISK_TAGS),
        # renamed by an admin to be kept, and another job's: neither is this job's
        "vm2-disk.keep": lv("vm2-disk.keep", (254, 13), attr=SNAPSHOT_ATTR, origin="vm2-disk",
                            tags=DISK_TAGS),
        "thin-disk.xenlvm": lv("thin-disk.xenlvm", (254, 14), attr=SNAPSHOT_ATTR, origin="thin-disk",
                               tags=frozenset({OWNER_TAG, VMDISK_TAG, job_tag("other")})),
    }
    system = VGS["system"]
    mounts = [MountEntry(0, 50, "/mnt/vmdisks", ("rw",), "tmpfs", "xenlvm-disks"),
              MountEntry(254, 10, "/mnt/vmdisks/data", ("ro",), "ext4", "/dev/mapper/system-xenvm--snap"),
              MountEntry(254, 11, "/mnt/vmdisks/vm2/xvda", ("ro",), "ext4",
                         "/dev/mapper/system-vm2--disk.xenlvm"),
              MountEntry(7, 3, "/mnt/vmdisks/vm3/xvda/p1", ("ro",), "xfs", "/dev/loop3")]
    return Inventory({"system": VolumeGroup("system", system.size, system.free, system.extent_size,
                                            {**system.lvs, **made})}, mounts)


def test_a_job_has_the_kinds_of_its_sections_in_the_registrys_order(tmp_path):
    config = both(tmp_path)
    assert [type(k) for k in kinds.of(config.jobs["disks"])] == [VolumeKind, VmDiskKind]
    assert [type(k) for k in kinds.of(job())] == [VmDiskKind]
    volumes_only = dataclasses.replace(config.jobs["disks"], vmdisks=None)
    assert [type(k) for k in kinds.of(volumes_only)] == [VolumeKind]


def test_the_kinds_say_what_of_the_host_a_run_reads():
    config = parse_config("jobs:\n  vms: {volume: data/vms, snapshot: vmsnap, mountpoint: /mnt/vms}\n")
    assert kinds.scope(config.jobs["vms"]) == Scope(("data",), every_vg=False, xl=False)
    assert kinds.scope(job()) == Scope((), every_vg=True, xl=True)  # VM disks: on any VG, found through xl


def test_each_kind_finds_exactly_what_a_run_of_the_job_made(tmp_path):
    job_ = both(tmp_path).jobs["disks"]
    host = host_after_pre()
    volumes = VolumeKind().find(both(tmp_path), job_, host)
    assert [(spec.snapshot, str(lv_)) for spec, lv_ in volumes.snapshots] == [
        ("xenvm-snap", "system/xenvm-snap")]
    disks = VmDiskKind().find(both(tmp_path), job_, host)
    assert isinstance(disks, DiskArtefacts)
    assert [str(lv_) for _, lv_ in disks.snapshots] == ["system/vm2-disk.xenlvm", "system/vm3-disk.xenlvm"]
    assert [spec.snapshot for spec, _ in disks.snapshots] == ["vm2-disk.xenlvm", "vm3-disk.xenlvm"]
    assert disks.tree is not None and disks.tree.source == "xenlvm-disks" and disks.anything
    assert kinds.vgs_in_play(job_, [volumes, disks]) == ["system"]


def test_status_shows_where_each_kind_really_exposes_its_snapshots(tmp_path, monkeypatch):
    config = both(tmp_path)
    host = host_after_pre()
    monkeypatch.setattr(status, "read_tolerant", lambda runner, scope: host)
    monkeypatch.setattr(vmdisk_teardown, "loops_of", lambda devices, sys_block="": {
        (254, 12): {"/dev/loop3": (7, 3)}}.get(devices[0], {}))
    monkeypatch.setattr(image_server, "state", lambda lock_dir, name: image_server.ServerState(
        0, False, ("/mnt/vmdisks/vm9/xvda.img",), True, ("/dev/mapper/system-vm2--disk.xenlvm",)))
    report = status.job_status(config, types.SimpleNamespace(), config.jobs["disks"], now=0.0)
    shown = {v["snapshot"]: (v["kind"], v["mountpoint"], v["mounted_at"]) for v in report["volumes"]}
    assert shown == {
        "system/xenvm-snap": ("volume", "/mnt/vmdisks/data", ["/mnt/vmdisks/data"]),
        # not all at the job's mountpoint: each where it really is (files, its loops, its image)
        "system/vm2-disk.xenlvm": ("VM disk", None, ["/mnt/vmdisks/vm2/xvda", "/mnt/vmdisks/vm9/xvda.img"]),
        "system/vm3-disk.xenlvm": ("VM disk", None, ["/mnt/vmdisks/vm3/xvda/p1"]),
    }
    lines = status.describe(report)
    assert "  system/vm2-disk -> system/vm2-disk.xenlvm (VM disk): snapshot present, xenlvm's, " \
           "fill unknown, valid" in lines
    assert "    exposed at: /mnt/vmdisks/vm3/xvda/p1" in lines


class ExtraKind(Kind):
    """A third kind, as a new module would bring it: its snapshot 'extra' of system/xenvm."""

    name = "extra"

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def in_job(self, job) -> bool:
        return True

    def plan(self, ctx, job, host):
        return []

    def spec(self, job) -> SnapshotSpec:
        return SnapshotSpec(Volume("system", "xenvm"), "extra", job.mountpoint)

    def find(self, config, job, host) -> Artefacts:
        snapshot = host.vgs["system"].get("extra")
        self.calls.append(f"find {snapshot}")
        return Artefacts(((self.spec(job), snapshot),) if snapshot is not None else ())

    def stop(self, ctx, job, judge_backup) -> None:
        self.calls.append("stop")

    def release(self, ctx, job, host, found, failures, sound) -> list[Removal]:
        self.calls.append("release")
        return [Removal("extra", spec, snapshot) for spec, snapshot in found.snapshots]

    def removed(self, ctx, job, found, removed, failures) -> None:
        self.calls.append(f"removed {', '.join(map(str, removed))}")

    def judge(self, ctx, job, judge_backup) -> None:
        self.calls.append("judge")

    def shown(self, job, host, found) -> list[Shown]:
        return []


def test_a_kind_registered_in_one_line_goes_through_posts_whole_loop(host, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(kinds, "KINDS", (*kinds.KINDS, ExtraKind(calls)))
    host.add_snapshot()  # the volume's, as pre left it
    host.add_snapshot("extra", lv_attr="swi-a-s---")
    config = host.config()
    post.run_post(context_mod.Context(config, host.runner), list(config.jobs.values()))
    assert calls == ["stop", "find system/extra", "release", "removed system/extra", "judge"]
    assert host.ours == []  # both removed
    lvremoves = host.runner.argvs_of("lvremove")
    assert len(lvremoves) == 1 and "system/vmbackup" in lvremoves[0] and "system/extra" in lvremoves[0]
