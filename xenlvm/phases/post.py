"""post: what sesam's sbc_post does for each job (and xenlvm cleanup), top to bottom.

Lock the job; resume domains a killed pre left paused; stop the watchdog and the pool guard; find the job's
snapshots (lvs) and read whether they are still valid; unmount and remove them in reverse, each
only with proof that it is xenlvm's (xenlvm.phases.teardown); then judge the backup: an invalid
snapshot fails it. One job's failure does not stop the others. Guests a killed pre left frozen
(xen.quiesce) are thawed right after the resume, as at the end of a pause window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xenlvm.config.model import Job, SnapshotSpec
from xenlvm.core import preflight
from xenlvm.core.context import Context
from xenlvm.core.inventory import Inventory, job_vg_names, read_tolerant
from xenlvm.errors import PartialBackup, SnapshotOverflowed, XenlvmError, host_file_error
from xenlvm.host import cow
from xenlvm.host import mounts as mounts_mod
from xenlvm.host.lvm import LogicalVolume, VolumeGroup, vg_not_found_message
from xenlvm.logs import set_job
from xenlvm.phases.teardown import disk_removals, release_volume_snapshot
from xenlvm.quiesce import freeze as quiesce
from xenlvm.sizes import human_size
from xenlvm.thinpool import process as pool_guard_process
from xenlvm.vmdisks import expose as vmdisks
from xenlvm.vmdisks import image_server, unexposed
from xenlvm.vmdisks import teardown as vmdisk_teardown
from xenlvm.watchdog import process as watchdog_process
from xenlvm.xen import domains as xen

TYPE_CHECKING = False  # xenlvm/__init__.py says why
if TYPE_CHECKING:
    from typing import Any

log = logging.getLogger("xenlvm")


def run_post(ctx: Context, jobs: Sequence[Job], *, judge_backup: bool = True) -> None:
    """Clean up every job; one job's failure does not stop the others. Raise the first failure.
    judge_backup=False (xenlvm cleanup) reports an overflowed snapshot as a warning only."""
    errors: list[XenlvmError] = []
    for job in jobs:
        set_job(job.name)
        try:
            with ctx.lock(job):
                clean_up(ctx, job, judge_backup)
        except XenlvmError as exc:
            error = exc
        except OSError as exc:
            error = host_file_error(exc)
        except Exception as exc:  # a bug, but the jobs after this one still get cleaned up
            log.error("unexpected error in job %s (a bug in xenlvm, please report it): %s: %s", job.name,
                      type(exc).__name__, exc, exc_info=True)
            error = XenlvmError(f"job {job.name}: unexpected error (a bug in xenlvm, reported above): "
                                f"{type(exc).__name__}: {exc}")
        else:
            continue
        if len(jobs) > 1:
            log.error("%s", error)
        errors.append(error)
    set_job("")
    if errors:
        if len(errors) == 1:
            raise errors[0]
        # partial backups alone stay partial (exit 3): every job was cleaned up and sound
        every = " | ".join(str(e) for e in errors)
        if all(isinstance(e, PartialBackup) for e in errors):
            raise PartialBackup(f"the backups of {len(errors)} jobs are partial: {every}")
        raise XenlvmError(f"post failed for {len(errors)} jobs: {every}")


@dataclass(frozen=True)
class _Found:
    """The job's artefacts on the host, as post found them before removing anything."""

    vgs: dict[str, VolumeGroup | None]  # per VG of the job's volumes; None: the VG does not exist
    every: dict[str, VolumeGroup] | None  # all VGs, for a job with VM disks (None: without, or lvs failed)
    disk_snapshots: list[LogicalVolume]
    io_failed: dict[str, bool]  # per invalid snapshot: invalidated by I/O errors (else it overflowed)
    mounts: list[mounts_mod.MountEntry]


