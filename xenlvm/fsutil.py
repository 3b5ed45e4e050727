"""Small file-system helpers that several modules need with the same guarantees."""

from __future__ import annotations

import errno
import os


def write_atomically(path: str, text: str, *, mode: int = 0o600, dir_mode: int | None = None,
                     tmp: str | None = None, exact_mode: bool = False) -> None:
    """Replace path with text in one step: a reader sees the old file or the new one, never half
    of it, also after a crash (the data is synced before the rename).

    The text is first written to a new file (default: path.<pid>.<random>.tmp, so two processes
    never share it; tmp names it instead, and a stale file of that name is removed first),
    created with O_EXCL: whatever somebody planted at that name (a symlink, a FIFO that would
    hang the open, a file of their own that would become path) is never opened. It is removed
    again if anything fails. dir_mode: create the missing directories with it. exact_mode: set
    mode whatever the umask."""
    if dir_mode is not None:
        os.makedirs(os.path.dirname(path), mode=dir_mode, exist_ok=True)
    if tmp is not None:
        remove_if_present(tmp)
    fd, tmp = _create_new(tmp, path, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if exact_mode:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:  # a full disk or a signal: no half-written file is left beside path
        remove_if_present(tmp, ignore_errors=True)
        raise


def _create_new(tmp: str | None, path: str, mode: int) -> tuple[int, str]:
    """A newly created file (O_EXCL) at tmp, or beside path under a name nobody can guess."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    for _attempt in range(100):
        name = tmp or f"{path}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
        try:
            return os.open(name, flags, mode), name
        except FileExistsError:
            if tmp is not None:
                raise
    raise FileExistsError(errno.EEXIST, "no unused temporary name beside it", path)


def remove_if_present(path: str, *, ignore_errors: bool = False) -> None:
    """Remove the file at path; a file that is not there is no error."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        if not ignore_errors:
            raise


def read_small(path: str, limit: int = 1 << 20) -> str | None:
    """The first limit characters of the file at path (not through a symlink), or None when it
    cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, encoding="utf-8", errors="replace") as handle:
        try:
            return handle.read(limit)
        except OSError:  # e.g. ESRCH: the /proc entry's process ended between open and read
            return None


def is_below(path: str, directory: str, *, or_same: bool = False) -> bool:
    """Whether path lies below directory (or is directory itself, with or_same)."""
    path = os.path.normpath(path)
    if or_same and path == os.path.normpath(directory):
        return True
    return path.startswith(directory.rstrip("/") + "/")

