"""The pool guard's last resort: remove the job's thin snapshots in a pool that cannot grow,
so that the blocks only they hold go back to the pool and the VMs keep running.

Each snapshot is proven the job's (tags and names, xenlvm.core.ownership, checked again by LVM
through lvremove's --select) before anything is done to it. A volume's snapshot is lazily
unmounted (the mount point is free at once; whoever still reads keeps its open files); the VM
disks' snapshots are released as post does, but their filesystems unmounted lazily too. If a
reader still holds the device, or a loop device on it (a VM disk's files), lvremove cannot
remove it: that reader (the backup's, reading a backup that has failed anyway) is stopped,
while the device number still proves to be the snapshot's, since the alternative is a full
pool that stops every VM on it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from xenlvm.config.model import Job, SnapshotSpec, Volume
from xenlvm.core import ownership
from xenlvm.errors import CommandFailed, XenlvmError
from xenlvm.host import mount
from xenlvm.host.fsutil import read_small
from xenlvm.host.lvm import LogicalVolume, Lvm
from xenlvm.host.processes import command_name, readers_of, terminate_proven
from xenlvm.vmdisks import image_server
from xenlvm.vmdisks import teardown as vmdisk_teardown

log = logging.getLogger("xenlvm")

READER_STOP_TIMEOUT = 2.0  # SIGTERM, then SIGKILL: the pool fills meanwhile
SYS = "/sys"


@dataclass(frozen=True)
class Guarded:
    """One of the job's thin snapshots that the pool guard guards (and may drop), and the pool it
    takes its space from."""

    vg: str
    pool: str
    snapshot: str
    origin: str
    mountpoint: str  # where pre mounted it ("" for a VM disk's snapshot: its tree)
    vmdisk: bool = False

    @property
    def pool_name(self) -> str:
        return f"{self.vg}/{self.pool}"


def drop(lvm: Lvm, job: Job, present: Sequence[tuple[Guarded, LogicalVolume]],
         lock_dir: str) -> dict[str, XenlvmError]:
    """Remove the job's snapshots present (each as pre recorded it, and as lvs shows it now);
    return the failures by snapshot ("vg/lv")."""
    removals: list[tuple[SnapshotSpec, LogicalVolume]] = []
    failures: dict[str, XenlvmError] = {}
    disks = [lv for guarded, lv in present if guarded.vmdisk]
    if disks:
        try:
            image_server.stop(lvm.runner, lock_dir, job.name)  # it holds them open
            vmdisk_teardown.release(lvm.runner, job, disks, READER_STOP_TIMEOUT, lazy=True)
        except XenlvmError as exc:
            log.error("could not release every VM disk snapshot of job %s: %s", job.name, exc)
        removals += [(ownership.vm_disk_spec(job, lv), lv) for lv in disks]
    for guarded, lv in present:
        if guarded.vmdisk:
            continue
        spec = SnapshotSpec(Volume(guarded.vg, guarded.origin), guarded.snapshot, guarded.mountpoint)
        try:
            _unmount_lazily(lvm, spec, lv)
        except XenlvmError as exc:
            failures[str(lv)] = exc
            continue
        removals.append((spec, lv))
    not_removed = ownership.remove(lvm, job, removals, retry_for=1.0)
    for spec, lv in removals:
        if str(lv) in not_removed and _stop_readers(lvm, lv):
            try:
                ownership.remove_one(lvm, job, spec, lv, retry_for=READER_STOP_TIMEOUT)
                del not_removed[str(lv)]
            except XenlvmError as exc:
                not_removed[str(lv)] = exc
    for name in (str(lv) for _, lv in removals if str(lv) not in not_removed):
        log.warning("dropped the thin snapshot %s", name)
    return {**failures, **not_removed}


def _unmount_lazily(lvm: Lvm, spec: SnapshotSpec, lv: LogicalVolume) -> None:
    """Detach the snapshot's mount at spec's mountpoint if it is there; refuse any other."""
    for entry in mount.mounts_of(lv, mount.read_mounts()):
        if entry.mountpoint != spec.mountpoint:
            raise XenlvmError(f"{lv} is also mounted at {entry.mountpoint}, which xenlvm did not do; "
                              "left alone")
        try:
            lvm.runner.change(["umount", "--lazy", entry.mountpoint])
        except CommandFailed as exc:
            raise XenlvmError(f"could not unmount {entry.mountpoint} lazily: {exc.stderr or exc}") from None


def _stop_readers(lvm: Lvm, lv: LogicalVolume) -> bool:
    """Stop every process that holds lv's device or a loop device on it (a VM disk's partition:
    its files' readers), then detach those loops; return whether there was one. Only while
    major:minor is still lv's device (its dm uuid): after a failed lvremove device-mapper may have
    given that number to another device (another job's snapshot, a VM's disk)."""
    if lv.major is None or lv.minor is None or not is_device_of(lv):
        log.error("the device number of %s no longer proves to be its device; no reader stopped", lv)
        return False
    snapshot = (lv.major, lv.minor)
    loops = vmdisk_teardown.loops_of([snapshot])
    stopped = False
    for device in [snapshot, *loops.values()]:
        stopped = _stop_readers_of(lv, snapshot, device) or stopped
    for loop in loops:
        vmdisk_teardown.detach_held(lvm.runner, loop)
    return stopped or bool(loops)


def _stop_readers_of(lv: LogicalVolume, snapshot: tuple[int, int], device: tuple[int, int]) -> bool:
    """Stop the readers of device (lv's at snapshot, or a loop device on it) while that holds."""
    def still(checked: int) -> bool:
        on_it = device == snapshot or device in vmdisk_teardown.loops_of([snapshot]).values()
        return is_device_of(lv) and on_it and checked in readers_of(*device)

    readers = readers_of(*device)
    for pid in readers:
        comm = command_name(pid) or "?"
        log.warning("stopping %s[%d], which still reads the snapshot %s: the pool cannot wait for it",
                    comm, pid, lv)
        terminate_proven(pid, still, f"{comm}[{pid}], a reader of {lv}", READER_STOP_TIMEOUT)
    return bool(readers)


def is_device_of(lv: LogicalVolume) -> bool:
    """True when the device at lv's major:minor is lv, as device-mapper's uuid for it shows."""
    uuid = read_small(f"{SYS}/dev/block/{lv.major}:{lv.minor}/dm/uuid") if lv.dm_uuid else None
    return uuid is not None and uuid.strip() == lv.dm_uuid
