"""The records of xen.quiesce in the run directory (/run/xenlvm): which domains a run may have
left frozen (<job>.frozen) and the freeze command it had running, the lock that keeps pre's and
the guard's freezes and thaws apart (<job>.thaw.lock), and the guard's note that it acted
(<job>.quiesce-guard.acted). xenlvm.quiesce.freeze uses them; xenlvm.quiesce.guard too."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

from xenlvm.errors import FileError, XenlvmError
from xenlvm.host.fsutil import read_small, remove_if_present, write_atomically
from xenlvm.host.processes import start_time

log = logging.getLogger("xenlvm")


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


def boot_clock() -> float:
    """Seconds since boot, sleep included: the clock of the records (/run goes with a reboot),
    which NTP does not step."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@contextlib.contextmanager
def thaw_lock(record: FreezeRecord, dry_run: bool = False) -> Iterator[None]:
    """The job's freeze/thaw lock (<lock_dir>/<job>.thaw.lock, fcntl): pre's freezes and thaws
    and the guard's thaw never run at the same time. Nothing in a dry run."""
    if dry_run:
        yield
        return
    path = os.path.join(os.path.dirname(record.path), f"{record.job}.thaw.lock")
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


def kill_freeze(left: Frozen) -> None:
    """Kill the process group of the freeze command a killed run left running (it could still
    freeze its guest after the thaw), once its leader's start time proves it is that one."""
    if left.freezing is None:
        return
    pgid, started = left.freezing
    if start_time(pgid) != started:
        return  # gone (or its number reused): nothing of it left to kill
    log.error("the freeze command of an earlier run still runs (process group %d): killing it", pgid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


