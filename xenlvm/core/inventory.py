"""What a job's run knows of the host, read once at its start: the volume groups it needs from
ONE lvs call (every VG when the job has VM disks, which may live in any), the kernel's mount
table, and, when Xen is involved, one `xl list` and one `xl list -l`. Every decision is made
from it; pre reads the VGs and mounts once more after a sweep changed them (reread), and
nowhere else."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from xenlvm.config.model import Job
from xenlvm.host import mounts as mounts_mod
from xenlvm.host.lvm import Lvm, VolumeGroup, VolumeGroupNotFound
from xenlvm.host.runner import Runner
from xenlvm.host.xl import Xl, XlView


@dataclass(frozen=True)
class Inventory:
    vgs: dict[str, VolumeGroup]  # the VGs of the job's volumes; every VG when it has VM disks
    mounts: list[mounts_mod.MountEntry]
    xl: XlView | None = None  # for a job with xen: or vmdisks:
    missing_vgs: tuple[str, ...] = ()  # named VGs that do not exist (read_tolerant only)

    def reread(self, runner: Runner, job: Job) -> Inventory:
        """The host after a change to its LVs and mounts (a sweep); xl's answers are kept."""
        return dataclasses.replace(self, vgs=volume_groups(Lvm(runner), job), mounts=mounts_mod.read_mounts())


def read_inventory(runner: Runner, job: Job) -> Inventory:
    """Given a job, return the host as it is now. A VG of the job that does not exist raises
    VolumeGroupNotFound; a failing lvs or xl raises its error."""
    return Inventory(volume_groups(Lvm(runner), job), mounts_mod.read_mounts(), read_xl(runner, job))


def read_tolerant(runner: Runner, job: Job) -> Inventory:
    """read_inventory without xl, for post, status and check: the job's VGs that do not exist
    are named in missing_vgs (the others are then read with a second lvs), not raised."""
    lvm = Lvm(runner)
    try:
        return Inventory(volume_groups(lvm, job), mounts_mod.read_mounts())
    except VolumeGroupNotFound as exc:
        rest = [vg for vg in job_vg_names(job) if vg not in exc.names]
        vgs = lvm.volume_groups(rest, every=job.vmdisks is not None)
        return Inventory(vgs, mounts_mod.read_mounts(), missing_vgs=tuple(exc.names))


def read_xl(runner: Runner, job: Job) -> XlView | None:
    """One `xl list` and one `xl list -l`, for a job with xen: or vmdisks: (else None)."""
    if job.xen is None and job.vmdisks is None:
        return None
    return Xl(runner, job.xl_timeout).view()


def job_vg_names(job: Job) -> list[str]:
    return list(dict.fromkeys(s.origin.vg for s in job.volumes))


def volume_groups(lvm: Lvm, job: Job) -> dict[str, VolumeGroup]:
    """ONE lvs call: the VGs of the job's volumes; every VG if it has VM disks."""
    return lvm.volume_groups(job_vg_names(job), every=job.vmdisks is not None)
