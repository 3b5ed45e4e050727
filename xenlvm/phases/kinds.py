"""The kinds of target (xenlvm.targets.base.Kind), which pre, post, status, check and pre's sweep
loop over, in this order; and what they say together about a job: what of the host to read,
its pause windows, its domains left out, its VGs in play, the checks before any change.

A new kind is one module with its Kind and Target, and one line in KINDS."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Sequence

from xenlvm.config.model import AUTO, Job, SnapshotSpec, WindowMode
from xenlvm.core import preflight
from xenlvm.core.inventory import Scope
from xenlvm.core.preflight import Finding
from xenlvm.host.lvm import LogicalVolume, VolumeGroup
from xenlvm.host.mount import MountEntry
from xenlvm.targets.base import Artefacts, Kind
from xenlvm.targets.volume import VolumeKind
from xenlvm.thinpool import space as thinpool
from xenlvm.vmdisks.kind import VmDiskKind
from xenlvm.xen import windows

KINDS: tuple[Kind, ...] = (
    VolumeKind(),
    VmDiskKind(),
)


def of(job: Job) -> list[Kind]:
    """The kinds the job has targets of, in KINDS' order."""
    return [kind for kind in KINDS if kind.in_job(job)]


def scope(job: Job) -> Scope:
    """What of the host a run of the job reads (xenlvm.core.inventory)."""
    kinds = of(job)
    return Scope(tuple(dict.fromkeys(vg for kind in kinds for vg in kind.named_vgs(job))),
                 any(kind.every_vg(job) for kind in kinds),
                 job.xen is not None or any(kind.needs_xl(job) for kind in kinds))


def window_mode(job: Job) -> WindowMode:
    """The job's xen.window: as configured; else what its kinds suit (per-domain for VM disks,
    each VM on LVs of its own), else together (one window for the job)."""
    if job.xen is not None and job.xen.window is not AUTO:
        return job.xen.window
    return next((mode for kind in of(job) if (mode := kind.window_mode(job))), windows.TOGETHER)


def excluded_domains(job: Job) -> tuple[str, ...]:
    return tuple(name for kind in of(job) for name in kind.excluded_domains(job))


def mounts_tree(job: Job) -> bool:
    """Whether a kind mounts a tree of root's alone at the job's mountpoint."""
    return any(kind.mounts_tree(job) for kind in of(job))


def vgs_in_play(job: Job, found: Iterable[Artefacts]) -> list[str]:
    """The VGs the configuration names and those that hold what a run left (found)."""
    named = scope(job).vgs
    return list(dict.fromkeys([*named, *(lv.vg for artefacts in found for _, lv in artefacts.snapshots)]))


def check_targets(job: Job, specs: Sequence[SnapshotSpec], vgs: dict[str, VolumeGroup],
                  mounts: list[MountEntry],
                  own: Callable[[str], LogicalVolume | None] = lambda path: None,
                  kept: Collection[SnapshotSpec] = ()) -> list[Finding]:
    """pre's checks of the snapshots it is about to make (and check's): the job's mountpoint,
    each origin, snapshot name and room, the thin pools, each snapshot's own mountpoint when it
    exists and is not the job's. own(path): the job's snapshot expected mounted at path; kept:
    the specs whose snapshot stays as a chain's base (Target.kept_as_base())."""
    findings = [preflight.check_mountpoint(job.mountpoint, mounts, own(job.mountpoint))]
    findings += preflight.check_job_volumes(job, vgs, specs)
    findings += thinpool.check_thin_pools(job, specs, vgs, kept)
    findings += [preflight.check_mountpoint(spec.mountpoint, mounts, own(spec.mountpoint)) for spec in specs
                 if spec.mountpoint != job.mountpoint and os.path.lexists(spec.mountpoint)]
    return findings
