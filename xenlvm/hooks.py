"""The pre and post orchestration: what sesam's sbc_pre and sbc_post do for each job.

pre:  lock, sweep leftovers of a crashed run, preflight, create the snapshot, mount it.
      Each change registers its undo as soon as it succeeded; any failure unwinds them all.
post: lock, read the snapshot's state, unmount (patiently), remove; report an overflow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field

from xenlvm import lvm as lvm_mod
from xenlvm import mounts as mounts_mod
from xenlvm import preflight, xen
from xenlvm.config import Config, Job
from xenlvm.errors import (
    CleanupFailed,
    MountError,
    PreflightFailed,
    SafetyRefusal,
    SnapshotOverflowed,
    XenlvmError,
)
from xenlvm.lock import JobLock
from xenlvm.logs import set_job
from xenlvm.lvm import LogicalVolume, Lvm
from xenlvm.runner import Runner
from xenlvm.undo import UndoStack

log = logging.getLogger("xenlvm")

# Unwinding a failed pre must not wait as long as post does for a busy mount.
UNDO_UNMOUNT_TIMEOUT = 30.0


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
    """Create and mount the snapshot of every job, or leave nothing behind and raise."""
    undo = UndoStack()
    with ExitStack() as locks:
        try:
            for job in jobs:
                set_job(job.name)
                locks.enter_context(ctx.lock(job))
                prepare_snapshot(ctx, job, undo)
        except BaseException as exc:
            failed = undo.unwind()
            if failed:
                raise CleanupFailed(f"{exc}\nUndoing pre ALSO failed, so something may be left "
                                    f"behind: {'; '.join(failed)}. Run 'xenlvm post' for the job to "
                                    "clean up, then 'xenlvm status'.", exc) from exc
            raise
        undo.discard()


def prepare_snapshot(ctx: Context, job: Job, undo: UndoStack) -> None:
    vg = ctx.lvm.volume_group(job.origin.vg)
    mounts = mounts_mod.read_mounts()
    existing = vg.get(job.snapshot)
    if existing is not None and existing.owned_by(job):
        log.warning("found %s left over by an earlier run (%s, created %s); removing it first",
                    existing, existing.run_tag() or "unknown run", existing.created or "at an unknown time")
        mountpoint_finding = preflight.check_mountpoint(job, mounts, existing)
        if mountpoint_finding.level == "fail":
            raise PreflightFailed(mountpoint_finding.message)
        remove_job_snapshot(ctx, job, existing, mounts, UNDO_UNMOUNT_TIMEOUT)
        if not ctx.dry_run:
            vg = ctx.lvm.volume_group(job.origin.vg)
            mounts = mounts_mod.read_mounts()

    findings = preflight.check_volumes(job, vg) + [preflight.check_mountpoint(job, mounts)]
    if ctx.dry_run:
        findings = [f for f in findings if f.check != "snapshot name"]  # the sweep was not run
    problems = preflight.failures(findings)
    if problems:
        raise PreflightFailed("; ".join(p.message for p in problems) + ". Nothing was changed.")
    origin = vg.lvs[job.origin.lv]
    fstype = mounts_mod.filesystem_type(ctx.runner, origin, mounts)
    quiesce = _prepare_xen(ctx, job, origin, mounts)

    run_tag = lvm_mod.run_tag(ctx.started, os.getpid())
    # Each undo is registered before its change and checks what really happened: a command
    # that fails (or times out) after doing its work must not leave that work behind.
    undo.push(f"remove snapshot {job.snapshot_volume} if this run created it",
              lambda: _remove_if_created(ctx, job, run_tag))
    with quiesce():  # the pause window: nothing but lvcreate happens inside it
        ctx.lvm.create_snapshot(job, origin, [lvm_mod.OWNER_TAG, lvm_mod.job_tag(job.name), run_tag])
    device = lvm_mod.device_path(job.origin.vg, job.snapshot)

    undo.push(f"unmount {job.mountpoint} if the snapshot is mounted there",
              lambda: _unmount_if_mounted(ctx, job, device))
    mounts_mod.mount_snapshot(ctx.runner, device, fstype, job.mountpoint)
    if ctx.dry_run:
        return
    _verify_mounted(job, device)
    kind = "thin snapshot" if job.size is None else f"snapshot of {job.size.text}"
    log.info("%s of %s is mounted read-only at %s (%s)", kind, job.origin, job.mountpoint, fstype)


def _prepare_xen(ctx: Context, job: Job, origin: LogicalVolume,
                 mounts: list[mounts_mod.MountEntry]) -> Callable[[], AbstractContextManager[None]]:
    """Everything Xen needs before the pause window: resume what a killed run left paused, pick
    the domains, export their configuration. Returns the pause window's context manager."""
    if job.xen is None:
        return contextlib.nullcontext
    xl = xen.Xl(ctx.runner, job.xen.timeout)
    record = xen.PauseRecord(ctx.config.settings.lock_dir, job.name)
    xen.resume_leftovers(xl, record)
    origin_paths = [e.mountpoint for e in mounts_mod.mounts_of(origin, mounts)]
    domains = xen.select_domains(job, xl, origin_paths)
    if job.xen.export_dir is not None and not ctx.dry_run:
        directory = job.xen.export_dir or os.path.join(ctx.config.settings.state_dir, job.name, "xen-config")
        xen.export_configuration(job, domains, directory, job.xen.config_dir)
    if job.xen.mode != "pause":
        return contextlib.nullcontext
    return lambda: xen.paused(xl, domains, record, lambda ms: ctx.note(job, "pause_window_ms", ms))


