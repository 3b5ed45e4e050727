"""What a job's run knows of the host: its volume groups as lvs reports them, and the kernel's
mount table. pre reads it at the start, and once more after a sweep changed the host; every
decision in between is made from it."""

from __future__ import annotations

from dataclasses import dataclass

from xenlvm import mounts as mounts_mod
from xenlvm.config import Job
from xenlvm.lvm import Lvm, VolumeGroup


@dataclass(frozen=True)
class Inventory:
    vgs: dict[str, VolumeGroup]  # the VGs of the job's volumes; every VG when it has VM disks
    mounts: list[mounts_mod.MountEntry]


def read_inventory(lvm: Lvm, job: Job) -> Inventory:
    """Given a job, return the host as it is now: one lvs call per VG the job's volumes live in
    (one for all VGs if it has VM disks), then the mount table."""
    return Inventory(volume_groups(lvm, job), mounts_mod.read_mounts())


def volume_groups(lvm: Lvm, job: Job) -> dict[str, VolumeGroup]:
    """One lvs call per VG the job's volumes live in; one for all VGs if it has VM disks."""
    named = dict.fromkeys(s.origin.vg for s in job.volumes)
    if job.vmdisks is None:
        return {vg: lvm.volume_group(vg) for vg in named}
    vgs = lvm.all_volume_groups()
    for vg in named:
        if vg not in vgs:  # says clearly that it does not exist (or has no LV)
            vgs[vg] = lvm.volume_group(vg)
    return vgs
