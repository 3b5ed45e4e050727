"""Small file-system helpers that several modules need with the same guarantees."""

from __future__ import annotations

import os


def write_atomically(path: str, text: str, *, mode: int = 0o600, dir_mode: int | None = None,
                     tmp: str | None = None, exact_mode: bool = False) -> None:
    """Replace path with text in one step: a reader sees the old file or the new one, never half
    of it, also after a crash (the data is synced before the rename).

    The text is first written to tmp (default: path.<pid>.tmp, so two processes never share it),
    opened with O_NOFOLLOW so a symlink planted there is not followed, and removed again if
    anything fails. dir_mode: create the missing directories with it. exact_mode: set mode
    whatever the umask."""
    if dir_mode is not None:
        os.makedirs(os.path.dirname(path), mode=dir_mode, exist_ok=True)
    tmp = tmp or f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
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

