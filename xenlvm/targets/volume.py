"""A volume of the job (volume: in the configuration): its snapshot is mounted read-only at
the job's mountpoint, or at <mountpoint>/<name> when the job has several volumes."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence

from xenlvm.config.model import Job
from xenlvm.core.context import Context
from xenlvm.core.undo import UndoStack
from xenlvm.errors import FileError, MountError
from xenlvm.host import mounts as mounts_mod
from xenlvm.host.lvm import device_path
from xenlvm.host.mounts import MountEntry
from xenlvm.targets.base import Target

log = logging.getLogger("xenlvm")


class VolumeTarget(Target):
    fstype = ""

    def origin_mountpoints(self, mounts: Sequence[MountEntry]) -> list[str]:
        return [e.mountpoint for e in mounts_mod.mounts_of(self.origin, list(mounts))]

    def prepare(self, ctx: Context, mounts: Sequence[MountEntry]) -> None:
        self.fstype = mounts_mod.filesystem_type(ctx.runner, self.origin, list(mounts))

    def expose(self, ctx: Context, job: Job, undo: UndoStack) -> None:
        """Mount the snapshot read-only at its mountpoint and check that the kernel shows it there."""
        spec = self.spec
        device = device_path(spec.origin.vg, spec.snapshot)
        if not os.path.isdir(spec.mountpoint) and not ctx.dry_run:
            try:
                os.mkdir(spec.mountpoint, 0o755)  # <mountpoint>/<name> of a job with several volumes
            except OSError as exc:
                raise FileError("create the mount point", exc,
                                f"Check that {os.path.dirname(spec.mountpoint)} is a directory root can "
                                "write to, on a filesystem that is not full or read-only.") from None
            undo.push(f"remove the directory {spec.mountpoint}", functools.partial(os.rmdir, spec.mountpoint))
        undo.push(f"unmount {spec.mountpoint} if the snapshot is mounted there",
                  functools.partial(_unmount_if_mounted, ctx, spec.mountpoint, device))
        mounts_mod.mount_snapshot(ctx.runner, device, self.fstype, spec.mountpoint)
        if ctx.dry_run:
            return
        _verify_mounted(spec.mountpoint, device)
        kind = "thin snapshot" if spec.size is None else f"snapshot of {spec.size.text}"
        log.info("%s of %s is mounted read-only at %s (%s)", kind, spec.origin, spec.mountpoint, self.fstype)


def _verify_mounted(mountpoint: str, device: str) -> None:
    """mount said yes; make sure the kernel shows exactly our device at the mountpoint."""
    entry = mounts_mod.mounted_at(mountpoint, mounts_mod.read_mounts())
    if entry is None or not mounts_mod.shows_device(entry, device):
        raise MountError(f"after mounting, {mountpoint} does not show the snapshot {device}; "
                         "something else changed the mount table")
    if "ro" not in entry.options:
        raise MountError(f"{mountpoint} is mounted read-write although xenlvm asked for read-only")


def _unmount_if_mounted(ctx: Context, mountpoint: str, device: str) -> None:
    if not ctx.dry_run:
        mounts_mod.unmount_if(ctx.runner, mountpoint, lambda entry: mounts_mod.shows_device(entry, device))
