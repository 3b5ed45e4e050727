"""Application-consistent snapshots: each domain of a pause window is frozen (the admin's freeze
command: fsfreeze over ssh, a database's flush-and-lock) just before the window's pause, and
thawed just after its unpause, whatever failed in between (xen.quiesce).

A frozen guest that is never thawed is worse than a paused one: it looks running while every
write in it hangs. So, as for the pause (xenlvm.xen.PauseRecord):
- before each freeze the domains about to be frozen are written to /run/xenlvm/<job>.frozen;
  a later pre, post or cleanup that finds it (the earlier run was killed with -9) thaws them;
- the thaw runs in a finally, with signals held back until every thaw has run;
- a guard process (xenlvm.quiesce_guard), started before the first freeze, thaws what is still
  frozen after max_frozen even when xenlvm's own process is gone or hangs.
A freeze or thaw that does not finish within the timeout is killed with its process group.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from xenlvm import interrupts
from xenlvm.config import Job, QuiesceSettings
from xenlvm.errors import CommandFailed, FileError, XenlvmError
from xenlvm.fsutil import read_small, remove_if_present, write_atomically
from xenlvm.runner import Runner

log = logging.getLogger("xenlvm")

CRASH_CONSISTENT = "crash-consistent"
APPLICATION_CONSISTENT = "application-consistent"


class QuiesceError(XenlvmError):
    """A freeze failed with on_failure: abort, or a thaw failed: a guest may still be frozen."""


@dataclass(frozen=True)
class Frozen:
    """What a record says: the domains that may be frozen, by which run, since when and until when
    the guard leaves them so (boot_clock()), and the freeze command running now: its process
    group and its start time (its proof)."""

    domains: tuple[str, ...]
    run: str
    since: float
    freezing: tuple[int, int] | None = None
    deadline: float = 0.0


class FreezeRecord:
    """/run/xenlvm/<job>.frozen: the domains this job may have left frozen."""

    def __init__(self, lock_dir: str, job: str) -> None:
        self.job = job
        self.path = os.path.join(lock_dir, f"{job}.frozen")

    def write(self, frozen: Frozen) -> None:
        text = json.dumps({"domains": list(frozen.domains), "run": frozen.run, "since": frozen.since,
                           "freezing": list(frozen.freezing) if frozen.freezing else None,
                           "deadline": frozen.deadline})
        try:
            write_atomically(self.path, text + "\n", mode=0o644)
        except OSError as exc:
            raise FileError("write the record of the domains about to be frozen,", exc,
                            "Nothing more is frozen.") from None

    def read(self) -> Frozen | None:
        """The record, None when there is none. A record that cannot be read is an error: the
        guests a killed run left frozen would go unnoticed."""
        text = read_small(self.path)
        if text is None:
            if not os.path.lexists(self.path):
                return None
            problem = "it cannot be read"
        else:
            try:
                data = json.loads(text)
                group = data.get("freezing")
                return Frozen(tuple(str(d) for d in data["domains"]), str(data["run"]), float(data["since"]),
                              (int(group[0]), int(group[1])) if group else None, float(data["deadline"]))
            except (ValueError, KeyError, TypeError) as exc:
                problem = f"it is not the record xenlvm writes: {exc}"
        raise QuiesceError(f"the record of the domains job {self.job!r} froze, {self.path}, is unreadable "
                           f"({problem}), so a killed run may have left guests frozen. Thaw each guest "
                           f"of the job with its thaw command, then remove {self.path}.")

    def clear(self) -> None:
        remove_if_present(self.path)


class Quiescer:
    """The freeze and thaw commands of one job, run through the runner."""

    def __init__(self, runner: Runner, job: Job, lock_dir: str, run: str) -> None:
        assert job.xen is not None and job.xen.quiesce is not None
        self.runner = runner
        self.settings: QuiesceSettings = job.xen.quiesce
        self.record = FreezeRecord(lock_dir, job.name)
        self.run = run
        self.consistent: dict[str, bool] = {}  # per domain of this run's windows: did it freeze

    def freeze(self, name: str, recorded: Sequence[str] = (), since: float = 0.0, left: int = 0) -> None:
        """Run the domain's freeze command; raise CommandFailed when it fails or times out. Its
        process group goes into the record of the domains recorded as soon as it runs: a run
        killed meanwhile leaves it running, and who thaws them kills it first."""
        commands = self.settings.commands(name)
        assert commands is not None
        self.runner.change(commands[0], timeout=self.settings.timeout, own_group=True,
                           started=lambda pgid: self._note(recorded, since, left, pgid) if recorded else None)

    def thaw(self, name: str) -> XenlvmError | None:
        """Run the domain's thaw command; return its failure (logged), None when it worked."""
        commands = self.settings.commands(name)
        if commands is None:  # a leftover of a domain whose commands were removed since
            return QuiesceError(f"domain {name} has no thaw command in the configuration any more")
        try:
            self.runner.change(commands[1], timeout=self.settings.timeout, own_group=True)
        except CommandFailed as exc:
            log.error("could not thaw domain %s: %s", name, exc)
            return exc
        return None

    def thaw_all(self, names: Sequence[str]) -> list[str]:
        """Thaw each of names, all of them even when one fails; return those that failed."""
        with interrupts.deferred():  # no signal may cut the thaws short
            return [name for name in names if self.thaw(name) is not None]

    def _note(self, names: Sequence[str], since: float, left: int = 0, freezing: int | None = None) -> None:
        """Record names as frozen; the guard's deadline: max_frozen after the left freezes of
        the window (each at most timeout), so the guard never thaws a window on its way."""
        if self.runner.dry_run:
            return
        self.refuse_foreign_record()
        started = None if freezing is None else process_start(freezing)
        deadline = boot_clock() + left * self.settings.timeout + self.settings.max_frozen
        if names:
            self.record.write(Frozen(tuple(names), self.run, since,
                                     None if freezing is None or started is None else (freezing, started),
                                     deadline))
        else:
            self.record.clear()

    def refuse_foreign_record(self) -> None:
        """Raise QuiesceError when the record is another run's: the guests it names may still be
        frozen, and only a thaw of them (cleanup) may remove it."""
        left = None if self.runner.dry_run else self.record.read()
        if left is not None and left.run != self.run:
            raise QuiesceError(f"{self.record.path} says run {left.run} may have left "
                               f"{', '.join(left.domains)} FROZEN; nothing more is frozen before they are "
                               "thawed: run 'xenlvm cleanup' first")

    @contextlib.contextmanager
    def frozen(self, names: Sequence[str]) -> Iterator[dict[str, bool]]:
        """Freeze the domains for the body of the with-block and thaw them in every case. Yields
        per domain whether it is frozen (its snapshot application-consistent). A freeze that
        fails: with on_failure crash-consistent, that domain is thawed at once and the window goes
        on with the pause only; with abort, QuiesceError (the finally thaws the others)."""
        consistent = dict.fromkeys(names, False)
        to_thaw: list[str] = []
        since = boot_clock()
        original: BaseException | None = None
        self.refuse_foreign_record()
        to_freeze = [name for name in names if self.settings.commands(name) is not None]
        for name in sorted(set(names) - set(to_freeze)):
            log.info("domain %s has no freeze command: its snapshot is crash-consistent", name)
        try:
            with thaw_lock(self):  # the guard does not thaw a window while its freezes run
                for index, name in enumerate(to_freeze):
                    to_thaw.append(name)  # even when its freeze fails: it may freeze late, on the guest
                    left = len(to_freeze) - index
                    self._note(to_thaw, since, left)  # before the freeze: a kill -9 during it leaves it
                    consistent[name] = self._freeze_or_thaw(name, to_thaw, since, left)
                    self._note(to_thaw, since)  # the freeze command is over
            self.consistent.update(consistent)
            yield consistent
        except BaseException as exc:
            original = exc
            raise
        finally:
            self._thaw_window(to_thaw, since, original)

    def _freeze_or_thaw(self, name: str, recorded: Sequence[str], since: float, left: int) -> bool:
        """Freeze the domain; True when it is frozen. A failed freeze (crash-consistent) is thawed
        at once, and again after the window, and gives False; with abort it raises QuiesceError.
        A freeze killed at its timeout on dom0 may go on in the guest (ssh does not stop it)."""
        try:
            self.freeze(name, recorded, since, left)
            return True
        except CommandFailed as exc:
            if self.settings.on_failure == "abort":
                raise QuiesceError(f"could not freeze domain {name}: {exc}. xen.quiesce.on_failure is "
                                   "'abort': nothing is snapshotted; the domains frozen so far are thawed."
                                   ) from None
            log.warning("could not freeze domain %s: %s; its snapshot is only crash-consistent (it is "
                        "thawed now and again after its window, and paused as usual)", name, exc)
        if self.thaw_all([name]):
            raise QuiesceError(f"domain {name}: its freeze failed and its thaw failed too: it may be "
                               f"STILL FROZEN. Thaw it by hand now (run the thaw command); then run "
                               "'xenlvm cleanup'.")
        return False

    def _thaw_window(self, names: list[str], since: float, original: BaseException | None) -> None:
        with thaw_lock(self):  # never at the same time as the guard's
            failed = self.thaw_all(names)
            self._note(failed, since)  # what failed stays recorded for the next pre, post or cleanup
            self._downgrade_if_guard_acted(names)
        if not failed:
            return
        message = (f"could not thaw domain(s) {', '.join(failed)}: they may be STILL FROZEN, which hangs "
                   f"every write in them. Run their thaw command by hand now; 'xenlvm cleanup' "
                   f"tries again ({self.record.path} names them)")
        if original is None:
            raise QuiesceError(message)
        log.error("%s", message)  # beside the original error, which goes on

    def _downgrade_if_guard_acted(self, names: Sequence[str]) -> None:
        """The guard resumed and thawed this window's domains in its middle (max_frozen was up):
        their snapshots are crash-consistent only."""
        said = guard_acted(self.record, self.run)
        acted = set(names if said is None else said) & set(names)
        if not acted:
            return
        log.warning("the quiesce guard resumed and thawed %s in the middle of their window "
                    "(xen.quiesce.max_frozen was up): their snapshots are only crash-consistent",
                    ", ".join(sorted(acted)))
        self.consistent.update(dict.fromkeys(acted, False))
        remove_if_present(acted_path(self.record))


