"""What a job's run knows of the host, read once at its start: the volume groups it needs from
ONE lvs call (every VG when one of its kinds of target may have snapshots in any), the kernel's mount
table, and, when Xen is involved, one `xl list` and one `xl list -l`. Every decision is made
from it; pre reads the VGs and mounts once more after a sweep changed them (reread), and
nowhere else."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from xenlvm.config.model import Job
from xenlvm.host import mount
from xenlvm.host.lvm import Lvm, VolumeGroup, VolumeGroupNotFound
from xenlvm.host.runner import Runner
from xenlvm.host.xl import Xl, XlView


@dataclass(frozen=True)
class Scope:
    """What of the host a job's run reads, as the job's kinds of target say
    (xenlvm.phases.kinds.scope): the VGs the configuration names, or every VG (the kind's
    snapshots may be in any); whether xl is asked."""

    vgs: tuple[str, ...]
    every_vg: bool = False
    xl: bool = False


@dataclass(frozen=True)
class Inventory:
    vgs: dict[str, VolumeGroup]  # the VGs the scope names; every VG when it says so
    mounts: list[mount.MountEntry]
    xl: XlView | None = None  # when the scope asks xl
    missing_vgs: tuple[str, ...] = ()  # named VGs that do not exist (read_tolerant only)

    def reread(self, runner: Runner, scope: Scope) -> Inventory:
        """The host after a change to its LVs and mounts (a sweep); xl's answers are kept."""
        return dataclasses.replace(self, vgs=volume_groups(Lvm(runner), scope),
                                   mounts=mount.read_mounts())


def read_inventory(runner: Runner, job: Job, scope: Scope) -> Inventory:
    """Given a job and what to read of the host for it, return the host as it is now. A named VG
    that does not exist raises VolumeGroupNotFound; a failing lvs or xl raises its error."""
    return Inventory(volume_groups(Lvm(runner), scope), mount.read_mounts(), read_xl(runner, job, scope))


def read_tolerant(runner: Runner, scope: Scope) -> Inventory:
    """read_inventory without xl, for post, status and check: the named VGs that do not exist
    are named in missing_vgs (the others are then read with a second lvs), not raised."""
    lvm = Lvm(runner)
    try:
        return Inventory(volume_groups(lvm, scope), mount.read_mounts())
    except VolumeGroupNotFound as exc:
        rest = [vg for vg in scope.vgs if vg not in exc.names]
        vgs = lvm.volume_groups(rest, every=scope.every_vg)
        return Inventory(vgs, mount.read_mounts(), missing_vgs=tuple(exc.names))


def read_xl(runner: Runner, job: Job, scope: Scope) -> XlView | None:
    """One `xl list` and one `xl list -l`, when the scope asks xl (else None)."""
    if not scope.xl:
        return None
    return Xl(runner, job.xl_timeout).view()


def volume_groups(lvm: Lvm, scope: Scope) -> dict[str, VolumeGroup]:
    """ONE lvs call: the VGs the scope names; every VG if it says so."""
    return lvm.volume_groups(list(scope.vgs), every=scope.every_vg)
