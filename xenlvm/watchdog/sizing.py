"""The snapshot watchdog's decision, pure: given what lvs reports of a snapshot and its VG, how
large should the snapshot be, and when it cannot grow, why not."""

from __future__ import annotations

from xenlvm.config.model import WatchdogSettings
from xenlvm.host.lvm import LogicalVolume, VolumeGroup
from xenlvm.sizes import human_size


def _round_up(size: int, unit: int) -> int:
    return -(-size // unit) * unit


def wanted_size(lv: LogicalVolume, vg: VolumeGroup, settings: WatchdogSettings) -> int:
    """Given a snapshot, return its size grown by the step, in whole extents."""
    return _round_up(-(-lv.size * (100 + settings.step) // 100), vg.extent_size or 512)


def size_limit(lv: LogicalVolume, vg: VolumeGroup, settings: WatchdogSettings, origin_size: int) -> int:
    """Given a snapshot and its VG, return the largest size it may grow to: max_size, and no
    more than the VG's free space allows, in whole extents."""
    extent = vg.extent_size or 512
    limit = min(settings.max_size.resolve(origin_size, vg.free, vg.size), lv.size + vg.free)
    return limit // extent * extent


def next_size(lv: LogicalVolume, vg: VolumeGroup, settings: WatchdogSettings, origin_size: int) -> int | None:
    """Given a snapshot as lvs reports it, return the size in bytes to extend it to, or None
    when it is below the threshold or cannot grow (``limit_reason`` says why)."""
    if lv.data_percent is None or lv.data_percent < settings.threshold:
        return None
    new_size = min(wanted_size(lv, vg, settings), size_limit(lv, vg, settings, origin_size))
    return new_size if new_size > lv.size else None


def limit_reason(lv: LogicalVolume, vg: VolumeGroup, settings: WatchdogSettings, origin_size: int) -> str:
    """Given a snapshot that cannot grow by the full step, say which limit stops it and what to do."""
    extent = vg.extent_size or 512
    max_size = settings.max_size.resolve(origin_size, vg.free, vg.size) // extent * extent
    if max_size <= lv.size + vg.free:
        return (f"it has reached the watchdog's max_size {settings.max_size.text} ({human_size(max_size)}); "
                "raise max_size or give the snapshot a larger size")
    return (f"VG {vg.name} has no more free space; free space in the VG or give the snapshot a "
            "larger size")
