"""The pre and post orchestration: what sesam's sbc_pre and sbc_post do for each job.

pre:  lock, sweep leftovers of a crashed run, preflight, create the snapshot, mount it.
      Each change registers its undo as soon as it succeeded; any failure unwinds them all.
post: lock, read the snapshot's state, unmount (patiently), remove; report an overflow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field

from xenlvm import layout, preflight, vmdisks, watchdog, watchdog_process, xen
from xenlvm import lvm as lvm_mod
from xenlvm import mounts as mounts_mod
from xenlvm.config import Config, Job, SnapshotSpec
from xenlvm.errors import (
    CleanupFailed,
    FileError,
    MountError,
    PreflightFailed,
    SafetyRefusal,
    SnapshotOverflowed,
    XenlvmError,
    host_file_error,
)
from xenlvm.lock import JobLock
from xenlvm.logs import set_job
from xenlvm.lvm import LogicalVolume, Lvm, VolumeGroup
from xenlvm.runner import Runner
from xenlvm.sizes import human_size
from xenlvm.undo import UndoStack

log = logging.getLogger("xenlvm")

UNDO_UNMOUNT_TIMEOUT = mounts_mod.UNDO_UNMOUNT_TIMEOUT


@dataclass
class Context:
    """What one xenlvm run works with."""

    config: Config
    runner: Runner
    started: float = field(default_factory=time.time)
    # What each job's run measured, for the state file and metrics: pause_window_ms, fill_percent.
    notes: dict[str, dict[str, float]] = field(default_factory=dict)

    def note(self, job: Job, key: str, value: float) -> None:
        self.notes.setdefault(job.name, {})[key] = value

    @property
    def lvm(self) -> Lvm:
        return Lvm(self.runner)

    @property
    def dry_run(self) -> bool:
        return self.runner.dry_run

    def lock(self, job: Job) -> JobLock:
        settings = self.config.settings
        return JobLock(settings.lock_dir, job.name, settings.lock_timeout)


# ---------------------------------------------------------------------------------------------
# pre


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


def _volume_groups(ctx: Context, job: Job) -> dict[str, VolumeGroup]:
    """One lvs call per VG the job's volumes live in; one for all VGs if it has VM disks."""
    named = dict.fromkeys(s.origin.vg for s in job.volumes)
    if job.vmdisks is None:
        return {vg: ctx.lvm.volume_group(vg) for vg in named}
    vgs = ctx.lvm.all_volume_groups()
    for vg in named:
        if vg not in vgs:  # says clearly that it does not exist (or has no LV)
            vgs[vg] = ctx.lvm.volume_group(vg)
    return vgs


def prepare_snapshots(ctx: Context, job: Job, undo: UndoStack) -> None:
    """pre for one job: everything that can be done before the pause window is done before it,
    the snapshots of all the job's volumes (and VM disks) are created inside it, and mounted
    (exposed) after it."""
    vgs = _volume_groups(ctx, job)
    # Before the sweep, which would change them: LVM refuses any change to a VG missing a PV.
    _refuse_on_failures(preflight.check_volume_groups(
        [s.origin.vg for s in job.volumes] + [lv.vg for lv in vmdisks.job_snapshots(job, vgs)], vgs))
    mounts = mounts_mod.read_mounts()
    swept = _sweep_leftovers(ctx, job, vgs, mounts)
    swept = _sweep_vmdisks(ctx, job, vgs) or swept
    if swept and not ctx.dry_run:
        vgs = _volume_groups(ctx, job)
        mounts = mounts_mod.read_mounts()
    if job.vmdisks is not None:  # from here on, the job's VM disks are volumes of the job too
        disks = vmdisks.discover(job, xen.Xl.for_job(ctx.runner, job), vgs)
        _check_disk_names(job, disks)
        job = dataclasses.replace(job, volumes=job.volumes + tuple(disks))
    _preflight(ctx, job, vgs, mounts)
    origins = [vgs[spec.origin.vg].lvs[spec.origin.lv] for spec in job.volumes]
    fstypes = [mounts_mod.filesystem_type(ctx.runner, origin, mounts) if spec.expose is None else ""
               for spec, origin in zip(job.volumes, origins)]
    quiesce = _prepare_xen(ctx, job, origins, mounts)
    if job.vmdisks is not None:
        vmdisks.mount_tree(ctx.runner, job, undo)

    run_tag = lvm_mod.run_tag(ctx.started, os.getpid())
    tags = [lvm_mod.OWNER_TAG, lvm_mod.job_tag(job.name), run_tag]
    # Each undo is registered before its change and checks what really happened: a command
    # that fails (or times out) after doing its work must not leave that work behind.
    for spec in job.volumes:
        undo.push(f"remove snapshot {spec.snapshot_volume} if this run created it",
                  functools.partial(_remove_if_created, ctx, job, spec, run_tag))
    with quiesce():  # the pause window: nothing but lvcreate happens inside it
        for spec, origin in zip(job.volumes, origins):
            ctx.lvm.create_snapshot(spec, origin, [*tags, lvm_mod.VMDISK_TAG] if spec.expose else tags)

    for spec, fstype in zip(job.volumes, fstypes):
        if spec.expose is None:
            _mount(ctx, job, spec, fstype, undo)
        else:
            vmdisks.expose(ctx.runner, job, spec, undo)
    if job.vmdisks is not None and not ctx.dry_run:  # beside the disks: the domains' own layouts
        layout.write_domain_layouts(xen.Xl.for_job(ctx.runner, job), job.volumes,
                                    xen.export_directory(job, ctx.config.settings.state_dir))
    _start_watchdog(ctx, job, origins, undo)


