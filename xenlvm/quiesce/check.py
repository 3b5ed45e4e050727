"""``xenlvm check`` for xen.quiesce: the freeze and thaw commands are safe to run as root (they
exist, are executable, owned by root and writable by root only), no guest is left frozen by a
killed run, and, with ``--quiesce``, a real freeze and thaw of each domain, timed."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Sequence

from xenlvm.config.load import permission_problem
from xenlvm.config.model import Config, Job, QuiesceSettings
from xenlvm.core.preflight import Finding
from xenlvm.errors import XenlvmError
from xenlvm.host.lock import JobLock
from xenlvm.host.runner import Runner
from xenlvm.quiesce import freeze as quiesce
from xenlvm.quiesce import guard as quiesce_guard

CHECK = "quiesce"


def programs(settings: QuiesceSettings) -> list[str]:
    """Every program the job's freeze and thaw commands run, once each, in order."""
    argvs = [settings.freeze, settings.thaw, *(a for c in settings.per_domain for a in (c.freeze, c.thaw))]
    return list(dict.fromkeys(argv[0] for argv in argvs if argv))


def program_problem(path: str) -> str | None:
    """Why root must not run the program at path, or None."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if not stat.S_ISREG(info.st_mode) or not info.st_mode & 0o111:
        return f"{path} is not an executable file"
    return permission_problem(path, info, fix_mode="755")


def check_commands(job: Job) -> list[Finding]:
    """The job's freeze and thaw programs, each safe to run as root."""
    if job.xen is None or job.xen.quiesce is None:
        return []
    paths = programs(job.xen.quiesce)
    problems = [p for p in map(program_problem, paths) if p]
    if problems:
        return [Finding("fail", CHECK, problem) for problem in problems]
    return [Finding("ok", CHECK, f"freeze and thaw commands: {', '.join(paths)} exist, are owned by root "
                    "and writable only by root")]


def check_leftover(config: Config, job: Job) -> list[Finding]:
    """A record of guests a killed run may have left frozen."""
    try:
        left = quiesce.FreezeRecord(config.settings.lock_dir, job.name).read()
    except XenlvmError as exc:
        return [Finding("fail", CHECK, str(exc))]
    if left is None:
        return []
    return [Finding("fail", CHECK, f"a killed run may have left {', '.join(left.domains)} FROZEN: run "
                    "'xenlvm cleanup' (it thaws them)")]


def try_freeze(config: Config, runner: Runner, job: Job, domains: Sequence[str]) -> list[Finding]:
    """Freeze and thaw each domain once, as pre would (with the record and the guard), and say
    how long each took."""
    run = f"check-{os.getpid()}"
    quiescer = quiesce.for_job(runner, job, config.settings.lock_dir, run)
    if quiescer is None:
        return []
    findings = []
    with JobLock(config.settings.lock_dir, job.name, config.settings.lock_timeout):
        try:  # before the guard starts: it would stop the guard of the run that left them frozen
            quiescer.refuse_foreign_record()
        except XenlvmError as exc:
            return [Finding("fail", CHECK, f"no freeze tried: {exc}")]
        with quiesce_guard.guarding(config, job.name, run, quiescer):
            findings += _try_all(quiescer, domains)
    return findings


def _try_all(quiescer: quiesce.Quiescer, domains: Sequence[str]) -> list[Finding]:
    findings = []
    for name in domains:
        if quiescer.settings.commands(name) is None:
            findings.append(Finding("warn", CHECK, f"{name}: no freeze command: crash-consistent only"))
            continue
        findings.append(_try_one(quiescer, name))
    return findings


def _try_one(quiescer: quiesce.Quiescer, name: str) -> Finding:
    started = time.monotonic()
    try:
        with quiescer.frozen([name]) as consistent:
            frozen_at = time.monotonic()
    except XenlvmError as exc:
        return Finding("fail", CHECK, f"{name}: {exc}")
    thawed = time.monotonic() - frozen_at
    if not consistent[name]:
        return Finding("fail", CHECK, f"{name}: the freeze failed (see above); its snapshots would be "
                       f"crash-consistent only. The thaw took {thawed:.1f} s")
    return Finding("ok", CHECK, f"{name}: froze in {frozen_at - started:.1f} s, thawed in {thawed:.1f} s")
