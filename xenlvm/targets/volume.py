"""A volume of the job (volume: in the configuration): its snapshot is mounted read-only at
the job's mountpoint, or at <mountpoint>/<name> when the job has several volumes. Its kind
finds the job's snapshots by the configuration's names (proven by their tags), unmounts each
from its own mountpoint only, and removes it."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence

from xenlvm.config.model import Config, Job, SnapshotSpec
from xenlvm.core import ownership, preflight
from xenlvm.core.context import Context
from xenlvm.core.inventory import Inventory
from xenlvm.core.preflight import Finding
from xenlvm.core.undo import UndoStack
from xenlvm.errors import FileError, MountError, PreflightFailed, SafetyRefusal, XenlvmError
from xenlvm.host import mount
from xenlvm.host.lvm import LogicalVolume, VolumeGroup, device_path
from xenlvm.host.mount import UNDO_UNMOUNT_TIMEOUT, MountEntry
from xenlvm.targets.base import Artefacts, Failures, Kind, Removal, Shown, Target, collect
from xenlvm.xen.domains import XlView

log = logging.getLogger("xenlvm")


class VolumeTarget(Target):
    fstype = ""

    def origin_mountpoints(self, mounts: Sequence[MountEntry]) -> list[str]:
        return [e.mountpoint for e in mount.mounts_of(self.origin, list(mounts))]

    def prepare(self, ctx: Context, mounts: Sequence[MountEntry]) -> None:
        self.fstype = mount.filesystem_type(ctx.runner, self.origin, list(mounts))

    def expose(self, ctx: Context, job: Job, undo: UndoStack) -> None:
        """Mount the snapshot read-only at its mountpoint and check that the kernel shows it there."""
        spec = self.spec
        device = device_path(spec.origin.vg, spec.snapshot)
        if not os.path.isdir(spec.mountpoint) and not ctx.dry_run:
            try:
                os.mkdir(spec.mountpoint, 0o755)  # <mountpoint>/<name> of a job with several volumes
            except OSError as exc:
                raise FileError("create the mount point", exc,
                                f"Check that {os.path.dirname(spec.mountpoint)} is a directory root can "
                                "write to, on a filesystem that is not full or read-only.") from None
            undo.push(f"remove the directory {spec.mountpoint}", functools.partial(os.rmdir, spec.mountpoint))
        undo.push(f"unmount {spec.mountpoint} if the snapshot is mounted there",
                  functools.partial(_unmount_if_mounted, ctx, spec.mountpoint, device))
        mount.mount_snapshot(ctx.runner, device, self.fstype, spec.mountpoint)
        if ctx.dry_run:
            return
        _verify_mounted(spec.mountpoint, device)
        kind = "thin snapshot" if spec.size is None else f"snapshot of {spec.size.text}"
        log.info("%s of %s is mounted read-only at %s (%s)", kind, spec.origin, spec.mountpoint, self.fstype)


def _verify_mounted(mountpoint: str, device: str) -> None:
    """mount said yes; make sure the kernel shows exactly our device at the mountpoint."""
    entry = mount.mounted_at(mountpoint, mount.read_mounts())
    if entry is None or not mount.shows_device(entry, device):
        raise MountError(f"after mounting, {mountpoint} does not show the snapshot {device}; "
                         "something else changed the mount table")
    if "ro" not in entry.options:
        raise MountError(f"{mountpoint} is mounted read-write although xenlvm asked for read-only")


def _unmount_if_mounted(ctx: Context, mountpoint: str, device: str) -> None:
    if not ctx.dry_run:
        mount.unmount_if(ctx.runner, mountpoint, lambda entry: mount.shows_device(entry, device))


class VolumeKind(Kind):
    """The job's volumes: found by the names the configuration gives their snapshots."""

    name = "volume"

    def in_job(self, job: Job) -> bool:
        return bool(job.volumes)

    def named_vgs(self, job: Job) -> list[str]:
        return list(dict.fromkeys(s.origin.vg for s in job.volumes))

    def plan(self, ctx: Context, job: Job, host: Inventory) -> list[Target]:
        """Each volume with its origin; one whose origin is missing is refused here, with the
        preflight's words (there is no target without it)."""
        missing = [f.message for spec in job.volumes if host.vgs[spec.origin.vg].get(spec.origin.lv) is None
                   for f in preflight.check_volumes(job, spec, host.vgs[spec.origin.vg]) if f.level == "fail"]
        if missing:
            raise PreflightFailed("; ".join(missing) + ". Nothing was changed.")
        return [VolumeTarget(spec, host.vgs[spec.origin.vg].lvs[spec.origin.lv]) for spec in job.volumes]

    def find(self, config: Config, job: Job, host: Inventory) -> Artefacts:
        """The job's volume snapshots that exist and carry its tags (a VG lvs did not show: none)."""
        found = []
        for spec in job.volumes:
            vg = host.vgs.get(spec.origin.vg)
            snapshot = vg.get(spec.snapshot) if vg is not None else None
            if snapshot is not None and ownership.owns(job, spec, snapshot):
                found.append((spec, snapshot))
        return Artefacts(tuple(found))

    def sweep(self, ctx: Context, job: Job, host: Inventory, found: Artefacts) -> bool:
        """Remove the snapshots an earlier run of this job left behind."""
        for spec, existing in found.snapshots:
            log.warning("found %s left over by an earlier run (%s, created %s); removing it first", existing,
                        ownership.run_of(existing) or "unknown run", existing.created or "at an unknown time")
            if os.path.isdir(spec.mountpoint):
                finding = preflight.check_mountpoint(spec.mountpoint, host.mounts, existing)
                if finding.level == "fail":
                    raise PreflightFailed(finding.message)
            release_snapshot(ctx, job, spec, existing, host.mounts, UNDO_UNMOUNT_TIMEOUT)
            ownership.remove_one(ctx.lvm, job, spec, existing)
        return bool(found.snapshots)

    def release(self, ctx: Context, job: Job, host: Inventory, found: Artefacts, failures: Failures,
                sound: bool) -> list[Removal]:
        """Unmount every volume's snapshot, in reverse; each failure under its snapshot's name."""
        removals = []
        for spec in reversed(job.volumes):
            if spec.origin.vg not in host.vgs and spec.origin.vg not in host.missing_vgs:
                continue  # its lvs failed: reported by post
            key = str(spec.snapshot_volume)
            snapshot = collect(failures.setdefault(key, []), _release_volume, ctx, job, spec,
                               host.vgs.get(spec.origin.vg), host.mounts)
            if snapshot is not None:
                removals.append(Removal(key, spec, snapshot))
        return removals

    def removed(self, ctx: Context, job: Job, found: Artefacts, removed: Sequence[LogicalVolume],
                failures: Failures) -> None:
        if ctx.dry_run:
            return
        for snapshot in removed:
            fill = snapshot.data_percent if not snapshot.is_thin else None
            if fill is not None and not snapshot.invalid:
                close = fill >= job.fill_warning
                log.log(logging.WARNING if close else logging.INFO, "the snapshot %s was %.1f%% full before "
                        "removal%s", snapshot, fill, " - close to overflowing: consider a larger 'size:'"
                        if close else "")
            log.info("snapshot %s unmounted and removed", snapshot)

    def check(self, config: Config, job: Job, host: Inventory,
              xl: XlView | XenlvmError | None) -> tuple[list[Finding], list[Target]]:
        """The volumes whose origins exist, as pre plans them; each missing origin a failure
        (pre refuses it)."""
        findings: list[Finding] = []
        targets: list[Target] = []
        for spec in job.volumes:
            vg = host.vgs[spec.origin.vg]
            origin = vg.get(spec.origin.lv)
            if origin is None:
                findings += preflight.check_volumes(job, spec, vg)
            else:
                targets.append(VolumeTarget(spec, origin))
        return findings, targets

    def snapshot_at(self, job: Job, host: Inventory, path: str) -> LogicalVolume | None:
        """At a volume's own mountpoint, its snapshot (whoever's: the mountpoint's check tells);
        at the job's mountpoint, the snapshot of the volume mounted there itself, when it is
        the job's."""
        for spec in job.volumes:
            if spec.mountpoint == path:
                snapshot = host.vgs[spec.origin.vg].get(spec.snapshot)
                if path != job.mountpoint or (snapshot is not None and ownership.owns(job, spec, snapshot)):
                    return snapshot
        return None

    def shown(self, job: Job, host: Inventory, found: Artefacts) -> list[Shown]:
        """Every volume's snapshot by its name, xenlvm's or not, and where it is mounted."""
        shown = []
        for spec in job.volumes:
            vg = host.vgs.get(spec.origin.vg)
            snapshot = vg.get(spec.snapshot) if vg is not None else None
            mounted = [e.mountpoint for e in mount.mounts_of(snapshot, host.mounts)] if snapshot else []
            shown.append(Shown(spec, spec.mountpoint, snapshot, tuple(mounted)))
        return shown