def clean_up(ctx: Context, job: Job, judge_backup: bool = True) -> None:
    """Unmount and remove the job's snapshots that xenlvm created (in reverse order), then tell
    whether the backup is valid. Every step gets its turn even when one before it failed."""
    errors: list[XenlvmError] = []
    not_exposed = unexposed.read(ctx.config.settings.lock_dir, job.name) if job.vmdisks else []
    _collect(errors, _resume_paused_domains, ctx, job)
    if job.xen is not None:  # after the resume, as at the end of a pause window
        _collect(errors, quiesce.thaw_leftovers, ctx.runner, job, ctx.config.settings.lock_dir)
    _collect(errors, _stop_watchdog, ctx, job)
    guard, guarded, lost = _collect(errors, _stop_pool_guard, ctx, job) or (None, [], False)
    _collect(errors, _stop_image_server, ctx, job, judge_backup)  # before the snapshots it holds are removed
    found = _find_artefacts(ctx, job, errors)
    vanished = _vanished(found, guarded)
    overflowed = _tear_down(ctx, job, found, errors)
    dropped = pool_guard_process.judge(job, guard, vanished, lost)
    if dropped is not None and judge_backup:
        errors.append(dropped)
    elif dropped is not None:
        log.warning("%s", dropped)
    if errors:
        _report_unfinished(found)
        raise errors[0] if len(errors) == 1 else XenlvmError(" | ".join(str(e) for e in errors))
    for snapshot in overflowed:
        _judge(ctx, job, snapshot, found.io_failed.get(str(snapshot), False), judge_backup)
    if not ctx.dry_run:  # a sound backup that lacks some VM disks' files is partial (exit 3)
        unexposed.verdict(ctx.config.settings.lock_dir, job.name, not_exposed, judge_backup)


def _collect(errors: list[XenlvmError], step: Callable[..., Any], *args: Any) -> Any:
    """Run step; a failure goes into errors (the rest of post still runs). Return its result."""
    try:
        return step(*args)
    except XenlvmError as exc:
        errors.append(exc)
    except OSError as exc:
        errors.append(host_file_error(exc))
    return None


def _resume_paused_domains(ctx: Context, job: Job) -> None:
    """Resume the domains a killed pre left paused, if its record names any."""
    if job.xen is None:
        return
    record = xen.PauseRecord(ctx.config.settings.lock_dir, job.name)
    if record.read():
        xen.resume_leftovers(xen.Xl.for_job(ctx.runner, job), record)


def _find_artefacts(ctx: Context, job: Job, errors: list[XenlvmError]) -> _Found:
    """The host through the inventory (one lvs for the job's VGs, all VGs if it has VM disks;
    the mount table), and which of the job's snapshots are invalid and why: that can only be
    read while they exist."""
    try:
        host = read_tolerant(ctx.runner, job)
    except XenlvmError as exc:
        errors.append(exc)
        host, every = Inventory({}, mounts_mod.read_mounts()), None
    else:
        every = host.vgs if job.vmdisks is not None else None
    vgs: dict[str, VolumeGroup | None] = {vg: host.vgs[vg] for vg in job_vg_names(job) if vg in host.vgs}
    for name in host.missing_vgs:
        log.warning("%s; so there is no snapshot to clean up there", vg_not_found_message(name))
        vgs[name] = None
    disk_snapshots = vmdisks.job_snapshots(job, every or {})
    invalid = [lv for lv in disk_snapshots if lv.invalid]
    for spec in job.volumes:
        vg = vgs.get(spec.origin.vg)
        lv = vg.get(spec.snapshot) if vg is not None else None
        if lv is not None and lv.owned_by(job, spec) and lv.invalid:
            invalid.append(lv)
    io_failed = {str(lv): cow.invalidated_by_io_errors(lv) for lv in invalid}
    return _Found(vgs, every, disk_snapshots, io_failed, host.mounts)


def _vanished(found: _Found, guarded: Sequence[pool_guard_process.Guarded]) -> list[str]:
    """The guarded thin snapshots ("vg/lv") that lvs no longer shows (a VG lvs could not read: none)."""
    gone = []
    for g in guarded:
        vg = found.vgs.get(g.vg) or (found.every or {}).get(g.vg)
        if vg is not None and vg.get(g.snapshot) is None:
            gone.append(f"{g.vg}/{g.snapshot}")
    return gone


