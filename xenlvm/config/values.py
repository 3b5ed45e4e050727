"""The configuration's values: each parser takes the raw YAML value and returns the typed one,
or raises ValueError with a sentence that finishes "<file>:<line>: <key>: ..."."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

TYPE_CHECKING = False  # xenlvm/__init__.py says why
if TYPE_CHECKING:
    from typing import Any

# LVM's own rules for VG and LV names (lvm(8), "VALID NAMES"), plus the suffixes it reserves.
_LVM_NAME = re.compile(r"^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}$")
_LVM_RESERVED_PARTS = ("_cdata", "_cmeta", "_corig", "_mlog", "_mimage", "_pmspare", "_rimage",
                       "_rmeta", "_tdata", "_tmeta", "_vorigin", "_vdata")
# Job names end up in LVM tags, lock and state file names: keep them plain.
JOB_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGTP])(?:I?B)?$", re.IGNORECASE)
_PERCENT = re.compile(r"^(\d{1,3})%(ORIGIN|FREE|VG)$", re.IGNORECASE)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$")
_UNIT_BYTES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_XEN_DOMAIN = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}$")
_DURATION_SECONDS: dict[str | None, float] = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}
# Mounting a snapshot over one of these would hide part of the running system.
_SYSTEM_DIRS = {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc",
                "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/mnt", "/media"}
_NO_MOUNT_BELOW = ("/proc/", "/sys/", "/dev/", "/run/", "/usr/", "/etc/", "/boot/", "/bin/", "/sbin/",
                   "/lib/", "/lib32/", "/lib64/", "/libx32/")


@dataclass(frozen=True)
class Size:
    """A snapshot size: an absolute byte count, or a percentage of the origin, VG free space or VG."""

    text: str
    bytes: int | None = None
    percent: int | None = None
    of: str | None = None  # "ORIGIN", "FREE" or "VG" when percent is set

    def lvcreate_args(self) -> list[str]:
        """Given a size, return the lvcreate option that asks LVM for exactly it."""
        if self.bytes is not None:
            return ["--size", f"{self.bytes}b"]
        return ["--extents", f"{self.percent}%{self.of}"]

    def resolve(self, origin_bytes: int, vg_free_bytes: int, vg_bytes: int) -> int:
        """Given the origin and VG sizes, return how many bytes this size asks for."""
        if self.bytes is not None:
            return self.bytes
        base = {"ORIGIN": origin_bytes, "FREE": vg_free_bytes, "VG": vg_bytes}[self.of or ""]
        return base * (self.percent or 0) // 100


@dataclass(frozen=True)
class Volume:
    """An LVM logical volume named as VG/LV."""

    vg: str
    lv: str

    def __str__(self) -> str:
        return f"{self.vg}/{self.lv}"


class Auto(Enum):
    """A value xenlvm finds or derives itself: ``domains: auto`` (the running domains with a disk
    there), and the default of xen.window (from the job's kinds) and xen.export_dir (below
    state_dir)."""

    AUTO = "auto"

    def __str__(self) -> str:
        return str(self.value)


AUTO = Auto.AUTO


class WindowMode(Enum):
    """xen.window: which of a job's domains share a pause window (xenlvm.xen.windows)."""

    PER_DOMAIN = "per-domain"  # each domain paused only while its own disks' snapshots are taken
    TOGETHER = "together"  # every domain at once, for all of the job's snapshots

    def __str__(self) -> str:
        return str(self.value)


