"""VM disks on logical volumes of their own: find them through xl, and after their snapshots
exist, expose what a path backup can read; tear all of it down again in post.

Everything is exposed below the job's mountpoint, on a small tmpfs that xenlvm mounts there
(source ``xenlvm-<job>``), so nothing is created on the host's own disk:

    <mountpoint>/<domain>/<disk>/p<N>   each partition with a filesystem (expose: files)
    <mountpoint>/<domain>/<disk>        a disk that holds a filesystem directly (expose: files)
    <mountpoint>/<domain>/<disk>.img    the whole disk as one read-only file: served through FUSE
                                        (expose: image, xenlvm.vmdisks.image_server) or a sparse copy
                                        (expose: image-copy); with expose: files, also a
                                        disk not all of which could be exposed as files
    <mountpoint>/<domain>/<disk>.NOT-EXPOSED.txt   what of it was not, and why (xenlvm.vmdisks.unexposed)

A guest's partitions never become block devices on the host unless xenlvm mounts them: the
partition table is read with partx and each partition probed with blkid at its offset, and only
a filesystem xenlvm mounts gets a loop device (over the snapshot, at that offset). So a guest's
swap or LVM physical volume is never seen by the host's LVM or udev. The loop devices are
writable so that a journal can be replayed on mount: those writes land in the snapshot's
copy-on-write area, never on the VM's disk.

Ownership, proven before anything is undone: the snapshots carry xenlvm's tags for a VM disk
and xenlvm's name for it (xenlvm.core.ownership.vm_disk_snapshots); a loop device is ours when
its backing device is one of them; a mount below the mountpoint is ours when its device is such
a loop device or snapshot, or it is a bind of an image file from ``<image_dir>/xenlvm-<job>``;
the tmpfs when its source is ours.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from xenlvm.config.model import Job
from xenlvm.core.undo import UndoStack
from xenlvm.errors import CleanupFailed, CommandFailed, MountError, XenlvmError
from xenlvm.host import mount
from xenlvm.host.fsutil import remove_if_present
from xenlvm.host.lvm import device_path
from xenlvm.host.runner import Runner
from xenlvm.vmdisks import image_copy as vmdisk_copy
from xenlvm.vmdisks import layout, unexposed
from xenlvm.vmdisks.image_copy import expose_image as _expose_image
from xenlvm.vmdisks.model import Exposure, VmDisk
from xenlvm.vmdisks.teardown import detach_loops, tree_source, unmount_tree

log = logging.getLogger("xenlvm")

TREE_MODE = 0o700  # the tree's tmpfs and every folder xenlvm makes in it: root's alone
MOUNTABLE = ("ext2", "ext3", "ext4", "xfs")
# Filesystems a guest may hold that xenlvm does not mount, and why: such a disk is backed up as
# a raw image instead (fall_back).
NOT_MOUNTED = {"btrfs": "on some errors it finds on disk btrfs stops dom0's kernel (BUG(), or a panic "
                        "with fatal_errors=panic; no mount option makes it go on), and it takes two "
                        "devices with the same filesystem UUID for one filesystem"}
EXTENDED = ("0x5", "0xf", "0x85")  # DOS extended partitions: containers, not filesystems
SECTOR = 512  # partx (libblkid) gives partition starts in 512-byte sectors
# Domain and disk names become directory names: one plain path component, nothing else.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9_.+-]{0,63}$")


@dataclass(frozen=True)
class Partition:
    number: int
    offset: int  # bytes
    size: int  # bytes
    type: str  # the partition table's type code or GUID


# ---------------------------------------------------------------------------------------------
# exposing (pre, after the pause window)


def mount_tree(runner: Runner, job: Job, undo: UndoStack) -> None:
    """Mount the small tmpfs that holds the job's exposure tree at its mountpoint."""
    undo.push(f"unmount the tmpfs at {job.mountpoint}",
              lambda: unmount_tree(runner, job, mount.UNDO_UNMOUNT_TIMEOUT))
    # size is a cap, not a reservation: directories and layout files take a page each. Mode
    # 700, and 700 below: a guest's files carry the guest's uids, which dom0 users would read
    # as their own, and a user's shell inside a mount would stop post's unmount. sesam is root.
    runner.change(["mount", "-t", "tmpfs", "-o", f"mode=0{TREE_MODE:o},size=16m,nodev,nosuid,noexec",
                   tree_source(job), job.mountpoint])