def _check_disk_names(job: Job, disks: list[SnapshotSpec]) -> None:
    if not job.volumes and not disks:
        raise PreflightFailed(f"job {job.name!r} found no VM disk on a logical volume to back up "
                              "(see the warnings above). Nothing was changed.")
    clash = {d.domain for d in disks} & {os.path.basename(v.mountpoint) for v in job.volumes}
    if clash:
        raise PreflightFailed(f"domain {min(clash)!r} has the name of one of the job's volumes, and "
                              "both would be exposed there: rename the volume ('name:'). "
                              "Nothing was changed.")


def _sweep_vmdisks(ctx: Context, job: Job, vgs: dict[str, VolumeGroup]) -> bool:
    """Tear down what an earlier run of the job exposed for its VM disks, if anything."""
    if job.vmdisks is None:
        return False
    snapshots = vmdisks.job_snapshots(job, vgs)
    tree = mounts_mod.mounted_at(job.mountpoint, mounts_mod.read_mounts())
    if not snapshots and (tree is None or tree.source != vmdisks.tree_source(job)):
        return False
    log.warning("found VM disk snapshots or their mounts left over by an earlier run (%s); "
                "removing them first", ", ".join(map(str, snapshots)) or "no snapshot")
    _tear_down_vmdisks(ctx, job, snapshots, UNDO_UNMOUNT_TIMEOUT)
    return True


def _tear_down_vmdisks(ctx: Context, job: Job, snapshots: list[LogicalVolume], timeout: float) -> None:
    vmdisks.tear_down(ctx.runner, job, snapshots, timeout,
                      lambda lv: ctx.lvm.remove_snapshot(job, vmdisks.spec_of(job, lv), lv))


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
    if summary.max_fill:
        ctx.note(job, "fill_percent", max(summary.max_fill.values()))
    ctx.note(job, "watchdog_extensions", float(len(summary.extensions)))


def _sweep_leftovers(ctx: Context, job: Job, vgs: dict[str, VolumeGroup],
                     mounts: list[mounts_mod.MountEntry]) -> bool:
    """Remove snapshots an earlier run of this job left behind; return whether there were any."""
    swept = False
    for spec in job.volumes:
        existing = vgs[spec.origin.vg].get(spec.snapshot)
        if existing is None or not existing.owned_by(job, spec):
            continue
        log.warning("found %s left over by an earlier run (%s, created %s); removing it first",
                    existing, existing.run_tag() or "unknown run", existing.created or "at an unknown time")
        if os.path.isdir(spec.mountpoint):
            finding = preflight.check_mountpoint(spec.mountpoint, mounts, existing)
            if finding.level == "fail":
                raise PreflightFailed(finding.message)
        remove_job_snapshot(ctx, job, spec, existing, mounts, UNDO_UNMOUNT_TIMEOUT)
        swept = True
    return swept


