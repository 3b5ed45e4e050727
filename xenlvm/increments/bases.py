"""The bases of a job's chains (vmdisks.incremental: thin). After a run whose backup is sound,
post keeps that run's thin snapshot of each chained disk as the base that the next run's
thin_delta compares its own snapshot with (keep), and removes the base before it once the new
one is in place. pre decides from the base, before it writes anything, whether a disk gets an
increment or its full image, and why (plan).

A base is proven the job's like every snapshot xenlvm removes, by its tags and its name: it
carries ``xenlvm``, ``xenlvm_job_<job>``, ``xenlvm_base``, ``xenlvm_run_<run>`` (the run whose
snapshot it was) and ``xenlvm_depth_<n>`` (how many increments that run's file was past its full
image: 0 for the full image, which also carries ``xenlvm_sha256_<hex>``, that image's SHA-256,
recorded in the next increment's header); it is a thin snapshot of its disk's LV, named
``<LV>.xenlvm-base.<run>``. It stays inactive between runs (thin_delta reads the pool's
metadata, not the device). It holds every pool block the VM overwrites until the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from xenlvm.config.model import Job
from xenlvm.core.context import Context
from xenlvm.core.ownership import BASE_TAG, OWNER_TAG, RUN_TAG_PREFIX, job_tag
from xenlvm.errors import SafetyRefusal, XenlvmError
from xenlvm.host.lvm import LogicalVolume, VolumeGroup
from xenlvm.host.runner import Runner
from xenlvm.increments import record

log = logging.getLogger("xenlvm")

RUN_PREFIX = RUN_TAG_PREFIX
DEPTH_PREFIX = "xenlvm_depth_"
SHA256_PREFIX = "xenlvm_sha256_"
NAME_INFIX = ".xenlvm-base."


def base_name(origin: str, run: str) -> str:
    """The name of the base that run's snapshot of the LV origin becomes."""
    return f"{origin}{NAME_INFIX}{run}"


def run_of(lv: LogicalVolume) -> str | None:
    """The run of an LV's single xenlvm_run_ tag, or None (none, or several)."""
    runs = [t[len(RUN_PREFIX):] for t in lv.tags if t.startswith(RUN_PREFIX)]
    return runs[0] if len(runs) == 1 else None


def depth_of(lv: LogicalVolume) -> int | None:
    """How many increments past its full image the base's run was (its single depth tag)."""
    depths = [t[len(DEPTH_PREFIX):] for t in lv.tags if t.startswith(DEPTH_PREFIX)]
    return int(depths[0]) if len(depths) == 1 and depths[0].isdigit() else None


def full_sha256_of(lv: LogicalVolume) -> bytes | None:
    """The SHA-256 of the full image a depth-0 base's run wrote, when its tag records one."""
    found = [t[len(SHA256_PREFIX):] for t in lv.tags if t.startswith(SHA256_PREFIX)]
    try:
        digest = bytes.fromhex(found[0]) if len(found) == 1 else b""
    except ValueError:
        return None
    return digest if len(digest) == 32 else None


def run_order(run: str) -> tuple[str, int]:
    """A run id (YYYYmmddTHHMMSS_<pid>) as it sorts in time."""
    stamp, _, pid = run.partition("_")
    return stamp, int(pid) if pid.isdigit() else 0


def is_base(lv: LogicalVolume, job: Job) -> bool:
    """Whether lv is a base xenlvm kept for the job: its tags, a snapshot's origin, and the name
    of its run's base."""
    run = run_of(lv)
    return ({OWNER_TAG, job_tag(job.name), BASE_TAG} <= lv.tags and bool(lv.origin) and run is not None
            and lv.name == base_name(lv.origin, run))


def job_bases(job: Job, vgs: dict[str, VolumeGroup]) -> list[LogicalVolume]:
    """Every base of the job, in every VG given."""
    return [lv for vg in vgs.values() for lv in vg.lvs.values() if is_base(lv, job)]


def bases_of(job: Job, vg: VolumeGroup, origin: str) -> list[LogicalVolume]:
    """The job's bases of the LV origin, oldest first."""
    found = [lv for lv in vg.lvs.values() if is_base(lv, job) and lv.origin == origin]
    return sorted(found, key=lambda lv: run_order(run_of(lv) or ""))


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
                         if lv.name.startswith(f"{origin.name}{NAME_INFIX}") and not is_base(lv, job))
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
        return full_image(f"the disk was resized since its base run {run_of(base)} ({base.size} bytes, now "
                          f"{size})")
    if depth + 1 >= job.vmdisks.full_every:
        return full_image(f"vmdisks.full_every is {job.vmdisks.full_every}: the chain has its full image and "
                          f"{depth} increment(s)")
    return Plan(base, depth + 1)


