"""pre: what sesam's sbc_pre does for each job, top to bottom.

Lock the job; resume domains a killed run left paused; look at the host once (one lvs, the
mount table, xl: xenlvm.core.inventory); for each kind of target (xenlvm.phases.kinds), find and
sweep what an earlier run left and plan its targets (the job's volumes, its VM disks as xl shows
them); check everything before any change (xenlvm.core.preflight); create each snapshot inside
its pause window (xenlvm.xen.windows); start the thin pool guard at once; expose each (mount, or
files and images), then what each kind's targets share (the image server); start the watchdog.
Each change registers its undo as soon as it is made; any failure unwinds them all, in reverse.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from contextlib import ExitStack

from xenlvm.config.model import Job, SnapshotSpec
from xenlvm.core import ownership, preflight
from xenlvm.core.context import Context
from xenlvm.core.inventory import Inventory, read_inventory
from xenlvm.core.undo import UndoStack
from xenlvm.errors import CleanupFailed, PreflightFailed, XenlvmError
from xenlvm.host.xl import Xl
from xenlvm.logs import set_job
from xenlvm.phases import kinds
from xenlvm.quiesce import freeze as quiesce
from xenlvm.quiesce import guard as quiesce_guard
from xenlvm.targets.base import Target
from xenlvm.thinpool import process as pool_guard_process
from xenlvm.watchdog import process as watchdog_process
from xenlvm.watchdog import watch as watchdog
from xenlvm.xen import domains as xen
from xenlvm.xen import export as xen_export
from xenlvm.xen import windows

log = logging.getLogger("xenlvm")


def run_pre(ctx: Context, jobs: Sequence[Job]) -> None:
    """Create and mount the snapshots of every job, or leave nothing behind and raise."""
    undo = UndoStack()
    with ExitStack() as locks:
        try:
            for job in jobs:
                set_job(job.name)
                locks.enter_context(ctx.lock(job))
                prepare_snapshots(ctx, job, undo)
        except BaseException as exc:
            failed = undo.unwind()
            if failed:
                raise CleanupFailed(f"{exc}\nUndoing pre ALSO failed, so something may be left "
                                    f"behind: {'; '.join(failed)}. Run 'xenlvm post' for the job to "
                                    "clean up, then 'xenlvm status'.", exc) from exc
            raise
        undo.discard()


def prepare_snapshots(ctx: Context, job: Job, undo: UndoStack) -> None:
    """pre for one job: look at the host, sweep what an earlier run left, plan the targets of
    each kind (xenlvm.phases.kinds), check them all; then the snapshots of all of them are
    created, each inside its pause window, and exposed (mounted) after them."""
    if job.xen is not None:  # first: resuming changes what xl list shows; then thawing
        xen.resume_leftovers(Xl(ctx.runner, job.xl_timeout), _pause_record(ctx, job))
        quiesce.thaw_leftovers(ctx.runner, job, ctx.config.settings.lock_dir)
    scope = kinds.scope(job)
    host = read_inventory(ctx.runner, job, scope)
    found = {kind: kind.find(ctx.config, job, host) for kind in kinds.of(job)}
    # Before the sweep, which would change them: LVM refuses any change to a VG missing a PV.
    _refuse_on_failures(preflight.check_volume_groups(kinds.vgs_in_play(job, found.values()), host.vgs))
    swept = [kind.sweep(ctx, job, host, artefacts) for kind, artefacts in found.items()]
    if any(swept) and not ctx.dry_run:
        host = host.reread(ctx.runner, scope)  # the one re-read: the sweep changed the host
    planned_by = {kind: kind.plan(ctx, job, host) for kind in found}
    targets = [target for planned in planned_by.values() for target in planned]
    _preflight(ctx, job, targets, host)
    for target in targets:
        target.prepare(ctx, host.mounts)
    planned, pause = _prepare_xen(ctx, job, targets, host)
    for kind, own in planned_by.items():
        kind.before_snapshots(ctx, job, own, undo)
    consistent = _take_snapshots(ctx, job, targets, planned, pause, undo)
    _start_pool_guard(ctx, job, targets, undo)  # at once: exposing them (image-copy: hours) fills pools too

    for target in targets:
        target.expose(ctx, job, undo)
    for kind, own in planned_by.items():
        kind.after_expose(ctx, job, own, undo, host, consistent)
    _start_watchdog(ctx, job, targets, undo)


def _take_snapshots(ctx: Context, job: Job, targets: Sequence[Target], planned: Sequence[windows.Window],
                    pause: windows.Pause | None, undo: UndoStack) -> dict[str, bool]:
    """Create the snapshots, each in its pause window (xenlvm.xen.windows): nothing but lvcreate
    happens inside one; its domains frozen around it (xen.quiesce) under a guard process
    (xenlvm.quiesce.guard). Return, per domain frozen or not, whether it froze."""
    run_tag = ownership.run_tag(ctx.started, os.getpid())
    # Each undo is registered before its change and checks what really happened: a command
    # that fails (or times out) after doing its work must not leave that work behind.
    for target in targets:
        undo.push(f"remove snapshot {target.spec.snapshot_volume} if this run created it",
                  functools.partial(_remove_if_created, ctx, job, target.spec, run_tag))
    quiescer = quiesce.for_job(ctx.runner, job, ctx.config.settings.lock_dir, run_tag) \
        if pause is not None and any(w.domains for w in planned) else None
    by_name = {str(target.spec.snapshot_volume): target for target in targets}

    def create(snapshot: windows.Snapshot) -> None:
        _create_snapshot(ctx, job, run_tag, by_name[snapshot.name])

    with quiesce_guard.guarding(ctx.config, job.name, run_tag, quiescer):
        freeze = quiescer.frozen if quiescer is not None else None
        for paused, ms in windows.run(planned, create, pause, freeze):
            ctx.report(job).add_window(paused, ms)
    consistent = quiescer.consistent if quiescer is not None else {}
    ctx.report(job).consistent.update(consistent)
    return consistent


def _preflight(ctx: Context, job: Job, targets: Sequence[Target], host: Inventory) -> None:
    findings = kinds.check_targets(job, [t.spec for t in targets], host.vgs, host.mounts,
                                   kept={t.spec for t in targets if t.kept_as_base()})
    for finding in findings:
        if finding.check == "thin pool" and finding.level == "warn":
            log.warning("%s", finding.message)
    if ctx.dry_run:
        findings = [f for f in findings if f.check != "snapshot name"]  # the sweep was not run
    _refuse_on_failures(findings)


def _refuse_on_failures(findings: list[preflight.Finding]) -> None:
    problems = preflight.failures(findings)
    if problems:
        raise PreflightFailed("; ".join(p.message for p in problems) + ". Nothing was changed.")


def _pause_record(ctx: Context, job: Job) -> xen.PauseRecord:
    return xen.PauseRecord(ctx.config.settings.lock_dir, job.name)


def _prepare_xen(ctx: Context, job: Job, targets: Sequence[Target],
                 host: Inventory) -> tuple[list[windows.Window], windows.Pause | None]:
    """Everything Xen needs before the pause windows: pick the domains of the targets, export
    their configuration, plan the windows. Returns the windows and the pause of one window."""
    snapshots = [target.window_snapshot(host.mounts) for target in targets]
    if job.xen is None:
        return windows.plan(snapshots, {}, windows.TOGETHER), None
    assert host.xl is not None
    origin_paths = [path for snapshot in snapshots for path in snapshot.mountpoints]
    disk_domains = [snapshot.domain for snapshot in snapshots if snapshot.domain]
    domains = xen.select_domains(job, host.xl, origin_paths, disk_domains, kinds.excluded_domains(job))
    directory = xen_export.export_directory(job, ctx.config.settings.state_dir)
    if directory is not None and not ctx.dry_run:
        xen_export.export_configuration(job, domains, directory, job.xen.config_dir)
    if job.xen.mode != "pause":
        return windows.plan(snapshots, {}, windows.TOGETHER), None
    planned = windows.plan_xen(kinds.window_mode(job), domains, snapshots)
    return planned, windows.xen_pause(Xl(ctx.runner, job.xl_timeout), _pause_record(ctx, job), domains)


def _create_snapshot(ctx: Context, job: Job, run_tag: str, target: Target) -> None:
    """Create target's snapshot, with the tags that prove it is this run's (xenlvm.core.ownership)."""
    spec = target.spec
    tags = ownership.tags_for(job, run_tag, vm_disk=target.vm_disk)
    ctx.lvm.create_snapshot(target.origin, spec.snapshot, tags,
                            spec.size.lvcreate_args() if spec.size is not None else None)


def _remove_if_created(ctx: Context, job: Job, spec: SnapshotSpec, run_tag: str) -> None:
    if ctx.dry_run:
        return
    snapshot = ctx.lvm.volume_group(spec.origin.vg).get(spec.snapshot)
    if snapshot is not None and ownership.created_by(job, spec, snapshot, run_tag):
        ownership.remove_one(ctx.lvm, job, spec, snapshot)


def _start_watchdog(ctx: Context, job: Job, targets: Sequence[Target], undo: UndoStack) -> None:
    """Watch the job's classic snapshots through the backup, extending them before they overflow.
    Thin snapshots take their space from the pool and are not watched."""
    watched = [watchdog.Watched(t.spec.origin.vg, t.spec.snapshot, t.origin.size)
               for t in targets if t.spec.size is not None]
    if job.watchdog is None or not watched or ctx.dry_run:
        return
    undo.push("stop the snapshot watchdog", functools.partial(watchdog_process.stop, ctx.config, job.name))
    try:
        pid = watchdog_process.start(ctx.config, job.name, watched, job.watchdog)
    except XenlvmError as exc:
        # The backup is still sound without it: post detects an overflow either way.
        log.error("%s; the backup goes on without the watchdog", exc)
        return
    log.info("snapshot watchdog started (pid %s): extends by %d%% at %d%% full", pid, job.watchdog.step,
             job.watchdog.threshold)


def _start_pool_guard(ctx: Context, job: Job, targets: Sequence[Target], undo: UndoStack) -> None:
    """Guard the pools of the job's thin snapshots through the backup (xenlvm.thinpool.guard). A
    pool that fills up stops every VM on it: pre fails when the guard cannot start."""
    if ctx.dry_run or not pool_guard_process.guarded_of(targets):
        return
    undo.push("stop the thin pool guard", functools.partial(pool_guard_process.stop, ctx.config, job.name))
    pid = pool_guard_process.start(ctx.config, job, targets)
    log.info("thin pool guard started (pid %s): acts at %d%% full, looking every %g s", pid,
             job.thin_pool.protect_at, job.thin_pool.interval)
