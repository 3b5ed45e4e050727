"""Taking down what pre made, with proof of ownership, for each kind of target: a volume's
snapshot (unmounted from its mountpoint) and the VM disks' snapshots (their whole tree). Each
is released first (unmounted), so that post can remove all the job's snapshots with one
lvremove; pre's sweep of an earlier run's leftovers removes each at once."""

from __future__ import annotations

from xenlvm.config.model import Job, SnapshotSpec
from xenlvm.core import ownership
from xenlvm.core.context import Context
from xenlvm.errors import MountError, SafetyRefusal
from xenlvm.host import mounts as mounts_mod
from xenlvm.host.lvm import LogicalVolume
from xenlvm.vmdisks import image_server
from xenlvm.vmdisks import teardown as vmdisk_teardown


def release_volume_snapshot(ctx: Context, job: Job, spec: SnapshotSpec, snapshot: LogicalVolume,
                            mounts: list[mounts_mod.MountEntry], unmount_timeout: float) -> None:
    """Unmount spec's snapshot from its mountpoint, after proving it is the job's."""
    if not ownership.owns(job, spec, snapshot):
        raise SafetyRefusal(f"{snapshot} is not xenlvm's; refusing to touch it")
    for entry in mounts_mod.mounts_of(snapshot, mounts):
        if entry.mountpoint != spec.mountpoint:
            raise MountError(f"{snapshot} is also mounted at {entry.mountpoint}, which xenlvm did not "
                             "do; unmount it yourself, then run 'xenlvm post' again")
    if mounts_mod.mounts_of(snapshot, mounts):
        top = mounts_mod.mounted_at(spec.mountpoint, mounts)
        if top is None or not top.is_device(snapshot):
            raise MountError(f"something else is mounted on top of the snapshot at {spec.mountpoint}; "
                             "unmount it yourself, then run 'xenlvm post' again")
        mounts_mod.unmount_with_retry(ctx.runner, spec.mountpoint, unmount_timeout)


def remove_job_snapshot(ctx: Context, job: Job, spec: SnapshotSpec, snapshot: LogicalVolume,
                        mounts: list[mounts_mod.MountEntry], unmount_timeout: float) -> None:
    """Unmount spec's snapshot from its mountpoint, then remove it."""
    release_volume_snapshot(ctx, job, spec, snapshot, mounts, unmount_timeout)
    ownership.remove_one(ctx.lvm, job, spec, snapshot)


def disk_removals(job: Job, snapshots: list[LogicalVolume]) -> list[tuple[SnapshotSpec, LogicalVolume]]:
    """The job's VM disk snapshots as lvremove takes them, each with the spec that proves it."""
    return [(ownership.vm_disk_spec(job, lv), lv) for lv in snapshots]


def tear_down_vmdisks(ctx: Context, job: Job, snapshots: list[LogicalVolume], timeout: float) -> None:
    """Unmount and remove the job's VM disk snapshots and all that exposes them."""
    image_server.stop(ctx.runner, ctx.config.settings.lock_dir, job.name)  # it holds them open
    vmdisk_teardown.release(ctx.runner, job, snapshots, timeout)
    for spec, snapshot in disk_removals(job, snapshots):
        ownership.remove_one(ctx.lvm, job, spec, snapshot)
    vmdisk_teardown.finish(ctx.runner, job, timeout)
