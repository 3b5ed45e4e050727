"""The layout of each exposed VM disk, written beside its files so that a restore can rebuild
the disk: its size, its partition table, each filesystem's type, UUID and label, and what was
not exposed and why. Written by pre onto xenlvm's tmpfs (never the host's disk):

    <mountpoint>/<domain>/<disk>/layout.json   a disk with a partition table (beside p1, p2, ...)
    <mountpoint>/<domain>/<disk>.layout.json   a disk that holds a filesystem directly (its
                                               directory is that filesystem, mounted read-only)
    <mountpoint>/<domain>/layout.json          the domain: its `xl list -l` record, its disks

Format version 1; every field is described in the README ("layout.json"). restore-disk reads a
disk's layout back with ``read_disk_layout``, which validates every field it uses.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from xenlvm import __version__
from xenlvm.errors import CommandFailed, UsageError, XenlvmError
from xenlvm.host.mount import mount_options
from xenlvm.host.runner import Runner
from xenlvm.vmdisks.model import VmDisk

TYPE_CHECKING = False  # xenlvm/__init__.py says why
if TYPE_CHECKING:
    from typing import Any

log = logging.getLogger("xenlvm")

FORMAT_VERSION = 1
DISK_FORMAT = "xenlvm-disk-layout"
DOMAIN_FORMAT = "xenlvm-domain-layout"
NAME = "layout.json"
TOOLS = ("sfdisk", "dumpe2fs", "xfs_info")  # what it reads a disk's layout with (check warns without)
# Why a partition (or a bare disk) was not exposed; each comes with a sentence in "detail".
REASONS = ("swap", "guest-lvm", "extended", "refused", "not-mounted", "unknown")
# Flags dumpe2fs lists among the features that say how the filesystem is now, not how it was made.
RUNTIME_FEATURES = ("needs_recovery", "orphan_present")
_FEATURE = re.compile(r"^[a-z0-9_]{1,32}$")
# The XFS feature flags xfs_info shows and mkfs.xfs takes (-m, -i): recorded when present.
XFS_FLAGS = ("crc", "finobt", "sparse", "rmapbt", "reflink", "bigtime", "inobtcount", "nrext64")
_UUID = re.compile(r"^[0-9A-Fa-f][0-9A-Fa-f-]{0,63}$")  # GUIDs, DOS ids (ext/xfs/swap UUIDs too)
_LABEL_ID = re.compile(r"^(0x[0-9a-f]{8}|[0-9A-Fa-f-]{36})$")
_TYPE = re.compile(r"^[0-9A-Za-z_-]{1,36}$")
_TEXT = re.compile(r'^[^"\\\x00-\x1f]{0,72}$')  # a label or GPT name: printable, no quotes


def disk_layout_path(mountpoint: str, has_table: bool) -> str:
    """Where the layout of the disk exposed at mountpoint (<mountpoint>/<domain>/<disk>) goes."""
    return os.path.join(mountpoint, NAME) if has_table else f"{mountpoint}.{NAME}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def device_size(device: str) -> int | None:
    """The size in bytes of the block device (or file) at device, or None if it cannot be read."""
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        log.error("cannot read the size of %s: %s", device, exc.strerror)
        return None
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def parse_sfdisk_json(text: str) -> dict[str, Any]:
    """Given `sfdisk --json DEVICE`, return the table in layout.json's form (no device names)."""
    table = json.loads(text)["partitiontable"]
    partitions = []
    for part in table.get("partitions", []):
        number = re.search(r"(\d+)$", part["node"])
        if number is None:
            raise ValueError(f"no partition number in {part['node']!r}")
        partitions.append({"number": int(number.group(1)), "start": int(part["start"]),
                           "size": int(part["size"]), "type": str(part["type"]),
                           "uuid": part.get("uuid"), "name": part.get("name"),
                           "attrs": part.get("attrs"), "bootable": bool(part.get("bootable", False))})
    return {"label": table["label"], "id": table.get("id"), "unit": table.get("unit", "sectors"),
            "sector_size": int(table.get("sectorsize", 512)), "first_lba": table.get("firstlba"),
            "last_lba": table.get("lastlba"), "partitions": partitions}


