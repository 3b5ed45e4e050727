"""Configuration: read the YAML file once, validate all of it, return frozen dataclasses.

Nothing else in xenlvm looks at raw YAML. Every mistake is reported with the file, the line
YAML gives for it, the key and what is wrong, before any command runs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml

from xenlvm.errors import ConfigError
from xenlvm.fsutil import is_below

DEFAULT_CONFIG_PATH = "/etc/xenlvm/config.yaml"
# libyaml's parser where PyYAML has it (several times faster), else the pure-Python one.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
XL_TIMEOUT = 30.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# LVM's own rules for VG and LV names (lvm(8), "VALID NAMES"), plus the suffixes it reserves.
_LVM_NAME = re.compile(r"^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}$")
_LVM_RESERVED_PARTS = ("_cdata", "_cmeta", "_corig", "_mlog", "_mimage", "_pmspare", "_rimage",
                       "_rmeta", "_tdata", "_tmeta", "_vorigin", "_vdata")
# Job names end up in LVM tags, lock and state file names: keep them plain.
_JOB_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGTP])(?:I?B)?$", re.IGNORECASE)
_PERCENT = re.compile(r"^(\d{1,3})%(ORIGIN|FREE|VG)$", re.IGNORECASE)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$")
_UNIT_BYTES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_XEN_DOMAIN = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}$")
_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}
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


@dataclass(frozen=True)
class XenSettings:
    """How a job quiesces the Xen domains whose disks live on its volume."""

    domains: tuple[str, ...] | str  # names, or "auto": every running domain with a disk on the volume
    mode: str = "pause"  # "none" or "pause"
    missing: str = "warn"  # a configured domain that is not running: "warn" and go on, or "fail"
    timeout: float = XL_TIMEOUT  # for every xl call: xl can hang
    export_dir: str | None = ""  # "" means /var/lib/xenlvm/<job>/xen-config; None disables
    config_dir: str = "/etc/xen"


@dataclass(frozen=True)
class WatchdogSettings:
    """Keep a classic snapshot from overflowing during a long backup by extending it."""

    threshold: int = 70  # percent full that triggers an extension
    step: int = 50  # grow by this percentage of the snapshot's current size
    max_size: Size = Size(text="50%ORIGIN", percent=50, of="ORIGIN")  # never larger (also VG free)
    interval: float = 2.0  # seconds between two looks at the fill
    max_lifetime: float = 86400.0  # the monitor exits by itself after this long


@dataclass(frozen=True)
class VmDiskSettings:
    """VM disks on logical volumes of their own (phy: disks), found through xl at each pre."""

    domains: tuple[str, ...] | str  # names, or "auto": every running domain but Domain-0
    size: Size  # of each classic disk's snapshot; thin disks get thin snapshots
    expose: str = "files"  # "files": mount the guest's filesystems; "image": a sparse image file
    missing: str = "warn"  # a named domain not running, or a disk not on an LV: "warn" or "fail"
    image_dir: str | None = None  # where expose: image writes the image files (on disk, not tmpfs)


@dataclass(frozen=True)
class SnapshotSpec:
    """One volume of a job: its origin, the snapshot's name and size, where it is mounted.
    A VM disk (found at pre time) also names its domain and disk, and how it is exposed."""

    origin: Volume
    snapshot: str
    mountpoint: str
    size: Size | None = None  # None: thin snapshot of a thin origin
    expose: str | None = None  # None: a volume, mounted; "files" or "image": a VM disk
    domain: str = ""
    disk: str = ""

    @property
    def snapshot_volume(self) -> Volume:
        return Volume(self.origin.vg, self.snapshot)


@dataclass(frozen=True)
class Job:
    """One backup job: which volumes to snapshot, where to mount them, which sesam tasks it serves.

    A job with one volume mounts its snapshot at the mountpoint itself; with several, each
    snapshot is mounted at <mountpoint>/<name>, all created in one Xen pause window."""

    name: str
    mountpoint: str
    volumes: tuple[SnapshotSpec, ...]
    tasks: tuple[str, ...] = ()
    unmount_timeout: float = 300.0
    fill_warning: int = 80
    xen: XenSettings | None = None
    watchdog: WatchdogSettings | None = None
    vmdisks: VmDiskSettings | None = None


@dataclass(frozen=True)
class Settings:
    """Host-wide settings that apply to every job."""

    path: str = DEFAULT_PATH
    log_file: str | None = "/var/log/xenlvm.log"
    lock_dir: str = "/run/xenlvm"
    lock_timeout: float = 120.0
    command_timeout: float = 120.0
    state_dir: str = "/var/lib/xenlvm"  # per job: state.json, the Xen configuration export
    metrics_file: str | None = None  # node_exporter textfile, e.g. /var/lib/node_exporter/xenlvm.prom
    stale_after: float = 86400.0  # status calls a snapshot older than this stale


@dataclass(frozen=True)
class Config:
    path: str
    settings: Settings
    jobs: dict[str, Job] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Value parsers: each takes the raw value and returns the typed one or raises ValueError with a
# sentence that finishes "<file>:<line>: <key>: ...".


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


# ---------------------------------------------------------------------------------------------
# The walk over YAML nodes. Working on nodes (not on yaml.safe_load's dicts) keeps line numbers.


class Fields(dict):
    """Parsed values by key, with the YAML node each came from (for errors found later)."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, yaml.Node] = {}