def expose(runner: Runner, job: Job, target: VmDisk, undo: UndoStack, *,
           can_serve: bool = False) -> None:
    """Make the disk's snapshot readable below the job's mountpoint as its exposure says
    (_EXPOSE), registering each undo. With expose: files, what cannot be exposed as files falls
    back to an image (fall_back); can_serve: the job's image server can be started
    (qemu-storage-daemon is there)."""
    spec = target.spec
    device = device_path(spec.origin.vg, spec.snapshot)
    if runner.dry_run:
        log.info("dry run: would expose %s (%s) as %s", target.label, spec.snapshot_volume, target.how)
        return
    os.makedirs(os.path.dirname(spec.mountpoint), mode=TREE_MODE, exist_ok=True)
    _EXPOSE[target.how](runner, job, target, device, undo, can_serve)


def _serve_later(runner: Runner, job: Job, target: VmDisk, device: str, undo: UndoStack,
                 can_serve: bool) -> None:
    """expose: image: all of the job's images are served through FUSE by one server, started
    after the last snapshot (xenlvm.vmdisks.image_server.serve, through the target's kind)."""


def _copy(runner: Runner, job: Job, target: VmDisk, device: str, undo: UndoStack, can_serve: bool) -> None:
    """expose: image-copy: a sparse copy in image_dir, bound into the tree."""
    _expose_image(runner, job, target, device, undo)


def _files_or_image(runner: Runner, job: Job, target: VmDisk, device: str, undo: UndoStack,
                    can_serve: bool) -> None:
    """expose: files: each filesystem mounted read-only; what is not falls back to an image."""
    own = UndoStack()  # this disk's steps: a failure that is not one filesystem's undoes them alone
    try:
        problems = _expose_files(runner, target, device, own)
    except (MountError, CommandFailed) as exc:
        failed = own.unwind()
        if failed:
            raise CleanupFailed(f"{target.label}: {exc}; undoing its exposure ALSO failed: "
                                f"{'; '.join(failed)}", exc) from exc
        problems = [f"the disk: {exc}"]
    undo.adopt(own)
    if problems:
        fall_back(runner, job, target, device, problems, can_serve, undo)


def _written_later(runner: Runner, job: Job, target: VmDisk, device: str, undo: UndoStack,
                   can_serve: bool) -> None:
    """vmdisks.incremental: the disk's one file (its full image or an increment) is written once
    every disk is exposed (xenlvm.vmdisks.chains, through the target's kind)."""


_EXPOSE = {Exposure.FILES: _files_or_image, Exposure.IMAGE: _serve_later, Exposure.IMAGE_COPY: _copy,
           Exposure.CHAIN: _written_later}


