"""One run per job at a time: an flock on /run/xenlvm/<job>.lock.

The kernel drops an flock when its holder dies, so a crashed run never leaves a stale lock.
The lock file itself is kept: removing it would let two runs lock two different files.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from types import TracebackType

from xenlvm.errors import LockTimeout, SafetyRefusal, XenlvmError
from xenlvm.host.fsutil import trust_problem
from xenlvm.host.retry import Backoff

log = logging.getLogger("xenlvm")


class JobLock:
    def __init__(self, lock_dir: str, job: str, timeout: float) -> None:
        self.path = os.path.join(lock_dir, f"{job}.lock")
        self.job = job
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> JobLock:
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise XenlvmError(f"cannot open the lock file {self.path}: {exc.strerror}") from None
        # It also holds the records of paused domains, the watchdog's and the image server's:
        # nobody but root may plant or change anything there.
        problem = trust_problem(directory)
        if problem is not None:
            raise SafetyRefusal(f"settings.lock_dir {directory} must be root's alone: {problem}")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise XenlvmError(f"cannot open the lock file {self.path}: {exc.strerror}") from None
        backoff = Backoff(self.timeout, first=0.2, factor=1.0, clock=time)
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if backoff.expired():
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise LockTimeout(f"job {self.job!r} is busy: another xenlvm run ({holder}) has "
                                      f"held {self.path} for more than {self.timeout:g} s. Wait for it "
                                      "to finish, or check it with 'ps'.") from None
                if not waited:
                    log.warning("job %s is locked by another run (%s); waiting up to %g s",
                                self.job, _read_holder(fd), self.timeout)
                    waited = True
                backoff.wait()
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid else "unknown pid"