def _tear_down(ctx: Context, job: Job, found: _Found, errors: list[XenlvmError]) -> list[LogicalVolume]:
    """Unmount every volume's snapshot in reverse, then what exposes the VM disks (their tree
    holds the volumes' mounts); remove all those snapshots with one lvremove; then the VM disks'
    images and tree. Return the removed snapshots that were invalid. Each volume's failures,
    then the VM disks', go into errors in that order."""
    volumes: list[tuple[SnapshotSpec, LogicalVolume]] = []
    failures: dict[str, list[XenlvmError]] = {}  # by snapshot ("vg/lv"); "": the VM disks'
    for spec in reversed(job.volumes):
        if spec.origin.vg not in found.vgs:
            continue  # its lvs failed: reported above
        mine = failures.setdefault(str(spec.snapshot_volume), [])
        snapshot = _collect(mine, _release_volume, ctx, job, spec, found.vgs[spec.origin.vg], found.mounts)
        if snapshot is not None:
            volumes.append((spec, snapshot))
    disks: list[tuple[SnapshotSpec, LogicalVolume]] = []
    if found.every is not None and _collect(failures.setdefault("", []), _release_vmdisks, ctx, job,
                                            found.disk_snapshots):
        disks = disk_removals(job, found.disk_snapshots)
    not_removed = ctx.lvm.remove_snapshots(job, volumes + disks)
    for spec, snapshot in volumes:
        if str(snapshot) in not_removed:
            failures[str(spec.snapshot_volume)].append(not_removed[str(snapshot)])
        else:
            _removed_volume(ctx, job, snapshot)
    failures.get("", []).extend(not_removed[str(lv)] for _, lv in disks if str(lv) in not_removed)
    if found.every is not None and not failures[""]:
        _collect(failures[""], _finish_vmdisks, ctx, job, found.disk_snapshots)
    for told in failures.values():
        errors += told
    return [lv for _, lv in volumes + disks if lv.invalid and str(lv) not in not_removed]


def _report_unfinished(found: _Found) -> None:
    """Say what a failed post leaves for the admin: VGs missing a PV, snapshots that were invalid."""
    partial = {vg.name for vg in found.vgs.values() if vg is not None and vg.partial}
    every = found.every or {}
    partial |= {lv.vg for lv in found.disk_snapshots if lv.vg in every and every[lv.vg].partial}
    for vg_name in sorted(partial):
        log.error("%s. What could not be removed stays; once the disk is back, run 'xenlvm post' "
                  "again.", preflight.partial_vg_message(vg_name))
    for name, io_error in found.io_failed.items():
        log.error("the snapshot %s is invalid (%s), so the backup of this run cannot be trusted", name,
                  "because of I/O errors on its copy-on-write device" if io_error else "it overflowed")


def _judge(ctx: Context, job: Job, snapshot: LogicalVolume, io_error: bool, judge_backup: bool) -> None:
    """A snapshot that became invalid fails the backup (xenlvm cleanup only warns)."""
    if not judge_backup:
        log.warning("the removed snapshot %s had %s", snapshot,
                    "become invalid because of I/O errors" if io_error else "overflowed")
        return
    removed = '(dry run: it was left in place.)' if ctx.dry_run else 'The snapshot has been removed.'
    if io_error:
        raise XenlvmError(
            f"the snapshot {snapshot} became invalid during the backup because of I/O errors on the "
            "device that holds its copy-on-write space (it had not run out of space), so the backup "
            f"of this run read inconsistent data and cannot be trusted. {removed} Check the disks of "
            f"volume group {snapshot.vg!r} ('dmesg', 'pvs') before the next backup.")
    raise SnapshotOverflowed(
        f"the snapshot {snapshot} overflowed during the backup: its "
        f"{human_size(snapshot.size)} "
        "of copy-on-write space filled up and it became invalid, so the backup of this run read "
        f"inconsistent data and cannot be trusted. {removed} "
        "Make it larger "
        f"('size:' of job {job.name!r}, e.g. 20%ORIGIN, checking 'vgs' for free space) or run "
        "the backup when the VMs write less.")


def _stop_watchdog(ctx: Context, job: Job) -> None:
    """Stop the job's watchdog before unmounting, and report what it saw."""
    if ctx.dry_run:
        return
    summary = watchdog_process.stop(ctx.config, job.name)
    if summary is None:
        return
    for extension in summary.extensions:
        log.warning("the watchdog extended %s from %s to %s when it was %.1f%% full", extension["lv"],
                    human_size(extension["from"]), human_size(extension["to"]),
                    extension["fill"])
    for lv, fill in summary.max_fill.items():
        log.info("the watchdog saw %s at most %.1f%% full", lv, fill)
    for problem in summary.problems:
        log.warning("watchdog: %s", problem)
    report = ctx.report(job)
    if summary.max_fill:
        report.fill_percent = max(summary.max_fill.values())
    report.watchdog_extensions = len(summary.extensions)


