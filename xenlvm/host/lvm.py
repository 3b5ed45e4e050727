"""LVM: ask lvs in its JSON form; create, extend and remove logical volumes with plain
arguments (names, tags as strings).

This module knows nothing of jobs: which tags xenlvm puts on its snapshots, and the proof
that an LV is xenlvm's before it is removed, are xenlvm.core.ownership's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from xenlvm.errors import CommandFailed, XenlvmError
from xenlvm.host.lvm_messages import VolumeGroupNotFound as VolumeGroupNotFound
from xenlvm.host.lvm_messages import says_in_use
from xenlvm.host.lvm_messages import vg_not_found_message as vg_not_found_message
from xenlvm.host.runner import Result, Runner

log = logging.getLogger("xenlvm")

_JSON = ["--reportformat", "json", "--units", "b", "--nosuffix"]
LV_FIELDS = ("lv_name", "vg_name", "lv_attr", "lv_size", "origin", "pool_lv", "lv_tags",
             "data_percent", "lv_snapshot_invalid", "lv_active", "lv_kernel_major",
             "lv_kernel_minor", "lv_dm_path", "lv_time", "vg_free", "vg_size", "vg_extent_size", "vg_attr",
             "metadata_percent", "lv_metadata_size", "lv_uuid", "vg_uuid")


@dataclass(frozen=True)
class LogicalVolume:
    """One row of lvs, typed."""

    vg: str
    name: str
    attr: str
    size: int
    origin: str
    pool: str
    tags: frozenset[str]
    data_percent: float | None
    snapshot_invalid: bool
    active: bool
    major: int | None
    minor: int | None
    dm_path: str
    created: str
    metadata_percent: float | None = None  # a thin pool's metadata use
    metadata_size: int = 0  # a thin pool's metadata LV, bytes
    dm_uuid: str = ""  # as /sys/dev/block/<major:minor>/dm/uuid shows it ("": unknown)

    @property
    def is_thin(self) -> bool:
        """A thin volume (also when it is the origin of a snapshot: lv_attr 'owi-aotz--')."""
        return bool(self.pool) and self.attr[6:7] == "t"

    @property
    def is_thin_pool(self) -> bool:
        """A thin pool: lv_attr 't' first."""
        return self.attr[:1] == "t"

    @property
    def is_snapshot(self) -> bool:
        return bool(self.origin)

    @property
    def is_origin(self) -> bool:
        """Somebody made a snapshot of it: lv_attr 'o' (or 'O' while one merges) first."""
        return self.attr[:1] in ("o", "O")

    @property
    def is_open(self) -> bool:
        """Its device is open (mounted, or held by a process or another device): lv_attr 'o'."""
        return self.attr[5:6] == "o"

    @property
    def invalid(self) -> bool:
        """A classic snapshot that overflowed: lvs shows 'I' as the 5th attribute character."""
        return self.snapshot_invalid or self.attr[4:5] == "I"

    def __str__(self) -> str:
        return f"{self.vg}/{self.name}"


@dataclass(frozen=True)
class VolumeGroup:
    """A VG as one lvs call reports it: its LVs and its space."""

    name: str
    free: int
    size: int
    extent_size: int
    lvs: dict[str, LogicalVolume]
    partial: bool = False  # a PV is missing (vg_attr 'p'): LVM refuses every change to the VG

    def get(self, name: str) -> LogicalVolume | None:
        return self.lvs.get(name)


def _int(text: str) -> int | None:
    return int(text) if text not in ("", "-1") else None


def parse_lvs_json(text: str) -> list[tuple[LogicalVolume, dict[str, str]]]:
    """Given the stdout of ``lvs --reportformat json``, return each LV and its raw row."""
    try:
        rows = json.loads(text)["report"][0]["lv"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise XenlvmError(f"cannot understand the output of lvs ({exc}); is this LVM 2.02.158 "
                          "or newer (needed for --reportformat json)?") from None
    try:
        return [(_logical_volume(row), row) for row in rows]
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise XenlvmError(f"cannot understand the output of lvs: a row has {type(exc).__name__}: {exc}; "
                          "please report this with the output of 'lvs --reportformat json'") from None


def _logical_volume(row: dict[str, str]) -> LogicalVolume:
    percent = row.get("data_percent", "")
    metadata = row.get("metadata_percent", "")
    return LogicalVolume(
        vg=row["vg_name"], name=row["lv_name"], attr=row.get("lv_attr", ""),
        size=int(row.get("lv_size") or 0), origin=row.get("origin", ""),
        pool=row.get("pool_lv", ""),
        tags=frozenset(t for t in row.get("lv_tags", "").split(",") if t),
        data_percent=float(percent) if percent else None,
        snapshot_invalid="invalid" in row.get("lv_snapshot_invalid", ""),  # "snapshot invalid"
        active=row.get("lv_active", "") == "active",
        major=_int(row.get("lv_kernel_major", "")), minor=_int(row.get("lv_kernel_minor", "")),
        dm_path=row.get("lv_dm_path", ""), created=row.get("lv_time", ""),
        metadata_percent=float(metadata) if metadata else None,
        metadata_size=int(row.get("lv_metadata_size") or 0), dm_uuid=_dm_uuid(row))


def _dm_uuid(row: dict[str, str]) -> str:
    """LVM names an LV's device "LVM-" + its VG's uuid + its own, without the dashes lvs shows."""
    vg_uuid, lv_uuid = row.get("vg_uuid", ""), row.get("lv_uuid", "")
    return "LVM-" + (vg_uuid + lv_uuid).replace("-", "") if vg_uuid and lv_uuid else ""


def parse_volume_group(text: str, vg_name: str) -> VolumeGroup:
    """Given lvs JSON for one VG (with the vg_* fields), return the VolumeGroup."""
    rows = parse_lvs_json(text)
    if not rows:
        # A VG without LVs: lvs prints no rows, so its free space is unknown here.
        return VolumeGroup(vg_name, 0, 0, 0, {})
    return dataclasses.replace(_volume_group(vg_name, rows[0][1]), lvs={lv.name: lv for lv, _ in rows})


def parse_volume_groups(text: str) -> dict[str, VolumeGroup]:
    """Given lvs JSON for all VGs (with the vg_* fields), return every VG that has an LV."""
    groups: dict[str, VolumeGroup] = {}
    for lv, raw in parse_lvs_json(text):
        groups.setdefault(lv.vg, _volume_group(lv.vg, raw)).lvs[lv.name] = lv
    return groups


def _volume_group(name: str, raw: dict[str, str]) -> VolumeGroup:
    """The VG of an lvs row (its vg_* fields), with no LVs yet."""
    return VolumeGroup(name=name, free=int(raw.get("vg_free") or 0), size=int(raw.get("vg_size") or 0),
                       extent_size=int(raw.get("vg_extent_size") or 0), lvs={},
                       partial=raw.get("vg_attr", "")[3:4] == "p")


class Lvm:
    """The LVM operations xenlvm needs, all through the runner."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def volume_groups(self, names: Sequence[str], *, every: bool = False) -> dict[str, VolumeGroup]:
        """Given VG names, return those VGs (all VGs when every) from ONE lvs call: every LV and
        each VG's space. A named VG without LVs comes back empty; one that does not exist raises
        VolumeGroupNotFound naming all such VGs (vgs tells, not lvs' words)."""
        named = list(dict.fromkeys(names))
        if not named and not every:
            return {}
        try:
            result = self.runner.query(["lvs", *_JSON, "--options", ",".join(LV_FIELDS),
                                        *([] if every else named)])
        except CommandFailed:
            self._refuse_missing(named)
            raise
        groups = parse_volume_groups(result.stdout)
        absent = [name for name in named if name not in groups]
        if every:
            self._refuse_missing(absent)  # all VGs: one without LVs is left out, or does not exist
        return {**groups, **{name: VolumeGroup(name, 0, 0, 0, {}) for name in absent}}

    def _refuse_missing(self, names: Sequence[str]) -> None:
        known = self.volume_group_names() if names else None
        if known is not None and any(name not in known for name in names):
            raise VolumeGroupNotFound([name for name in names if name not in known])

    def volume_group(self, vg: str) -> VolumeGroup:
        """One lvs call that returns every LV of the VG and the VG's free space."""
        return self.volume_groups([vg])[vg]

    def volume_group_names(self) -> set[str] | None:
        """The names of every VG on the host, or None when vgs cannot say."""
        try:
            result = self.runner.query(["vgs", *_JSON, "--options", "vg_name"])
            return {str(row["vg_name"]) for row in json.loads(result.stdout)["report"][0]["vg"]}
        except (CommandFailed, ValueError, KeyError, IndexError, TypeError):
            return None

    def all_volume_groups(self) -> dict[str, VolumeGroup]:
        """One lvs call that returns every LV of every VG (VGs without LVs are left out)."""
        return self.volume_groups([], every=True)

    def create_snapshot(self, origin: LogicalVolume, name: str, tags: Sequence[str],
                        size: Sequence[str] | None) -> None:
        """Create the snapshot name of origin with tags: classic with lvcreate's size arguments
        (size: --size or --extents), or thin (size None)."""
        argv = ["lvcreate", "--snapshot", "--name", name]
        for tag in tags:
            argv += ["--addtag", tag]
        if size is None:
            # Thin snapshots carry the activation-skip flag; -K activates this one anyway.
            argv.append("--ignoreactivationskip")
        else:
            argv += size
        argv.append(f"{origin.vg}/{origin.name}")
        self.runner.change(argv)

    def extend(self, lv: LogicalVolume, size: int) -> None:
        """Grow lv to size bytes."""
        self.runner.change(["lvextend", "--size", f"{size}b", str(lv)])

    def extend_pool(self, pool: LogicalVolume, size: int, *, metadata: bool = False) -> None:
        """Grow the thin pool's data (or its metadata) to size bytes."""
        part = "--poolmetadatasize" if metadata else "--size"
        self.runner.change(["lvextend", part, f"{size}b", str(pool)])

    def add_tags(self, lv: LogicalVolume, tags: Sequence[str]) -> None:
        """Add tags to lv with one lvchange."""
        argv = ["lvchange"]
        for tag in tags:
            argv += ["--addtag", tag]
        self.runner.change([*argv, str(lv)])

    def rename(self, vg: str, old: str, new: str) -> None:
        """Rename the LV vg/old to vg/new."""
        self.runner.change(["lvrename", vg, old, new])

    def deactivate(self, vg: str, name: str) -> None:
        """Deactivate the LV vg/name."""
        self.runner.change(["lvchange", "--activate", "n", f"{vg}/{name}"])

    def thin_ids(self, vg: str, names: Sequence[str]) -> dict[str, int]:
        """The thin device id of each named thin LV of vg that lvs shows, from ONE lvs; raise
        XenlvmError when lvs prints no usable id."""
        out = self.runner.query(["lvs", "--reportformat", "json", "--options", "lv_name,thin_id",
                                 *(f"{vg}/{name}" for name in names)]).stdout
        try:
            return {str(row["lv_name"]): int(row["thin_id"]) for row in json.loads(out)["report"][0]["lv"]}
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise XenlvmError(f"lvs printed no thin_id for {', '.join(names)} ({exc})") from None

    def remove_tagged(self, lvs: Sequence[LogicalVolume], tag: str, *more: str) -> Result | None:
        """Remove those of lvs that carry tag (and each of more) at the moment of removal, with
        ONE lvremove: its --select makes LVM itself check the tags, so an LV replaced behind the
        caller's back is not touched. lvremove exits 0 also when the guard matched nothing
        (still_exists tells). None in a dry run."""
        select = " && ".join(f"lv_tags={t}" for t in (tag, *more))
        return self.runner.change(["lvremove", "--force", "--select", select, *map(str, lvs)])

    def still_listed(self, lvs: Sequence[LogicalVolume]) -> list[LogicalVolume]:
        """Those of lvs that lvs still shows (all of them if lvs cannot tell)."""
        try:
            now = self.volume_groups([lv.vg for lv in lvs])
        except XenlvmError:
            return list(lvs)
        return [lv for lv in lvs if lv.name in now[lv.vg].lvs]

    def in_use(self, lv: LogicalVolume, failure: CommandFailed) -> bool:
        """Whether a failed lvremove of lv is worth retrying because the LV is open: lvs says so
        (lv_attr), or lvremove said so in one of its releases' words (IN_USE_MESSAGES: whatever
        held it may have let go before lvs looked)."""
        try:
            now = self.volume_group(lv.vg).get(lv.name)
        except XenlvmError:
            now = None
        else:
            if now is None:
                return False  # gone: nothing to retry; the failure is reported as it is
        return (now is not None and now.is_open) or says_in_use(failure.stderr)

    def still_exists(self, lv: LogicalVolume) -> bool:
        """Whether lv still exists after lvremove exited 0. An active LV's device-mapper device
        tells (the kernel's state, no lvs call); an inactive one is looked up with lvs."""
        if lv.major is not None and lv.minor is not None:
            dm_name = f"{SYS_DEV_BLOCK}/{lv.major}:{lv.minor}/dm/name"
            try:
                with open(dm_name, encoding="utf-8") as handle:
                    return handle.read().strip() == os.path.basename(device_path(lv.vg, lv.name))
            except FileNotFoundError:
                return False
            except OSError:
                pass
        return self.volume_group(lv.vg).get(lv.name) is not None


SYS_DEV_BLOCK = "/sys/dev/block"


def device_path(vg: str, lv: str) -> str:
    """The device-mapper node of VG/LV (hyphens inside names are doubled by device-mapper)."""
    return f"/dev/mapper/{vg.replace('-', '--')}-{lv.replace('-', '--')}"
