"""expose: image-copy, and the image of a disk that expose: files falls back to: the disk's
snapshot copied into a sparse image file in ``<image_dir>/xenlvm-<job>`` (root's alone) and bound,
read-only, into the tree as ``<mountpoint>/<domain>/<disk>.img``."""

from __future__ import annotations

import contextlib
import logging
import os

from xenlvm.config.model import Job
from xenlvm.core.undo import UndoStack
from xenlvm.errors import SafetyRefusal
from xenlvm.host import mount
from xenlvm.host.fsutil import remove_if_present
from xenlvm.host.runner import COPY_TIMEOUT, Runner
from xenlvm.vmdisks.model import VmDisk
from xenlvm.vmdisks.teardown import image_staging, is_image_bind, staging_problem

log = logging.getLogger("xenlvm")


def expose_image(runner: Runner, job: Job, disk: VmDisk, device: str, undo: UndoStack) -> None:
    """Copy the snapshot into a sparse image file in image_dir and bind it, read-only, into
    the tree. The undo of the tree (and post) remove both."""
    spec = disk.spec
    staging = private_staging(job)
    image = os.path.join(staging, f"{disk.domain}.{disk.disk}.img")
    undo.push(f"remove {image}", lambda: remove_if_present(image))
    runner.change(["cp", "--sparse=always", "--", device, image], timeout=COPY_TIMEOUT)
    target = f"{spec.mountpoint}.img"
    bind_read_only(runner, image, target, staging, undo)
    log.info("%s/%s: image of %s at %s (%d MiB on disk)", disk.domain, disk.disk, spec.snapshot_volume,
             target, os.stat(image).st_blocks * 512 >> 20)


def bind_read_only(runner: Runner, image: str, target: str, staging: str, undo: UndoStack) -> None:
    """Bind image (a file in the staging folder) read-only at target, a new file in the tree."""
    with open(target, "x"):
        pass
    undo.push(f"unmount {target}", lambda: _unmount_image(runner, target, staging))
    runner.change(["mount", "--bind", image, target])
    runner.change(["mount", "-o", "remount,bind,ro", target])


def no_room(job: Job, target: VmDisk) -> str | None:
    """Why image_dir cannot take the disk's image at its full size (how sparse it will be
    cannot be known before), or None."""
    assert job.vmdisks is not None and job.vmdisks.image_dir is not None
    directory = job.vmdisks.image_dir
    try:
        free = free_bytes(directory)
    except OSError as exc:
        return f"no image of it: image_dir {directory} cannot be used: {exc.strerror}"
    if free < target.origin.size:
        return (f"no image of it: image_dir {directory} has {free >> 20} MiB free, its image may "
                f"need {target.origin.size >> 20} MiB")
    return None


def free_bytes(directory: str) -> int:
    """The room left for root's copies in directory."""
    info = os.statvfs(directory)
    return info.f_bavail * info.f_frsize


def private_staging(job: Job) -> str:
    """<image_dir>/xenlvm-<job>, root's alone (mode 700): made here, or left by a killed run and
    proven to be such a directory. Anything else there (a symbolic link or a folder of somebody
    else's, through which cp would write a VM's disk as root, or let them read it) is refused."""
    staging = image_staging(job)
    with contextlib.suppress(FileExistsError):  # a killed run's: proven like a new one
        os.mkdir(staging, 0o700)
    problem = staging_problem(os.lstat(staging))
    if problem is not None:
        raise SafetyRefusal(f"{staging} is not xenlvm's private image folder: {problem}. Somebody else "
                            "may have made it: check what it is and remove it, then run pre again")
    return staging


def _unmount_image(runner: Runner, target: str, staging: str) -> None:
    mount.unmount_if(runner, target, lambda entry: entry is not None and is_image_bind(entry, staging))
