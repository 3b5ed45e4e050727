"""The bases of a job's chains (vmdisks.incremental: thin). After a run whose backup is sound,
post keeps that run's thin snapshot of each chained disk as the base that the next run's
thin_delta compares its own snapshot with (keep), and removes the base before it once the new
one is in place. pre decides from the base, before it writes anything, whether a disk gets an
increment or its full image, and why (plan).

A base is proven the job's like every snapshot xenlvm removes, by its tags and its name
(xenlvm.core.ownership: is_base, base_tags, base_name, remove_bases): it carries ``xenlvm``,
``xenlvm_job_<job>``, ``xenlvm_base``, ``xenlvm_run_<run>`` (the run whose snapshot it was) and
``xenlvm_depth_<n>`` (how many increments that run's file was past its full image: 0 for the
full image, which also carries ``xenlvm_sha256_<hex>``, that image's SHA-256, recorded in the
next increment's header); it is a thin snapshot of its disk's LV, named
``<LV>.xenlvm-base.<run>``. It stays inactive between runs (thin_delta reads the pool's
metadata, not the device). It holds every pool block the VM overwrites until the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from xenlvm.config.model import Job
from xenlvm.core.context import Context
from xenlvm.core.ownership import base_name, base_tags, depth_of, is_base, remove_bases, run_id_of
from xenlvm.errors import XenlvmError
from xenlvm.host.lvm import LogicalVolume, Lvm, VolumeGroup
from xenlvm.increments import record

log = logging.getLogger("xenlvm")


def run_order(run: str) -> tuple[str, int]:
    """A run id (YYYYmmddTHHMMSS_<pid>) as it sorts in time."""
    stamp, _, pid = run.partition("_")
    return stamp, int(pid) if pid.isdigit() else 0


def job_bases(job: Job, vgs: dict[str, VolumeGroup]) -> list[LogicalVolume]:
    """Every base of the job, in every VG given."""
    return [lv for vg in vgs.values() for lv in vg.lvs.values() if is_base(lv, job)]


def bases_of(job: Job, vg: VolumeGroup, origin: str) -> list[LogicalVolume]:
    """The job's bases of the LV origin, oldest first."""
    found = [lv for lv in vg.lvs.values() if is_base(lv, job) and lv.origin == origin]
    return sorted(found, key=lambda lv: run_order(run_id_of(lv) or ""))


@dataclass(frozen=True)
class Plan:
    """A chained disk's file this run: an increment over base (depth: its place after the full
    image), or the full image (base None, depth 0) and why."""

    base: LogicalVolume | None
    depth: int
    reason: str = ""

    @property
    def full(self) -> bool:
        return self.base is None


def full_image(reason: str) -> Plan:
    return Plan(None, 0, reason)


def plan(job: Job, origin: LogicalVolume, vg: VolumeGroup, size: int) -> Plan:
    """Given a chained disk's LV (origin, in vg) and its size this run, return its file: an
    increment over the newest of its bases, unless there is none, it is not usable, the disk
    was resized since, or the chain reached vmdisks.full_every runs."""
    assert job.vmdisks is not None
    ours = bases_of(job, vg, origin.name)
    if not ours:
        foreign = sorted(lv.name for lv in vg.lvs.values()
                         if lv.name.startswith(base_name(origin.name, "")) and not is_base(lv, job))
        if foreign:
            return full_image(f"no base of job {job.name}: {', '.join(foreign)} is named like one but does "
                              "not carry its tags (another job's or somebody else's; left alone)")
        return full_image("no base: the disk's first run in a chain, or its base was removed")
    base = ours[-1]
    depth = depth_of(base)
    if not base.is_thin or base.pool != origin.pool or base.invalid or depth is None:
        return full_image(f"its base {base} is not usable (lv_attr {base.attr}, pool {base.pool or 'none'}, "
                          f"depth {'unknown' if depth is None else depth})")
    if base.size != size:
        return full_image(f"the disk was resized since its base run {run_id_of(base)} ({base.size} bytes, "
                          f"now {size})")
    if depth + 1 >= job.vmdisks.full_every:
        return full_image(f"vmdisks.full_every is {job.vmdisks.full_every}: the chain has its full image and "
                          f"{depth} increment(s)")
    return Plan(base, depth + 1)


