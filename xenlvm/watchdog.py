"""The snapshot watchdog: a small process that keeps classic snapshots from overflowing while
a long backup reads them.

pre starts it (``start``) once the snapshots are mounted. Every ``interval`` seconds it asks
``lvs`` once per VG how full each snapshot is, and extends a snapshot with ``lvextend`` when it
has passed ``threshold``, by ``step`` percent, never beyond ``max_size`` nor the VG's free
space. post stops it (``stop``) before unmounting and gets a ``Summary`` of what it saw. It
also exits by itself when its snapshots are gone, after ``max_lifetime``, or on SIGTERM.

Its files, in the lock directory: ``<job>.watchdog.spec`` (what to watch, written by start),
``<job>.watchdog.pid`` (while it runs) and ``<job>.watchdog.json`` (the summary, rewritten
after every change, so a crash loses nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from xenlvm import logs
from xenlvm.config import Config, Size, WatchdogSettings, load_config
from xenlvm.errors import EXIT_USAGE, CommandFailed, XenlvmError
from xenlvm.lvm import OWNER_TAG, LogicalVolume, Lvm, VolumeGroup, invalidated_by_io_errors, job_tag
from xenlvm.runner import Runner, quote

log = logging.getLogger("xenlvm")

MODULE = "xenlvm.watchdog"
START_TIMEOUT = 30.0  # a Python start on a loaded dom0 can be slow; the monitor announces itself


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
# The decision, pure: given what lvs reports, how large should the snapshot be?


def size_text(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _round_up(size: int, unit: int) -> int:
    return -(-size // unit) * unit


def wanted_size(lv: LogicalVolume, vg: VolumeGroup, settings: WatchdogSettings) -> int:
    """Given a snapshot, return its size grown by the step, in whole extents."""
    return _round_up(-(-lv.size * (100 + settings.step) // 100), vg.extent_size or 512)


def size_limit(lv: LogicalVolume, vg: VolumeGroup, settings: WatchdogSettings, origin_size: int) -> int:
    """Given a snapshot and its VG, return the largest size it may grow to: max_size, and no
    more than the VG's free space allows, in whole extents."""
    extent = vg.extent_size or 512
    limit = min(settings.max_size.resolve(origin_size, vg.free, vg.size), lv.size + vg.free)
    return limit // extent * extent


def next_size(lv: LogicalVolume, vg: VolumeGroup, settings: WatchdogSettings, origin_size: int) -> int | None:
    """Given a snapshot as lvs reports it, return the size in bytes to extend it to, or None
    when it is below the threshold or cannot grow (``limit_reason`` says why)."""
    if lv.data_percent is None or lv.data_percent < settings.threshold:
        return None
    new_size = min(wanted_size(lv, vg, settings), size_limit(lv, vg, settings, origin_size))
    return new_size if new_size > lv.size else None


