"""pre: what sesam's sbc_pre does for each job, top to bottom.

Lock the job; look at the host (lvs, the mount table: xenlvm.inventory); sweep what an earlier
run left; plan (the job's volumes, and its VM disks as xl shows them); check everything
before any change (xenlvm.preflight); create every snapshot inside its pause window
(xenlvm.windows); mount or expose each; start the watchdog. Each change registers its undo
as soon as it is made; any failure unwinds them all, in reverse.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Sequence
from contextlib import ExitStack

from xenlvm import (
    image_server,
    layout,
    preflight,
    vmdisk_teardown,
    vmdisks,
    watchdog,
    watchdog_process,
    windows,
    xen,
)
from xenlvm import lvm as lvm_mod
from xenlvm import mounts as mounts_mod
from xenlvm.config import Job, SnapshotSpec
from xenlvm.context import Context
from xenlvm.errors import CleanupFailed, FileError, MountError, PreflightFailed, XenlvmError
from xenlvm.inventory import Inventory, read_inventory
from xenlvm.logs import set_job
from xenlvm.lvm import LogicalVolume, VolumeGroup
from xenlvm.mounts import UNDO_UNMOUNT_TIMEOUT
from xenlvm.teardown import remove_job_snapshot, tear_down_vmdisks
from xenlvm.undo import UndoStack

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
    """pre for one job: look at the host, sweep what an earlier run left, plan, check; then the
    snapshots of all the job's volumes (and VM disks) are created inside their pause windows, and
    mounted (exposed) after them."""
    host = read_inventory(ctx.lvm, job)
    # Before the sweep, which would change them: LVM refuses any change to a VG missing a PV.
    disk_vgs = [lv.vg for lv in vmdisks.job_snapshots(job, host.vgs)]
    volume_vgs = [s.origin.vg for s in job.volumes]
    _refuse_on_failures(preflight.check_volume_groups(volume_vgs + disk_vgs, host.vgs))
    if _sweep(ctx, job, host) and not ctx.dry_run:
        host = read_inventory(ctx.lvm, job)  # the one re-read: the sweep changed the host
    job = _plan(ctx, job, host)
    _preflight(ctx, job, host)
    origins = [host.vgs[spec.origin.vg].lvs[spec.origin.lv] for spec in job.volumes]
    fstypes = [mounts_mod.filesystem_type(ctx.runner, origin, host.mounts) if spec.expose is None else ""
               for spec, origin in zip(job.volumes, origins)]
    take_snapshots = _prepare_xen(ctx, job, origins, host.mounts)
    if job.vmdisks is not None:
        vmdisks.mount_tree(ctx.runner, job, undo)

    run_tag = lvm_mod.run_tag(ctx.started, os.getpid())
    tags = [lvm_mod.OWNER_TAG, lvm_mod.job_tag(job.name), run_tag]
    # Each undo is registered before its change and checks what really happened: a command
    # that fails (or times out) after doing its work must not leave that work behind.
    for spec in job.volumes:
        undo.push(f"remove snapshot {spec.snapshot_volume} if this run created it",
                  functools.partial(_remove_if_created, ctx, job, spec, run_tag))
    origin_of = dict(zip(job.volumes, origins))
    # each in its pause window (xenlvm.windows): nothing but lvcreate happens inside one
    take_snapshots(lambda spec: ctx.lvm.create_snapshot(spec, origin_of[spec],
                                                        [*tags, lvm_mod.VMDISK_TAG] if spec.expose else tags))

    for spec, fstype in zip(job.volumes, fstypes):
        if spec.expose is None:
            _mount(ctx, job, spec, fstype, undo)
        else:
            vmdisks.expose(ctx.runner, job, spec, undo)
    # expose: image: every image of the job served through FUSE by one process (issue 16)
    image_server.serve(ctx.runner, ctx.config.settings.lock_dir, job, job.volumes, undo)
    if job.vmdisks is not None and not ctx.dry_run:  # beside the disks: the domains' own layouts
        layout.write_domain_layouts(xen.Xl.for_job(ctx.runner, job), job.volumes,
                                    xen.export_directory(job, ctx.config.settings.state_dir))
    _start_watchdog(ctx, job, origins, undo)


def _sweep(ctx: Context, job: Job, host: Inventory) -> bool:
    """Remove what an earlier run of the job left behind; return whether there was anything."""
    swept = _sweep_leftovers(ctx, job, host)
    return _sweep_vmdisks(ctx, job, host.vgs) or swept


def _plan(ctx: Context, job: Job, host: Inventory) -> Job:
    """The job as this run snapshots it: with a vmdisks: section, the VM disks that xl shows
    become volumes of the job too."""
    if job.vmdisks is None:
        return job
    disks = vmdisks.discover(job, xen.Xl.for_job(ctx.runner, job), host.vgs)
    _check_disk_names(job, disks)
    missing = image_server.missing_program(job, ctx.config.settings.path)
    if missing is not None:
        raise PreflightFailed(f"{missing}. Nothing was changed.")
    return dataclasses.replace(job, volumes=job.volumes + tuple(disks))


def _check_disk_names(job: Job, disks: list[SnapshotSpec]) -> None:
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
        if existing is None or not existing.owned_by(job, spec):
            continue
        log.warning("found %s left over by an earlier run (%s, created %s); removing it first",
                    existing, existing.run_tag() or "unknown run", existing.created or "at an unknown time")
        if os.path.isdir(spec.mountpoint):
            finding = preflight.check_mountpoint(spec.mountpoint, host.mounts, existing)
            if finding.level == "fail":
                raise PreflightFailed(finding.message)
        remove_job_snapshot(ctx, job, spec, existing, host.mounts, UNDO_UNMOUNT_TIMEOUT)
        swept = True
    return swept


def _sweep_vmdisks(ctx: Context, job: Job, vgs: dict[str, VolumeGroup]) -> bool:
    """Tear down what an earlier run of the job exposed for its VM disks, if anything."""
    if job.vmdisks is None:
        return False
    snapshots = vmdisks.job_snapshots(job, vgs)
    tree = mounts_mod.mounted_at(job.mountpoint, mounts_mod.read_mounts())
    if not snapshots and (tree is None or tree.source != vmdisk_teardown.tree_source(job)):
        return False
    log.warning("found VM disk snapshots or their mounts left over by an earlier run (%s); "
                "removing them first", ", ".join(map(str, snapshots)) or "no snapshot")
    tear_down_vmdisks(ctx, job, snapshots, UNDO_UNMOUNT_TIMEOUT)
    return True


def _preflight(ctx: Context, job: Job, host: Inventory) -> None:
    findings = [preflight.check_mountpoint(job.mountpoint, host.mounts)]
    findings += preflight.check_job_volumes(job, host.vgs)
    findings += [preflight.check_mountpoint(spec.mountpoint, host.mounts) for spec in job.volumes
                 if spec.mountpoint != job.mountpoint and os.path.lexists(spec.mountpoint)]
    if ctx.dry_run:
        findings = [f for f in findings if f.check != "snapshot name"]  # the sweep was not run
    _refuse_on_failures(findings)


def _refuse_on_failures(findings: list[preflight.Finding]) -> None:
    problems = preflight.failures(findings)
    if problems:
        raise PreflightFailed("; ".join(p.message for p in problems) + ". Nothing was changed.")


def _prepare_xen(ctx: Context, job: Job, origins: list[LogicalVolume],
                 mounts: list[mounts_mod.MountEntry]) -> Callable[[Callable[[SnapshotSpec], None]], None]:
    """Everything Xen needs before the pause windows: resume what a killed run left paused, pick
    the domains, export their configuration, plan the windows. Returns what takes the snapshots,
    each inside its window."""
    if job.xen is None:
        return functools.partial(windows.run, windows.plan(job.volumes, {}, windows.TOGETHER))
    xl = xen.Xl.for_job(ctx.runner, job)
    record = xen.PauseRecord(ctx.config.settings.lock_dir, job.name)
    xen.resume_leftovers(xl, record)
    origin_paths = [e.mountpoint for spec, origin in zip(job.volumes, origins) if spec.expose is None
                    for e in mounts_mod.mounts_of(origin, mounts)]
    domains = xen.select_domains(job, xl, origin_paths)
    directory = xen.export_directory(job, ctx.config.settings.state_dir)
    if directory is not None and not ctx.dry_run:
        xen.export_configuration(job, domains, directory, job.xen.config_dir)
    if job.xen.mode != "pause":
        return functools.partial(windows.run, windows.plan(job.volumes, {}, windows.TOGETHER))
    planned = windows.plan_xen(job, domains, job.volumes, origins, mounts)
    notes = ctx.notes.setdefault(job.name, {})
    pause = windows.xen_pause(xl, record, domains, lambda names, ms: windows.note_window(notes, names, ms))
    return lambda snapshot: windows.run(planned, snapshot, pause)


def _mount(ctx: Context, job: Job, spec: SnapshotSpec, fstype: str, undo: UndoStack) -> None:
    device = lvm_mod.device_path(spec.origin.vg, spec.snapshot)
    if not os.path.isdir(spec.mountpoint) and not ctx.dry_run:
        try:
            os.mkdir(spec.mountpoint, 0o755)  # <mountpoint>/<name> of a job with several volumes
        except OSError as exc:
            raise FileError("create the mount point", exc, f"Check that {os.path.dirname(spec.mountpoint)} "
                            "is a directory root can write to, on a filesystem that is not full or "
                            "read-only.") from None
        undo.push(f"remove the directory {spec.mountpoint}", functools.partial(os.rmdir, spec.mountpoint))
    undo.push(f"unmount {spec.mountpoint} if the snapshot is mounted there",
              functools.partial(_unmount_if_mounted, ctx, spec.mountpoint, device))
    mounts_mod.mount_snapshot(ctx.runner, device, fstype, spec.mountpoint)
    if ctx.dry_run:
        return
    _verify_mounted(spec.mountpoint, device)
    kind = "thin snapshot" if spec.size is None else f"snapshot of {spec.size.text}"
    log.info("%s of %s is mounted read-only at %s (%s)", kind, spec.origin, spec.mountpoint, fstype)


def _verify_mounted(mountpoint: str, device: str) -> None:
    """mount said yes; make sure the kernel shows exactly our device at the mountpoint."""
    entry = mounts_mod.mounted_at(mountpoint, mounts_mod.read_mounts())
    if entry is None or not mounts_mod.shows_device(entry, device):
        raise MountError(f"after mounting, {mountpoint} does not show the snapshot {device}; "
                         "something else changed the mount table")
    if "ro" not in entry.options:
        raise MountError(f"{mountpoint} is mounted read-write although xenlvm asked for read-only")


def _unmount_if_mounted(ctx: Context, mountpoint: str, device: str) -> None:
    if not ctx.dry_run:
        mounts_mod.unmount_if(ctx.runner, mountpoint, lambda entry: mounts_mod.shows_device(entry, device))


def _remove_if_created(ctx: Context, job: Job, spec: SnapshotSpec, run_tag: str) -> None:
    if ctx.dry_run:
        return
    snapshot = ctx.lvm.volume_group(spec.origin.vg).get(spec.snapshot)
    if snapshot is not None and snapshot.owned_by(job, spec) and run_tag in snapshot.tags:
        ctx.lvm.remove_snapshot(job, spec, snapshot)


def _start_watchdog(ctx: Context, job: Job, origins: list[LogicalVolume], undo: UndoStack) -> None:
    """Watch the job's classic snapshots through the backup, extending them before they overflow.
    Thin snapshots take their space from the pool and are not watched."""
    watched = [watchdog.Watched(spec.origin.vg, spec.snapshot, origin.size)
               for spec, origin in zip(job.volumes, origins) if spec.size is not None]
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
