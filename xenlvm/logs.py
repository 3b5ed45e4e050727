"""Where xenlvm's messages go: a short summary on the console (sesam keeps hook output in its
logs), everything including each command to syslog and to the log file.

Console: info on stdout, warnings and errors on stderr; the per-command lines only with
--verbose. Syslog (when /dev/log exists) and the log file get every line with the job name.
"""

from __future__ import annotations

import contextvars
import errno
import logging
import os
import stat
import sys

_job: contextvars.ContextVar[str] = contextvars.ContextVar("xenlvm_job", default="")
_PREFIX_FORMAT = "%(jobprefix)s%(message)s"
_LOG_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


class _JobFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        job = _job.get()
        record.jobprefix = f"job {job}: " if job else ""
        return True


class _ConsoleFilter(logging.Filter):
    def __init__(self, verbose: bool, errors: bool) -> None:
        super().__init__()
        self.verbose = verbose
        self.errors = errors

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.levelno >= logging.WARNING) != self.errors:
            return False
        is_command = record.name.startswith("xenlvm.command")
        return self.verbose or not is_command or record.levelno >= logging.WARNING


def set_job(name: str) -> None:
    """Name the job that the following messages are about."""
    _job.set(name)


def setup(*, verbose: bool = False, debug: bool = False, syslog: bool = True) -> None:
    """Console and syslog handlers; call once per process, before the configuration is read."""
    logging.raiseExceptions = False  # a broken syslog must never break a backup
    logger = logging.getLogger("xenlvm")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    job_filter = _JobFilter()
    for stream, errors in ((sys.stdout, False), (sys.stderr, True)):
        console = logging.StreamHandler(stream)
        console.setLevel(logging.DEBUG if debug else logging.INFO)
        console.addFilter(job_filter)
        console.addFilter(_ConsoleFilter(verbose or debug, errors))
        console.setFormatter(logging.Formatter("xenlvm: %(levelname_short)s" + _PREFIX_FORMAT))
        console.addFilter(_short_level)
        logger.addHandler(console)
    if syslog and os.path.exists("/dev/log"):
        from logging.handlers import SysLogHandler  # and socket, pickle: only with a syslog to write to

        try:
            handler = SysLogHandler("/dev/log", SysLogHandler.LOG_DAEMON)
        except OSError:
            return
        handler.setLevel(logging.INFO)
        handler.addFilter(job_filter)
        handler.setFormatter(logging.Formatter(f"xenlvm[{os.getpid()}]: {_PREFIX_FORMAT}"))
        logger.addHandler(handler)


def _short_level(record: logging.LogRecord) -> bool:
    record.levelname_short = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
    return True


def add_log_file(path: str, level: int = logging.DEBUG) -> None:
    """Also write every message from level up, with time and pid, to path (created 0640 if
    missing). Only a regular file of xenlvm's own user, opened without following a symlink: a
    link or FIFO a local user planted at path must not make root write elsewhere, or hang."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        fd = os.open(path, _LOG_FLAGS, 0o640)
    except OSError as exc:
        link = exc.errno == errno.ELOOP
        _no_log_file(path, "a symbolic link: remove it" if link else exc.strerror or str(exc))
        return
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        _no_log_file(path, "not a regular file owned by xenlvm's user: remove it, xenlvm creates it anew")
        return
    stream = open(fd, "a", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115 (the handler's)
    handler = logging.StreamHandler(stream)
    handler.setLevel(level)
    handler.addFilter(_JobFilter())
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s xenlvm[{os.getpid()}] %(levelname)s {_PREFIX_FORMAT}"))
    logging.getLogger("xenlvm").addHandler(handler)


def _no_log_file(path: str, why: str) -> None:
    logging.getLogger("xenlvm").warning("cannot write the log file %s (%s); logging to syslog and the "
                                        "console only", path, why)