class _Reader:
    def __init__(self, path: str) -> None:
        self.path = path
        self._constructor = yaml.constructor.SafeConstructor()

    def error(self, node: yaml.Node | None, key: str, message: str) -> ConfigError:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        key = key.lstrip(".")
        where = f" {key}:" if key else ""
        return ConfigError(f"{self.path}{line}:{where} {message}")

    def mapping(self, node: yaml.Node, key: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, key, "must be a mapping of keys to values")
        items: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(name, str) or not name:
                raise self.error(key_node, key, "keys must be plain names")
            if name in items:
                raise self.error(key_node, f"{key}.{name}".lstrip("."), "is given twice")
            items[name] = (key_node, value_node)
        return items

    def value(self, node: yaml.Node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def fields(self, node: yaml.Node, key: str, parsers: dict[str, Callable[[Any], Any]],
               required: tuple[str, ...] = (), not_empty: tuple[str, ...] = ()) -> Fields:
        """Given a mapping node and a parser per allowed key, return the parsed values (with the
        node of each, for later errors). Keys in required must be there; keys in required or
        not_empty must not be empty."""
        items = self.mapping(node, key)
        for name, (key_node, _) in items.items():
            if name not in parsers:
                allowed = ", ".join(sorted(parsers))
                raise self.error(key_node, f"{key}.{name}", f"unknown key (allowed here: {allowed})")
        for name in required:
            if name not in items:
                raise self.error(node, key, f"the key {name!r} is required")
        parsed = Fields()
        for name, (_, value_node) in items.items():
            parsed.nodes[name] = value_node
            parser = parsers[name]
            if isinstance(parser, Section):
                empty = isinstance(value_node, yaml.ScalarNode) and value_node.tag.endswith(":null")
                if empty and name in (*required, *not_empty):
                    raise self.error(value_node, f"{key}.{name}", "must not be empty")
                parsed[name] = None if empty else parser.parse(self, value_node, f"{key}.{name}".lstrip("."))
                continue
            try:
                raw = self.value(value_node)
            except (yaml.YAMLError, ValueError, TypeError, AttributeError, OverflowError) as exc:
                raise self.error(value_node, f"{key}.{name}", f"cannot read this value: {exc}") from None
            if raw is None:
                if name in (*required, *not_empty):
                    raise self.error(value_node, f"{key}.{name}", "must not be empty")
                parsed[name] = None
                continue
            try:
                parsed[name] = parsers[name](raw)
            except (ValueError, TypeError, OverflowError) as exc:
                raise self.error(value_node, f"{key}.{name}", str(exc)) from None
        return parsed


def _optional_path(value: Any) -> str | None:
    return None if value in (False, "") else parse_absolute_path(value)


class Section:
    """A parser for a nested mapping, so that its keys get their own line numbers."""

    def __init__(self, parse: Callable[[_Reader, yaml.Node, str], Any]) -> None:
        self.parse = parse


def _domain_name(value: Any) -> str:
    text = str(value)
    if not _XEN_DOMAIN.fullmatch(text):
        raise ValueError(f"{text!r} is not a Xen domain name (letters, digits, _ . - ; "
                         "not starting with -)")
    return text


def _domains(value: Any) -> tuple[str, ...] | str:
    if value == "auto":
        return "auto"
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError("must be 'auto' or a list of domain names, e.g. [vm1, vm2]")
    names = tuple(_domain_name(v) for v in value)
    if len(set(names)) != len(names):
        raise ValueError("names a domain twice")
    return names


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of: {', '.join(allowed)}")
        return str(value)
    return parse


_XEN_PARSERS: dict[str, Callable[[Any], Any]] = {
    "domains": _domains,
    "mode": _choice("none", "pause"),
    "missing": _choice("warn", "fail"),
    "timeout": parse_duration,
    "export_dir": _optional_path,
    "config_dir": parse_absolute_path,
}


_WATCHDOG_PARSERS: dict[str, Callable[[Any], Any]] = {
    "threshold": parse_percent_int,
    "step": parse_percent_int,
    "max_size": parse_size,
    "interval": parse_duration,
    "max_lifetime": parse_duration,
}


def _watchdog_section(reader: _Reader, node: yaml.Node, key: str) -> WatchdogSettings:
    values = reader.fields(node, key, _WATCHDOG_PARSERS)
    return WatchdogSettings(**{k: v for k, v in values.items() if v is not None})


def _xen_section(reader: _Reader, node: yaml.Node, key: str) -> XenSettings:
    values = reader.fields(node, key, _XEN_PARSERS, required=("domains",))
    return XenSettings(**{k: v for k, v in values.items() if v is not None or k == "export_dir"})


_VMDISK_PARSERS: dict[str, Callable[[Any], Any]] = {
    "domains": _domains,
    "size": parse_size,
    "expose": _choice("files", "image"),
    "missing": _choice("warn", "fail"),
    "image_dir": parse_absolute_path,
}


def _vmdisks_section(reader: _Reader, node: yaml.Node, key: str) -> VmDiskSettings:
    values = reader.fields(node, key, _VMDISK_PARSERS, required=("domains", "size"))
    settings = VmDiskSettings(**{k: v for k, v in values.items() if v is not None})
    if settings.expose == "image" and settings.image_dir is None:
        raise reader.error(node, key, "expose: image needs 'image_dir:', a directory on a disk "
                           "with room for the images (not a tmpfs)")
    return settings


def _tasks(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError("must be a list of sesam task names, e.g. [xen_vm1]")
    return tuple(parse_task(item) for item in value)


_SETTINGS_PARSERS: dict[str, Callable[[Any], Any]] = {
    "path": parse_search_path,
    "log_file": _optional_path,
    "lock_dir": parse_absolute_path,
    "lock_timeout": parse_duration,
    "command_timeout": parse_duration,
    "state_dir": parse_absolute_path,
    "metrics_file": _optional_path,
    "stale_after": parse_duration,
}

def _volume_name(value: Any) -> str:
    text = str(value)
    if not _JOB_NAME.fullmatch(text):
        raise ValueError(f"{text!r} is not a directory name for the mount (letters, digits, _ . -)")
    return text


_VOLUME_PARSERS: dict[str, Callable[[Any], Any]] = {
    "volume": parse_volume,
    "snapshot": lambda v: check_lvm_name(str(v), "snapshot name"),
    "size": parse_size,
}


def _volumes_section(reader: _Reader, node: yaml.Node,
                     key: str) -> tuple[tuple[dict[str, Any], yaml.Node], ...]:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        raise reader.error(node, key, "must be a list of volumes, each with volume: and snapshot: "
                           "(and size: unless the volume is thin)")
    parsers = {**_VOLUME_PARSERS, "name": _volume_name}
    return tuple((reader.fields(item, f"{key}[{i}]", parsers, required=("volume", "snapshot"),
                                not_empty=tuple(parsers)), item)
                 for i, item in enumerate(node.value))


_JOB_PARSERS: dict[str, Callable[[Any], Any]] = {
    **_VOLUME_PARSERS,
    "volumes": Section(_volumes_section),
    "mountpoint": parse_mountpoint,
    "tasks": _tasks,
    "unmount_timeout": parse_duration,
    "fill_warning": parse_percent_int,
    "xen": Section(_xen_section),
    "watchdog": Section(_watchdog_section),
    "vmdisks": Section(_vmdisks_section),
}


def parse_config(text: str, path: str = "<config>") -> Config:
    """Given the text of a configuration file, return the validated Config or raise ConfigError."""
    reader = _Reader(path)
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{line}: YAML syntax error: {problem}") from None
    if root is None:
        raise ConfigError(f"{path}: the file is empty; it needs at least a 'jobs:' section "
                          "(see config.example.yaml)")
    top = reader.fields(root, "", {"settings": Section(_settings_section), "jobs": Section(_jobs_section)},
                        required=("jobs",))
    if top["jobs"] is None:
        raise reader.error(root, "jobs", "must not be empty")
    return Config(path=path, settings=top.get("settings") or Settings(), jobs=top["jobs"])


def _settings_section(reader: _Reader, node: yaml.Node, key: str) -> Settings:
    values = reader.fields(node, key, _SETTINGS_PARSERS)
    return Settings(**{k: v for k, v in values.items() if v is not None or k in ("log_file", "metrics_file")})


def _jobs_section(reader: _Reader, node: yaml.Node, key: str) -> dict[str, Job]:
    jobs: dict[str, Job] = {}
    job_items = reader.mapping(node, key)
    if not job_items:
        raise reader.error(node, key, "defines no job")
    for name, (key_node, value_node) in job_items.items():
        if not _JOB_NAME.fullmatch(name):
            raise reader.error(key_node, f"jobs.{name}", "a job name may contain letters, digits, "
                               "_ . - (not starting with . or -), at most 64 characters")
        values = reader.fields(value_node, f"jobs.{name}", _JOB_PARSERS, required=("mountpoint",),
                               not_empty=("volume", "snapshot", "volumes"))
        volumes = _job_volumes(reader, value_node, f"jobs.{name}", values)
        nodes = values.nodes
        values = {k: v for k, v in values.items() if k not in (*_VOLUME_PARSERS, "volumes") and v is not None}
        job = Job(name=name, volumes=volumes, **values)
        image_dir = job.vmdisks.image_dir if job.vmdisks is not None else None
        if image_dir is not None and _nested(image_dir, job.mountpoint):
            raise reader.error(nodes["vmdisks"], f"jobs.{name}.vmdisks.image_dir",
                               f"{image_dir} must lie outside the job's mountpoint {job.mountpoint}")
        jobs[name] = job
    _check_jobs_apart(reader, node, list(jobs.values()))
    return jobs


def _job_volumes(reader: _Reader, node: yaml.Node, key: str, values: Fields) -> tuple[SnapshotSpec, ...]:
    """The job's volumes: either volume/snapshot/size on the job itself, or a volumes: list."""
    single = [k for k in _VOLUME_PARSERS if k in values]
    # Each spec with the key and node that named its snapshot, for errors.
    specs: list[tuple[SnapshotSpec, str, yaml.Node]] = []
    if values.get("volumes") is not None:
        if single:
            raise reader.error(values.nodes[single[0]], f"{key}.{single[0]}", "give either "
                               "volume/snapshot/size or a 'volumes:' list, not both")
        names: set[str] = set()
        for i, (item, item_node) in enumerate(values["volumes"]):
            origin = item["volume"]
            name = item.get("name") or origin.lv
            if name in names:
                raise reader.error(item.nodes.get("name", item_node), f"{key}.volumes[{i}].name",
                                   f"{name!r} is used twice in this job (each volume is mounted at "
                                   "<mountpoint>/<name>)")
            names.add(name)
            specs.append((SnapshotSpec(origin, item["snapshot"], f"{values['mountpoint']}/{name}",
                                       item.get("size")),
                          f"{key}.volumes[{i}].snapshot", item.nodes["snapshot"]))
    elif values.get("vmdisks") is not None:
        if single:
            raise reader.error(values.nodes[single[0]], f"{key}.{single[0]}", "a job with 'vmdisks:' "
                               "exposes them below its mountpoint: give its volumes as a 'volumes:' "
                               "list (each is mounted at <mountpoint>/<name>)")
    else:
        for required in ("volume", "snapshot"):
            if required not in values:
                raise reader.error(node, key, f"the key {required!r} (or a 'volumes:' list, or "
                                   "'vmdisks:') is required")
        specs.append((SnapshotSpec(values["volume"], values["snapshot"], values["mountpoint"],
                                   values.get("size")), f"{key}.snapshot", values.nodes["snapshot"]))
    origins = {spec.origin for spec, _, _ in specs}
    seen: set[Volume] = set()
    for spec, where, snapshot_node in specs:
        if spec.snapshot_volume in origins:
            raise reader.error(snapshot_node, where, f"must differ from the name of the volume "
                               f"{spec.snapshot_volume} that the job backs up")
        if spec.snapshot_volume in seen:
            raise reader.error(snapshot_node, where, f"{spec.snapshot_volume} is used twice in this job")
        seen.add(spec.snapshot_volume)
    return tuple(spec for spec, _, _ in specs)


def _nested(a: str, b: str) -> bool:
    """True when a and b are the same directory or one lies below the other."""
    return is_below(a, b, or_same=True) or is_below(b, a)


def _check_jobs_apart(reader: _Reader, node: yaml.Node, jobs: list[Job]) -> None:
    """Two jobs must never share a mountpoint (or nest them) or a snapshot LV."""
    for i, a in enumerate(jobs):
        for b in jobs[i + 1:]:
            pair = f"jobs {a.name!r} and {b.name!r}"
            if a.mountpoint == b.mountpoint:
                raise reader.error(node, "jobs", f"{pair} use the same mountpoint {a.mountpoint}")
            if _nested(a.mountpoint, b.mountpoint):
                raise reader.error(node, "jobs", f"{pair} have nested mountpoints "
                                   f"{a.mountpoint} and {b.mountpoint}")
            shared = {v.snapshot_volume for v in a.volumes} & {v.snapshot_volume for v in b.volumes}
            if shared:
                raise reader.error(node, "jobs", f"{pair} use the same snapshot {min(map(str, shared))}")


def permission_problem(path: str, info: os.stat_result) -> str | None:
    """Like sshd's StrictModes: a root job must not read a file that someone else can change."""
    if info.st_uid != 0:
        return (f"{path} is owned by uid {info.st_uid}, not root, so that user could make xenlvm run "
                f"what they want as root. Fix: chown root:root {path}")
    if info.st_mode & 0o022:
        return (f"{path} is writable by its group or by everyone (mode {info.st_mode & 0o777:o}), so "
                f"others could make xenlvm run what they want as root. Fix: chmod 600 {path}")
    return None


def load_config(path: str, *, strict: bool | None = None) -> Config:
    """Read and validate the configuration file at path. When strict (default: when running as
    root), refuse a file that a user other than root could change."""
    strict = os.geteuid() == 0 if strict is None else strict
    try:
        with open(path, encoding="utf-8") as handle:
            if strict:
                problem = permission_problem(path, os.fstat(handle.fileno()))
                if problem:
                    raise ConfigError(problem)
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found; copy config.example.yaml there "
                          "and adapt it, or pass --config") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc}") from None
    return parse_config(text, path)


def config_path(option: str | None) -> str:
    """The configuration file to use: --config, else $XENLVM_CONFIG, else the default."""
    return option or os.environ.get("XENLVM_CONFIG") or DEFAULT_CONFIG_PATH
