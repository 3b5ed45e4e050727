"""The errors xenlvm raises, each with a message written for the admin who reads the log.

Every error maps to one process exit code in exactly one place (``exit_code``):
0 success, 1 the operation failed, 2 usage or configuration error, 3 post: the backup is
partial (a VM disk's files were not exposed; everything was cleaned up).
"""

from __future__ import annotations

from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3


class XenlvmError(Exception):
    """Base class: an operation failed; the message says what and what to do."""

    exit_code = EXIT_FAILED


class ConfigError(XenlvmError):
    """The configuration file is missing, unreadable or invalid."""

    exit_code = EXIT_USAGE


class UsageError(XenlvmError):
    """The command line or the sesam arguments do not make sense."""

    exit_code = EXIT_USAGE


class CommandFailed(XenlvmError):
    """An external program exited non-zero, timed out or could not be started."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str, *, timed_out: bool = False,
                 not_found: bool = False, timeout: float | None = None) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        self.timed_out = timed_out
        self.not_found = not_found
        if not_found:
            what = f"could not run {argv[0]}: program not found (install it or check PATH)"
        elif timed_out:
            what = f"{' '.join(argv)} did not finish within {timeout:g} s and was killed"
        else:
            what = f"{' '.join(argv)} failed with exit status {returncode}"
        if self.stderr:
            what += f": {self.stderr}"
        super().__init__(what)


class SafetyRefusal(XenlvmError):
    """xenlvm refuses to touch something it cannot prove it created."""


class PreflightFailed(XenlvmError):
    """A check before any change found the host not ready; nothing was changed."""


class MountError(XenlvmError):
    """Mounting or unmounting the snapshot failed."""


class SnapshotOverflowed(XenlvmError):
    """The classic snapshot filled up and became invalid: the backup read bad data."""


class PartialBackup(XenlvmError):
    """post: all was cleaned up, but pre could not expose some of a VM disk's filesystems as
    files, so the backup lacks them (their bytes may be in a raw image instead)."""

    exit_code = EXIT_PARTIAL


class LockTimeout(XenlvmError):
    """Another xenlvm run holds the job's lock for longer than we are willing to wait."""


class FileError(XenlvmError):
    """A file or directory could not be read or written: a missing permission, a full disk, a
    read-only filesystem. A condition of the host, not a bug in xenlvm."""

    def __init__(self, action: str, exc: OSError, advice: str = "") -> None:
        self.errno = exc.errno
        path = exc.filename if exc.filename is not None else "?"
        also = f" (and {exc.filename2})" if exc.filename2 is not None else ""
        message = f"cannot {action} {path}{also}: {exc.strerror or exc}"
        super().__init__(f"{message}. {advice}" if advice else message)


def host_file_error(exc: OSError) -> FileError:
    """An OSError that reached the top unexplained, as the message an admin can act on."""
    return FileError("use", exc, "Check the path's permissions (xenlvm's commands that change "
                     "something run as root), the free space and whether its filesystem is writable.")


class CleanupFailed(XenlvmError):
    """Undoing a step failed; carries the original error when there was one."""

    def __init__(self, message: str, original: BaseException | None = None) -> None:
        self.original = original
        super().__init__(message)


class IncrementInvalid(XenlvmError):
    """An increment file is not one, or is damaged: refused before anything is written."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}. Restore that file again from the backup.")
