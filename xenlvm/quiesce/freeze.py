"""Application-consistent snapshots: each domain of a pause window is frozen (the admin's freeze
command: fsfreeze over ssh, a database's flush-and-lock) just before the window's pause, and
thawed just after its unpause, whatever failed in between (xen.quiesce).

A frozen guest that is never thawed is worse than a paused one: it looks running while every
write in it hangs. So, as for the pause (xenlvm.xen.PauseRecord):
- before each freeze the domains about to be frozen are written to /run/xenlvm/<job>.frozen;
  a later pre, post or cleanup that finds it (the earlier run was killed with -9) thaws them;
- the thaw runs in a finally, with signals held back until every thaw has run;
- a guard process (xenlvm.quiesce.guard), started before the first freeze, thaws what is still
  frozen past its window's deadline even when xenlvm's own process is gone or hangs.
The records and the lock: xenlvm.quiesce.record.
A freeze or thaw that does not finish within the timeout is killed with its process group.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

from xenlvm.config.model import Job, QuiesceSettings
from xenlvm.config.values import is_domain_name
from xenlvm.errors import CommandFailed, XenlvmError
from xenlvm.host import interrupts
from xenlvm.host.fsutil import remove_if_present
from xenlvm.host.processes import start_time
from xenlvm.host.runner import Runner
from xenlvm.quiesce.record import (
    FreezeRecord,
    Frozen,
    QuiesceError,
    acted_path,
    boot_clock,
    guard_acted,
    kill_freeze,
    thaw_lock,
)

__all__ = ["Frozen", "FreezeRecord", "QuiesceError", "Quiescer", "consistency", "for_job", "thaw_leftovers"]

log = logging.getLogger("xenlvm")

CRASH_CONSISTENT = "crash-consistent"
APPLICATION_CONSISTENT = "application-consistent"


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
        if not is_domain_name(name):  # never frozen by xenlvm: {domain} would make it an argument
            return QuiesceError(f"domain {name!r}: not a domain name xenlvm passes to a command")
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
        started = None if freezing is None else start_time(freezing)
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
        to_freeze = [name for name in to_freeze if self._safe_name(name)]
        try:
            # the guard does not thaw a window while its freezes run
            with thaw_lock(self.record, self.runner.dry_run):
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
            self._thaw_window_held(to_thaw, since, original)

    def _safe_name(self, name: str) -> bool:
        """Whether the domain's name may become an argument of its commands ({domain}); xl
        (xen.domains: auto) may show any name, such as '-oProxyCommand=...'. A name that may not
        is a failed freeze: on_failure says what follows."""
        if is_domain_name(name):
            return True
        problem = (f"domain {name!r}: its name is not a Xen domain name xenlvm passes to a command "
                   "(letters, digits, _ . - ; not starting with -), so it is not frozen")
        if self.settings.on_failure == "abort":
            raise QuiesceError(f"{problem}. xen.quiesce.on_failure is 'abort': nothing is snapshotted.")
        log.warning("%s; its snapshot is only crash-consistent (paused as usual)", problem)
        return False

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

    def _thaw_window_held(self, names: list[str], since: float, original: BaseException | None) -> None:
        """_thaw_window with signals held back until its thaws are done and recorded. Python may
        raise a signal's Interrupted just before the hold begins: then the thaws run after it
        all the same (once one is raised, later signals are ignored), and it goes on after them."""
        thawed = False
        try:
            with interrupts.deferred():
                self._thaw_window(names, since, original)
                thawed = True
        except interrupts.Interrupted as exc:
            if thawed:
                raise  # held back during the thaws: raised once they were done and recorded
            self._thaw_window(names, since, exc)
            raise

    def _thaw_window(self, names: list[str], since: float, original: BaseException | None) -> None:
        with thaw_lock(self.record, self.runner.dry_run):  # never at the same time as the guard's
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
    if not runner.dry_run:  # the guard's note for a run that is over: no one reads it any more
        remove_if_present(acted_path(record))
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
    # held: a signal is raised only once the record says what is still frozen
    with interrupts.deferred(), thaw_lock(quiescer.record, quiescer.runner.dry_run):
        failed = quiescer.thaw_all(left.domains)
        if not quiescer.runner.dry_run:
            if failed:
                quiescer.record.write(Frozen(tuple(failed), left.run, left.since, None, left.deadline))
            else:
                quiescer.record.clear()
    if failed:
        raise QuiesceError(f"domain(s) {', '.join(failed)} that an earlier run froze could not be thawed: "
                           "they may be STILL FROZEN. Run their thaw command by hand, then remove "
                           f"{quiescer.record.path}.")


def consistency(frozen: bool) -> str:
    return APPLICATION_CONSISTENT if frozen else CRASH_CONSISTENT
