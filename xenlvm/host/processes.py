"""Processes as /proc and pid files show them (their command line, start time, the devices
they hold), and ending one only once it is proven: the one implementation behind the watchdog,
the guards, the image server and the pool guard's drop.

A pid file names a process xenlvm started; by the time it is read, that process may be gone
and its pid reused. So a process is only signalled through a pidfd opened before the proof
(its command line, its start time), which pins exactly the process that was checked.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from collections.abc import Callable

from xenlvm.host.fsutil import read_small

log = logging.getLogger("xenlvm")

# Pid 0 is no process (kill(0) signals the caller's whole group) and pid 1 is init: a pid file
# of a process xenlvm started names neither.
SMALLEST_PID = 2


def read_pid(path: str) -> int | None:
    """The pid a pid file names; None when there is no file or it names no possible process."""
    text = (read_small(path, 64) or "").strip()
    return int(text) if text.isdigit() and int(text) >= SMALLEST_PID else None


def command_line(pid: int) -> list[str]:
    """pid's arguments (/proc/<pid>/cmdline); [] when it is gone (or a zombie, which has none)."""
    text = read_small(f"/proc/{pid}/cmdline")
    return text.removesuffix("\0").split("\0") if text else []


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat from its 3rd field (the state) on: the command name before, in
    parentheses, may hold spaces and parentheses itself. [] when it is gone."""
    stat = read_small(f"/proc/{pid}/stat")
    return stat.rpartition(")")[2].split() if stat else []


def has_exited(pid: int) -> bool:
    """Gone, or a zombie waiting for its parent to collect its exit status."""
    return _stat_fields(pid)[:1] in ([], ["Z"])


def start_time(pid: int) -> int | None:
    """When pid started, in clock ticks since boot (/proc/<pid>/stat field 22); None when it is
    gone or a zombie."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields[0] != "Z" else None
    except (IndexError, ValueError):
        return None


def readers_of(major: int, minor: int, proc: str = "/proc") -> list[int]:
    """The processes with the device major:minor open, or a file on it (open, cwd or root)."""
    device = os.makedev(major, minor)
    found = []
    for pid in filter(str.isdigit, os.listdir(proc)):
        if int(pid) in (1, os.getpid()):
            continue
        base = os.path.join(proc, pid)
        try:
            paths = [os.path.join(base, "cwd"), os.path.join(base, "root")]
            paths += [os.path.join(base, "fd", fd) for fd in os.listdir(os.path.join(base, "fd"))]
        except OSError:
            continue
        for path in paths:
            try:
                info = os.stat(path)
            except OSError:
                continue
            if info.st_dev == device or info.st_rdev == device:
                found.append(int(pid))
                break
    return found


def command_name(pid: int) -> str | None:
    """pid's command name (/proc/<pid>/comm); None when it is gone."""
    text = read_small(f"/proc/{pid}/comm")
    return text.strip() if text is not None else None


def terminate_proven(pid: int, is_ours: Callable[[int], bool], what: str, timeout: float) -> bool:
    """SIGTERM the process at pid when is_ours proves it is what (e.g. the job's watchdog), and
    wait for it to exit; SIGKILL it after timeout. Return True if it was ours and was signalled.

    A pidfd pins the process that was checked, so a pid recycled between the check and the
    signal cannot be hit; kernels older than 5.3 fall back to a plain kill."""
    if pid < SMALLEST_PID:
        return False
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (OSError, AttributeError):
        pidfd = None
    try:
        if has_exited(pid):
            return False
        if not is_ours(pid):
            log.warning("the pid file of %s names pid %d, which is not it (the pid was reused); "
                        "it is left alone", what, pid)
            return False
        _signal(pid, pidfd, signal.SIGTERM)
        if not _wait_exit(pid, pidfd, timeout):
            log.warning("%s (pid %d) did not stop within %g s of SIGTERM; killing it", what, pid, timeout)
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
    while not has_exited(pid):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if pidfd is not None:
            select.select([pidfd], [], [], min(remaining, 1.0))  # readable once the process has exited
        else:
            time.sleep(min(remaining, 0.05))
    return True