def _expose_files(runner: Runner, target: VmDisk, device: str, undo: UndoStack) -> list[str]:
    """Mount each filesystem of the disk read-only in the tree and write its layout; return what
    could not be exposed as files, each with why (a refused mount, btrfs)."""
    spec = target.spec
    what = f"{target.domain}/{target.disk}"
    undo.push(f"detach the loop devices of {spec.snapshot_volume}",
              lambda: detach_loops(runner, [mount.device_numbers(device)]))
    whole = probe(runner, device)
    disk = layout.DiskLayout.read_table(runner, device, target.domain, target.disk, str(spec.origin),
                                        bool(whole.get("PTTYPE")))
    problems: list[str] = []
    if whole.get("PTTYPE"):
        partitions = read_partitions(runner, device)
        log.info("%s has a %s partition table with %d partition(s)", what, whole["PTTYPE"], len(partitions))
        os.makedirs(spec.mountpoint, mode=TREE_MODE, exist_ok=True)
        for part in partitions:
            label = f"{what} partition {part.number}"
            if part.type.lower() in EXTENDED:
                log.info("%s: an extended partition (holds the logical ones); skipped", label)
                disk.add(part.number, {}, exposed_as=None, reason="extended", detail="holds the logical ones")
                continue
            probed = probe(runner, device, part.offset, part.size)
            fstype = _usable(label, probed)
            source = None
            if fstype is not None:
                loop = runner.change(["losetup", "--find", "--show", "--offset", str(part.offset),
                                      "--sizelimit", str(part.size), device])
                assert loop is not None  # changes are made: a dry run does not get here (expose)
                source = loop.stdout.strip()
                where = os.path.join(spec.mountpoint, f"p{part.number}")
                source = _mount_or_tell(runner, source, fstype, where, undo, problems,
                                        f"partition {part.number}")
            why = _why_not_files(probed, problems) if source is None else None
            disk.record(runner, part.number, probed, source, f"p{part.number}", why)
    else:
        fstype = _usable(what, whole)
        source = None
        if fstype is not None:
            source = _mount_or_tell(runner, device, fstype, spec.mountpoint, undo, problems, "the disk")
        why = _why_not_files(whole, problems) if source is None else None
        disk.record(runner, None, whole, source, ".", why)
    disk.write(layout.disk_layout_path(spec.mountpoint, bool(whole.get("PTTYPE"))))
    return problems


def _mount_or_tell(runner: Runner, source: str, fstype: str, target: str, undo: UndoStack,
                   problems: list[str], what: str) -> str | None:
    """Mount source at target and return it; a mount the kernel refuses is added to problems
    (the loop device made for it detached) and None returned."""
    try:
        _mount(runner, source, fstype, target, undo)
        return source
    except MountError as exc:
        problems.append(f"{what}: {exc}")
        if source.startswith("/dev/loop"):
            runner.change(["losetup", "--detach", source])
        return None


def _why_not_files(probed: dict[str, str], problems: list[str]) -> str | None:
    """Why a filesystem that was not mounted is missing from the files, when it is a problem
    (a refused mount, just added to problems; btrfs, added here); None for swap, guest LVM, ..."""
    kind = probed.get("TYPE", "")
    if kind in NOT_MOUNTED:
        problems.append(f"{kind}: {NOT_MOUNTED[kind]}")
        return problems[-1]
    return problems[-1] if kind in MOUNTABLE and problems else None


def fall_back(runner: Runner, job: Job, target: VmDisk, device: str, problems: list[str],
              can_serve: bool, undo: UndoStack) -> None:
    """What of the disk could not be exposed as files: back its bytes up as a raw image instead
    (the job's image server serves it, or a copy into image_dir when there is one), and say so
    in the tree beside it (unexposed.NOTE_SUFFIX). An image that cannot be made fails this disk
    alone: its bytes are then not in the backup, and the note and post say so."""
    settings = job.vmdisks
    assert settings is not None
    target.fallback = None
    if can_serve:
        target.fallback = Exposure.IMAGE  # served with the job's other images (image_server.exports_of)
    elif settings.image_dir is not None:
        target.fallback = _copy_or_tell(runner, job, target, device, problems, undo)
    else:
        problems.append("no image of it: no image server (qemu-storage-daemon) and no image_dir for a copy")
    tell_not_exposed(target, problems)


def tell_not_exposed(target: VmDisk, problems: Sequence[str]) -> None:
    """Write (or write again) the disk's note in the tree and keep what was not exposed."""
    found = unexposed.NotExposed(target.domain, target.disk, tuple(problems),
                                 f"{target.domain}/{target.disk}.img" if target.fallback else None)
    remove_if_present(unexposed.note_path(target.spec.mountpoint))
    unexposed.write_note(target.spec.mountpoint, found)
    target.not_exposed = found