def base_tags(depth: int, full_sha256: bytes | None) -> list[str]:
    """The tags a snapshot gets as it becomes a base (beside its owner, job and run tags)."""
    tags = [BASE_TAG, f"{DEPTH_PREFIX}{depth}"]
    return tags + ([f"{SHA256_PREFIX}{full_sha256.hex()}"] if depth == 0 and full_sha256 else [])


def make_base(runner: Runner, snapshot: LogicalVolume, run: str, depth: int,
              full_sha256: bytes | None) -> str:
    """Turn the run's snapshot of a chained disk into its base: the base's tags first (killed
    before the rename, it is still a snapshot, which post or the next pre's sweep removes), then
    its name. Return the base's name ("VG/LV")."""
    argv = ["lvchange"]
    for tag in base_tags(depth, full_sha256):
        argv += ["--addtag", tag]
    runner.change([*argv, str(snapshot)])
    name = base_name(snapshot.origin, run)
    runner.change(["lvrename", snapshot.vg, snapshot.name, name])
    return f"{snapshot.vg}/{name}"


def remove_bases(runner: Runner, job: Job, bases: Sequence[LogicalVolume]) -> None:
    """Remove the job's bases with one lvremove, each proven the job's first, and again by LVM
    itself at the moment of removal (--select on the base and job tags)."""
    for lv in bases:
        if not is_base(lv, job):
            raise SafetyRefusal(f"{lv} is not a base xenlvm kept for job {job.name!r} (tags: "
                                f"{','.join(sorted(lv.tags)) or 'none'}); it was left untouched")
    if bases:
        guard = f"lv_tags={BASE_TAG} && lv_tags={job_tag(job.name)}"
        runner.change(["lvremove", "--force", "--select", guard, *map(str, bases)])


def describe(job: Job, vgs: dict[str, VolumeGroup]) -> list[dict]:
    """The job's bases for status, as plain data."""
    return [{"base": str(lv), "disk": f"{lv.vg}/{lv.origin}", "run": run_of(lv), "depth": depth_of(lv),
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
        if entry is None or not lv.is_thin or lv.invalid or run_of(lv) != entry.run:
            left.append(lv)
            continue
        older = bases_of(job, vgs[lv.vg], lv.origin) if lv.vg in vgs else []
        full_sha256 = bytes.fromhex(entry.full_sha256) if entry.full_sha256 else None
        try:
            name = make_base(ctx.runner, lv, entry.run, entry.depth, full_sha256)
        except XenlvmError as exc:
            log.error("%s could not become the base of %s/%s (%s): it is removed, and the next run writes "
                      "the disk's full image", lv, lv.vg, lv.origin, exc)
            left.append(lv)
            continue
        try:  # between runs it stays inactive: nothing opens it, and it is no device to see
            ctx.runner.change(["lvchange", "--activate", "n", name])
        except XenlvmError as exc:
            log.warning("the base %s could not be deactivated (%s); it stays usable", name, exc)
        log.info("%s is the base of %s/%s for the next run (its %s)", name, lv.vg, lv.origin,
                 "full image" if entry.depth == 0 else f"increment {entry.depth}")
        try:
            remove_bases(ctx.runner, job, older)
        except XenlvmError as exc:
            log.warning("the earlier base(s) %s of %s/%s could not be removed (%s): the next post removes "
                        "them", ", ".join(map(str, older)), lv.vg, lv.origin, exc)
    return left


def drop_all(ctx: Context, job: Job) -> list[LogicalVolume]:
    """xenlvm cleanup --bases: remove every base of the job (each disk's next file is then its
    full image); return them."""
    found = job_bases(job, ctx.lvm.all_volume_groups())
    remove_bases(ctx.runner, job, found)
    if found:
        log.info("%s the chain bases of job %s: %s; the next run writes full images",
                 "would drop" if ctx.dry_run else "dropped", job.name, ", ".join(map(str, found)))
    else:
        log.info("job %s has no chain base", job.name)
    return found