def _device_numbers(device: str) -> tuple[int, int] | None:
    try:
        rdev = os.stat(device).st_rdev
    except FileNotFoundError:
        return None
    return os.major(rdev), os.minor(rdev)


def _verify_mounted(job: Job, device: str) -> None:
    """mount said yes; make sure the kernel shows exactly our device at the mountpoint."""
    entry = mounts_mod.mounted_at(job.mountpoint, mounts_mod.read_mounts())
    if entry is None or (entry.major, entry.minor) != _device_numbers(device):
        raise MountError(f"after mounting, {job.mountpoint} does not show the snapshot {device}; "
                         "something else changed the mount table")
    if "ro" not in entry.options:
        raise MountError(f"{job.mountpoint} is mounted read-write although xenlvm asked for read-only")


def _unmount_if_mounted(ctx: Context, job: Job, device: str) -> None:
    entry = mounts_mod.mounted_at(job.mountpoint, mounts_mod.read_mounts())
    if ctx.dry_run or entry is None or (entry.major, entry.minor) != _device_numbers(device):
        return
    mounts_mod.unmount_with_retry(ctx.runner, job.mountpoint, UNDO_UNMOUNT_TIMEOUT)


def _remove_if_created(ctx: Context, job: Job, run_tag: str) -> None:
    if ctx.dry_run:
        return
    snapshot = ctx.lvm.volume_group(job.origin.vg).get(job.snapshot)
    if snapshot is not None and snapshot.owned_by(job) and run_tag in snapshot.tags:
        ctx.lvm.remove_snapshot(job, snapshot)


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
            if len(jobs) > 1:
                log.error("%s", exc)
            errors.append(exc)
    set_job("")
    if errors:
        raise errors[0] if len(errors) == 1 else XenlvmError(
            f"post failed for {len(errors)} jobs: " + " | ".join(str(e) for e in errors))


def clean_up(ctx: Context, job: Job, judge_backup: bool = True) -> None:
    """Unmount and remove the job's snapshot if xenlvm created it; tell whether the backup is valid."""
    if job.xen is not None:
        record = xen.PauseRecord(ctx.config.settings.lock_dir, job.name)
        if record.read():
            xen.resume_leftovers(xen.Xl(ctx.runner, job.xen.timeout), record)
    try:
        vg = ctx.lvm.volume_group(job.origin.vg)
    except PreflightFailed as exc:
        log.warning("%s; so there is no snapshot to clean up", exc)
        return
    snapshot = vg.get(job.snapshot)
    mounts = mounts_mod.read_mounts()
    if snapshot is None:
        entry = mounts_mod.mounted_at(job.mountpoint, mounts)
        if entry is not None:
            log.warning("%s has %s mounted on it, which is not xenlvm's snapshot; left alone",
                        job.mountpoint, entry.source)
        log.info("nothing to clean up: %s does not exist", job.snapshot_volume)
        return
    if not snapshot.owned_by(job):
        log.warning("%s exists but xenlvm did not create it (no xenlvm tags); left untouched",
                    snapshot)
        return

    overflowed = snapshot.invalid  # read before unmounting: this is what the backup saw
    if snapshot.data_percent is not None and not snapshot.is_thin:
        ctx.note(job, "fill_percent", 100.0 if overflowed else snapshot.data_percent)
    remove_job_snapshot(ctx, job, snapshot, mounts, job.unmount_timeout)
    if overflowed and not judge_backup:
        log.warning("the removed snapshot %s had overflowed", snapshot)
    elif overflowed:
        raise SnapshotOverflowed(
            f"the snapshot {snapshot} overflowed during the backup: its "
            f"{preflight.human_size(snapshot.size)} "
            "of copy-on-write space filled up and it became invalid, so the backup of this run read "
            "inconsistent data and cannot be trusted. "
            f"{'(dry run: it was left in place.)' if ctx.dry_run else 'The snapshot has been removed.'} "
            "Make it larger "
            f"('size:' of job {job.name!r}, e.g. 20%ORIGIN, checking 'vgs' for free space) or run "
            "the backup when the VMs write less.")
    if ctx.dry_run:
        return
    if snapshot.data_percent is not None and not snapshot.is_thin:
        level = logging.WARNING if snapshot.data_percent >= job.fill_warning else logging.INFO
        log.log(level, "the snapshot was %.1f%% full before removal%s", snapshot.data_percent,
                " - close to overflowing: consider a larger 'size:'" if level == logging.WARNING else "")
    log.info("snapshot %s unmounted and removed", snapshot)


def remove_job_snapshot(ctx: Context, job: Job, snapshot: LogicalVolume,
                        mounts: list[mounts_mod.MountEntry], unmount_timeout: float) -> None:
    """Unmount the job's snapshot from the job's mountpoint, then remove it."""
    if not snapshot.owned_by(job):
        raise SafetyRefusal(f"{snapshot} is not xenlvm's; refusing to touch it")
    for entry in mounts_mod.mounts_of(snapshot, mounts):
        if entry.mountpoint != job.mountpoint:
            raise MountError(f"{snapshot} is also mounted at {entry.mountpoint}, which xenlvm did not "
                             "do; unmount it yourself, then run 'xenlvm post' again")
    if mounts_mod.mounts_of(snapshot, mounts):
        top = mounts_mod.mounted_at(job.mountpoint, mounts)
        if top is None or not top.is_device(snapshot):
            raise MountError(f"something else is mounted on top of the snapshot at {job.mountpoint}; "
                             "unmount it yourself, then run 'xenlvm post' again")
        mounts_mod.unmount_with_retry(ctx.runner, job.mountpoint, unmount_timeout)
    ctx.lvm.remove_snapshot(job, snapshot)