def _copy_or_tell(runner: Runner, job: Job, target: VmDisk, device: str, problems: list[str],
                  undo: UndoStack) -> Exposure | None:
    """Copy the disk into image_dir (image-copy); a copy that fails (no room, a timeout, a
    refused staging folder) is undone and added to problems (None): only this disk lacks it."""
    no_room = vmdisk_copy.no_room(job, target)
    if no_room is not None:
        problems.append(no_room)
        return None
    own = UndoStack()
    try:
        _expose_image(runner, job, target, device, own)
    except (XenlvmError, OSError) as exc:
        failed = own.unwind()
        if failed:
            raise CleanupFailed(f"{target.domain}/{target.disk}: copying its image failed ({exc}); undoing "
                                f"the copy ALSO failed: {'; '.join(failed)}", exc) from exc
        problems.append(f"no image of it: the copy into image_dir failed: {exc}")
        return None
    undo.adopt(own)
    return Exposure.IMAGE_COPY


def _usable(label: str, probed: dict[str, str]) -> str | None:
    """The filesystem type to mount, or None with the reason logged."""
    kind = probed.get("TYPE", "")
    if kind in MOUNTABLE:
        return kind
    if kind in NOT_MOUNTED:
        log.warning("%s holds %s, which xenlvm does not mount: %s; its disk is backed up as an image",
                    label, kind, NOT_MOUNTED[kind])
    elif kind == "LVM2_member":
        log.warning("%s holds guest LVM (a physical volume of the VM's own volume group): not "
                    "exposed. Activating a guest's volume group on the host is dangerous (its names "
                    "can clash with the host's); back up its files from inside the VM", label)
    elif kind == "swap":
        log.info("%s is swap: nothing to back up", label)
    elif kind:
        log.warning("%s holds %s, which xenlvm does not mount (it mounts %s); skipped",
                    label, kind, ", ".join(MOUNTABLE))
    else:
        log.warning("%s: no filesystem found; skipped", label)
    return None


def _mount(runner: Runner, source: str, fstype: str, target: str, undo: UndoStack) -> None:
    os.makedirs(target, mode=TREE_MODE, exist_ok=True)
    undo.push(f"unmount {target}", lambda: mount.unmount_if(runner, target, lambda e: _shows(e, source)))
    mount.mount_snapshot(runner, source, fstype, target, guest=True)
    if not _shows(mount.mounted_at(target, mount.read_mounts()), source):
        raise MountError(f"after mounting, {target} does not show {source}")
    log.info("mounted %s (%s) read-only at %s", source, fstype, target)


def _shows(entry: mount.MountEntry | None, source: str) -> bool:
    """True when the mount entry is source's filesystem (btrfs: by name, see tear_down)."""
    if entry is not None and entry.fstype == "btrfs":
        return entry.source == source
    return mount.shows_device(entry, source)


def probe(runner: Runner, device: str, offset: int | None = None, size: int | None = None) -> dict[str, str]:
    """What blkid finds on device (at offset, within size): TYPE=ext4, PTTYPE=gpt, ..."""
    argv = ["blkid", "--probe", "--output", "export"]
    if offset is not None and size is not None:
        argv += ["--offset", str(offset), "--size", str(size)]
    result = runner.query([*argv, device], ok_codes=(0, 2))
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def parse_partx(text: str) -> list[Partition]:
    """Given `partx --raw --bytes --noheadings --output NR,START,SIZE,TYPE`, return the partitions."""
    partitions = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        partitions.append(Partition(int(fields[0]), int(fields[1]) * SECTOR, int(fields[2]),
                                    fields[3] if len(fields) > 3 else ""))
    return partitions


def read_partitions(runner: Runner, device: str) -> list[Partition]:
    result = runner.query(["partx", "--raw", "--bytes", "--noheadings", "--output", "NR,START,SIZE,TYPE",
                           device])
    return parse_partx(result.stdout)
