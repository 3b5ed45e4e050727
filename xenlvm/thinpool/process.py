"""The thin pool guard's supervision, as the watchdog's (xenlvm.watchdog.process): pre starts
it for the job's thin snapshots (``start``), post stops it (``stop``), tells what it did and
fails the backup when it had to drop a snapshot (``judge``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from xenlvm.config.model import Config, Job
from xenlvm.errors import XenlvmError
from xenlvm.thinpool.guard import FAILED, MODULE, Guarded, Summary, files, read_spec, read_summary, write_spec

__all__ = ["Guarded", "Summary", "guarded_by", "guarded_of", "judge", "report", "running", "start", "stop",
           "was_lost"]
from xenlvm.core.state import RunReport
from xenlvm.host.processes import read_pid
from xenlvm.sizes import human_size
from xenlvm.targets.base import Target
from xenlvm.watchdog.process import is_watchdog, spawn, stop_monitor

log = logging.getLogger("xenlvm")

MAX_LIFETIME = 86400.0  # without a watchdog: section, the guard's lifetime is the watchdog's default


def guarded_of(targets: Sequence[Target]) -> list[Guarded]:
    """The targets whose snapshots are thin, each with its pool."""
    return [Guarded(t.spec.origin.vg, t.origin.pool, t.spec.snapshot, t.origin.name,
                    "" if t.vm_disk else t.spec.mountpoint, t.vm_disk)
            for t in targets if t.spec.size is None and t.origin.is_thin]


def start(config: Config, job: Job, targets: Sequence[Target]) -> int | None:
    """Start the guard for the job's thin snapshots, detached; return its pid (None: no thin
    snapshot). A guard of an earlier run of the job is stopped first."""
    guarded = guarded_of(targets)
    if not guarded:
        return None
    paths = files(config.settings.lock_dir, job.name)
    if stop(config, job.name) is not None:
        log.warning("a thin pool guard of an earlier run of job %s was still there; stopped it", job.name)
    lifetime = job.watchdog.max_lifetime if job.watchdog is not None else MAX_LIFETIME
    write_spec(paths.spec, job.name, guarded, job.thin_pool, lifetime)
    return spawn(config, MODULE, job.name, paths, "the thin pool guard")


def stop(config: Config, job_name: str, timeout: float = 10.0) -> Summary | None:
    """Stop the job's guard (proven by its command line, through a pidfd) and return what it
    did; None when none ran. Removes its files."""
    return stop_monitor(files(config.settings.lock_dir, job_name), job_name, MODULE, read_summary,
                        lambda said: Summary(problems=[f"the pool guard {said}"]), timeout)


def guarded_by(config: Config, job_name: str) -> list[Guarded]:
    """The snapshots the job's guard was started for (its spec; stop removes it): none when no
    guard was started, or its spec is unreadable."""
    try:
        return read_spec(files(config.settings.lock_dir, job_name).spec)[0]
    except XenlvmError:
        return []


def running(config: Config, job_name: str) -> bool:
    """The job's guard runs now (its pid file names a process whose command line proves it)."""
    pid = read_pid(files(config.settings.lock_dir, job_name).pid)
    return pid is not None and is_watchdog(pid, job_name, MODULE)


def was_lost(summary: Summary | None) -> bool:
    """Given the summary of a guard that was not running when post began: it crashed or was
    killed (no summary, none with its end, or one that says it failed), not ended by itself."""
    return summary is None or not summary.finished or any(p.startswith(FAILED) for p in summary.problems)


def report(summary: Summary, run: RunReport) -> None:
    """Log what the guard saw and did; note the pools' peak fill and its actions for the metrics."""
    for action in summary.actions:
        if action["kind"].startswith("extend"):
            log.warning("the pool guard grew the %s of thin pool %s from %s to %s when it was %.1f%% full",
                        action["kind"].split("-")[1], action["pool"], human_size(action["from"]),
                        human_size(action["to"]), action["fill"])
    for pool, peak in summary.peak.items():
        log.info("the pool guard saw thin pool %s at most %.1f%% full (data), %.1f%% (metadata)", pool,
                 peak["data"], peak["metadata"])
    for problem in summary.problems:
        log.warning("pool guard: %s", problem)
    if summary.finished is None:
        log.warning("the pool guard was no longer running at post (killed?): the pools were not "
                    "guarded for part of the backup")
    if summary.peak:
        run.thin_pool_peak_percent = max(max(p.values()) for p in summary.peak.values())
    run.pool_guard_actions = len(summary.actions)


def judge(job: Job, summary: Summary | None, vanished: Sequence[str] = (), lost: bool = False) -> \
        XenlvmError | None:
    """The backup failed when the guard dropped a snapshot to keep a pool from filling up, began
    to and was stopped before it finished, when a guarded snapshot (vanished: gone at post) is
    gone and the guard did not record removing it, or when the guard was lost (was_lost)."""
    drops = [a for a in (summary.actions if summary else []) if a["kind"] in ("drop", "dropping")]
    accounted = {name for a in drops for name in a["snapshots"]}
    unaccounted = [name for name in vanished if name not in accounted]
    if lost and not drops and not unaccounted:
        return XenlvmError(
            f"the thin pool guard of job {job.name!r} crashed or was killed during the backup (it was no "
            "longer running at post and did not end by itself): the thin pools were unguarded for part of "
            "the backup. The snapshots are cleaned up; see the 'pool guard' lines in /var/log/xenlvm.log.")
    if not drops and not unaccounted:
        return None
    said = [f"thin pool {a['pool']} reached {a['fill']:.1f}% and could not grow ({a['reason']}), so "
            + _what_was_dropped(a) for a in drops]
    if unaccounted:
        said.append(f"the thin snapshot(s) {', '.join(unaccounted)} vanished during the backup, and the "
                    "pool guard did not record removing them")
    return XenlvmError(
        f"the backup of job {job.name!r} is incomplete: {'; '.join(said)}. That kept the VMs on the pool "
        "running (a full pool stops every thin LV in it), but the backup read a snapshot that vanished and "
        "cannot be trusted. Before the next backup give the pool room: grow it or free space in its "
        "VG ('lvs -a', 'vgs'), or run the backup when the VMs write less.")


def _what_was_dropped(action: dict) -> str:
    names = ", ".join(action["snapshots"])
    if action["kind"] == "dropping":
        return f"the pool guard began to remove {names} and was stopped before it finished"
    return f"{names or 'its snapshots'} were removed"