def limit_reason(lv: LogicalVolume, vg: VolumeGroup, settings: WatchdogSettings, origin_size: int) -> str:
    """Given a snapshot that cannot grow by the full step, say which limit stops it and what to do."""
    extent = vg.extent_size or 512
    max_size = settings.max_size.resolve(origin_size, vg.free, vg.size) // extent * extent
    if max_size <= lv.size + vg.free:
        return (f"it has reached the watchdog's max_size {settings.max_size.text} ({size_text(max_size)}); "
                "raise max_size or give the snapshot a larger size")
    return (f"VG {vg.name} has no more free space; free space in the VG or give the snapshot a "
            "larger size")


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
        self.identity: dict[str, tuple[str, str | None]] = {}  # a replaced snapshot is not ours
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
            write_atomically(self.summary_path, text)
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
        if lv is not None and not self._is_ours(lv):
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
            if invalidated_by_io_errors(lv):
                log.error("%s became invalid because of I/O errors on its copy-on-write device; the "
                          "backup of this run cannot be trusted", key)
                self.problem(f"{key} became invalid because of I/O errors on its copy-on-write device: "
                             "the backup of this run cannot be trusted")
            else:
                log.error("%s overflowed: its %s of copy-on-write space filled up and it became invalid; "
                          "the backup of this run cannot be trusted", key, size_text(lv.size))
                self.problem(f"{key} overflowed at {size_text(lv.size)} and became invalid: the backup of "
                             "this run cannot be trusted")
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
                message = (f"{key} could only be extended to {size_text(new_size)} instead of "
                           f"{size_text(wanted)}: {reason}")
            log.error("%s", message)
            self.problem(message)
            self.stuck.add(key)

    def _is_ours(self, lv: LogicalVolume) -> bool:
        """Only a classic snapshot that xenlvm created for this job, and the same one as at the
        first look (not one re-created under the same name), is ever extended."""
        if not lv.is_snapshot or not {OWNER_TAG, job_tag(self.job_name)} <= lv.tags:
            return False
        identity = (lv.created, lv.run_tag())
        return self.identity.setdefault(str(lv), identity) == identity

    def _extend(self, lv: LogicalVolume, fill: float, new_size: int) -> bool:
        key = str(lv)
        try:
            self.lvm.runner.change(["lvextend", "--size", f"{new_size}b", key])
        except CommandFailed as exc:
            log.error("cannot extend %s (%.1f%% full) to %s: %s", key, fill, size_text(new_size), exc)
            self.problem(f"cannot extend {key} to {size_text(new_size)}: {exc}")
            return False
        self.extensions.append({"lv": key, "at": time.time(), "fill": fill, "from": lv.size, "to": new_size})
        log.warning("extended the snapshot %s from %s to %s: it was %.1f%% full", key, size_text(lv.size),
                    size_text(new_size), fill)
        self.write_summary()
        return True

    def run(self, stop: StopRequest) -> None:
        """Look every interval until nothing is left to watch, max_lifetime passed, or SIGTERM."""
        deadline = time.monotonic() + self.settings.max_lifetime
        while not stop.requested:
            self.look()
            if not self.watching:
                log.info("the watchdog has no snapshot left to watch; exiting")
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("the watchdog stops after its max_lifetime of %g s: %s no longer extended",
                            self.settings.max_lifetime, ", ".join(sorted(self.watching)))
                self.problem(f"the watchdog stopped after max_lifetime ({self.settings.max_lifetime:g} s) "
                             f"while the backup still ran: {', '.join(sorted(self.watching))} no longer "
                             "extended")
                return
            stop.wait(min(self.settings.interval, remaining))
        log.info("the watchdog was asked to stop; exiting")


class StopRequest:
    """SIGTERM asks the monitor to finish (after a running lvextend); SIGINT and SIGHUP, meant
    for the pre that started it, are ignored. The signal also cuts short the wait between looks."""

    def __init__(self) -> None:
        self.requested = False
        self._wakeup, write_end = os.pipe()
        os.set_blocking(self._wakeup, False)
        os.set_blocking(write_end, False)
        signal.set_wakeup_fd(write_end)
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _handle(self, _signum: int, _frame: object) -> None:
        self.requested = True

    def wait(self, seconds: float) -> None:
        if not self.requested:
            select.select([self._wakeup], [], [], seconds)
        with contextlib.suppress(BlockingIOError):
            os.read(self._wakeup, 512)


def write_atomically(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _read_small(path: str) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, encoding="utf-8", errors="replace") as handle:
        try:
            return handle.read(1 << 20)
        except OSError:  # e.g. ESRCH: the /proc entry's process ended between open and read
            return None


def read_pid(path: str) -> int | None:
    text = (_read_small(path) or "").strip()
    return int(text) if text.isdigit() and int(text) > 1 else None


def write_spec(path: str, job_name: str, watched: Sequence[Watched], settings: WatchdogSettings) -> None:
    write_atomically(path, json.dumps({"job": job_name, "watched": [asdict(w) for w in watched],
                                       "settings": asdict(settings)}, indent=2) + "\n")