@dataclass
class DiskLayout:
    """What pre learns about one disk while exposing it; written as its layout.json."""

    domain: str
    disk: str
    origin: str
    size: int | None
    table: dict[str, Any] | None = None
    table_error: str | None = None
    contents: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read_table(cls, runner: Runner, device: str, domain: str, disk: str, origin: str,
                   has_table: bool) -> DiskLayout:
        """Start the layout of device: its size and, if it has one, its partition table."""
        layout = cls(domain, disk, origin, device_size(device))
        if has_table:
            try:
                layout.table = parse_sfdisk_json(runner.query(["sfdisk", "--json", device]).stdout)
            except (CommandFailed, ValueError, KeyError, TypeError) as exc:
                # The backup of the files is still good; only restore-disk cannot rebuild this disk.
                layout.table_error = f"the partition table could not be read: {exc}"
                log.error("%s/%s: %s; restore-disk will not be able to rebuild this disk",
                          domain, disk, layout.table_error)
        return layout

    def add(self, number: int | None, probed: dict[str, str], *, exposed_as: str | None,
            mount_options: str | None = None, mkfs: dict[str, Any] | None = None, reason: str | None = None,
            detail: str = "") -> None:
        """Record what partition number (None: the whole disk) holds, and where it is exposed
        (a path relative to the disk's directory) or why not."""
        # blkid --output export escapes what a shell would split on (my\ root): undo that
        label = re.sub(r"\\(.)", r"\1", probed.get("LABEL", "")) or None
        entry: dict[str, Any] = {"partition": number, "type": probed.get("TYPE") or None,
                                 "uuid": probed.get("UUID") or None, "label": label, "exposed_as": exposed_as}
        if exposed_as is not None:
            entry["mount_options"] = mount_options
            entry["mkfs"] = mkfs
        else:
            entry["reason"], entry["detail"] = reason, detail
        self.contents.append(entry)

    def record(self, runner: Runner, number: int | None, probed: dict[str, str], mounted: str | None,
               exposed_as: str, why: str | None = None) -> None:
        """Record partition number (None: the whole disk): exposed at exposed_as when xenlvm
        mounted it from the device mounted, with what mkfs needs to make it again; else why not
        (why: a filesystem xenlvm would expose but could not, or does not mount)."""
        if mounted is not None:
            fstype = probed["TYPE"]
            self.add(number, probed, exposed_as=exposed_as, mount_options=mount_options(fstype, guest=True),
                     mkfs=ext_parameters(runner, mounted) if fstype.startswith("ext") else
                     xfs_parameters(runner, mounted) if fstype == "xfs" else None)
            return
        kind = probed.get("TYPE", "")
        if why is not None:
            reason = "not-mounted" if kind == "btrfs" else "refused"
            self.add(number, probed, exposed_as=None, reason=reason, detail=why)
            return
        reason = {"swap": "swap", "LVM2_member": "guest-lvm"}.get(kind, "unknown")
        detail = {"swap": "swap: nothing to back up; restore-disk recreates it with its UUID and label",
                  "guest-lvm": "a physical volume of the guest's own LVM: back it up from inside the VM"
                  }.get(reason, f"{kind}: xenlvm does not mount it" if kind else "no filesystem found")
        self.add(number, probed, exposed_as=None, reason=reason, detail=detail)

    def as_json(self) -> dict[str, Any]:
        return {"format": DISK_FORMAT, "format_version": FORMAT_VERSION, "xenlvm_version": __version__,
                "written": _now(), "domain": self.domain, "disk": self.disk, "origin": self.origin,
                "size": self.size, "table": self.table, "table_error": self.table_error,
                "contents": self.contents}

    def write(self, path: str) -> None:
        _write_new(path, self.as_json())
        log.info("%s/%s: layout written to %s", self.domain, self.disk, path)


def ext_parameters(runner: Runner, device: str) -> dict[str, Any] | None:
    """What mke2fs needs to make the ext2/3/4 filesystem on device again as it is: its features
    (an older guest's kernel or boot loader may not read the host's defaults), block and inode
    size; None (logged) if dumpe2fs cannot tell."""
    try:
        text = runner.query(["dumpe2fs", "-h", device]).stdout
    except CommandFailed as exc:
        log.error("cannot read the parameters of the filesystem on %s: %s", device, exc)
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    try:
        features = [f for f in fields["Filesystem features"].split() if f not in RUNTIME_FEATURES]
        return {"features": features, "block_size": int(fields["Block size"]),
                "inode_size": int(fields["Inode size"])}
    except (KeyError, ValueError):
        log.error("cannot understand dumpe2fs's output for %s", device)
        return None