def make_base(lvm: Lvm, snapshot: LogicalVolume, run: str, depth: int, full_sha256: bytes | None) -> str:
    """Turn the run's snapshot of a chained disk into its base: the base's tags first (killed
    before the rename, it is still a snapshot, which post or the next pre's sweep removes), then
    its name. Return the base's LV name."""
    lvm.add_tags(snapshot, base_tags(depth, full_sha256))
    name = base_name(snapshot.origin, run)
    lvm.rename(snapshot.vg, snapshot.name, name)
    return name


def describe(job: Job, vgs: dict[str, VolumeGroup]) -> list[dict]:
    """The job's bases for status, as plain data."""
    return [{"base": str(lv), "disk": f"{lv.vg}/{lv.origin}", "run": run_id_of(lv), "depth": depth_of(lv),
             "pool": f"{lv.vg}/{lv.pool}", "size_bytes": lv.size, "active": lv.active, "created": lv.created}
            for lv in sorted(job_bases(job, vgs), key=str)]


def keep_bases(ctx: Context, job: Job, snapshots: Sequence[LogicalVolume], vgs: dict[str, VolumeGroup],
               sound: bool) -> list[LogicalVolume]:
    """post, once the job's VM disk snapshots are released: when the backup is sound, make each
    chained disk's snapshot that its pre recorded the disk's new base, then remove the bases
    before it (as vgs showed them). Return the snapshots left to remove. A snapshot that could
    not become a base is left for the next pre's sweep: the disk's next file is its full image."""
    if job.vmdisks is None or job.vmdisks.incremental is None:
        return list(snapshots)
    entries = {e.origin: e for e in record.read(ctx.config.settings.state_dir, job.name)} if sound else {}
    left = []
    for lv in snapshots:
        entry = entries.get(f"{lv.vg}/{lv.origin}")
        if entry is None or not lv.is_thin or lv.invalid or run_id_of(lv) != entry.run:
            left.append(lv)
            continue
        older = bases_of(job, vgs[lv.vg], lv.origin) if lv.vg in vgs else []
        full_sha256 = bytes.fromhex(entry.full_sha256) if entry.full_sha256 else None
        try:
            kept = make_base(ctx.lvm, lv, entry.run, entry.depth, full_sha256)
        except XenlvmError as exc:
            log.error("%s could not become the base of %s/%s (%s): it is removed, and the next run writes "
                      "the disk's full image", lv, lv.vg, lv.origin, exc)
            left.append(lv)
            continue
        try:  # between runs it stays inactive: nothing opens it, and it is no device to see
            ctx.lvm.deactivate(lv.vg, kept)
        except XenlvmError as exc:
            log.warning("the base %s/%s could not be deactivated (%s); it stays usable", lv.vg, kept, exc)
        log.info("%s/%s is the base of %s/%s for the next run (its %s)", lv.vg, kept, lv.vg, lv.origin,
                 "full image" if entry.depth == 0 else f"increment {entry.depth}")
        try:
            remove_bases(ctx.lvm, job, older)
        except XenlvmError as exc:
            log.warning("the earlier base(s) %s of %s/%s could not be removed (%s): the next post removes "
                        "them", ", ".join(map(str, older)), lv.vg, lv.origin, exc)
    return left


def drop_all(ctx: Context, job: Job) -> list[LogicalVolume]:
    """xenlvm cleanup --bases: remove every base of the job (each disk's next file is then its
    full image); return them."""
    found = job_bases(job, ctx.lvm.all_volume_groups())
    remove_bases(ctx.lvm, job, found)
    if found:
        log.info("%s the chain bases of job %s: %s; the next run writes full images",
                 "would drop" if ctx.dry_run else "dropped", job.name, ", ".join(map(str, found)))
    else:
        log.info("job %s has no chain base", job.name)
    return found
