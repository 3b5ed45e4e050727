"""What the watchdog and the pool guard share as processes: their start (arguments,
SIGTERM, logging, the configuration), their body (summary, pid file, a failure recorded), the
loop of looks, and how a running one is recognised (its command line). Their supervision from pre and post:
xenlvm.watchdog.process."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import time
from collections.abc import Callable, Sequence

from xenlvm import logs
from xenlvm.config.load import load_config
from xenlvm.config.model import Config
from xenlvm.host.fsutil import read_small, write_atomically
from xenlvm.host.processes import command_line, read_pid

TYPE_CHECKING = False  # xenlvm/__init__.py says why
if TYPE_CHECKING:
    from typing import Any, TypeVar

    S = TypeVar("S")  # a monitor's summary

log = logging.getLogger("xenlvm")

# The names that xenlvm ran its monitor processes under before its modules moved into packages
# by layer: a guard started by that version is still recognised, and stopped, by post.
FORMER_NAMES = {"xenlvm.thinpool.guard": "xenlvm.pool_guard", "xenlvm.quiesce.guard": "xenlvm.quiesce_guard"}


def runs_module(args: Sequence[str], module: str, job_name: str) -> bool:
    """True when a process's command line (args) is module's (or its former name's) for job_name."""
    return (module in args or FORMER_NAMES.get(module, module) in args) and \
        any(list(args[i:i + 2]) == ["--job", job_name] for i in range(len(args)))


def is_monitor(pid: int, module: str, job_name: str) -> bool:
    """True when pid runs module (a monitor: the watchdog, a guard) for job_name, as its
    command line shows."""
    return runs_module(command_line(pid), module, job_name)


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


def start_monitor(argv: Sequence[str] | None, module: str, what: str) -> tuple[Any, StopRequest, Config]:
    """A monitor process's start (the watchdog, the pool guard): its arguments (--config --job
    --spec), SIGTERM, logging to syslog and the log file; return them with the configuration.
    Raises XenlvmError when the configuration cannot be read."""
    import argparse  # here: the hooks import this module, and never need argparse

    parser = argparse.ArgumentParser(prog=f"python -m {module}",
                                     description=f"xenlvm's {what}; pre starts it, post stops it")
    for option in ("--config", "--job", "--spec"):
        parser.add_argument(option, required=True)
    args = parser.parse_args(argv)
    stop_request = StopRequest()
    logs.setup(syslog=True)
    logs.set_job(args.job)
    config = load_config(args.config)
    if config.settings.log_file:
        logs.add_log_file(config.settings.log_file, logging.INFO)
    return args, stop_request, config


def serve(monitor: Any, pid_path: str, run: Callable[[], None], what: str, failed: str) -> int:
    """The body of a monitor process (the watchdog, the pool guard): its first summary, then its
    pid file (which tells its starter that it runs); run; an unexpected failure recorded as a
    problem (failed: its sentence), since a monitor that dies silently leaves its snapshots
    unguarded; at the end its last summary, and the pid file goes. Return the exit status."""
    status = 0
    try:
        monitor.write_summary()
        write_atomically(pid_path, f"{os.getpid()}\n", dir_mode=0o700)
        run()
    except Exception as exc:
        log.exception("%s failed: %s", what, exc)
        monitor.problem(f"{failed}: {type(exc).__name__}: {exc}")
        status = 1
    finally:
        monitor.finished = time.time()
        try:
            monitor.write_summary()
        finally:
            if read_pid(pid_path) == os.getpid():
                os.unlink(pid_path)
    return status


def watch_until(stop: StopRequest, look: Callable[[], None], left: Callable[[], bool], interval: float,
                max_lifetime: float) -> str:
    """look every interval; return "done" when nothing is left, "lifetime" after max_lifetime,
    "stopped" on SIGTERM."""
    deadline = time.monotonic() + max_lifetime
    while not stop.requested:
        look()
        if not left():
            return "done"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "lifetime"
        stop.wait(min(interval, remaining))
    return "stopped"


def read_summary_file(path: str, make: Callable[[Any], S], unreadable: Callable[[str], S]) -> S | None:
    """A monitor's summary file, made into its Summary; None when there is none; an unreadable
    one becomes unreadable(why)."""
    text = read_small(path)
    if text is None:
        return None
    try:
        return make(json.loads(text))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return unreadable(f"its summary {path} is unreadable ({exc})")
