"""Checks before any change: given what lvs and the mount table report, decide whether pre may
create and mount the snapshot. Pure decisions over typed records, so they are unit-tested
with recorded lvs output and reused by ``xenlvm check``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from xenlvm.config.model import Job, SnapshotSpec
from xenlvm.core import ownership
from xenlvm.host.lvm import LogicalVolume, VolumeGroup
from xenlvm.host.mount import MountEntry, mounted_at
from xenlvm.sizes import human_size


@dataclass(frozen=True)
class Finding:
    level: str  # "ok", "warn" or "fail"
    check: str
    message: str


def tools_finding(check: str, tools: Sequence[str], missing: Sequence[str], path: str, level: str,
                  advice: str) -> Finding:
    """check's finding on the programs tools (missing: those not on path): ok, or level with
    what is missing and advice."""
    if not missing:
        return Finding("ok", check, f"found {', '.join(tools)}")
    return Finding(level, check, f"not found on {path}: {', '.join(missing)}; {advice}")


def check_volumes(job: Job, spec: SnapshotSpec, vg: VolumeGroup, reserved: int = 0) -> list[Finding]:
    """Origin present, active and not a snapshot; snapshot name free; room for the snapshot
    besides the reserved bytes that the job's other snapshots in this VG take."""
    origin = vg.get(spec.origin.lv)
    if origin is None:
        return [Finding("fail", "origin", f"logical volume {spec.origin} not found: check 'volume:' "
                        f"for job {job.name!r} against 'lvs {spec.origin.vg}'")]
    findings = []
    if not origin.active:
        findings.append(Finding("fail", "origin", f"{spec.origin} is not active: activate it with "
                                f"'lvchange -ay {spec.origin}'"))
    elif origin.is_snapshot:
        findings.append(Finding("fail", "origin", f"{spec.origin} is itself a snapshot of "
                                f"{origin.origin}; point 'volume:' at the real volume"))
    else:
        findings.append(Finding("ok", "origin", f"{spec.origin} is present and active"))
    findings.append(check_snapshot_name(job, spec, vg.get(spec.snapshot)))
    findings.append(check_space(job, spec, vg, origin, reserved))
    return findings


def check_snapshot_name(job: Job, spec: SnapshotSpec, existing: LogicalVolume | None) -> Finding:
    if existing is None:
        return Finding("ok", "snapshot name", f"{spec.snapshot_volume} does not exist yet")
    if ownership.owns(job, spec, existing):
        return Finding("warn", "snapshot name", f"{existing} is a leftover of an earlier xenlvm run; "
                       "pre removes it first ('xenlvm cleanup' or 'xenlvm post' removes it now)")
    return Finding("fail", "snapshot name", f"an LV {existing} exists that xenlvm did not create (it "
                   "lacks xenlvm's tags); xenlvm will not touch it. Remove or rename it, or set "
                   "another 'snapshot:' name")


def check_volume_groups(names: Iterable[str], vgs: dict[str, VolumeGroup]) -> list[Finding]:
    """A VG that is missing a PV cannot be changed: say so before anything is tried."""
    return [Finding("fail", "volume group", partial_vg_message(name))
            for name in dict.fromkeys(names) if name in vgs and vgs[name].partial]


def partial_vg_message(vg: str) -> str:
    return (f"volume group {vg} is missing a physical volume (a disk failed or is not attached: see "
            f"'pvs' and 'dmesg'), and LVM refuses to create or remove any LV in it until the disk is "
            "back. Do not run 'vgreduce --removemissing' for a disk that can come back: it drops "
            "every LV with extents on that disk")


