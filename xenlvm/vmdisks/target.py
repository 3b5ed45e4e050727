"""A VM disk on a logical volume of its own (a job's vmdisks: section), found through xl at
each pre: its snapshot is exposed below the job's mountpoint as files or as an image
(xenlvm.vmdisks.expose), and carries the VM-disk tag beside xenlvm's others
(xenlvm.core.ownership)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from xenlvm.config.model import AUTO, Job, SnapshotSpec, Volume
from xenlvm.core import ownership
from xenlvm.core.context import Context
from xenlvm.core.undo import UndoStack
from xenlvm.errors import CleanupFailed, PreflightFailed, XenlvmError
from xenlvm.host import mount
from xenlvm.host.fsutil import remove_if_present, trust_problem
from xenlvm.host.lvm import LogicalVolume, VolumeGroup
from xenlvm.host.runner import which
from xenlvm.host.xl import XlView
from xenlvm.targets.base import Target
from xenlvm.vmdisks import expose as vmdisks
from xenlvm.vmdisks import image_copy as vmdisk_copy
from xenlvm.vmdisks import image_server
from xenlvm.vmdisks.expose import SAFE_NAME
from xenlvm.vmdisks.model import Exposure, VmDisk

log = logging.getLogger("xenlvm")



class VmDiskTarget(VmDisk, Target):
    """A VM disk as pre plans it: its record (xenlvm.vmdisks.model), which the modules below
    take, and the target's steps."""

    vm_disk = True

    def kept_as_base(self) -> bool:
        """A chained disk's snapshot becomes its base (xenlvm.increments.bases)."""
        return self.how is Exposure.CHAIN

    def domain_of(self) -> str | None:
        return self.domain

    def expose(self, ctx: Context, job: Job, undo: UndoStack) -> None:
        can_serve = which(image_server.PROGRAM, ctx.config.settings.path) is not None
        vmdisks.expose(ctx.runner, job, self, undo, can_serve=can_serve)


def unmatched_excludes(job: Job, xl: XlView) -> list[str]:
    """The items of vmdisks.exclude that name no domain xl knows (a typo leaves the domain in)."""
    known = set(xl.records) | set(xl.states)
    return [item for item in (job.vmdisks.exclude if job.vmdisks else ()) if item.split("/")[0] not in known]


def discover(job: Job, xl: XlView, vgs: dict[str, VolumeGroup]) -> list[VmDiskTarget]:
    """The job's VM disks that are logical volumes, as targets, from `xl list -l`. What cannot
    be backed up this way is reported, and fails pre when vmdisks.missing says so."""
    settings = job.vmdisks
    assert settings is not None
    states, records = xl.states, xl.records
    problems: list[str] = []
    if settings.domains is AUTO:
        names = [n for n in records if n != "Domain-0" and n in states and not settings.excludes(n)]
    else:
        names = [n for n in settings.domains if n in states and n in records]
        problems += [f"domain {n!r} does not exist or is not running" for n in settings.domains
                     if n not in names]
    by_device = {(lv.major, lv.minor): lv for vg in vgs.values() for lv in vg.lvs.values()
                 if lv.major is not None and lv.minor is not None}
    specs: list[VmDiskTarget] = []
    taken: set[tuple[str, str]] = set()
    for name in names:
        if not SAFE_NAME.fullmatch(name):
            problems.append(f"domain {name!r}: its name cannot be used as a directory name")
            continue
        for disk in records[name].get("config", {}).get("disks", []):
            target = _disk_target(job, name, disk, by_device, problems)
            if target is None:
                continue
            if (target.origin.vg, target.origin.name) in taken:
                log.warning("%s is a disk of more than one domain; it is backed up once", target)
                continue
            taken.add((target.origin.vg, target.origin.name))
            specs.append(target)
    if problems:
        message = "; ".join(problems)
        if settings.missing == "fail":
            raise PreflightFailed(f"{message} (vmdisks.missing is 'fail'). Nothing was changed.")
        log.warning("%s; going on without (set vmdisks.missing: fail to stop instead)", message)
    log.info("VM disks of job %s: %s", job.name,
             ", ".join(f"{t.domain}/{t.disk} ({t})" for t in specs) or "none found")
    return specs