def for_job(runner: Runner, job: Job, lock_dir: str, run: str = "") -> Quiescer | None:
    """The job's quiescer; None for a job without xen.quiesce."""
    if job.xen is None or job.xen.quiesce is None:
        return None
    return Quiescer(runner, job, lock_dir, run)


def thaw_leftovers(runner: Runner, job: Job, lock_dir: str) -> None:
    """Thaw the domains an earlier, killed run left frozen (its record says which); raise
    QuiesceError when one cannot be thawed (the record stays)."""
    record = FreezeRecord(lock_dir, job.name)
    left = record.read()
    if left is None:
        return
    quiescer = for_job(runner, job, lock_dir)
    if quiescer is None:
        raise QuiesceError(f"{record.path} says an earlier run may have left {', '.join(left.domains)} "
                           "frozen, but the job has no xen.quiesce commands any more: thaw them by hand, "
                           f"then remove {record.path}.")
    log.error("an earlier run was killed while guests were frozen (or could not thaw them): thawing %s",
              ", ".join(left.domains))
    kill_freeze(left)
    with thaw_lock(quiescer):
        failed = quiescer.thaw_all(left.domains)
    if failed:
        if not quiescer.runner.dry_run:
            quiescer.record.write(Frozen(tuple(failed), left.run, left.since, None, left.deadline))
        raise QuiesceError(f"domain(s) {', '.join(failed)} that an earlier run froze could not be thawed: "
                           "they may be STILL FROZEN. Run their thaw command by hand, then remove "
                           f"{quiescer.record.path}.")
    if not quiescer.runner.dry_run:
        quiescer.record.clear()


