"""Supervision of the snapshot watchdog's process: pre starts it (``start``), post stops it
(``stop``). What the process does is in xenlvm.watchdog; this module only starts it detached,
proves that a pid is still the job's watchdog and ends it through a pidfd."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from xenlvm.config.model import Config, WatchdogSettings
from xenlvm.core.monitor import is_monitor
from xenlvm.errors import XenlvmError
from xenlvm.host.fsutil import remove_if_present
from xenlvm.host.processes import read_pid, terminate_proven
from xenlvm.host.runner import quote
from xenlvm.watchdog.watch import MODULE, Files, Summary, Watched, files, read_summary, write_spec

TYPE_CHECKING = False  # xenlvm/__init__.py says why
if TYPE_CHECKING:
    from typing import TypeVar

    S = TypeVar("S")  # a monitor's summary

log = logging.getLogger("xenlvm")

START_TIMEOUT = 30.0  # a Python start on a loaded dom0 can be slow; the monitor announces itself


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
    return spawn(config, MODULE, job_name, paths, "the snapshot watchdog", python=python)


def spawn(config: Config, module: str, job_name: str, paths: Files, what: str, *,
          python: str = sys.executable) -> int:
    """Run ``python -m module --config --job --spec`` detached and return its pid once it has
    written its pid file; if it does not, remove its spec and summary and raise XenlvmError."""
    argv = [python, "-m", module, "--config", config.path, "--job", job_name, "--spec", paths.spec]
    # The monitor imports the same xenlvm as its caller, whatever the caller's sys.path was.
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {"PATH": config.settings.path, "LC_ALL": "C", "LANG": "C", "PYTHONPATH": package_parent}
    log.info("starting %s: %s", what, quote(argv))
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
                remove_if_present(path)
            raise XenlvmError(f"{what} did not start (exit status {status}); see the log "
                              f"file or run it by hand to see why: {quote(argv)}")
        time.sleep(0.05)
    return proc.pid


def stop(config: Config, job_name: str, timeout: float = 10.0) -> Summary | None:
    """Stop the job's watchdog (SIGTERM, SIGKILL after timeout) and return what it saw; None
    when no watchdog ran. A pid file whose pid now belongs to another process is never
    signalled. Removes the watchdog's files; calling it again returns None."""
    return stop_monitor(files(config.settings.lock_dir, job_name), job_name, MODULE, read_summary,
                        lambda said: Summary(problems=[f"the watchdog {said}"]), timeout)


def stop_monitor(paths: Files, job_name: str, module: str, read: Callable[[str], S | None],
                 lost: Callable[[str], S], timeout: float) -> S | None:
    """Stop the job's monitor process of module (proven by its command line) and return its
    summary (read reads it; lost makes one when it had written none); remove its files."""
    pid = read_pid(paths.pid)
    signalled = pid is not None and terminate(pid, job_name, timeout, module)
    summary = read(paths.summary)
    for path in (paths.pid, paths.spec, paths.summary):
        remove_if_present(path)
    if summary is None and signalled:
        summary = lost(f"(pid {pid}) was stopped before it wrote a summary")
    return summary


def is_watchdog(pid: int, job_name: str, module: str = MODULE) -> bool:
    """True when pid is a running watchdog (or another monitor: module) of this job, as its
    command line shows."""
    return is_monitor(pid, module, job_name)


def terminate(pid: int, job_name: str, timeout: float, module: str = MODULE) -> bool:
    """SIGTERM the job's watchdog (or monitor of module) at pid and wait for it to exit; SIGKILL
    it after timeout. Return True if pid was it and was signalled."""
    what = "the snapshot watchdog" if module == MODULE else module
    return terminate_proven(pid, lambda checked: is_watchdog(checked, job_name, module),
                            f"{what} of job {job_name}", timeout)