def _preflight(ctx: Context, job: Job, vgs: dict[str, VolumeGroup],
               mounts: list[mounts_mod.MountEntry]) -> None:
    findings = [preflight.check_mountpoint(job.mountpoint, mounts)]
    findings += preflight.check_job_volumes(job, vgs)
    findings += [preflight.check_mountpoint(spec.mountpoint, mounts) for spec in job.volumes
                 if spec.mountpoint != job.mountpoint and os.path.lexists(spec.mountpoint)]
    if ctx.dry_run:
        findings = [f for f in findings if f.check != "snapshot name"]  # the sweep was not run
    _refuse_on_failures(findings)


def _refuse_on_failures(findings: list[preflight.Finding]) -> None:
    problems = preflight.failures(findings)
    if problems:
        raise PreflightFailed("; ".join(p.message for p in problems) + ". Nothing was changed.")


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


def _prepare_xen(ctx: Context, job: Job, origins: list[LogicalVolume],
                 mounts: list[mounts_mod.MountEntry]) -> Callable[[], AbstractContextManager[None]]:
    """Everything Xen needs before the pause window: resume what a killed run left paused, pick
    the domains, export their configuration. Returns the pause window's context manager."""
    if job.xen is None:
        return contextlib.nullcontext
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
        return contextlib.nullcontext
    return lambda: xen.paused(xl, domains, record, lambda ms: ctx.note(job, "pause_window_ms", ms))


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


# ---------------------------------------------------------------------------------------------
# post


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
        raise errors[0] if len(errors) == 1 else XenlvmError(
            f"post failed for {len(errors)} jobs: " + " | ".join(str(e) for e in errors))


def clean_up(ctx: Context, job: Job, judge_backup: bool = True) -> None:
    """Unmount and remove the job's snapshots that xenlvm created (in reverse order), then tell
    whether the backup is valid. Every volume gets its turn even when one fails."""
    errors: list[XenlvmError] = []
    if job.xen is not None:
        record = xen.PauseRecord(ctx.config.settings.lock_dir, job.name)
        try:
            if record.read():
                xen.resume_leftovers(xen.Xl.for_job(ctx.runner, job), record)
        except XenlvmError as exc:  # the snapshots are still cleaned up
            errors.append(exc)
    try:
        _stop_watchdog(ctx, job)
    except XenlvmError as exc:
        errors.append(exc)
    except OSError as exc:
        errors.append(host_file_error(exc))
    overflowed: list[LogicalVolume] = []
    every: dict[str, VolumeGroup] | None = None  # all VGs: where the VM disk snapshots are
    if job.vmdisks is not None:
        try:
            every = ctx.lvm.all_volume_groups()
        except XenlvmError as exc:
            errors.append(exc)
    vgs: dict[str, VolumeGroup | None] = {}  # one lvs per VG, not one per volume
    for vg_name in dict.fromkeys(spec.origin.vg for spec in job.volumes):
        if every is not None and vg_name in every:
            vgs[vg_name] = every[vg_name]
            continue
        try:
            vgs[vg_name] = ctx.lvm.volume_group(vg_name)
        except PreflightFailed as exc:
            log.warning("%s; so there is no snapshot to clean up there", exc)
            vgs[vg_name] = None
        except XenlvmError as exc:
            errors.append(exc)
    disk_snapshots = vmdisks.job_snapshots(job, every or {})
    # Why a snapshot became invalid can only be read while it exists, so before removing it.
    invalid = [lv for lv in disk_snapshots if lv.invalid]
    for spec in job.volumes:
        vg = vgs.get(spec.origin.vg)
        lv = vg.get(spec.snapshot) if vg is not None else None
        if lv is not None and lv.owned_by(job, spec) and lv.invalid:
            invalid.append(lv)
    io_failed = {str(lv): lvm_mod.invalidated_by_io_errors(lv) for lv in invalid}
    for spec in reversed(job.volumes):
        if spec.origin.vg not in vgs:
            continue  # its lvs failed: reported above
        try:
            snapshot = _clean_up_volume(ctx, job, spec, vgs[spec.origin.vg])
        except XenlvmError as exc:
            errors.append(exc)
            continue
        except OSError as exc:
            errors.append(host_file_error(exc))
            continue
        if snapshot is not None and snapshot.invalid:
            overflowed.append(snapshot)
    if every is not None:  # after the volumes: their mounts lie inside the VM disk tree
        try:
            overflowed += _clean_up_vmdisks(ctx, job, disk_snapshots)
        except XenlvmError as exc:
            errors.append(exc)
        except OSError as exc:
            errors.append(host_file_error(exc))
    if errors:
        partial = {vg.name for vg in vgs.values() if vg is not None and vg.partial}
        partial |= {lv.vg for lv in disk_snapshots if every is not None and every[lv.vg].partial}
        for vg_name in sorted(partial):
            log.error("%s. What could not be removed stays; once the disk is back, run 'xenlvm post' "
                      "again.", preflight.partial_vg_message(vg_name))
        for name, io_error in io_failed.items():
            log.error("the snapshot %s is invalid (%s), so the backup of this run cannot be trusted", name,
                      "because of I/O errors on its copy-on-write device" if io_error else "it overflowed")
        raise errors[0] if len(errors) == 1 else XenlvmError(" | ".join(str(e) for e in errors))
    for snapshot in overflowed:
        io_error = io_failed.get(str(snapshot), False)
        if not judge_backup:
            log.warning("the removed snapshot %s had %s", snapshot,
                        "become invalid because of I/O errors" if io_error else "overflowed")
            continue
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