def xfs_parameters(runner: Runner, device: str) -> dict[str, Any] | None:
    """What mkfs.xfs needs to make the XFS filesystem mounted from device again as it is: block
    and inode size and its feature flags (as for ext, an older guest may not read the host's
    defaults); None (logged) if xfs_info cannot tell."""
    try:
        text = runner.query(["xfs_info", device]).stdout
    except CommandFailed as exc:
        log.error("cannot read the parameters of the filesystem on %s: %s", device, exc)
        return None
    sections: dict[str, dict[str, str]] = {}
    section = ""
    for line in text.splitlines():
        head, _, rest = line.partition("=")
        section = head.strip() or section
        sections.setdefault(section, {}).update(re.findall(r"([a-z0-9-]+)=([0-9]+)", rest))
    try:
        meta, data, naming = sections["meta-data"], sections["data"], sections["naming"]
        flags = {k: int(meta[k]) for k in XFS_FLAGS if k in meta}
        return {"block_size": int(data["bsize"]), "inode_size": int(meta["isize"]),
                "flags": {**flags, "ftype": int(naming["ftype"])}}
    except (KeyError, ValueError):
        log.error("cannot understand xfs_info's output for %s", device)
        return None


def write_domain_layouts(records: dict[str, dict], exposed: Sequence[VmDisk],
                         export_dir: str | None, frozen: Mapping[str, bool] | None = None) -> None:
    """Write <mountpoint>/<domain>/layout.json for each domain with exposed disks: its `xl list -l`
    record (records: as pre's inventory read it), where each disk's layout (or image) is,
    relative to that folder, the configuration pre exported, if it did, and whether its
    snapshot is application-consistent (frozen: the domains xen.quiesce froze for it)."""
    disks: dict[str, dict[str, str]] = {}
    folders: dict[str, str] = {}
    for target in exposed:
        mountpoint = target.spec.mountpoint
        folder = os.path.dirname(mountpoint)
        folders[target.domain] = folder
        if target.how.is_image:
            disks.setdefault(target.domain, {})[target.disk] = target.image_file or f"{target.disk}.img"
        else:
            found = [path for path in (disk_layout_path(mountpoint, True),
                                       disk_layout_path(mountpoint, False)) if os.path.isfile(path)]
            where = os.path.relpath(found[0], folder) if found else ""
            disks.setdefault(target.domain, {})[target.disk] = where
    for domain, folder in folders.items():
        exported = os.path.join(export_dir, f"{domain}.xl-list-l.json") if export_dir else None
        _write_new(os.path.join(folder, NAME), {
            "format": DOMAIN_FORMAT, "format_version": FORMAT_VERSION, "xenlvm_version": __version__,
            "written": _now(), "domain": domain, "disks": disks[domain],
            "consistency": "application-consistent" if (frozen or {}).get(domain) else "crash-consistent",
            "exported_config": exported if exported and os.path.isfile(exported) else None,
            "xl_list_l": records.get(domain)})


def _write_new(path: str, content: dict[str, Any]) -> None:
    """Write a new file (never over an existing one: a guest's file of that name is not ours)."""
    try:
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(json.dumps(content, indent=2) + "\n")
        os.chmod(path, 0o644)
    except OSError as exc:
        raise XenlvmError(f"cannot write the layout {path}: {exc.strerror}") from None


# ---------------------------------------------------------------------------------------------
# reading a layout back (restore-disk)


def find_disk_layout(directory: str) -> str:
    """The layout of the restored disk folder directory: <dir>.layout.json beside it (a bare
    filesystem) wins over <dir>/layout.json (a partitioned disk), which a guest's own file in a
    bare filesystem's root could be."""
    directory = os.path.normpath(directory)
    for path in (f"{directory}.{NAME}", os.path.join(directory, NAME)):
        if os.path.isfile(path):
            return path
    raise UsageError(f"no layout found for {directory}: neither {directory}.{NAME} nor "
                     f"{os.path.join(directory, NAME)} exists. Give the restored <domain>/<disk> "
                     "folder of a backup made by xenlvm 'expose: files' (with its layout file).")