def boot_clock() -> float:
    """Seconds since boot, sleep included: the clock of the records (/run goes with a reboot),
    which NTP does not step."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@contextlib.contextmanager
def thaw_lock(quiescer: Quiescer) -> Iterator[None]:
    """The job's freeze/thaw lock (<lock_dir>/<job>.thaw.lock, fcntl): pre's freezes and thaws
    and the guard's thaw never run at the same time. Nothing in a dry run."""
    if quiescer.runner.dry_run:
        yield
        return
    path = os.path.join(os.path.dirname(quiescer.record.path), f"{quiescer.record.job}.thaw.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise FileError("open the freeze/thaw lock,", exc, "Nothing more is frozen.") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def acted_path(record: FreezeRecord) -> str:
    """Where the guard notes the run whose domains it thawed: <lock_dir>/<job>.quiesce-guard.acted."""
    return os.path.join(os.path.dirname(record.path), f"{record.job}.quiesce-guard.acted")


def guard_acted(record: FreezeRecord, run: str) -> list[str] | None:
    """The domains the guard resumed and thawed for run, [] when it did not act for it; None
    when its note cannot be read (it may have acted on any)."""
    text = read_small(acted_path(record))
    if text is None:
        return None if os.path.lexists(acted_path(record)) else []
    try:
        data = json.loads(text)
        return [str(d) for d in data["domains"]] if data["run"] == run else []
    except (ValueError, KeyError, TypeError):
        return None


def note_guard_acted(record: FreezeRecord, left: Frozen) -> None:
    """The guard's note, before it resumes and thaws: the run and domains it acts on."""
    write_atomically(acted_path(record), json.dumps({"run": left.run, "domains": list(left.domains)}) + "\n",
                     mode=0o644)


def process_start(pid: int) -> int | None:
    """The start time of process pid (clock ticks since boot, /proc/PID/stat), None when it is gone:
    with the pid, it proves a process is the one recorded and not a later one with its number."""
    text = read_small(f"/proc/{pid}/stat")
    if text is None or ")" not in text:
        return None
    return int(text.rsplit(")", 1)[1].split()[19])


def kill_freeze(left: Frozen) -> None:
    """Kill the process group of the freeze command a killed run left running (it could still
    freeze its guest after the thaw), once its leader's start time proves it is that one."""
    if left.freezing is None:
        return
    pgid, started = left.freezing
    if process_start(pgid) != started:
        return  # gone (or its number reused): nothing of it left to kill
    log.error("the freeze command of an earlier run still runs (process group %d): killing it", pgid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def consistency(frozen: bool) -> str:
    return APPLICATION_CONSISTENT if frozen else CRASH_CONSISTENT