def _clean_up_volume(ctx: Context, job: Job, spec: SnapshotSpec,
                     vg: VolumeGroup | None) -> LogicalVolume | None:
    """Unmount and remove spec's snapshot if it is xenlvm's; return it as it was before."""
    if vg is None:  # the VG does not exist, so neither does the snapshot
        return None
    snapshot = vg.get(spec.snapshot)
    mounts = mounts_mod.read_mounts()
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
    # Read before unmounting: this is what the backup saw.
    fill = snapshot.data_percent if not snapshot.is_thin else None
    if fill is not None:
        ctx.note(job, "fill_percent", max(ctx.notes.get(job.name, {}).get("fill_percent", 0.0),
                                          100.0 if snapshot.invalid else fill))
    remove_job_snapshot(ctx, job, spec, snapshot, mounts, job.unmount_timeout)
    if ctx.dry_run:
        return snapshot
    if fill is not None and not snapshot.invalid:
        level = logging.WARNING if fill >= job.fill_warning else logging.INFO
        log.log(level, "the snapshot %s was %.1f%% full before removal%s", snapshot, fill,
                " - close to overflowing: consider a larger 'size:'" if level == logging.WARNING else "")
    log.info("snapshot %s unmounted and removed", snapshot)
    return snapshot


def _clean_up_vmdisks(ctx: Context, job: Job, snapshots: list[LogicalVolume]) -> list[LogicalVolume]:
    """Tear down the job's VM disk snapshots and all that exposes them; return the invalid ones."""
    for snapshot in snapshots:
        if snapshot.data_percent is not None and not snapshot.is_thin:
            ctx.note(job, "fill_percent", max(ctx.notes.get(job.name, {}).get("fill_percent", 0.0),
                                              100.0 if snapshot.invalid else snapshot.data_percent))
    _tear_down_vmdisks(ctx, job, snapshots, job.unmount_timeout)
    if snapshots and not ctx.dry_run:
        log.info("VM disk snapshots unmounted and removed: %s", ", ".join(map(str, snapshots)))
    elif not snapshots:
        log.info("no VM disk snapshot of job %s to clean up", job.name)
    return [s for s in snapshots if s.invalid]


def remove_job_snapshot(ctx: Context, job: Job, spec: SnapshotSpec, snapshot: LogicalVolume,
                        mounts: list[mounts_mod.MountEntry], unmount_timeout: float) -> None:
    """Unmount spec's snapshot from its mountpoint, then remove it."""
    if not snapshot.owned_by(job, spec):
        raise SafetyRefusal(f"{snapshot} is not xenlvm's; refusing to touch it")
    for entry in mounts_mod.mounts_of(snapshot, mounts):
        if entry.mountpoint != spec.mountpoint:
            raise MountError(f"{snapshot} is also mounted at {entry.mountpoint}, which xenlvm did not "
                             "do; unmount it yourself, then run 'xenlvm post' again")
    if mounts_mod.mounts_of(snapshot, mounts):
        top = mounts_mod.mounted_at(spec.mountpoint, mounts)
        if top is None or not top.is_device(snapshot):
            raise MountError(f"something else is mounted on top of the snapshot at {spec.mountpoint}; "
                             "unmount it yourself, then run 'xenlvm post' again")
        mounts_mod.unmount_with_retry(ctx.runner, spec.mountpoint, unmount_timeout)
    ctx.lvm.remove_snapshot(job, spec, snapshot)
