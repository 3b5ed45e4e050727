"""Thin pools, pure decisions: a thin snapshot costs nothing when taken, but from then on every
block the VMs overwrite takes new space from the pool, and a full pool stops every thin LV in
it (writes queue for no_space_timeout, then fail). Given what lvs reports of a pool and its VG:
may pre take a snapshot there (``check_thin_pools``), and what must the pool guard do during
the backup (``decide``)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from xenlvm.config.model import Job, SnapshotSpec, ThinPoolSettings
from xenlvm.core.ownership import carries_base_tags
from xenlvm.core.preflight import Finding
from xenlvm.host.lvm import LogicalVolume, VolumeGroup
from xenlvm.sizes import human_size

# LVM's largest thin pool metadata (lvmthin(7): 15.81 GiB); an lvextend beyond fails.
MAX_METADATA = 16 * (1 << 30) - 192 * (1 << 20)


@dataclass(frozen=True)
class PoolFill:
    """How full a thin pool is: the fuller of its data and metadata, and which it is."""

    data: float
    metadata: float

    @property
    def fullest(self) -> tuple[str, float]:
        return ("metadata", self.metadata) if self.metadata > self.data else ("data", self.data)

    def __str__(self) -> str:
        return f"data {self.data:.1f}%, metadata {self.metadata:.1f}%"


def fill_of(pool: LogicalVolume) -> PoolFill:
    return PoolFill(pool.data_percent or 0.0, pool.metadata_percent or 0.0)


def pool_of(origin: LogicalVolume, vg: VolumeGroup) -> LogicalVolume | None:
    """The thin pool that a thin origin (and so its thin snapshot) takes its space from."""
    pool = vg.get(origin.pool) if origin.is_thin else None
    return pool if pool is not None and pool.is_thin_pool else None


def expected_growth(spec: SnapshotSpec, origin: LogicalVolume, vg: VolumeGroup,
                    settings: ThinPoolSettings) -> int:
    """What spec's thin snapshot may take from its pool at most during the backup: the origin's
    whole size (every block overwritten), or what the admin set (expected_growth)."""
    if settings.expected_growth is None:
        return origin.size
    return settings.expected_growth.resolve(origin.size, vg.free, vg.size)


def check_thin_pools(job: Job, specs: Sequence[SnapshotSpec], vgs: dict[str, VolumeGroup],
                     kept: Collection[SnapshotSpec] = ()) -> list[Finding]:
    """For each pool that one of specs' thin snapshots would live in: refuse at or above
    refuse_above (data or metadata), and warn when the pool (with the VG's free space, if the
    guard may extend it) could not absorb what the backup may need. A snapshot kept as a base
    until the next run (kept: the specs whose kind keeps their thin snapshot so) may take its
    origin's whole size by then, whatever expected_growth says of the backup (the base before
    it is in the pool's use already, until post removes it)."""
    settings = job.thin_pool
    needs: dict[str, tuple[LogicalVolume, VolumeGroup, int, list[str]]] = {}
    for spec in specs:
        vg = vgs.get(spec.origin.vg)
        origin = vg.get(spec.origin.lv) if vg is not None else None
        pool = pool_of(origin, vg) if origin is not None and vg is not None and spec.size is None else None
        if pool is None or vg is None or origin is None:
            continue
        as_base = spec in kept and origin.is_thin
        growth = origin.size if as_base else expected_growth(spec, origin, vg, settings)
        _, _, need, names = needs.get(str(pool), (pool, vg, 0, []))
        name = f"{spec.snapshot_volume}{' (kept as a base until the next run)' * as_base}"
        needs[str(pool)] = (pool, vg, need + growth, [*names, name])
    return [_check_pool(job, pool, vg, need, names) for pool, vg, need, names in needs.values()]


def _check_pool(job: Job, pool: LogicalVolume, vg: VolumeGroup, need: int, names: list[str]) -> Finding:
    settings = job.thin_pool
    fill = fill_of(pool)
    part, percent = fill.fullest
    if percent >= settings.refuse_above:
        grow = (f"'lvextend --poolmetadatasize +SIZE {pool}'" if part == "metadata"
                else f"'lvextend -L +SIZE {pool}'")
        return Finding("fail", "thin pool", (
            f"thin pool {pool} is {percent:.1f}% full ({part}; {fill}), at or above refuse_above "
            f"{settings.refuse_above}% of job {job.name!r}: a thin snapshot makes every block the "
            "VMs overwrite take new space from the pool, and a full pool stops every thin LV in it, "
            f"the VMs' disks too. Free space in the pool (remove thin LVs or snapshots it no longer "
            f"needs, fstrim the VMs' filesystems) or grow it ({grow}; 'vgs {vg.name}' shows the "
            f"free space){_bases_hint(job, pool, vg)}"))
    free = pool.size * (100 - fill.data) / 100
    room = free + (vg.free if settings.extend else 0)
    snapshots = ", ".join(names)
    if need > room:
        extend = f" plus {human_size(vg.free)} free in VG {vg.name} to grow it" if settings.extend else ""
        return Finding("warn", "thin pool", (
            f"the snapshot(s) {snapshots} may take up to {human_size(need)} from thin pool {pool} if "
            f"the VMs overwrite that much during the backup, but it has {human_size(int(free))} free"
            f"{extend}: the pool guard would then drop the snapshot(s) to keep the VMs running, and "
            "the backup would fail. Grow the pool or the VG, or set thin_pool: expected_growth "
            "to what the VMs really write during a backup"))
    return Finding("ok", "thin pool", f"thin pool {pool} is {fill}: room for the {human_size(need)} "
                   f"that {snapshots} may take")