def _release_volume(ctx: Context, job: Job, spec: SnapshotSpec, vg: VolumeGroup | None,
                    mounts: list[mount.MountEntry]) -> LogicalVolume | None:
    """Unmount spec's snapshot if it is xenlvm's; return it as it was before, to be removed."""
    if vg is None:  # the VG does not exist, so neither does the snapshot
        return None
    snapshot = vg.get(spec.snapshot)
    if snapshot is None:
        entry = mount.mounted_at(spec.mountpoint, mounts)
        if entry is not None:
            log.warning("%s has %s mounted on it, which is not xenlvm's snapshot; left alone",
                        spec.mountpoint, entry.source)
        log.info("nothing to clean up: %s does not exist", spec.snapshot_volume)
        return None
    if not ownership.owns(job, spec, snapshot):
        log.warning("%s exists but xenlvm did not create it (no xenlvm tags); left untouched",
                    snapshot)
        return None
    release_snapshot(ctx, job, spec, snapshot, mounts, job.unmount_timeout)
    return snapshot


def release_snapshot(ctx: Context, job: Job, spec: SnapshotSpec, snapshot: LogicalVolume,
                     mounts: list[mount.MountEntry], unmount_timeout: float) -> None:
    """Unmount spec's snapshot from its mountpoint, after proving it is the job's."""
    if not ownership.owns(job, spec, snapshot):
        raise SafetyRefusal(f"{snapshot} is not xenlvm's; refusing to touch it")
    for entry in mount.mounts_of(snapshot, mounts):
        if entry.mountpoint != spec.mountpoint:
            raise MountError(f"{snapshot} is also mounted at {entry.mountpoint}, which xenlvm did not "
                             "do; unmount it yourself, then run 'xenlvm post' again")
    if mount.mounts_of(snapshot, mounts):
        top = mount.mounted_at(spec.mountpoint, mounts)
        if top is None or not top.is_device(snapshot):
            raise MountError(f"something else is mounted on top of the snapshot at {spec.mountpoint}; "
                             "unmount it yourself, then run 'xenlvm post' again")
        mount.unmount_with_retry(ctx.runner, spec.mountpoint, unmount_timeout)