def read_spec(path: str) -> tuple[list[Watched], WatchdogSettings]:
    """Given the spec file that start wrote, return what to watch and how."""
    text = _read_small(path)
    try:
        spec = json.loads(text or "")
        watched = [Watched(str(w["vg"]), str(w["snapshot"]), int(w["origin_size"])) for w in spec["watched"]]
        values = dict(spec["settings"])
        settings = WatchdogSettings(**{**values, "max_size": Size(**values["max_size"])})
    except (ValueError, KeyError, TypeError) as exc:
        raise XenlvmError(f"the watchdog's spec file {path} is missing or unreadable ({exc})") from None
    return watched, settings


def main(argv: Sequence[str] | None = None) -> int:
    """The monitor process, as start runs it: python -m xenlvm.watchdog --config --job --spec."""
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}",
                                     description="xenlvm's snapshot watchdog; pre starts it, post stops it")
    parser.add_argument("--config", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--spec", required=True)
    args = parser.parse_args(argv)
    stop_request = StopRequest()
    logs.setup(syslog=True)
    logs.set_job(args.job)
    try:
        config = load_config(args.config)
        if config.settings.log_file:
            logs.add_log_file(config.settings.log_file, logging.INFO)
        watched, settings = read_spec(args.spec)
    except XenlvmError as exc:
        log.error("the snapshot watchdog cannot start: %s", exc)
        return EXIT_USAGE
    # Beside the spec, which start wrote into the lock directory (even if the file changed since).
    paths = files(os.path.dirname(os.path.abspath(args.spec)), args.job)
    runner = Runner(path=config.settings.path, timeout=config.settings.command_timeout, quiet_queries=True)
    monitor = Monitor(args.job, watched, settings, Lvm(runner), paths.summary)
    status = 0
    try:
        monitor.write_summary()
        write_atomically(paths.pid, f"{os.getpid()}\n")
        log.info("the snapshot watchdog (pid %d) watches %s: extends by %d%% at %d%% full, up to %s, "
                 "looking every %g s", os.getpid(), ", ".join(map(str, watched)), settings.step,
                 settings.threshold, settings.max_size.text, settings.interval)
        monitor.run(stop_request)
    except Exception as exc:  # a monitor that dies silently would leave the snapshots unguarded
        log.exception("the snapshot watchdog failed: %s", exc)
        monitor.problem(f"the watchdog failed and stopped watching: {type(exc).__name__}: {exc}")
        status = 1
    finally:
        monitor.finished = time.time()
        try:
            monitor.write_summary()
        finally:
            if read_pid(paths.pid) == os.getpid():
                os.unlink(paths.pid)
    return status


# ---------------------------------------------------------------------------------------------
# start and stop, called by pre and post.


def start(config: Config, job_name: str, watched: Sequence[Watched], settings: WatchdogSettings, *,
          python: str = sys.executable) -> int | None:
    """Start the watchdog for the job's mounted snapshots, detached from the caller (its own
    session, no inherited descriptors, so neither sesam nor the job lock waits for it), and
    return its pid once it runs. Nothing happens when watched is empty.

    A watchdog of an earlier run of the job that is still there is stopped first. Raises
    XenlvmError when the monitor does not come up."""
    if not watched:
        return None
    paths = files(config.settings.lock_dir, job_name)
    earlier = stop(config, job_name)
    if earlier is not None:
        log.warning("a snapshot watchdog of an earlier run of job %s was still there; stopped it", job_name)
    write_spec(paths.spec, job_name, watched, settings)
    argv = [python, "-m", MODULE, "--config", config.path, "--job", job_name, "--spec", paths.spec]
    # The monitor imports the same xenlvm as its caller, whatever the caller's sys.path was.
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {"PATH": config.settings.path, "LC_ALL": "C", "LANG": "C", "PYTHONPATH": package_parent}
    log.info("starting the snapshot watchdog: %s", quote(argv))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True,
                            cwd="/", env=env)
    deadline = time.monotonic() + START_TIMEOUT
    while read_pid(paths.pid) != proc.pid:
        status = proc.poll()
        if status is not None or time.monotonic() > deadline:
            if status is None:
                proc.kill()
                status = proc.wait()
            for path in (paths.spec, paths.summary):
                _remove(path)
            raise XenlvmError(f"the snapshot watchdog did not start (exit status {status}); see the log "
                              f"file or run it by hand to see why: {quote(argv)}")
        time.sleep(0.05)
    return proc.pid