def _bases_hint(job: Job, pool: LogicalVolume, vg: VolumeGroup) -> str:
    """What the job's chain bases in pool hold, and how to free it, or ''."""
    held = sorted(str(lv) for lv in vg.lvs.values()
                  if carries_base_tags(job.name, lv) and lv.pool == pool.name)
    if not held:
        return ""
    return (f". The job's chain bases {', '.join(held)} hold every block their disks were overwritten in "
            f"since their run: 'xenlvm cleanup --job {job.name} --bases' drops them (the next run then "
            "writes full images)")


@dataclass(frozen=True)
class Action:
    """What the pool guard does to a pool: extend its data or metadata to new_size, or drop the
    job's thin snapshots in it (new_size 0)."""

    kind: str  # "extend-data", "extend-metadata" or "drop"
    fill: float  # the percent that made it act
    old_size: int
    new_size: int
    reason: str  # for a drop: why the pool could not grow


def lead(before: PoolFill, after: PoolFill, seconds: float, horizon: float) -> PoolFill:
    """Given two looks at a pool seconds apart, return how many points each part grows within
    horizon seconds at that rate (never less than 0): a fast writer is met before protect_at."""
    if seconds <= 0:
        return PoolFill(0.0, 0.0)
    return PoolFill(max(0.0, (after.data - before.data) / seconds * horizon),
                    max(0.0, (after.metadata - before.metadata) / seconds * horizon))


def rescaled(fill: PoolFill, sizes: tuple[int, int], now: tuple[int, int]) -> PoolFill:
    """fill of a pool whose (data, metadata) were sizes bytes, as percent of their sizes now:
    the same bytes used. Growth is measured in bytes, so a look before a growth still counts."""
    return PoolFill(fill.data * sizes[0] / now[0] if now[0] else fill.data,
                    fill.metadata * sizes[1] / now[1] if now[1] else fill.metadata)


def _grown(size: int, percent: float, settings: ThinPoolSettings, extent: int) -> tuple[int, int]:
    """The sizes that bring a part at percent of size back under refuse_above: (enough, wanted),
    wanted with a 20% margin more, both in whole extents."""
    used = size * percent / 100
    enough = max(int(used * 100 / settings.refuse_above) + 1, size + extent)
    wanted = max(enough, size + size // 5)
    return (-(-enough // extent) * extent, -(-wanted // extent) * extent)


def decide(pool: LogicalVolume, vg: VolumeGroup, settings: ThinPoolSettings,
           lead: PoolFill = PoolFill(0.0, 0.0)) -> list[Action]:
    """Given a pool as lvs reports it, return what to do now: nothing below protect_at (lead:
    how many points each part will have grown by the time the guard could act next); else
    extend its data and/or metadata (when extend is set and the VG has room for all of it),
    else drop the job's snapshots in it."""
    fill = fill_of(pool)
    extent = vg.extent_size or 4 << 20
    hot = [(part, percent, ahead) for part, percent, ahead in (("data", fill.data, lead.data),
                                                               ("metadata", fill.metadata, lead.metadata))
           if percent + ahead >= settings.protect_at]
    if not hot:
        return []
    part, percent, _ = max(hot, key=lambda item: item[1])
    if not settings.extend:
        return [Action("drop", percent, 0, 0, f"its {part} is {percent:.1f}% full and thin_pool: "
                       "extend is false")]
    free = vg.free
    actions = []
    for part, percent, ahead in hot:
        size = pool.size if part == "data" else pool.metadata_size
        enough, wanted = _grown(size, percent, settings, extent)
        wanted = max(wanted, _grown(size, percent + ahead, settings, extent)[0])  # a fast writer
        cost = 1 if part == "data" else 2  # the metadata spare LV grows with the metadata
        if part == "metadata":
            enough, wanted = min(enough, MAX_METADATA), min(wanted, MAX_METADATA)
        new_size = wanted if (wanted - size) * cost <= free else enough
        if new_size <= size or (new_size - size) * cost > free:
            why = ("it is at LVM's largest metadata size" if new_size <= size else
                   f"growing its {part} from {human_size(size)} to {human_size(enough)} needs "
                   f"{human_size((enough - size) * cost)}, and VG {vg.name} has {human_size(vg.free)} free")
            return [Action("drop", percent, 0, 0, f"its {part} is {percent:.1f}% full and {why}")]
        free -= (new_size - size) * cost
        actions.append(Action(f"extend-{part}", percent, size, new_size, ""))
    return actions

