"""post: what sesam's sbc_post does for each job (and xenlvm cleanup), top to bottom.

Lock the job; resume domains a killed pre left paused; stop the watchdog and the pool guard, and
what each kind of target keeps running (the image server); find what each kind left on the host
(one lvs: xenlvm.phases.kinds) and read whether its snapshots are still valid; each kind
releases them, in reverse, only with proof that they are xenlvm's; all are removed with one
lvremove; then judge the backup: an invalid snapshot fails it, and each kind has its say. One
job's failure does not stop the others. Guests a killed pre left frozen
(xen.quiesce) are thawed right after the resume, as at the end of a pause window.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from xenlvm.config.model import Job
from xenlvm.core import ownership, preflight
from xenlvm.core.context import Context
from xenlvm.core.inventory import Inventory, read_tolerant
from xenlvm.errors import PartialBackup, SnapshotOverflowed, XenlvmError, host_file_error
from xenlvm.host import cow
from xenlvm.host.lvm import LogicalVolume, VolumeGroup, vg_not_found_message
from xenlvm.host.xl import Xl
from xenlvm.logs import set_job
from xenlvm.phases import kinds
from xenlvm.quiesce import freeze as quiesce
from xenlvm.sizes import human_size
from xenlvm.targets.base import Artefacts, Failures, Kind, collect
from xenlvm.thinpool import process as pool_guard_process
from xenlvm.watchdog import process as watchdog_process
from xenlvm.xen import domains as xen

log = logging.getLogger("xenlvm")


def run_post(ctx: Context, jobs: Sequence[Job], *, judge_backup: bool = True) -> None:
    """Clean up every job; one job's failure does not stop the others. Then raise: one job's
    failure as it is; several as one error that names them all (partial, exit 3, when every one
    of them is a partial backup). judge_backup=False (xenlvm cleanup) reports an overflowed
    snapshot as a warning only."""
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


def clean_up(ctx: Context, job: Job, judge_backup: bool = True) -> None:
    """Unmount and remove the job's snapshots that xenlvm created (in reverse order), then tell
    whether the backup is valid. Every step gets its turn even when one before it failed."""
    errors: list[XenlvmError] = []
    collect(errors, _resume_paused_domains, ctx, job)
    if job.xen is not None:  # after the resume, as at the end of a pause window
        collect(errors, quiesce.thaw_leftovers, ctx.runner, job, ctx.config.settings.lock_dir)
    collect(errors, _stop_watchdog, ctx, job)
    guard, guarded, lost = collect(errors, _stop_pool_guard, ctx, job) or (None, [], False)
    job_kinds = kinds.of(job)
    for kind in job_kinds:  # e.g. the image server, before the snapshots it holds are removed
        collect(errors, kind.stop, ctx, job, judge_backup)
    host = _read_host(ctx, job, errors)
    found = {kind: kind.find(ctx.config, job, host or Inventory({}, [])) for kind in job_kinds}
    # whether each invalid snapshot overflowed: that can only be read while they exist
    io_failed = {str(lv): cow.invalidated_by_io_errors(lv) for artefacts in found.values()
                 for _, lv in artefacts.snapshots if lv.invalid}
    vanished = _vanished(host.vgs if host is not None else {}, guarded)
    overflowed = _tear_down(ctx, job, host, found, errors) if host is not None else []
    dropped = pool_guard_process.judge(job, guard, vanished, lost)
    if dropped is not None and judge_backup:
        errors.append(dropped)
    elif dropped is not None:
        log.warning("%s", dropped)
    if errors:
        _report_unfinished(job, host, found, io_failed)
        raise errors[0] if len(errors) == 1 else XenlvmError(" | ".join(str(e) for e in errors))
    for snapshot in overflowed:
        _judge(ctx, job, snapshot, io_failed.get(str(snapshot), False), judge_backup)
    for kind in job_kinds:  # e.g. a sound backup that lacks some VM disks' files is partial (exit 3)
        kind.judge(ctx, job, judge_backup)


def _resume_paused_domains(ctx: Context, job: Job) -> None:
    """Resume the domains a killed pre left paused, if its record names any."""
    if job.xen is None:
        return
    record = xen.PauseRecord(ctx.config.settings.lock_dir, job.name)
    if record.read():
        xen.resume_leftovers(Xl(ctx.runner, job.xl_timeout), record)


def _read_host(ctx: Context, job: Job, errors: list[XenlvmError]) -> Inventory | None:
    """The host through the inventory (one lvs for what the job's kinds need; the mount table),
    or None when lvs failed (told in errors): nothing is then released or removed."""
    try:
        host = read_tolerant(ctx.runner, kinds.scope(job))
    except XenlvmError as exc:
        errors.append(exc)
        return None
    for name in host.missing_vgs:
        log.warning("%s; so there is no snapshot to clean up there", vg_not_found_message(name))
    return host


def _vanished(vgs: Mapping[str, VolumeGroup | None],
              guarded: Sequence[pool_guard_process.Guarded]) -> list[str]:
    """The guarded thin snapshots ("vg/lv") that lvs no longer shows (a VG lvs could not read: none)."""
    gone = []
    for g in guarded:
        vg = vgs.get(g.vg)
        if vg is not None and vg.get(g.snapshot) is None:
            gone.append(f"{g.vg}/{g.snapshot}")
    return gone


def _tear_down(ctx: Context, job: Job, host: Inventory, found: Mapping[Kind, Artefacts],
               errors: list[XenlvmError]) -> list[LogicalVolume]:
    """Each kind releases its snapshots (the volumes' unmounted in reverse, then what exposes
    the VM disks: their tree holds the volumes' mounts); all are removed with one lvremove; then
    each kind cleans up what is left (the VM disks' images and tree). Return the removed
    snapshots that were invalid. The failures go into errors in the kinds' order (each volume's,
    then the VM disks')."""
    failures: Failures = {}
    for artefacts in found.values():
        for _, snapshot in artefacts.snapshots:
            _note_fill(ctx, job, snapshot)  # before unmounting: this is what the backup saw
    released = {kind: kind.release(ctx, job, host, artefacts, failures) for kind, artefacts in found.items()}
    removals = [removal for each in released.values() for removal in each]
    not_removed = ownership.remove(ctx.lvm, job, [(r.spec, r.snapshot) for r in removals])
    for removal in removals:
        if str(removal.snapshot) in not_removed:
            failures.setdefault(removal.key, []).append(not_removed[str(removal.snapshot)])
    for kind, artefacts in found.items():
        gone = [r.snapshot for r in released[kind] if str(r.snapshot) not in not_removed]
        kind.removed(ctx, job, artefacts, gone, failures)
    for told in failures.values():
        errors += told
    return [r.snapshot for r in removals if r.snapshot.invalid and str(r.snapshot) not in not_removed]


def _report_unfinished(job: Job, host: Inventory | None, found: Mapping[Kind, Artefacts],
                       io_failed: Mapping[str, bool]) -> None:
    """Say what a failed post leaves for the admin: VGs missing a PV, snapshots that were invalid."""
    vgs = host.vgs if host is not None else {}
    partial = [vg for vg in kinds.vgs_in_play(job, found.values()) if vg in vgs and vgs[vg].partial]
    for vg_name in sorted(partial):
        log.error("%s. What could not be removed stays; once the disk is back, run 'xenlvm post' "
                  "again.", preflight.partial_vg_message(vg_name))
    for name, io_error in io_failed.items():
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


def _note_fill(ctx: Context, job: Job, snapshot: LogicalVolume) -> None:
    """The fullest classic snapshot of the job, for its state file (an invalid one: 100)."""
    if snapshot.data_percent is not None and not snapshot.is_thin:
        report = ctx.report(job)
        fill = 100.0 if snapshot.invalid else snapshot.data_percent
        report.fill_percent = max(report.fill_percent or 0.0, fill)