def read_disk_layout(path: str) -> dict[str, Any]:
    """Read and validate a disk's layout.json; raise UsageError saying what is wrong."""
    try:
        with open(path, encoding="utf-8") as handle:
            layout = json.load(handle)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the layout {path}: {exc}") from None

    def bad(what: str) -> UsageError:
        return UsageError(f"the layout {path} is not usable: {what}")

    if not isinstance(layout, dict):
        raise bad("not a JSON object")
    if layout.get("format") == DOMAIN_FORMAT:
        raise bad(f"this is the layout of domain {layout.get('domain')!r}; give one of its disks' "
                  f"folders ({', '.join(layout.get('disks') or {}) or 'none recorded'})")
    if layout.get("format") != DISK_FORMAT:
        raise bad("it is not a xenlvm disk layout (a file of the guest's own?)")
    if layout.get("format_version") != FORMAT_VERSION:
        raise bad(f"format version {layout.get('format_version')!r}; this xenlvm reads version "
                  f"{FORMAT_VERSION} only")
    if not isinstance(layout.get("size"), int) or layout["size"] <= 0:
        raise bad("the disk size is not recorded")
    table = layout.get("table")
    if layout.get("table_error"):
        raise bad(f"at backup time {layout['table_error']}")
    if table is not None:
        _check_table(table, bad)
    numbers = {p["number"] for p in table["partitions"]} if table else {None}
    for entry in layout.get("contents") or []:
        if entry.get("partition") not in numbers:
            raise bad(f"contents names partition {entry.get('partition')!r}, not in the table")
        for key in ("type", "uuid", "label"):
            value = entry.get(key)
            pattern = {"type": _TYPE, "uuid": _UUID, "label": _TEXT}[key]
            if value is not None and (not isinstance(value, str) or not pattern.fullmatch(value)):
                raise bad(f"partition {entry.get('partition')}: {key} {value!r} is not valid")
        if entry.get("mkfs") is not None and not _valid_mkfs(entry["mkfs"], entry.get("type")):
            raise bad(f"partition {entry.get('partition')}: mkfs {entry['mkfs']!r} is not valid")
        exposed = entry.get("exposed_as")
        if exposed is not None and exposed not in (".", f"p{entry.get('partition')}"):
            raise bad(f"exposed_as {exposed!r} is not a path xenlvm writes")
    return layout


def _valid_mkfs(made: Any, fstype: Any) -> bool:
    """True when the recorded mkfs parameters are what ext_parameters or xfs_parameters write."""
    if not isinstance(made, dict) or made.get("block_size") not in (512, 1024, 2048, 4096, 8192, 65536) \
            or made.get("inode_size") not in (128, 256, 512, 1024, 2048):
        return False
    if fstype == "xfs":
        flags = made.get("flags")
        return isinstance(flags, dict) and set(flags) <= {*XFS_FLAGS, "ftype"} and \
            all(value in (0, 1) for value in flags.values())
    features = made.get("features")
    return isinstance(features, list) and all(isinstance(f, str) and _FEATURE.fullmatch(f) for f in features)


def _check_table(table: Any, bad) -> None:
    if not isinstance(table, dict) or table.get("label") not in ("dos", "gpt"):
        raise bad("the partition table's label is not dos or gpt")
    if table.get("unit") != "sectors" or table.get("sector_size") not in (512, 4096):
        raise bad("the partition table is not in 512- or 4096-byte sectors")
    if table.get("id") is not None and not _LABEL_ID.fullmatch(str(table["id"])):
        raise bad(f"label id {table['id']!r} is not valid")
    for key in ("first_lba", "last_lba"):
        if table.get(key) is not None and not isinstance(table[key], int):
            raise bad(f"{key} is not a number")
    for part in table.get("partitions") or []:
        ints = all(isinstance(part.get(k), int) and part[k] >= 0 for k in ("number", "start", "size"))
        if not ints or not 1 <= part["number"] <= 128:
            raise bad(f"partition {part.get('number')!r} has no valid number, start or size")
        if not _TYPE.fullmatch(str(part.get("type"))):
            raise bad(f"partition {part['number']}: type {part.get('type')!r} is not valid")
        if part.get("uuid") is not None and not _UUID.fullmatch(str(part["uuid"])):
            raise bad(f"partition {part['number']}: uuid {part['uuid']!r} is not valid")
        for key in ("name", "attrs"):
            if part.get(key) is not None and not _TEXT.fullmatch(str(part[key])):
                raise bad(f"partition {part['number']}: {key} {part[key]!r} cannot be written back")
