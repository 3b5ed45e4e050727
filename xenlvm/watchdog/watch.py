"""The snapshot watchdog: a small process that keeps classic snapshots from overflowing while
a long backup reads them.

pre starts it once the snapshots are mounted (``start``, in xenlvm.watchdog.process, which
supervises the process). Every ``interval`` seconds it asks ``lvs`` once per VG how full each
snapshot is, and extends a snapshot with ``lvextend`` when it has passed ``threshold``, by
``step`` percent, never beyond ``max_size`` nor the VG's free space. post stops it (``stop``)
before unmounting and gets a ``Summary`` of what it saw. It also exits by itself when its
snapshots are gone, after ``max_lifetime``, or on SIGTERM.

Its files, in the lock directory: ``<job>.watchdog.spec`` (what to watch, written by start),
``<job>.watchdog.pid`` (while it runs) and ``<job>.watchdog.json`` (the summary, rewritten
after every change, so a crash loses nothing).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from xenlvm.config.model import Size, WatchdogSettings
from xenlvm.core.monitor import StopRequest, read_summary_file, serve, start_monitor, watch_until
from xenlvm.core.ownership import SameSnapshots
from xenlvm.errors import EXIT_USAGE, CommandFailed, XenlvmError
from xenlvm.host.cow import invalidated_by_io_errors
from xenlvm.host.fsutil import read_small, write_atomically
from xenlvm.host.lvm import LogicalVolume, Lvm, VolumeGroup
from xenlvm.host.runner import Runner
from xenlvm.sizes import human_size
from xenlvm.watchdog.sizing import limit_reason, next_size, wanted_size

log = logging.getLogger("xenlvm")
MODULE = "xenlvm.watchdog"  # python -m xenlvm.watchdog; post knows a running watchdog by it


@dataclass(frozen=True)
class Watched:
    """One classic snapshot for the watchdog to watch."""

    vg: str
    snapshot: str
    origin_size: int  # bytes; max_size may be a percentage of it

    def __str__(self) -> str:
        return f"{self.vg}/{self.snapshot}"


@dataclass(frozen=True)
class Summary:
    """What the watchdog saw and did during one backup."""

    max_fill: dict[str, float] = field(default_factory=dict)  # per 'vg/lv', the highest data_percent
    extensions: list[dict] = field(default_factory=list)  # {'lv', 'at', 'fill', 'from', 'to'}
    problems: list[str] = field(default_factory=list)  # each a sentence for the admin


@dataclass(frozen=True)
class Files:
    spec: str
    pid: str
    summary: str


def files(lock_dir: str, job_name: str) -> Files:
    base = os.path.join(lock_dir, f"{job_name}.watchdog")
    return Files(spec=f"{base}.spec", pid=f"{base}.pid", summary=f"{base}.json")


# ---------------------------------------------------------------------------------------------
# The monitor process.


class Monitor:
    """Looks at the watched snapshots and extends them; keeps the summary."""

    def __init__(self, job_name: str, watched: Sequence[Watched], settings: WatchdogSettings, lvm: Lvm,
                 summary_path: str) -> None:
        self.job_name = job_name
        self.settings = settings
        self.lvm = lvm
        self.summary_path = summary_path
        self.watching = {str(w): w for w in watched}
        # Only a snapshot xenlvm created for this job, and the same one as at the first look
        # (not one re-created under the same name), is ever extended.
        self.same = SameSnapshots(job_name)
        self.stuck: set[str] = set()  # could not grow; the error was logged once
        self.max_fill: dict[str, float] = {}
        self.extensions: list[dict] = []
        self.problems: list[str] = []
        self.started = time.time()
        self.finished: float | None = None
        self._written = ""

    def summary(self) -> Summary:
        return Summary(dict(self.max_fill), list(self.extensions), list(self.problems))

    def write_summary(self) -> None:
        """Write the summary if it changed, atomically."""
        text = json.dumps({**asdict(self.summary()), "job": self.job_name, "pid": os.getpid(),
                           "started": self.started, "finished": self.finished,
                           "watching": sorted(self.watching)}, indent=2) + "\n"
        if text != self._written:
            write_atomically(self.summary_path, text, dir_mode=0o700)
            self._written = text

    def problem(self, message: str) -> bool:
        """Record a problem; return False if it was already recorded."""
        if message in self.problems:
            return False
        self.problems.append(message)
        return True

    def look(self) -> None:
        """One lvs call per VG, then each watched snapshot of it."""
        for vg_name in sorted({w.vg for w in self.watching.values()}):
            try:
                vg = self.lvm.volume_group(vg_name)
            except XenlvmError as exc:
                if self.problem(f"could not always look at VG {vg_name}: {exc}"):  # not at every look
                    log.warning("the watchdog cannot look at VG %s: %s", vg_name, exc)
                continue
            for watched in [w for w in self.watching.values() if w.vg == vg_name]:
                self._check(watched, vg)
        self.write_summary()

    def _check(self, watched: Watched, vg: VolumeGroup) -> None:
        key = str(watched)
        lv = vg.get(watched.snapshot)
        if lv is not None and lv.is_thin:
            log.warning("%s is a thin snapshot, which takes its space from the pool; the watchdog watches "
                        "classic snapshots only", key)
            del self.watching[key]
            return
        if lv is not None and not (lv.is_snapshot and self.same.still_ours(lv)):
            log.error("%s is no longer the snapshot the watchdog started with (tags %s); it is not "
                      "touched and no longer watched", key, ",".join(sorted(lv.tags)) or "none")
            self.problem(f"{key} was replaced by another LV while the backup ran; not watched further")
            del self.watching[key]
            return
        if lv is None:
            log.warning("%s is gone; the watchdog no longer watches it", key)
            self.problem(f"{key} was removed while the watchdog watched it")
            del self.watching[key]
            return
        fill = 100.0 if lv.invalid else (lv.data_percent or 0.0)
        self.max_fill[key] = max(self.max_fill.get(key, 0.0), fill)
        if lv.invalid:
            self._invalid(key, lv)
            del self.watching[key]
            return
        if fill < self.settings.threshold:
            return
        new_size = next_size(lv, vg, self.settings, watched.origin_size)
        wanted = wanted_size(lv, vg, self.settings)
        if new_size is not None and not self._extend(lv, fill, new_size):
            return
        if new_size == wanted:
            self.stuck.discard(key)
        elif key not in self.stuck:  # at a limit now: say so once, not at every look
            reason = limit_reason(lv, vg, self.settings, watched.origin_size)
            if new_size is None:
                message = f"cannot extend {key} at {fill:.1f}% full: {reason}"
            else:
                message = (f"{key} could only be extended to {human_size(new_size)} instead of "
                           f"{human_size(wanted)}: {reason}")
            log.error("%s", message)
            self.problem(message)
            self.stuck.add(key)

    def _invalid(self, key: str, lv: LogicalVolume) -> None:
        """Say why the snapshot became invalid: I/O errors, or an overflow."""
        if invalidated_by_io_errors(lv):
            log.error("%s became invalid because of I/O errors on its copy-on-write device; the "
                      "backup of this run cannot be trusted", key)
            self.problem(f"{key} became invalid because of I/O errors on its copy-on-write device: "
                         "the backup of this run cannot be trusted")
        else:
            log.error("%s overflowed: its %s of copy-on-write space filled up and it became invalid; "
                      "the backup of this run cannot be trusted", key, human_size(lv.size))
            self.problem(f"{key} overflowed at {human_size(lv.size)} and became invalid: the backup of "
                         "this run cannot be trusted")

    def _extend(self, lv: LogicalVolume, fill: float, new_size: int) -> bool:
        key = str(lv)
        try:
            self.lvm.extend(lv, new_size)
        except CommandFailed as exc:
            log.error("cannot extend %s (%.1f%% full) to %s: %s", key, fill, human_size(new_size), exc)
            self.problem(f"cannot extend {key} to {human_size(new_size)}: {exc}")
            return False
        self.extensions.append({"lv": key, "at": time.time(), "fill": fill, "from": lv.size, "to": new_size})
        log.warning("extended the snapshot %s from %s to %s: it was %.1f%% full", key, human_size(lv.size),
                    human_size(new_size), fill)
        self.write_summary()
        return True

    def run(self, stop: StopRequest) -> None:
        """Look every interval until nothing is left to watch, max_lifetime passed, or SIGTERM."""
        ended = watch_until(stop, self.look, lambda: bool(self.watching), self.settings.interval,
                            self.settings.max_lifetime)
        if ended == "done":
            log.info("the watchdog has no snapshot left to watch; exiting")
        elif ended == "lifetime":
            log.warning("the watchdog stops after its max_lifetime of %g s: %s no longer extended",
                        self.settings.max_lifetime, ", ".join(sorted(self.watching)))
            self.problem(f"the watchdog stopped after max_lifetime ({self.settings.max_lifetime:g} s) "
                         f"while the backup still ran: {', '.join(sorted(self.watching))} no longer "
                         "extended")
        else:
            log.info("the watchdog was asked to stop; exiting")


def write_spec(path: str, job_name: str, watched: Sequence[Watched], settings: WatchdogSettings) -> None:
    write_atomically(path, json.dumps({"job": job_name, "watched": [asdict(w) for w in watched],
                                       "settings": asdict(settings)}, indent=2) + "\n", dir_mode=0o700)


def read_spec(path: str) -> tuple[list[Watched], WatchdogSettings]:
    """Given the spec file that start wrote, return what to watch and how."""
    text = read_small(path)
    try:
        spec = json.loads(text or "")
        watched = [Watched(str(w["vg"]), str(w["snapshot"]), int(w["origin_size"])) for w in spec["watched"]]
        values = dict(spec["settings"])
        settings = WatchdogSettings(**{**values, "max_size": Size(**values["max_size"])})
    except (ValueError, KeyError, TypeError) as exc:
        raise XenlvmError(f"the watchdog's spec file {path} is missing or unreadable ({exc})") from None
    return watched, settings


def read_summary(path: str) -> Summary | None:
    return read_summary_file(path, lambda data: Summary(
        max_fill={str(k): float(v) for k, v in data["max_fill"].items()}, extensions=list(data["extensions"]),
        problems=[str(p) for p in data["problems"]]), lambda why: Summary(problems=[f"the watchdog: {why}"]))


def main(argv: Sequence[str] | None = None) -> int:
    """The monitor process, as start runs it: python -m xenlvm.watchdog --config --job --spec."""
    try:
        args, stop_request, config = start_monitor(argv, MODULE, "snapshot watchdog")
        watched, settings = read_spec(args.spec)
    except XenlvmError as exc:
        log.error("the snapshot watchdog cannot start: %s", exc)
        return EXIT_USAGE
    # Beside the spec, which start wrote into the lock directory (even if the file changed since).
    paths = files(os.path.dirname(os.path.abspath(args.spec)), args.job)
    runner = Runner(path=config.settings.path, timeout=config.settings.command_timeout, quiet_queries=True)
    monitor = Monitor(args.job, watched, settings, Lvm(runner), paths.summary)

    def run() -> None:
        log.info("the snapshot watchdog (pid %d) watches %s: extends by %d%% at %d%% full, up to %s, "
                 "looking every %g s", os.getpid(), ", ".join(map(str, watched)), settings.step,
                 settings.threshold, settings.max_size.text, settings.interval)
        monitor.run(stop_request)

    return serve(monitor, paths.pid, run, "the snapshot watchdog", "the watchdog failed and stopped watching")


if __name__ == "__main__":
    sys.exit(main())
