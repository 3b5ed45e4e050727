"""Xen: find the domains whose disks live on a job's volume, and pause them for the instant of
the snapshot, resuming them whatever happens (their configuration export: xenlvm.xen.export).

xl's own exit status is not enough: ``xl pause`` and ``xl unpause`` exit 0 even when libxl
fails (tools/xl/xl_vmcontrol.c ignores the result), so failures are read from stderr and the
outcome is checked with ``xl list``. Before pausing, the names of the domains about to be
paused are written to /run/xenlvm/<job>.paused; a later run that finds this file (the earlier
one was killed with -9 inside the pause window) resumes them first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from xenlvm.config.model import AUTO, XL_TIMEOUT, Job
from xenlvm.errors import CommandFailed, FileError, PreflightFailed, XenlvmError
from xenlvm.host import interrupts
from xenlvm.host.fsutil import is_below, remove_if_present, write_atomically
from xenlvm.host.retry import Backoff
from xenlvm.host.runner import Runner

log = logging.getLogger("xenlvm")

UNPAUSE_ATTEMPTS = 4


class XenError(XenlvmError):
    """An xl call failed, or a domain could not be paused or resumed."""


@dataclass(frozen=True)
class Domain:
    name: str
    domid: int
    paused: bool
    disks: tuple[str, ...] = ()
    record: dict | None = None  # the domain's object from `xl list -l`


def parse_xl_list(text: str) -> dict[str, tuple[int, bool]]:
    """Given `xl list` output, return name -> (domid, paused). Names may contain spaces, so the
    five numeric/state columns are taken from the right."""
    domains = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 6:
            continue
        if not fields[-5].isdigit():
            raise XenError(f"cannot understand the output of 'xl list': no domain id in {line!r}")
        domains[" ".join(fields[:-5])] = (int(fields[-5]), "p" in fields[-2])
    return domains


def parse_xl_list_long(text: str) -> dict[str, dict]:
    """Given `xl list -l` JSON, return name -> the domain's record."""
    if text.lstrip().startswith("("):
        raise XenError("'xl list -l' printed SXP, not JSON: set output_format to json in "
                       "/etc/xen/xl.conf (output_format=\"json\", xl's default)")
    try:
        records = json.loads(text) if text.strip() else []
        named = {r["config"]["c_info"]["name"]: r for r in records}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise XenError(f"cannot understand the output of 'xl list -l' ({type(exc).__name__}: {exc})") \
            from None
    if not all(isinstance(name, str) and isinstance(record, dict) for name, record in named.items()):
        raise XenError("cannot understand the output of 'xl list -l': a domain without a name")
    for name, record in named.items():
        disks = record["config"].get("disks", [])
        if not isinstance(disks, list) or not all(
                isinstance(d, dict) and all(isinstance(d.get(key, ""), str) for key in ("pdev_path", "vdev"))
                for d in disks):
            raise XenError(f"cannot understand the output of 'xl list -l': the disks of domain {name!r} are "
                           "not in libxl's form (a list of objects with the text fields pdev_path and vdev)")
    return named


def disk_paths(record: dict) -> tuple[str, ...]:
    return tuple(d["pdev_path"] for d in record.get("config", {}).get("disks", []) if d.get("pdev_path"))


@dataclass(frozen=True)
class XlView:
    """The domains as one `xl list` (name -> (domid, paused)) and one `xl list -l` showed them."""

    states: dict[str, tuple[int, bool]]
    records: dict[str, dict]


@dataclass
class Window:
    """What one pause window measured; ms is set when it closes (None: nothing was paused)."""

    ms: float | None = None


class Xl:
    """The xl calls xenlvm makes, each with the job's timeout."""

    def __init__(self, runner: Runner, timeout: float) -> None:
        self.runner = runner
        self.timeout = timeout

    @classmethod
    def for_job(cls, runner: Runner, job: Job) -> Xl:
        """The job's xl: its xen.timeout, or the default for a job with VM disks and no xen."""
        return cls(runner, job.xen.timeout if job.xen is not None else XL_TIMEOUT)

    def states(self) -> dict[str, tuple[int, bool]]:
        return parse_xl_list(self.runner.query(["xl", "list"], timeout=self.timeout).stdout)

    def records(self) -> dict[str, dict]:
        return parse_xl_list_long(self.runner.query(["xl", "list", "-l"], timeout=self.timeout).stdout)

    def view(self) -> XlView:
        return XlView(self.states(), self.records())

    def control(self, verb: str, names: Sequence[str]) -> dict[str, XenlvmError]:
        """Run `xl pause|unpause NAME` for all names at once; return the failures by name.
        xl exits 0 even when libxl fails, so an error on stderr counts as a failure too."""
        outcomes = self.runner.change_all([["xl", verb, name] for name in names], timeout=self.timeout)
        failures: dict[str, XenlvmError] = {}
        for name, outcome in zip(names, outcomes):
            if isinstance(outcome, CommandFailed):
                failures[name] = outcome
            elif outcome is not None and "error" in outcome.stderr.lower():
                failures[name] = XenError(f"xl {verb} {name} reported: {outcome.stderr.strip()}")
        return failures


def select_domains(job: Job, xl: XlView, origin_mountpoints: Sequence[str],
                   disk_domains: Sequence[str] = ()) -> list[Domain]:
    """The running domains the job quiesces (auto: those with a disk below origin_mountpoints,
    or of disk_domains, which own the job's VM disks). Configured ones that are missing or not
    running are reported, and fail pre when the job says so."""
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
            if job.vmdisks is not None and job.vmdisks.excludes(name) and shares:
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
def paused(xl: Xl, domains: Sequence[Domain], record: PauseRecord) -> Iterator[Window]:
    """Pause the running domains for the body of the with-block and resume them in every case:
    an exception, a timeout, SIGTERM or SIGINT. Domains that were already paused are left as
    they are (and not resumed afterwards: we leave the host as we found it). Yields the Window,
    which holds how long it lasted once the block is left."""
    to_pause = [d.name for d in domains if not d.paused]
    for domain in domains:
        if domain.paused:
            log.warning("domain %s was already paused; it stays paused", domain.name)
    window = Window()
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
