"""The thin pool guard: a small process that keeps the pools of a job's thin snapshots from
filling up while the backup reads them; a full pool would stop every thin LV in it, the VMs'
disks too.

pre starts it as soon as the snapshots exist (xenlvm.thinpool.process, supervised like the
watchdog); post stops it. Every ``interval`` seconds it asks ``lvs`` once how full each pool is
(data and metadata). At ``protect_at`` it grows the pool from the VG's free space (``extend``),
else it drops the job's thin snapshots in that pool (xenlvm.thinpool.drop): that frees the
blocks only they held, the VMs keep running, and the backup fails. It also exits by itself when
its snapshots are gone, after ``max_lifetime``, or on SIGTERM.

Its files, in the lock directory: ``<job>.poolguard.spec``, ``.pid`` and ``.json`` (the
summary, rewritten after every change, so that a crash loses nothing).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from xenlvm.config.model import Job, ThinPoolSettings
from xenlvm.core.monitor import StopRequest, read_summary_file, serve, start_monitor, watch_until
from xenlvm.core.ownership import SameSnapshots
from xenlvm.errors import EXIT_USAGE, CommandFailed, XenlvmError
from xenlvm.host.fsutil import read_small, write_atomically
from xenlvm.host.lvm import LogicalVolume, Lvm, VolumeGroup
from xenlvm.host.runner import Runner
from xenlvm.sizes import human_size
from xenlvm.thinpool import drop as pool_guard_drop
from xenlvm.thinpool import space as thinpool
from xenlvm.thinpool.drop import Guarded
from xenlvm.watchdog.watch import Files

log = logging.getLogger("xenlvm")

MODULE = "xenlvm.thinpool.guard"
ACTION_SECONDS = 1.0  # what an lvextend may take, before one was measured
FAILED = "the pool guard failed and stopped guarding"  # the problem of a guard that crashed


@dataclass(frozen=True)
class Summary:
    """What the guard saw and did during one backup."""

    peak: dict[str, dict[str, float]] = field(default_factory=dict)  # per pool: {"data", "metadata"}
    # {pool, at, kind, fill, from, to, snapshots, reason}; kind "dropping": a drop begun, not finished
    actions: list[dict] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # "vg/lv" of each snapshot it removed
    problems: list[str] = field(default_factory=list)  # each a sentence for the admin
    finished: float | None = None  # None: it was still running, or was killed


def files(lock_dir: str, job_name: str) -> Files:
    base = os.path.join(lock_dir, f"{job_name}.poolguard")
    return Files(spec=f"{base}.spec", pid=f"{base}.pid", summary=f"{base}.json")


class Guard:
    """Looks at the pools of the guarded snapshots; grows a pool, or drops the snapshots."""

    def __init__(self, job: Job, guarded: Sequence[Guarded], settings: ThinPoolSettings, lvm: Lvm,
                 paths: Files, lock_dir: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.job, self.settings, self.lvm, self.paths, self.lock_dir = job, settings, lvm, paths, lock_dir
        self.clock = clock
        self.guarded = list(guarded)
        self.same = SameSnapshots(job.name)  # a snapshot re-created under its name is not ours
        self.peak: dict[str, dict[str, float]] = {}
        self.last: dict[str, tuple[float, thinpool.PoolFill, tuple[int, int]]] = {}  # per pool: the last look
        self.reaction = ACTION_SECONDS  # how long a look and an action take here, measured
        self.actions: list[dict] = []
        self.dropped: list[str] = []
        self.problems: list[str] = []
        self.started = time.time()
        self.finished: float | None = None
        self.looked = self.look_seconds = 0.0
        self._written = ""

    def summary(self) -> Summary:
        return Summary({k: dict(v) for k, v in self.peak.items()}, list(self.actions), list(self.dropped),
                       list(self.problems), self.finished)

    def write_summary(self) -> None:
        text = json.dumps({**asdict(self.summary()), "job": self.job.name, "pid": os.getpid(),
                           "started": self.started}, indent=2) + "\n"
        if text != self._written:
            write_atomically(self.paths.summary, text, dir_mode=0o700)
            self._written = text

    def problem(self, message: str) -> None:
        if message not in self.problems:
            log.error("%s", message)
            self.problems.append(message)

    def look(self) -> None:
        """One lvs for every VG of the guarded pools, then each pool."""
        started = self.clock()
        try:
            vgs = self.lvm.volume_groups(sorted({g.vg for g in self.guarded}))
        except XenlvmError as exc:
            self.problem(f"the pool guard could not always look at the pools: {exc}")
            return
        self.looked = self.clock()
        self.look_seconds = self.looked - started
        for pool_name in sorted({g.pool_name for g in self.guarded}):
            mine = [g for g in self.guarded if g.pool_name == pool_name]
            self._check(mine, vgs[mine[0].vg])
        self.write_summary()

    def _ours(self, guarded: Guarded, vg: VolumeGroup) -> LogicalVolume | None:
        """The snapshot as lvs shows it if it is still the one pre made for the job, else None."""
        lv = vg.get(guarded.snapshot)
        if lv is None or lv.origin != guarded.origin or lv.pool != guarded.pool:
            return None
        return lv if self.same.still_ours(lv) else None

    def _check(self, mine: list[Guarded], vg: VolumeGroup) -> None:
        pool = vg.get(mine[0].pool)
        present = [(g, lv) for g in mine if (lv := self._ours(g, vg)) is not None]
        if pool is None or not present:
            log.info("no snapshot of job %s is left in thin pool %s; no longer guarded", self.job.name,
                     mine[0].pool_name)
            self._forget(mine)
            return
        fill = thinpool.fill_of(pool)
        peak = self.peak.setdefault(str(pool), {"data": 0.0, "metadata": 0.0})
        peak["data"], peak["metadata"] = max(peak["data"], fill.data), max(peak["metadata"], fill.metadata)
        sizes = (pool.size, pool.metadata_size)
        then, before, were = self.last.get(str(pool), (self.looked, fill, sizes))
        self.last[str(pool)] = (self.looked, fill, sizes)
        # Until it could act after the next look: the wait, that look's lvs, and the action.
        horizon = self.settings.interval + self.look_seconds + self.reaction
        ahead = thinpool.lead(thinpool.rescaled(before, were, sizes), fill, self.looked - then, horizon)
        for action in thinpool.decide(pool, vg, self.settings, ahead):
            if action.kind == "drop" or not self._extend(pool, action):
                reason = action.reason or "growing it failed"
                self._drop(pool, present, action.fill, reason)
                return

    def _extend(self, pool: LogicalVolume, action: thinpool.Action) -> bool:
        part = action.kind.split("-")[1]
        started = self.clock()
        try:
            self.lvm.extend_pool(pool, action.new_size, metadata=part == "metadata")
            self.reaction = max(self.reaction, self.clock() - started)
        except CommandFailed as exc:
            self.problem(f"could not grow the {part} of thin pool {pool} at {action.fill:.1f}% full: {exc}")
            return False
        log.warning("grew the %s of thin pool %s from %s to %s: it was %.1f%% full", part, pool,
                    human_size(action.old_size), human_size(action.new_size), action.fill)
        self._record(pool, action.kind, action.fill, action.old_size, action.new_size, [], "")
        return True

    def _drop(self, pool: LogicalVolume, present: list[tuple[Guarded, LogicalVolume]], fill: float,
              reason: str) -> None:
        names = [str(lv) for _, lv in present]
        log.error("thin pool %s cannot grow (%s): dropping the snapshot(s) %s of job %s so that the VMs on "
                  "it keep running; this backup fails", pool, reason, ", ".join(names), self.job.name)
        # Written before the first change: a guard killed mid-drop still leaves the drop on record.
        self._record(pool, "dropping", fill, 0, 0, names, reason)
        failures = pool_guard_drop.drop(self.lvm, self.job, present, self.lock_dir)
        for name, error in failures.items():
            self.problem(f"could not drop the snapshot {name} from thin pool {pool}: {error}")
        kept = [name for name in names if name not in failures]
        self.dropped += kept
        self.actions[-1] = {**self.actions[-1], "kind": "drop", "snapshots": kept}
        self.write_summary()
        self._forget([g for g, lv in present if str(lv) not in failures])

    def _record(self, pool: LogicalVolume, kind: str, fill: float, old: int, new: int, snapshots: list[str],
                reason: str) -> None:
        self.actions.append({"pool": str(pool), "at": time.time(), "kind": kind, "fill": fill, "from": old,
                             "to": new, "snapshots": snapshots, "reason": reason})
        self.write_summary()

    def _forget(self, gone: list[Guarded]) -> None:
        self.guarded = [g for g in self.guarded if g not in gone]

    def run(self, stop: StopRequest, max_lifetime: float) -> None:
        """Look every interval until nothing is left to guard, max_lifetime passed, or SIGTERM."""
        ended = watch_until(stop, self.look, lambda: bool(self.guarded), self.settings.interval, max_lifetime)
        if ended == "done":
            log.info("the pool guard has no snapshot left to guard; exiting")
        elif ended == "lifetime":
            self.problem(f"the pool guard stopped after {max_lifetime:g} s while the backup still ran")


def write_spec(path: str, job_name: str, guarded: Sequence[Guarded], settings: ThinPoolSettings,
               max_lifetime: float) -> None:
    values = {k: v for k, v in asdict(settings).items() if k != "expected_growth"}
    write_atomically(path, json.dumps({"job": job_name, "guarded": [asdict(g) for g in guarded],
                                       "settings": values, "max_lifetime": max_lifetime}, indent=2) + "\n",
                     dir_mode=0o700)


def read_spec(path: str) -> tuple[list[Guarded], ThinPoolSettings, float]:
    try:
        spec = json.loads(read_small(path) or "")
        guarded = [Guarded(**{k: g[k] for k in ("vg", "pool", "snapshot", "origin", "mountpoint", "vmdisk")})
                   for g in spec["guarded"]]
        return guarded, ThinPoolSettings(**spec["settings"]), float(spec["max_lifetime"])
    except (ValueError, KeyError, TypeError) as exc:
        raise XenlvmError(f"the pool guard's spec file {path} is missing or unreadable ({exc})") from None


def read_summary(path: str) -> Summary | None:
    return read_summary_file(path, lambda data: Summary(
        peak={str(k): {p: float(f) for p, f in v.items()} for k, v in data["peak"].items()},
        actions=list(data["actions"]), dropped=[str(d) for d in data["dropped"]],
        problems=[str(p) for p in data["problems"]], finished=data.get("finished")),
        lambda why: Summary(problems=[f"the pool guard: {why}"], finished=0.0))


def main(argv: Sequence[str] | None = None) -> int:
    """The guard process, as pre starts it: python -m xenlvm.thinpool.guard --config --job --spec."""
    try:
        args, stop_request, config = start_monitor(argv, MODULE, "thin pool guard")
        guarded, settings, max_lifetime = read_spec(args.spec)
        job = config.jobs[args.job]
    except (XenlvmError, KeyError) as exc:
        log.error("the thin pool guard cannot start: %s", exc)
        return EXIT_USAGE
    lock_dir = os.path.dirname(os.path.abspath(args.spec))
    paths = files(lock_dir, args.job)
    runner = Runner(path=config.settings.path, timeout=config.settings.command_timeout, quiet_queries=True)
    guard = Guard(job, guarded, settings, Lvm(runner), paths, lock_dir)

    def run() -> None:
        log.info("the thin pool guard (pid %d) guards %s: acts at %d%% full, %s, looking every %g s",
                 os.getpid(), ", ".join(sorted({g.pool_name for g in guarded})), settings.protect_at,
                 "grows the pool, else drops the snapshots" if settings.extend else "drops the snapshots",
                 settings.interval)
        guard.run(stop_request, max_lifetime)

    return serve(guard, paths.pid, run, "the thin pool guard", FAILED)

if __name__ == "__main__":
    sys.exit(main())
