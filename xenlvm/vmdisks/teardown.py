"""Tearing down what pre exposed of a job's VM disks (post, and pre's sweep before it starts
over): unmount below the job's tree only what is xenlvm's (by device numbers, loop devices,
image binds) and detach the loop devices (release), so that the snapshots can be removed
(by the VM-disk kind, xenlvm.vmdisks.kind, with proof of ownership); then remove the image files and the
tree (finish)."""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterable, Sequence

from xenlvm.config.model import Job
from xenlvm.errors import CommandFailed, MountError
from xenlvm.host import mount
from xenlvm.host.fsutil import is_below
from xenlvm.host.lvm import LogicalVolume, device_path
from xenlvm.host.runner import Runner
from xenlvm.vmdisks.image_server import is_export

log = logging.getLogger("xenlvm")

_SYS_BLOCK = "/sys/block"
# The files xenlvm writes into a job's staging folder: images, and a chain's increments
# (vmdisks.incremental, xenlvm.increments)
IMAGE_SUFFIXES = (".img", ".incr")


def tree_source(job: Job) -> str:
    """The source name of the tmpfs xenlvm mounts at the job's mountpoint."""
    return f"xenlvm-{job.name}"


def is_our_tree(job: Job, entry: mount.MountEntry | None) -> bool:
    """Whether entry (what is mounted at the job's mountpoint) is xenlvm's tmpfs tree."""
    return entry is not None and entry.fstype == "tmpfs" and entry.source == tree_source(job)


def image_staging(job: Job) -> str:
    assert job.vmdisks is not None and job.vmdisks.image_dir is not None
    return os.path.join(job.vmdisks.image_dir, f"xenlvm-{job.name}")


def staging_problem(info: os.stat_result) -> str | None:
    """Why a staging directory (lstat or fstat) is not xenlvm's private one, or None: only a
    real directory of root's (xenlvm's user), that nobody else may enter, is written or emptied."""
    if not stat.S_ISDIR(info.st_mode):
        return "it is not a directory (a symbolic link or a file)"
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        return (f"it is owned by uid {info.st_uid} with mode {stat.S_IMODE(info.st_mode):o}, where "
                "xenlvm makes it root's with mode 700")
    return None


def loops_of(devices: Sequence[tuple[int, int] | None],
             sys_block: str = _SYS_BLOCK) -> dict[str, tuple[int, int]]:
    """The loop devices whose backing device is one of devices: /dev/loopN -> its numbers."""
    wanted = {d for d in devices if d is not None}
    found: dict[str, tuple[int, int]] = {}
    try:
        names = sorted(n for n in os.listdir(sys_block) if n.startswith("loop"))
    except OSError:
        return found
    for name in names:
        try:
            with open(os.path.join(sys_block, name, "loop", "backing_file"), encoding="utf-8",
                      errors="surrogateescape") as handle:
                backing = handle.read().rstrip("\n")
            with open(os.path.join(sys_block, name, "dev"), encoding="ascii") as handle:
                major, minor = handle.read().strip().split(":")
        except (OSError, ValueError):
            continue  # not bound to anything
        if mount.device_numbers(backing) in wanted:
            found[f"/dev/{name}"] = (int(major), int(minor))
    return found


def detach_loops(runner: Runner, devices: Sequence[tuple[int, int] | None]) -> None:
    """Detach the loop devices backed by devices."""
    _detach(runner, loops_of(devices), lazy=False)


def _detach(runner: Runner, loops: Iterable[str], lazy: bool) -> None:
    """Detach loops; lazy: one still held by a reader stays (detach_held)."""
    for loop in loops:
        if lazy:
            detach_held(runner, loop)
        else:
            runner.change(["losetup", "--detach", loop])