def check_job_volumes(job: Job, vgs: dict[str, VolumeGroup],
                      specs: Sequence[SnapshotSpec] | None = None) -> list[Finding]:
    """check_volumes for every volume of the job (or specs: with its VM disks), counting the
    space that the job's earlier snapshots in the same VG will take (as LVM will when it creates
    them one after another); first, whether each of its VGs can be changed at all."""
    specs = job.volumes if specs is None else specs
    findings = check_volume_groups((spec.origin.vg for spec in specs), vgs)
    reserved: dict[str, int] = {}
    for spec in specs:
        vg = vgs[spec.origin.vg]
        volume_findings = check_volumes(job, spec, vg, reserved.get(vg.name, 0))
        findings += volume_findings
        origin = vg.get(spec.origin.lv)
        if origin is not None and not failures(volume_findings):
            taken = reserved.get(vg.name, 0)
            reserved[vg.name] = taken + snapshot_bytes(spec, vg, origin, taken)
    return findings


def snapshot_bytes(spec: SnapshotSpec, vg: VolumeGroup, origin: LogicalVolume, reserved: int = 0) -> int:
    """What spec's snapshot takes from the VG, rounded up to whole extents as LVM does (0 if thin).
    N%FREE counts what is free after the reserved bytes, as LVM sees it at that moment."""
    if spec.size is None:
        return 0
    wanted = spec.size.resolve(origin.size, vg.free - reserved, vg.size)
    extent = vg.extent_size or 1
    return max(extent, -(-wanted // extent) * extent)


def check_space(job: Job, spec: SnapshotSpec, vg: VolumeGroup, origin: LogicalVolume,
                reserved: int = 0) -> Finding:
    if spec.size is None:
        if origin.is_thin:
            return Finding("ok", "space", f"{spec.origin} is thin: the snapshot shares its pool "
                           f"{origin.pool}, no size needed")
        return Finding("fail", "space", f"{spec.origin} is a classic (thick) volume: set 'size:' for "
                       f"job {job.name!r} (e.g. 20%ORIGIN); only thin volumes take snapshots without one")
    wanted = snapshot_bytes(spec, vg, origin, reserved)
    free = vg.free - reserved
    if wanted > free:
        others = f" after {human_size(reserved)} for the job's other snapshots" if reserved else ""
        return Finding("fail", "space", f"the snapshot {spec.snapshot_volume} needs {human_size(wanted)} "
                       f"({spec.size.text}) but "
                       f"volume group {vg.name} has only {human_size(free)} free{others}: extend the VG "
                       "(vgextend) or set a smaller 'size:'")
    return Finding("ok", "space", f"{human_size(wanted)} for the snapshot {spec.snapshot_volume}, "
                   f"{human_size(free)} free in {vg.name}")


def check_mountpoint(path: str, mounts: list[MountEntry], snapshot: LogicalVolume | None = None) -> Finding:
    """The mountpoint must be a real directory (no symlink anywhere) with nothing mounted on it
    (except the job's own snapshot, which pre sweeps first)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return Finding("fail", "mountpoint", f"{path} does not exist: create it with 'mkdir -p {path}'")
    except OSError as exc:
        return Finding("fail", "mountpoint", f"cannot inspect {path}: {exc.strerror}")
    if stat.S_ISLNK(info.st_mode):
        return Finding("fail", "mountpoint", f"{path} is a symbolic link; xenlvm mounts only on a "
                       "real directory: replace the link with 'mkdir'")
    if not stat.S_ISDIR(info.st_mode):
        return Finding("fail", "mountpoint", f"{path} is not a directory")
    if os.path.realpath(path) != path:
        return Finding("fail", "mountpoint", f"{path} lies below a symbolic link (it resolves to "
                       f"{os.path.realpath(path)}); use the real path in 'mountpoint:'")
    entry = mounted_at(path, mounts)
    if entry is not None and not (snapshot is not None and entry.is_device(snapshot)):
        return Finding("fail", "mountpoint", f"{path} already has {entry.source} ({entry.fstype}) "
                       f"mounted on it, which is not this job's snapshot; unmount it or choose "
                       "another 'mountpoint:'")
    return Finding("ok", "mountpoint", f"{path} is a directory with nothing mounted on it")


def failures(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == "fail"]
