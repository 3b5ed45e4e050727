"""Small file-system helpers that several modules need with the same guarantees."""

from __future__ import annotations

import errno
import os
import stat


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


def trust_problem(path: str) -> str | None:
    """Why root must not rely on path (a program it runs, a directory it writes into), or None.

    Like sshd's StrictModes, for the whole path: path and every directory above it must be
    owned by root (or by the user running xenlvm, which is root wherever it matters) and
    writable by nobody else, so that nobody else can change it or put something else in its
    place. A directory above may be writable by others if it has the sticky bit (like /tmp):
    nobody else can rename or remove what root owns there. Symbolic links are followed: both
    the path as given and where it leads are checked."""
    owners = {0, os.geteuid()}
    for candidate in dict.fromkeys((os.path.abspath(path), os.path.realpath(path))):
        each = candidate
        while True:
            try:
                info = os.lstat(each)
            except OSError as exc:
                return f"cannot check {each}: {exc.strerror}"
            if not stat.S_ISLNK(info.st_mode):  # a link: its directory decides, realpath its target
                problem = _owner_problem(each, info, owners, above=each != candidate)
                if problem:
                    return problem
            if each == "/":
                break
            each = os.path.dirname(each)
    return None


def _owner_problem(path: str, info: os.stat_result, owners: set[int], *, above: bool) -> str | None:
    if info.st_uid not in owners:
        return (f"{path} is owned by uid {info.st_uid}, not root, so that user could change it or "
                f"what it holds. Fix: chown root:root {path}")
    writable = info.st_mode & 0o022
    sticky_dir = above and stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX
    if writable and not sticky_dir:
        who = "everyone" if writable & 0o002 else "its group"
        return (f"{path} is writable by {who} (mode {stat.S_IMODE(info.st_mode):o}), who could change it "
                f"or put something else in its place. Fix: chmod go-w {path}")
    return None


def closed_to_others(path: str) -> bool:
    """Whether only root (or xenlvm's user) can get to path: some directory from path up to /
    is theirs and lets nobody else through (no x for group and others)."""
    owners = {0, os.geteuid()}
    each = os.path.abspath(path)
    while True:
        try:
            info = os.stat(each)
        except OSError:
            return False
        if info.st_uid in owners and stat.S_ISDIR(info.st_mode) and not info.st_mode & 0o011:
            return True
        if each == "/":
            return False
        each = os.path.dirname(each)