def _disk_target(job: Job, domain: str, disk: dict, by_device: dict[tuple[int, int], LogicalVolume],
                 problems: list[str]) -> VmDiskTarget | None:
    """Given one disk of `xl list -l`, return its target, or None (reported) if it is not a
    logical volume xenlvm can snapshot."""
    settings = job.vmdisks
    assert settings is not None
    if disk.get("is_cdrom"):
        return None
    path, vdev = str(disk.get("pdev_path") or ""), str(disk.get("vdev") or "")
    if settings.excludes(domain, vdev):
        log.info("disk %s of domain %s is excluded (vmdisks.exclude): not backed up", vdev, domain)
        return None
    where = f"disk {vdev or '?'} of domain {domain} ({path or 'no path'})"
    if not SAFE_NAME.fullmatch(vdev) or not path.startswith("/"):
        problems.append(f"{where}: not a disk xenlvm understands")
        return None
    numbers = mount.device_numbers(path)
    lv = by_device.get(numbers) if numbers is not None else None
    if lv is None:
        problems.append(f"{where}: not a logical volume (back up file disks with 'volume:' instead)")
        return None
    if lv.is_snapshot and not lv.is_thin:
        problems.append(f"{where}: {lv} is itself a classic snapshot, which LVM cannot snapshot")
        return None
    spec = SnapshotSpec(Volume(lv.vg, lv.name), ownership.vm_disk_snapshot_name(lv.name),
                        os.path.join(job.mountpoint, domain, vdev), None if lv.is_thin else settings.size)
    how = Exposure(settings.expose)
    if settings.incremental == "thin" and lv.is_thin:
        how = Exposure.CHAIN
    elif settings.incremental == "thin":
        log.warning("%s: not a thin LV, so no increments (thin_delta reads thin pools only): its whole "
                    "image %s.img every run", where, vdev)
    return VmDiskTarget(spec, lv, domain, vdev, how)


def check_image_room(job: Job, specs: Sequence[VmDiskTarget]) -> str | None:
    """When image_dir is set, a problem with it (missing, or others may write there); with
    expose: image-copy also without room for every disk at its full size (sparse images often
    take less, but that cannot be known before); or None. (expose: files copies a fallback disk
    there only after vmdisks.image_room says it fits.)"""
    settings = job.vmdisks
    if settings is None or settings.image_dir is None:
        return None
    directory = settings.image_dir
    if os.path.islink(directory) or not os.path.isdir(directory):
        return f"vmdisks.image_dir {directory} must be an existing directory (not a symbolic link)"
    untrusted = trust_problem(directory)
    if untrusted is not None:  # root copies whole VM disks into it
        return (f"vmdisks.image_dir {directory} must be root's alone, where nobody else can plant a "
                f"link for root's copy to write through, or read the disks: {untrusted}. Or choose "
                "another image_dir, e.g. 'mkdir -m 700 /var/lib/xenlvm-images'")
    needed = sum(t.origin.size for t in specs if t.how in (Exposure.IMAGE_COPY, Exposure.CHAIN))
    free = vmdisk_copy.free_bytes(directory)
    if needed > free:
        return (f"vmdisks.image_dir {directory} has {free >> 20} MiB free but the images of "
                f"{len(specs)} disk(s) may need up to {needed >> 20} MiB: make room or choose "
                "another image_dir")
    return None


def serve_images(ctx: Context, job: Job, disks: Sequence[VmDiskTarget], undo: UndoStack) -> None:
    """Start the job's image server (xenlvm.vmdisks.image_server). With expose: image it serves what
    the job backs up, and its failure fails pre. With expose: files it serves only disks that
    fell back to an image: a server that does not start fails those disks alone (their bytes
    are not in the backup; the notes and post say so)."""
    lock_dir = ctx.config.settings.lock_dir
    if job.vmdisks is None or Exposure(job.vmdisks.expose) is Exposure.IMAGE:
        image_server.serve(ctx.runner, lock_dir, job, disks, undo)
        return
    own = UndoStack()
    try:
        image_server.serve(ctx.runner, lock_dir, job, disks, own)
    except (XenlvmError, OSError) as exc:
        failed = own.unwind()
        if failed:
            raise CleanupFailed(f"starting the image server failed ({exc}); undoing it ALSO failed: "
                                f"{'; '.join(failed)}", exc) from exc
        for target in (d for d in disks if d.fallback is Exposure.IMAGE):
            remove_if_present(f"{target.spec.mountpoint}.img", ignore_errors=True)  # its empty placeholder
            target.fallback = None
            problems = target.not_exposed.problems if target.not_exposed else ()
            why = f"no image of it: the image server did not start: {exc}"
            vmdisks.tell_not_exposed(target, [*problems, why])
        return
    undo.adopt(own)