def _stop_pool_guard(ctx: Context, job: Job) -> \
        tuple[pool_guard_process.Summary | None, list[pool_guard_process.Guarded], bool]:
    """Stop the job's thin pool guard before unmounting; report what it saw and did. Return its
    summary, the snapshots it guarded (its spec, which stop removes), and whether it was lost:
    pre started it, and it was not running when post began and did not end by itself."""
    if ctx.dry_run:
        return None, [], False
    guarded = pool_guard_process.guarded_by(ctx.config, job.name)
    running = pool_guard_process.running(ctx.config, job.name)
    summary = pool_guard_process.stop(ctx.config, job.name)
    if summary is not None:
        pool_guard_process.report(summary, ctx.report(job))
    lost = bool(guarded) and not running and pool_guard_process.was_lost(summary)
    if guarded:
        ctx.report(job).pool_guard_lost = int(lost)
    return summary, guarded, lost


def _stop_image_server(ctx: Context, job: Job, judge_backup: bool) -> None:
    """Stop the job's image server (expose: image); one that had died fails post (when it judges
    a backup), after all of post has run: the backup read nothing from it from then on."""
    if ctx.dry_run or job.vmdisks is None:
        return
    found = image_server.stop(ctx.runner, ctx.config.settings.lock_dir, job.name)
    problem = image_server.died_during_backup(found)
    if problem is not None and judge_backup:
        raise problem
    if problem is not None:
        log.warning("%s", problem)
    if found is not None and found.running:
        log.info("image server (pid %d) stopped; it served %s", found.pid, ", ".join(found.exports))


def _release_volume(ctx: Context, job: Job, spec: SnapshotSpec, vg: VolumeGroup | None,
                    mounts: list[mounts_mod.MountEntry]) -> LogicalVolume | None:
    """Unmount spec's snapshot if it is xenlvm's; return it as it was before, to be removed."""
    if vg is None:  # the VG does not exist, so neither does the snapshot
        return None
    snapshot = vg.get(spec.snapshot)
    if snapshot is None:
        entry = mounts_mod.mounted_at(spec.mountpoint, mounts)
        if entry is not None:
            log.warning("%s has %s mounted on it, which is not xenlvm's snapshot; left alone",
                        spec.mountpoint, entry.source)
        log.info("nothing to clean up: %s does not exist", spec.snapshot_volume)
        return None
    if not snapshot.owned_by(job, spec):
        log.warning("%s exists but xenlvm did not create it (no xenlvm tags); left untouched",
                    snapshot)
        return None
    _note_fill(ctx, job, snapshot)  # before unmounting: this is what the backup saw
    release_volume_snapshot(ctx, job, spec, snapshot, mounts, job.unmount_timeout)
    return snapshot


def _removed_volume(ctx: Context, job: Job, snapshot: LogicalVolume) -> None:
    if ctx.dry_run:
        return
    fill = snapshot.data_percent if not snapshot.is_thin else None
    if fill is not None and not snapshot.invalid:
        level = logging.WARNING if fill >= job.fill_warning else logging.INFO
        log.log(level, "the snapshot %s was %.1f%% full before removal%s", snapshot, fill,
                " - close to overflowing: consider a larger 'size:'" if level == logging.WARNING else "")
    log.info("snapshot %s unmounted and removed", snapshot)


def _note_fill(ctx: Context, job: Job, snapshot: LogicalVolume) -> None:
    """The fullest classic snapshot of the job, for its state file (an invalid one: 100)."""
    if snapshot.data_percent is not None and not snapshot.is_thin:
        report = ctx.report(job)
        fill = 100.0 if snapshot.invalid else snapshot.data_percent
        report.fill_percent = max(report.fill_percent or 0.0, fill)


def _release_vmdisks(ctx: Context, job: Job, snapshots: list[LogicalVolume]) -> bool:
    """Unmount all that exposes the job's VM disk snapshots, so that they can be removed."""
    for snapshot in snapshots:
        _note_fill(ctx, job, snapshot)
    vmdisk_teardown.release(ctx.runner, job, snapshots, job.unmount_timeout)
    return True


def _finish_vmdisks(ctx: Context, job: Job, snapshots: list[LogicalVolume]) -> None:
    """After the VM disk snapshots are removed: their images and the tree."""
    vmdisk_teardown.finish(ctx.runner, job, job.unmount_timeout)
    if snapshots and not ctx.dry_run:
        log.info("VM disk snapshots unmounted and removed: %s", ", ".join(map(str, snapshots)))
    elif not snapshots:
        log.info("no VM disk snapshot of job %s to clean up", job.name)