def stop(config: Config, job_name: str, timeout: float = 10.0) -> Summary | None:
    """Stop the job's watchdog (SIGTERM, SIGKILL after timeout) and return what it saw; None
    when no watchdog ran. A pid file whose pid now belongs to another process is never
    signalled. Removes the watchdog's files; calling it again returns None."""
    paths = files(config.settings.lock_dir, job_name)
    pid = read_pid(paths.pid)
    signalled = pid is not None and terminate(pid, job_name, timeout)
    summary = read_summary(paths.summary)
    for path in (paths.pid, paths.spec, paths.summary):
        _remove(path)
    if summary is None and signalled:
        summary = Summary(problems=[f"the watchdog (pid {pid}) was stopped before it wrote a summary"])
    return summary


def read_summary(path: str) -> Summary | None:
    text = _read_small(path)
    if text is None:
        return None
    try:
        data = json.loads(text)
        return Summary(max_fill={str(k): float(v) for k, v in data["max_fill"].items()},
                       extensions=list(data["extensions"]), problems=[str(p) for p in data["problems"]])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return Summary(problems=[f"the watchdog's summary {path} is unreadable ({exc})"])


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def is_watchdog(pid: int, job_name: str) -> bool:
    """True when pid is a running watchdog of this job, as its command line shows."""
    args = (_read_small(f"/proc/{pid}/cmdline") or "").split("\0")
    return MODULE in args and any(args[i:i + 2] == ["--job", job_name] for i in range(len(args)))


def _has_exited(pid: int) -> bool:
    """Gone, or a zombie waiting for its parent to collect its exit status."""
    stat = _read_small(f"/proc/{pid}/stat")
    return stat is None or stat.rpartition(")")[2].split()[:1] == ["Z"]


def terminate(pid: int, job_name: str, timeout: float) -> bool:
    """SIGTERM the job's watchdog at pid and wait for it to exit; SIGKILL it after timeout.
    Return True if pid was the watchdog and was signalled.

    A pidfd pins the process that was checked, so a pid recycled between the check and the
    signal cannot be hit; kernels older than 5.3 fall back to a plain kill."""
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (OSError, AttributeError):
        pidfd = None
    try:
        if _has_exited(pid):
            return False
        if not is_watchdog(pid, job_name):
            log.warning("the watchdog pid file of job %s names pid %d, which is not a watchdog of this job "
                        "(the pid was reused); it is left alone", job_name, pid)
            return False
        _signal(pid, pidfd, signal.SIGTERM)
        if not _wait_exit(pid, pidfd, timeout):
            log.warning("the snapshot watchdog (pid %d) did not stop within %g s of SIGTERM; killing it",
                        pid, timeout)
            _signal(pid, pidfd, signal.SIGKILL)
            _wait_exit(pid, pidfd, 5.0)
        return True
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _signal(pid: int, pidfd: int | None, signum: int) -> None:
    try:
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _wait_exit(pid: int, pidfd: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _has_exited(pid):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if pidfd is not None:
            select.select([pidfd], [], [], min(remaining, 1.0))  # readable once the process has exited
        else:
            time.sleep(min(remaining, 0.05))
    return True


if __name__ == "__main__":
    sys.exit(main())
