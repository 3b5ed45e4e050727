"""Mounts: read the kernel's mount table, mount the snapshot read-only, unmount it patiently.

A mount is proven to be the snapshot's by the device numbers in /proc/self/mountinfo, which
must equal the snapshot LV's kernel major:minor: a path or a device name can lie, those cannot.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

from xenlvm.errors import CommandFailed, MountError
from xenlvm.host.lvm import LogicalVolume
from xenlvm.host.retry import Backoff
from xenlvm.host.runner import Runner

log = logging.getLogger("xenlvm")

MOUNTINFO = "/proc/self/mountinfo"
SNAPSHOT_OPTIONS = ("ro", "nodev", "nosuid", "noexec")
_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo."""

    major: int
    minor: int
    mountpoint: str
    options: tuple[str, ...]
    fstype: str
    source: str
    root: str = "/"  # the directory of the source filesystem mounted here (a bind mount's source)

    def is_device(self, lv: LogicalVolume) -> bool:
        return (self.major, self.minor) == (lv.major, lv.minor)


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Given the text of /proc/self/mountinfo, return its entries in order (later ones on top)."""
    entries = []
    for line in text.splitlines():
        fields = line.split(" ")
        if "-" not in fields or len(fields) < 10:
            continue
        sep = fields.index("-")
        major, minor = fields[2].split(":")
        entries.append(MountEntry(int(major), int(minor), _unescape(fields[4]),
                                  tuple(fields[5].split(",")), fields[sep + 1], _unescape(fields[sep + 2]),
                                  _unescape(fields[3])))
    return entries


def read_mounts() -> list[MountEntry]:
    with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as handle:
        return parse_mountinfo(handle.read())


def device_numbers(path: str) -> tuple[int, int] | None:
    """(major, minor) of the block device at path, or None when it is missing or not one."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (os.major(info.st_rdev), os.minor(info.st_rdev)) if stat.S_ISBLK(info.st_mode) else None


def shows_device(entry: MountEntry | None, path: str) -> bool:
    """True when the mount entry is of the block device at path (by device number)."""
    return entry is not None and (entry.major, entry.minor) == device_numbers(path)


def mounted_at(path: str, mounts: list[MountEntry]) -> MountEntry | None:
    """The mount visible at exactly path (the last one mounted there), or None."""
    return next((e for e in reversed(mounts) if e.mountpoint == path), None)


def mounts_of(lv: LogicalVolume, mounts: list[MountEntry]) -> list[MountEntry]:
    return [e for e in mounts if lv.major is not None and e.is_device(lv)]


def filesystem_type(runner: Runner, lv: LogicalVolume, mounts: list[MountEntry]) -> str:
    """The filesystem on lv: from the mount table if it is mounted, else from blkid."""
    for entry in mounts_of(lv, mounts):
        return entry.fstype
    result = runner.query(["blkid", "--probe", "--match-tag", "TYPE", "--output", "value", lv.dm_path],
                          ok_codes=(0, 2))
    fstype = result.stdout.strip()
    if not fstype:
        raise MountError(f"no filesystem found on {lv} ({lv.dm_path}): xenlvm backs up a volume that "
                         "holds a filesystem with the VM folders")
    return fstype


def mount_options(fstype: str, *, guest: bool = False) -> str:
    """The options of a snapshot's read-only mount; guest: a filesystem a VM's root wrote,
    whose every byte is untrusted."""
    options = list(SNAPSHOT_OPTIONS)
    if guest and fstype in ("ext2", "ext3", "ext4"):
        # ext takes its reaction to an error from the superblock, which a guest's root may
        # set to "panic" (tune2fs -e panic): it would panic dom0 even on a read-only mount.
        # The mount option wins over the superblock.
        options.append("errors=continue")
    if fstype == "xfs":
        # The snapshot carries the origin's XFS UUID; XFS refuses a second mount without this.
        options.append("nouuid")
    return ",".join(options)


def mount_snapshot(runner: Runner, device: str, fstype: str, mountpoint: str, *, guest: bool = False) -> None:
    try:
        runner.change(["mount", "-t", fstype, "-o", mount_options(fstype, guest=guest), device, mountpoint])
    except CommandFailed as exc:
        raise MountError(f"could not mount the snapshot {device} at {mountpoint}: "
                         f"{exc.stderr or exc}. See 'dmesg' for the kernel's reason.") from None


def holders(path: str, proc: str = "/proc") -> list[str]:
    """Describe the processes that keep path busy (cwd, root, open files or mapped files)."""
    path = path.rstrip("/") or "/"
    prefix = path.rstrip("/") + "/"
    found = []
    for pid in filter(str.isdigit, os.listdir(proc)):
        base = os.path.join(proc, pid)
        try:
            links = [os.readlink(os.path.join(base, name)) for name in ("cwd", "root")]
            fd_dir = os.path.join(base, "fd")
            for fd in os.listdir(fd_dir):
                try:
                    links.append(os.readlink(os.path.join(fd_dir, fd)))
                except OSError:
                    continue
            with open(os.path.join(base, "comm"), encoding="utf-8", errors="replace") as handle:
                comm = handle.read().strip()
        except OSError:
            continue  # the process ended or is not ours to see
        if any(link == path or link.startswith(prefix) for link in links):
            found.append(f"{comm}[{pid}]")
    return found


# Unwinding a failed pre (or sweeping an earlier run's leftovers) must not wait as long as post
# does for a busy mount.
UNDO_UNMOUNT_TIMEOUT = 30.0


def unmount_if(runner: Runner, mountpoint: str, is_ours: Callable[[MountEntry | None], bool],
               timeout: float = UNDO_UNMOUNT_TIMEOUT) -> None:
    """Unmount mountpoint when what the kernel shows there is ours (is_ours says); else leave it."""
    if is_ours(mounted_at(mountpoint, read_mounts())):
        unmount_with_retry(runner, mountpoint, timeout)


def unmount_with_retry(runner: Runner, mountpoint: str, timeout: float) -> None:
    """Unmount mountpoint; while it is busy, name who holds it and retry with backoff until timeout."""
    backoff = Backoff(timeout, first=0.5, most=10.0, clock=time)
    while True:
        try:
            runner.change(["umount", mountpoint])
            return
        except CommandFailed as exc:
            busy = "busy" in exc.stderr
            remaining = backoff.remaining()
            if not busy:
                raise MountError(f"could not unmount {mountpoint}: {exc.stderr or exc}") from None
            who = ", ".join(holders(mountpoint)) or "no process found (a kernel user, e.g. a bind mount?)"
            if remaining <= 0:
                raise MountError(f"{mountpoint} is still busy after {timeout:g} s, held by: {who}. "
                                 "Stop those processes, then run 'xenlvm post' again "
                                 "(or raise unmount_timeout).") from None
            log.warning("%s is busy (held by %s); retrying in %.1f s", mountpoint, who, backoff.delay)
            backoff.wait(within_deadline=True)
