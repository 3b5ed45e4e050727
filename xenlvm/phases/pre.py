"""pre: what sesam's sbc_pre does for each job, top to bottom.

Lock the job; resume domains a killed run left paused; look at the host once (one lvs, the
mount table, xl: xenlvm.core.inventory); sweep what an earlier run left; plan the targets (the job's
volumes, and its VM disks as xl shows them: xenlvm.targets.base); check everything before any
change (xenlvm.core.preflight); create each snapshot inside its pause window (xenlvm.xen.windows);
start the thin pool guard at once; expose each (mount, or files and images), serve the images;
start the watchdog. Each change registers its undo as soon as it is made; any failure unwinds them all,
in reverse.
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
from xenlvm.core.inventory import Inventory, job_vg_names, read_inventory
from xenlvm.core.undo import UndoStack
from xenlvm.errors import CleanupFailed, PreflightFailed, XenlvmError
from xenlvm.host import mounts as mounts_mod
from xenlvm.host.mounts import UNDO_UNMOUNT_TIMEOUT
from xenlvm.host.xl import Xl
from xenlvm.logs import set_job
from xenlvm.phases.teardown import remove_job_snapshot, tear_down_vmdisks
from xenlvm.quiesce import freeze as quiesce
from xenlvm.quiesce import guard as quiesce_guard
from xenlvm.targets.base import Target
from xenlvm.targets.volume import VolumeTarget
from xenlvm.thinpool import process as pool_guard_process
from xenlvm.thinpool import space as thinpool
from xenlvm.vmdisks import chains as vmdisk_chains
from xenlvm.vmdisks import expose as vmdisks
from xenlvm.vmdisks import image_server, layout, unexposed
from xenlvm.vmdisks import target as vmdisk_target
from xenlvm.vmdisks import teardown as vmdisk_teardown
from xenlvm.vmdisks.target import VmDiskTarget
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
    """pre for one job: look at the host, sweep what an earlier run left, plan the targets,
    check them all; then the snapshots of all of them are created, each inside its pause window,
    and exposed (mounted) after them."""
    if job.xen is not None:  # first: resuming changes what xl list shows; then thawing
        xen.resume_leftovers(Xl(ctx.runner, job.xl_timeout), _pause_record(ctx, job))
        quiesce.thaw_leftovers(ctx.runner, job, ctx.config.settings.lock_dir)
    host = read_inventory(ctx.runner, job)
    # Before the sweep, which would change them: LVM refuses any change to a VG missing a PV.
    disk_vgs = [lv.vg for lv in ownership.vm_disk_snapshots(job, host.vgs)]
    _refuse_on_failures(preflight.check_volume_groups(job_vg_names(job) + disk_vgs, host.vgs))
    if _sweep(ctx, job, host) and not ctx.dry_run:
        host = host.reread(ctx.runner, job)  # the one re-read: the sweep changed the host
    disks = _find_vm_disks(ctx, job, host)
    _preflight(ctx, job, [*job.volumes, *(d.spec for d in disks)], host)
    targets: list[Target] = [*(VolumeTarget(spec, host.vgs[spec.origin.vg].lvs[spec.origin.lv])
                               for spec in job.volumes), *disks]
    for target in targets:
        target.prepare(ctx, host.mounts)
    planned, pause = _prepare_xen(ctx, job, targets, host)
    if job.vmdisks is not None:
        vmdisks.mount_tree(ctx.runner, job, undo)
    consistent = _take_snapshots(ctx, job, targets, planned, pause, undo)
    _start_pool_guard(ctx, job, targets, undo)  # at once: exposing them (image-copy: hours) fills pools too

    for target in targets:
        target.expose(ctx, job, undo)
    vmdisk_chains.expose_chains(ctx, job, disks, undo)  # vmdisks.incremental: each thin disk's file
    # expose: image: every image of the job served through FUSE by one process
    vmdisk_target.serve_images(ctx, job, disks, undo)
    if job.vmdisks is not None and not ctx.dry_run:  # for status and post: what was not exposed
        not_exposed = [d.not_exposed for d in disks if d.not_exposed is not None]
        unexposed.record(ctx.config.settings.lock_dir, job.name, not_exposed, undo)
        ctx.report(job).not_exposed = len(not_exposed)
    if job.vmdisks is not None and not ctx.dry_run:  # beside the disks: the domains' own layouts
        assert host.xl is not None
        layout.write_domain_layouts(host.xl.records, disks,
                                    xen_export.export_directory(job, ctx.config.settings.state_dir),
                                    consistent)
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
    with quiesce_guard.guarding(ctx.config, job.name, run_tag, quiescer):
        for paused, ms in windows.run(planned, functools.partial(_create_snapshot, ctx, job, run_tag), pause,
                                      quiescer.frozen if quiescer is not None else None):
            ctx.report(job).add_window(paused, ms)
    consistent = quiescer.consistent if quiescer is not None else {}
    ctx.report(job).consistent.update(consistent)
    return consistent


def _sweep(ctx: Context, job: Job, host: Inventory) -> bool:
    """Remove what an earlier run of the job left behind; return whether there was anything."""
    swept = _sweep_leftovers(ctx, job, host)
    return _sweep_vmdisks(ctx, job, host) or swept


def _find_vm_disks(ctx: Context, job: Job, host: Inventory) -> list[VmDiskTarget]:
    """With a vmdisks: section, the VM disks that xl shows (on logical volumes of their own)."""
    if job.vmdisks is None:
        return []
    assert host.xl is not None
    disks = vmdisk_target.discover(job, host.xl, host.vgs)
    for item in vmdisk_target.unmatched_excludes(job, host.xl):
        log.warning("vmdisks.exclude: %r names no domain xl knows (a typo?): nothing is left out for it",
                    item)
    _check_disk_names(job, disks)
    for problem in (image_server.missing_program(job, ctx.config.settings.path),
                    vmdisk_target.check_image_room(job, disks)):
        if problem is not None:
            raise PreflightFailed(f"{problem}. Nothing was changed.")
    return disks


def _check_disk_names(job: Job, disks: list[VmDiskTarget]) -> None:
    if not job.volumes and not disks:
        raise PreflightFailed(f"job {job.name!r} found no VM disk on a logical volume to back up "
                              "(see the warnings above). Nothing was changed.")
    clash = {d.domain for d in disks} & {os.path.basename(v.mountpoint) for v in job.volumes}
    if clash:
        raise PreflightFailed(f"domain {min(clash)!r} has the name of one of the job's volumes, and "
                              "both would be exposed there: rename the volume ('name:'). "
                              "Nothing was changed.")


def _sweep_leftovers(ctx: Context, job: Job, host: Inventory) -> bool:
    """Remove snapshots an earlier run of this job left behind; return whether there were any."""
    swept = False
    for spec in job.volumes:
        existing = host.vgs[spec.origin.vg].get(spec.snapshot)
        if existing is None or not ownership.owns(job, spec, existing):
            continue
        log.warning("found %s left over by an earlier run (%s, created %s); removing it first",
                    existing, ownership.run_of(existing) or "unknown run",
                    existing.created or "at an unknown time")
        if os.path.isdir(spec.mountpoint):
            finding = preflight.check_mountpoint(spec.mountpoint, host.mounts, existing)
            if finding.level == "fail":
                raise PreflightFailed(finding.message)
        remove_job_snapshot(ctx, job, spec, existing, host.mounts, UNDO_UNMOUNT_TIMEOUT)
        swept = True
    return swept


def _sweep_vmdisks(ctx: Context, job: Job, host: Inventory) -> bool:
    """Tear down what an earlier run of the job exposed for its VM disks, if anything."""
    if job.vmdisks is None:
        return False
    snapshots = ownership.vm_disk_snapshots(job, host.vgs)
    tree = mounts_mod.mounted_at(job.mountpoint, host.mounts)
    if not snapshots and (tree is None or tree.source != vmdisk_teardown.tree_source(job)):
        return False
    log.warning("found VM disk snapshots or their mounts left over by an earlier run (%s); "
                "removing them first", ", ".join(map(str, snapshots)) or "no snapshot")
    tear_down_vmdisks(ctx, job, snapshots, UNDO_UNMOUNT_TIMEOUT)
    return True


def _preflight(ctx: Context, job: Job, specs: Sequence[SnapshotSpec], host: Inventory) -> None:
    findings = [preflight.check_mountpoint(job.mountpoint, host.mounts)]
    findings += preflight.check_job_volumes(job, host.vgs, specs)
    for finding in thinpool.check_thin_pools(job, specs, host.vgs):
        if finding.level == "warn":
            log.warning("%s", finding.message)
        findings.append(finding)
    findings += [preflight.check_mountpoint(spec.mountpoint, host.mounts) for spec in specs
                 if spec.mountpoint != job.mountpoint and os.path.lexists(spec.mountpoint)]
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
    if job.xen is None:
        return windows.plan(targets, {}, windows.TOGETHER), None
    assert host.xl is not None
    origin_paths = [path for target in targets for path in target.origin_mountpoints(host.mounts)]
    domains = xen.select_domains(job, host.xl, origin_paths, [t.domain for t in targets if t.domain])
    directory = xen_export.export_directory(job, ctx.config.settings.state_dir)
    if directory is not None and not ctx.dry_run:
        xen_export.export_configuration(job, domains, directory, job.xen.config_dir)
    if job.xen.mode != "pause":
        return windows.plan(targets, {}, windows.TOGETHER), None
    planned = windows.plan_xen(job, domains, targets, host.mounts)
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