def parse_size(value: Any) -> Size:
    """Given '512M', '1G', '1.5GiB', '20%ORIGIN', '50%FREE', return a Size."""
    text = str(value).strip()
    match = _SIZE.fullmatch(text)
    if match:
        number, unit = float(match.group(1)), match.group(2).upper()
        size_bytes = int(number * _UNIT_BYTES[unit])
        size_bytes = -(-size_bytes // 512) * 512  # lvcreate takes whole 512-byte sectors only
        if size_bytes < 1 << 20:
            raise ValueError(f"{text!r} is smaller than 1M, too small for a snapshot")
        return Size(text=text, bytes=size_bytes)
    match = _PERCENT.fullmatch(text)
    if match:
        percent = int(match.group(1))
        if not 1 <= percent <= 100:
            raise ValueError(f"{text!r}: the percentage must be between 1 and 100")
        return Size(text=text, percent=percent, of=match.group(2).upper())
    raise ValueError(f"{text!r} is not a size: write e.g. 512M, 1G, 20%ORIGIN or 50%FREE")


def parse_duration(value: Any) -> float:
    """Given 30, '30s', '500ms', '5m' or '1h', return seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration: write e.g. 30s, 5m")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(str(value).strip())
        if not match:
            raise ValueError(f"{value!r} is not a duration: write e.g. 30s, 500ms, 5m")
        seconds = float(match.group(1)) * _DURATION_SECONDS[match.group(2)]
    if not 0 < seconds <= 7 * 86400:  # also refuses NaN
        raise ValueError(f"{value!r}: a duration must be more than 0 and at most 7 days")
    return seconds


def check_lvm_name(name: str, what: str = "name") -> str:
    """Return name if LVM accepts it as a VG or LV name, else raise ValueError saying why."""
    if not isinstance(name, str) or not _LVM_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"{name!r} is not a valid LVM {what}: use letters, digits and + _ . - "
                         "(not starting with -), at most 127 characters")
    if name == "snapshot" or name.startswith("pvmove") or any(p in name for p in _LVM_RESERVED_PARTS):
        raise ValueError(f"{name!r} is reserved by LVM and cannot be used as a {what}")
    return name


def parse_volume(value: Any) -> Volume:
    """Given 'VG/LV' or '/dev/VG/LV', return a Volume."""
    text = str(value)
    rest = text[len("/dev/"):] if text.startswith("/dev/") else text
    parts = rest.split("/")
    if len(parts) != 2:
        raise ValueError(f"{text!r} is not a logical volume: write VG/LV (e.g. system/xenvm) "
                         "or /dev/VG/LV")
    return Volume(check_lvm_name(parts[0], "volume group name"),
                  check_lvm_name(parts[1], "logical volume name"))


def parse_mountpoint(value: Any) -> str:
    """Given an absolute, normalized directory path, return it; refuse system directories."""
    text = str(value)
    if not text.startswith("/"):
        raise ValueError(f"{text!r} must be an absolute path such as /mnt/vmbackup")
    if any(ch.isspace() or not ch.isprintable() for ch in text) or "\\" in text:
        raise ValueError(f"{text!r} contains whitespace, control characters or backslashes")
    if os.path.normpath(text) != text or "//" in text:
        raise ValueError(f"{text!r} is not a normalized path: write it without '..', '.', "
                         "doubled or trailing slashes")
    if len(text) > 1024:
        raise ValueError("the path is longer than 1024 characters")
    if text in _SYSTEM_DIRS or text.startswith(_NO_MOUNT_BELOW):
        raise ValueError(f"{text!r} is a system directory; mounting a snapshot there would hide "
                         "part of the running system: use a directory of its own, e.g. /mnt/vmbackup")
    return text


def parse_task(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{value!r} is not a sesam task name")
    text = str(value)
    if not text or len(text) > 255 or not text.isprintable():
        raise ValueError(f"{text!r} is not a sesam task name (1 to 255 printable characters)")
    return text


def parse_percent_int(value: Any) -> int:
    text = str(value).strip().rstrip("%")
    if isinstance(value, bool) or not text.isdigit() or not 1 <= int(text) <= 100:
        raise ValueError(f"{value!r} is not a percentage between 1 and 100")
    return int(text)


def parse_count(value: Any) -> int:
    """A whole number of runs, 1 to 1000 (vmdisks.full_every)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise ValueError(f"{value!r} is not a whole number from 1 to 1000")
    return value


def parse_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not true or false")
    return value


def parse_search_path(value: Any) -> str:
    text = str(value)
    dirs = text.split(":")
    if not all(d.startswith("/") and d.isprintable() for d in dirs):
        raise ValueError(f"{text!r} must be a colon-separated list of absolute directories")
    return text


def parse_absolute_path(value: Any) -> str:
    text = str(value)
    if not text.startswith("/") or not text.isprintable() or os.path.normpath(text) != text:
        raise ValueError(f"{text!r} must be an absolute, normalized path")
    return text


def optional_path(value: Any) -> str | None:
    return None if value in (False, "") else parse_absolute_path(value)


def is_domain_name(text: str) -> bool:
    """Whether text is a Xen domain name xenlvm accepts (never an option: it cannot start with -)."""
    return bool(_XEN_DOMAIN.fullmatch(text))


def domain_name(value: Any) -> str:
    text = str(value)
    if not _XEN_DOMAIN.fullmatch(text):
        raise ValueError(f"{text!r} is not a Xen domain name (letters, digits, _ . - ; "
                         "not starting with -)")
    return text


def domains(value: Any) -> tuple[str, ...] | Auto:
    if value == "auto":
        return AUTO
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError("must be 'auto' or a list of domain names, e.g. [vm1, vm2]")
    names = tuple(domain_name(v) for v in value)
    if len(set(names)) != len(names):
        raise ValueError("names a domain twice")
    return names


def choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of: {', '.join(allowed)}")
        return str(value)
    return parse


def window_mode(value: Any) -> WindowMode:
    return WindowMode(choice(*(mode.value for mode in WindowMode))(value))


def tasks(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError("must be a list of sesam task names, e.g. [xen_vm1]")
    return tuple(parse_task(item) for item in value)


def volume_name(value: Any) -> str:
    text = str(value)
    if not JOB_NAME.fullmatch(text):
        raise ValueError(f"{text!r} is not a directory name for the mount (letters, digits, _ . -)")
    return text


def snapshot_name(value: Any) -> str:
    return check_lvm_name(str(value), "snapshot name")


def exclude(value: Any) -> tuple[str, ...]:
    """Given [vm3, vm2/xvdb]: domains, and disks of a domain by their vdev."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError("must be a list of domains and disks, e.g. [vm3, vm2/xvdb]")
    items = []
    for item in value:
        text = str(item)
        domain, _, disk = text.partition("/")
        domain_name(domain)
        if "/" in text and not _XEN_DOMAIN.fullmatch(disk):
            raise ValueError(f"{text!r} is not DOMAIN/DISK (the disk by its name in the domain, e.g. xvdb)")
        items.append(text)
    if len(set(items)) != len(items):
        raise ValueError("names an item twice")
    whole = set(items)
    covered = [i for i in items if "/" in i and i.partition("/")[0] in whole]
    if covered:
        raise ValueError(f"{covered[0]!r}: its domain is excluded as a whole already")
    return tuple(items)
