"""Xen: find the domains whose disks live on a job's volume, and pause them for the instant of
the snapshot, resuming them whatever happens (their configuration export: xenlvm.xen.export).

xl's calls and the parsing of its output: xenlvm.host.xl. Since ``xl unpause`` exits 0 even when
libxl fails, the outcome of a resume is checked with ``xl list``. Before pausing, the names of
the domains about to be paused are written to /run/xenlvm/<job>.paused; a later run that finds
this file (the earlier one was killed with -9 inside the pause window) resumes them first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

from xenlvm.config.model import AUTO, Job
from xenlvm.errors import CommandFailed, FileError, PreflightFailed
from xenlvm.host import interrupts
from xenlvm.host.fsutil import is_below, remove_if_present, write_atomically
from xenlvm.host.retry import Backoff
from xenlvm.host.xl import XenError, Xl, XlView, disk_paths

log = logging.getLogger("xenlvm")

UNPAUSE_ATTEMPTS = 4


@dataclass(frozen=True)
class Domain:
    name: str
    domid: int
    paused: bool
    disks: tuple[str, ...] = ()
    record: dict | None = None  # the domain's object from `xl list -l`


@dataclass
class PauseTiming:
    """What one pause window measured; ms is set when it closes (None: nothing was paused)."""

    ms: float | None = None


def select_domains(job: Job, xl: XlView, origin_mountpoints: Sequence[str],
                   disk_domains: Sequence[str] = (), excluded: Collection[str] = ()) -> list[Domain]:
    """The running domains the job quiesces (auto: those with a disk below origin_mountpoints,
    or of disk_domains, which own the job's VM disks). Configured ones that are missing or not
    running are reported, and fail pre when the job says so. excluded: the domains the job's
    configuration leaves out of its backup (a warning when one is paused all the same)."""
    assert job.xen is not None
    states, records = xl.states, xl.records
    chosen: list[Domain] = []
    if job.xen.domains is AUTO:
        volumes = [str(spec.origin) for spec in job.volumes]
        if volumes and not origin_mountpoints:
            raise PreflightFailed(f"xen.domains is 'auto' but {', '.join(volumes)} is not mounted, so no "
                                  "domain disk can be matched to it; list the domains by name")
        for name, record in records.items():
            if name == "Domain-0" or name not in states:
                continue
            disks = disk_paths(record)
            shares = any(is_below(d, m) for d in disks for m in origin_mountpoints)
            if name in excluded and shares:
                log.warning("domain %s is excluded (vmdisks.exclude) but has a disk on a volume the job "
                            "backs up: it is paused (and frozen) with it", name)
            if name in disk_domains or shares:
                chosen.append(Domain(name, states[name][0], states[name][1], disks, record))
        log.info("xen.domains auto: %s", ", ".join(d.name for d in chosen) or "no running domain has a "
                 f"disk below {', '.join(origin_mountpoints)} or on the job's VM disks")
        return chosen
    problems = []
    for name in job.xen.domains:
        if name not in states:
            problems.append(f"domain {name!r} does not exist or is not running")
            continue
        chosen.append(Domain(name, states[name][0], states[name][1], disk_paths(records.get(name, {})),
                             records.get(name)))
    if problems:
        message = "; ".join(problems)
        if job.xen.missing == "fail":
            raise PreflightFailed(f"{message} (xen.missing is 'fail'). Start it, or remove it from "
                                  "xen.domains. Nothing was changed.")
        log.warning("%s; continuing without it (set xen.missing: fail to stop instead)", message)
    return chosen


class PauseRecord:
    """/run/xenlvm/<job>.paused: the domains this job may have left paused."""

    def __init__(self, lock_dir: str, job: str) -> None:
        self.job = job
        self.path = os.path.join(lock_dir, f"{job}.paused")

    def write(self, names: Sequence[str]) -> None:
        try:
            write_atomically(self.path, json.dumps(list(names)), mode=0o644)
        except OSError as exc:
            raise FileError("write the record of the domains about to be paused,", exc,
                            "Nothing was paused.") from None

    def read(self) -> list[str]:
        """The domains in the record, [] when there is none. A record that cannot be read is an
        error, not "no record": the domains a killed run left paused would go unnoticed."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                names = json.load(handle)
        except FileNotFoundError:
            return []
        except OSError as exc:
            problem = exc.strerror
        except ValueError as exc:  # not JSON, or not UTF-8
            problem = f"it is not the JSON xenlvm writes: {exc}"
        else:
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                return names
            problem = "it is not the list of domain names xenlvm writes"
        raise XenError(f"the record of the domains job {self.job!r} paused, {self.path}, cannot be read "
                       f"({problem}), so a killed run may have left domains paused. Look for paused "
                       "domains in 'xl list' (state 'p') and resume each with 'xl unpause NAME', then "
                       f"remove {self.path}.")

    def clear(self) -> None:
        remove_if_present(self.path)


def resume_leftovers(xl: Xl, record: PauseRecord) -> None:
    """Resume domains an earlier, killed run left paused (the record says which)."""
    names = record.read()
    if not names:
        return
    states = xl.states()
    stuck = [n for n in names if states.get(n, (0, False))[1]]
    if stuck:
        log.error("an earlier run was killed while domains were paused: resuming %s", ", ".join(stuck))
        resume(xl, stuck)
    record.clear()


def resume(xl: Xl, names: Sequence[str]) -> None:
    """Check with xl list which of names are still paused, unpause those, and retry; raise if
    any stays paused."""
    pending = list(names)
    backoff = Backoff(first=0.5, factor=1.0, step=0.5, clock=time)  # 0.5 s, 1 s, 1.5 s, ...
    for attempt in range(1, UNPAUSE_ATTEMPTS + 1):
        if xl.runner.dry_run:
            return
        try:
            states = xl.states()
        except CommandFailed as exc:
            log.error("cannot check whether the domains run again: %s", exc)
            states = {n: (0, True) for n in pending}
        pending = [n for n in pending if states.get(n, (0, False))[1]]
        if not pending or attempt == UNPAUSE_ATTEMPTS:
            break
        log.error("domain(s) %s still paused; resuming again (attempt %d)", ", ".join(pending), attempt + 1)
        backoff.wait()
        for name, error in xl.control("unpause", pending).items():
            log.error("could not resume domain %s: %s", name, error)
    if pending:
        raise XenError(f"domain(s) {', '.join(pending)} are STILL PAUSED after {UNPAUSE_ATTEMPTS} "
                       f"attempts to resume them: run 'xl unpause {pending[0]}' now and check 'xl list'")


@contextlib.contextmanager
def paused(xl: Xl, domains: Sequence[Domain], record: PauseRecord) -> Iterator[PauseTiming]:
    """Pause the domains for the body of the with-block and resume them in every case: an
    exception, a timeout, SIGTERM or SIGINT. They are running ones: a domain that was already
    paused is left out by the plan (xenlvm.xen.windows.plan_xen), so that it is not resumed
    afterwards (we leave the host as we found it). Yields the PauseTiming, which holds how long it
    lasted once the block is left."""
    to_pause = [d.name for d in domains]
    window = PauseTiming()
    if not to_pause:
        yield window
        return
    if not xl.runner.dry_run:
        record.write(to_pause)
    started = time.monotonic()
    paused_at: float | None = None
    original: BaseException | None = None
    try:
        failed = xl.control("pause", to_pause)  # all at once: the window does not grow with K
        if failed:
            raise XenError("could not pause " + "; ".join(f"{n}: {e}" for n, e in failed.items())
                           + ". Nothing was snapshotted; the domains are resumed.")
        paused_at = time.monotonic()
        yield window
    except BaseException as exc:
        original = exc
        raise
    finally:
        # No signal may cut the resume short: hold them until every domain is asked to run.
        with interrupts.deferred():
            resuming_at = time.monotonic()
            for name, error in xl.control("unpause", to_pause).items():
                log.error("could not resume domain %s: %s", name, error)
            window_ms = (time.monotonic() - started) * 1000
            # The part xenlvm itself decides: from xl pause returning to xl unpause starting.
            own = "" if paused_at is None else \
                f"; {(resuming_at - paused_at) * 1000:.0f} ms from xl pause returning to xl unpause starting"
            log.info("pause window: %.0f ms (domains %s%s)", window_ms, ", ".join(to_pause), own)
            window.ms = window_ms
            try:
                resume(xl, to_pause)
                record.clear()
            except XenError as exc:
                if original is None:
                    raise
                log.error("%s", exc)  # reported beside the original error, which goes on