def release(runner: Runner, job: Job, snapshots: Sequence[LogicalVolume], timeout: float,
            lazy: bool = False) -> None:
    """Unmount what xenlvm exposed for the job's disk snapshots and detach their loop devices,
    so that the snapshots can be removed; then finish. Raise if something that is not
    xenlvm's is in the way; it is left alone. lazy (the pool guard's drop): each mount is
    detached at once even while read, and a loop device still held stays (see detach_held)."""
    ours = {(s.major, s.minor) for s in snapshots if s.major is not None and s.minor is not None}
    loops = loops_of(list(ours))
    devices = ours | set(loops.values())
    # btrfs shows an anonymous device number in mountinfo: match its source device by name
    sources = set(loops) | {device_path(s.vg, s.name) for s in snapshots}
    staging = image_staging(job) if job.vmdisks is not None and job.vmdisks.image_dir else None
    foreign = []
    mounts = mount.read_mounts()
    # The image server mounts its exports on files of xenlvm's own tmpfs only: a FUSE *.img
    # elsewhere below the mountpoint is somebody else's.
    in_our_tree = is_our_tree(job, mount.mounted_at(job.mountpoint, mounts))
    for entry in reversed(mounts):
        if not is_below(entry.mountpoint, job.mountpoint):
            continue
        if (entry.major, entry.minor) in devices or is_image_bind(entry, staging) or \
                (in_our_tree and is_export(entry)) or (entry.fstype == "btrfs" and entry.source in sources):
            _unmount(runner, entry.mountpoint, timeout, lazy)
        else:
            foreign.append(entry.mountpoint)
    if foreign:
        raise MountError(f"something xenlvm did not mount is mounted below {job.mountpoint} "
                         f"({', '.join(foreign)}); unmount it yourself, then run 'xenlvm post' again")
    _detach(runner, loops, lazy)


def _unmount(runner: Runner, mountpoint: str, timeout: float, lazy: bool) -> None:
    if not lazy:
        mount.unmount_with_retry(runner, mountpoint, timeout)
        return
    try:
        runner.change(["umount", "--lazy", mountpoint])
    except CommandFailed as exc:
        raise MountError(f"could not unmount {mountpoint} lazily: {exc.stderr or exc}") from None


def detach_held(runner: Runner, loop: str) -> None:
    """Detach loop; one still held by a reader is left (the kernel frees it at its last close
    if it took the request; else the drop detaches it again after stopping the readers)."""
    try:
        runner.change(["losetup", "--detach", loop])
    except CommandFailed as exc:
        log.warning("could not detach %s yet: %s", loop, exc.stderr or exc)


def finish(runner: Runner, job: Job, timeout: float) -> None:
    """After the disk snapshots are removed: remove the image files and unmount the tree."""
    if job.vmdisks is not None and job.vmdisks.image_dir and not runner.dry_run:
        _remove_images(image_staging(job))
    unmount_tree(runner, job, timeout)


def _remove_images(staging: str) -> None:
    """Delete the image files xenlvm wrote into its staging directory, then the directory; a
    file it did not write (not a regular *.img or *.incr file) is left, and so is the directory.
    A staging directory that is not xenlvm's private one (see staging_problem) is left alone."""
    try:
        fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("%s was left alone: %s", staging, "it is a symbolic link" if exc.errno == errno.ELOOP
                    else exc.strerror)
        return
    try:
        problem = staging_problem(os.fstat(fd))
        if problem is not None:
            log.warning("%s was left alone: %s, so xenlvm did not make it", staging, problem)
            return
        for entry in list(os.scandir(fd)):
            if entry.name.endswith(IMAGE_SUFFIXES) and entry.is_file(follow_symlinks=False):
                os.unlink(entry.name, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        os.rmdir(staging)
    except OSError as exc:
        log.warning("%s was not removed (%s): it holds files xenlvm did not write", staging, exc.strerror)
        return
    log.info("removed the image files and %s", staging)


def is_image_bind(entry: mount.MountEntry, staging: str | None) -> bool:
    """A bind mount of one of the job's image files: it comes from the staging directory's
    filesystem, and its root (relative to that filesystem) is an image (or increment) file in
    that directory."""
    if staging is None:
        return False
    try:
        device = os.stat(staging).st_dev
    except OSError:
        return False
    return ((entry.major, entry.minor) == (os.major(device), os.minor(device))
            and os.path.dirname(entry.root).endswith("/" + os.path.basename(staging))
            and entry.root.endswith(IMAGE_SUFFIXES))


def unmount_tree(runner: Runner, job: Job, timeout: float) -> None:
    entry = mount.mounted_at(job.mountpoint, mount.read_mounts())
    if entry is None:
        return
    if not is_our_tree(job, entry):
        log.warning("%s has %s mounted on it, which is not xenlvm's tree; left alone",
                    job.mountpoint, entry.source)
        return
    mount.unmount_with_retry(runner, job.mountpoint, timeout)
