"""Configuration: the frozen dataclasses that the YAML file becomes (xenlvm.config.load reads it).

Each key of the file is declared once, in the metadata of the field it sets (``key``): its
parser, and whether ``null`` disables it. The file's reader, the man page and the documentation tests all take
the keys from here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from xenlvm.config import commands, values
from xenlvm.config.commands import DomainCommands
from xenlvm.config.values import (
    AUTO,
    Auto,
    Size,
    Volume,
    WindowMode,
    parse_duration,
    parse_size,
)
from xenlvm.host import DEFAULT_PATH

TYPE_CHECKING = False  # xenlvm/__init__.py says why
if TYPE_CHECKING:
    from typing import Any

__all__ = ["AUTO", "Auto", "Config", "DomainCommands", "Job", "QuiesceSettings", "Settings", "SnapshotSpec",
           "Size", "ThinPoolSettings", "Volume", "VmDiskSettings", "WatchdogSettings", "WindowMode",
           "XenSettings", "config_path", "keys", "parse_duration", "parse_size"]

DEFAULT_CONFIG_PATH = "/etc/xenlvm/config.yaml"
XL_TIMEOUT = 30.0


def key(parse: Callable[[Any], Any] | type, *, null_disables: bool = False, name: str = "",
        many: bool = False) -> dict[str, Any]:
    """The metadata of a field that a key of the configuration file sets. parse reads the key's
    YAML value (a dataclass: a nested section of its own keys; many: a list of them).
    null_disables: ``key: null`` makes it None; otherwise null leaves the default. name: the
    key, when it is not the field's name."""
    return {"parse": parse, "null_disables": null_disables, "key": name, "many": many}


def keys(section: type) -> dict[str, dataclasses.Field]:
    """Given a section's dataclass, return its keys in the file, each with the field it sets."""
    return {f.metadata["key"] or f.name: f for f in dataclasses.fields(section) if "parse" in f.metadata}


@dataclass(frozen=True)
class QuiesceSettings:
    """Application-consistent snapshots: each domain's freeze command runs just before its pause
    window, its thaw command just after, whatever fails in between (xenlvm.quiesce.freeze)."""

    # argv lists; an item that is exactly "{domain}" becomes the domain's name
    freeze: tuple[str, ...] | None = field(default=None, metadata=key(commands.command, null_disables=True))
    thaw: tuple[str, ...] | None = field(default=None, metadata=key(commands.command, null_disables=True))
    # for each freeze and each thaw; past it, the command and its process group are killed
    timeout: float = field(default=30.0, metadata=key(values.parse_duration))
    # a freeze that fails: "crash-consistent" (thaw it, warn, pause only) or "abort" (pre fails)
    on_failure: str = field(default="crash-consistent",
                            metadata=key(values.choice("crash-consistent", "abort")))
    # the guard thaws a window's guests this long after its last freeze (pre records its deadline)
    max_frozen: float = field(default=600.0, metadata=key(values.parse_duration))
    # domains with commands of their own, instead of freeze/thaw
    per_domain: tuple[DomainCommands, ...] = field(default=(), metadata=key(commands.per_domain_commands))

    def commands(self, domain: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """The domain's freeze and thaw argv, {domain} replaced; None: it is not frozen."""
        own = next((c for c in self.per_domain if c.domain == domain), None)
        freeze, thaw = (own.freeze, own.thaw) if own is not None else (self.freeze, self.thaw)
        if freeze is None or thaw is None:
            return None
        return commands.substitute(freeze, domain), commands.substitute(thaw, domain)

    def problem(self) -> str | None:
        """What is wrong with the section as a whole, or None."""
        if (self.freeze is None) != (self.thaw is None):
            return "give both 'freeze:' and 'thaw:' (a domain frozen must be thawed by its own command)"
        if self.freeze is None and not self.per_domain:
            return "needs 'freeze:' and 'thaw:', or 'per_domain:' commands"
        if self.max_frozen <= 2 * self.timeout:
            return (f"max_frozen ({self.max_frozen:g} s) must be more than twice the timeout "
                    f"({self.timeout:g} s): the guard would thaw guests in the middle of a normal window")
        return None


@dataclass(frozen=True)
class XenSettings:
    """How a job quiesces the Xen domains whose disks live on its volume."""

    # names, or AUTO: every running domain with a disk on the volume
    domains: tuple[str, ...] | Auto = field(metadata=key(values.domains))
    mode: str = field(default="pause", metadata=key(values.choice("none", "pause")))
    # a configured domain that is not running: "warn" and go on, or "fail"
    missing: str = field(default="warn", metadata=key(values.choice("warn", "fail")))
    # for every xl call: xl can hang
    timeout: float = field(default=XL_TIMEOUT, metadata=key(values.parse_duration))
    # AUTO: <state_dir>/<job>/xen-config (xenlvm.xen.export); None: no export
    export_dir: str | Auto | None = field(default=AUTO,
                                          metadata=key(values.optional_path, null_disables=True))
    config_dir: str = field(default="/etc/xen", metadata=key(values.parse_absolute_path))
    # AUTO: per-domain for a job with vmdisks, together otherwise (xenlvm.xen.windows)
    window: WindowMode | Auto = field(default=AUTO, metadata=key(values.window_mode))
    # freeze each domain's applications just before its pause window, thaw them after
    quiesce: QuiesceSettings | None = field(default=None, metadata=key(QuiesceSettings))


@dataclass(frozen=True)
class WatchdogSettings:
    """Keep a classic snapshot from overflowing during a long backup by extending it."""

    # percent full that triggers an extension
    threshold: int = field(default=70, metadata=key(values.parse_percent_int))
    # grow by this percentage of the snapshot's current size
    step: int = field(default=50, metadata=key(values.parse_percent_int))
    # never larger (also VG free)
    max_size: Size = field(default=Size(text="50%ORIGIN", percent=50, of="ORIGIN"),
                           metadata=key(values.parse_size))
    # seconds between two looks at the fill
    interval: float = field(default=2.0, metadata=key(values.parse_duration))
    # the monitor exits by itself after this long
    max_lifetime: float = field(default=86400.0, metadata=key(values.parse_duration))


@dataclass(frozen=True)
class ThinPoolSettings:
    """Keep a thin pool that holds a job's thin snapshot from filling up (xenlvm.thinpool.space): a
    full pool stops every thin LV in it, the VMs' disks too. Applies to every thin snapshot."""

    # pre refuses when the pool's data or metadata use is at or above this
    refuse_above: int = field(default=80, metadata=key(values.parse_percent_int))
    # during the backup the pool guard acts when the pool's data or metadata use reaches this
    protect_at: int = field(default=90, metadata=key(values.parse_percent_int))
    # first try to grow the pool from the VG's free space; else drop the job's thin snapshots
    extend: bool = field(default=True, metadata=key(values.parse_bool))
    # seconds between two looks of the pool guard
    interval: float = field(default=2.0, metadata=key(values.parse_duration))
    # what the backup may need in the pool at most (pre warns when it has not that much free);
    # None: the origin's size (everything is overwritten)
    expected_growth: Size | None = field(default=None, metadata=key(values.parse_size))

    def problem(self) -> str | None:
        """What is wrong with these settings together, or None."""
        if self.protect_at <= self.refuse_above:
            return (f"protect_at ({self.protect_at}%) must be above refuse_above ({self.refuse_above}%): "
                    "pre refuses a pool that the guard would have to act on at once")
        if self.protect_at > 99:
            return "protect_at must be below 100%: the guard must act before the pool is full"
        return None


@dataclass(frozen=True)
class VmDiskSettings:
    """VM disks on logical volumes of their own (phy: disks), found through xl at each pre."""

    # names, or AUTO: every running domain but Domain-0
    domains: tuple[str, ...] | Auto = field(metadata=key(values.domains))
    # of each classic disk's snapshot; thin disks get thin snapshots
    size: Size = field(metadata=key(values.parse_size))
    # "files": mount the guest's filesystems; "image": a read-only image file served through FUSE
    # by qemu-storage-daemon, no copy (xenlvm.vmdisks.image_server); "image-copy": a sparse copy in image_dir
    expose: str = field(default="files", metadata=key(values.choice("files", "image", "image-copy")))
    # a named domain not running, or a disk not on an LV: "warn" or "fail"
    missing: str = field(default="warn", metadata=key(values.choice("warn", "fail")))
    # where expose: image-copy writes the image files (on disk, not tmpfs)
    image_dir: str | None = field(default=None, metadata=key(values.parse_absolute_path))
    # domains (vm3) and disks (vm2/xvdb) not to back up; also for xen.domains: auto
    exclude: tuple[str, ...] = field(default=(), metadata=key(values.exclude))
    # "thin": each thin disk as a chain, a full image then increments read from the thin pool's
    # metadata (xenlvm.increments); other disks whole every run. None: every disk whole
    incremental: str | None = field(default=None,
                                    metadata=key(values.choice("thin"), null_disables=True))
    # a chained disk's full image every N runs (1: every run), increments in between
    full_every: int = field(default=7, metadata=key(values.parse_count))

    def problem(self) -> str | None:
        """What is wrong with these settings together, or None."""
        if self.expose == "image-copy" and self.image_dir is None:
            return ("expose: image-copy needs 'image_dir:', a directory on a disk with room for the images "
                    "(not a tmpfs)")
        if self.incremental is not None and self.expose != "image-copy":
            return (f"incremental: {self.incremental} needs expose: image-copy (not {self.expose}): each "
                    "run's full image or increment is a file that xenlvm writes into image_dir")
        return None

    def excludes(self, domain: str, disk: str = "") -> bool:
        """True when the domain (disk not given) or its disk is excluded."""
        return domain in self.exclude or (bool(disk) and f"{domain}/{disk}" in self.exclude)


@dataclass(frozen=True)
class SnapshotSpec:
    """One volume of a job: its origin, the snapshot's name and size, where it is mounted.
    (What pre makes of it at run time, with the host's answers: xenlvm.targets.base.)"""

    origin: Volume = field(metadata=key(values.parse_volume, name="volume"))
    snapshot: str = field(metadata=key(values.snapshot_name))
    mountpoint: str  # the job's mountpoint, or <mountpoint>/<name> of one of several volumes
    # None: thin snapshot of a thin origin
    size: Size | None = field(default=None, metadata=key(values.parse_size))

    @property
    def snapshot_volume(self) -> Volume:
        return Volume(self.origin.vg, self.snapshot)


@dataclass(frozen=True)
class Job:
    """One backup job: which volumes to snapshot, where to mount them, which sesam tasks it serves.

    A job with one volume mounts its snapshot at the mountpoint itself; with several, each
    snapshot is mounted at <mountpoint>/<name>, all created in one Xen pause window. In the
    file, a job with one volume gives its volume, snapshot and size keys on the job itself."""

    name: str
    volumes: tuple[SnapshotSpec, ...] = field(metadata=key(SnapshotSpec, many=True))
    mountpoint: str = field(metadata=key(values.parse_mountpoint))
    tasks: tuple[str, ...] = field(default=(), metadata=key(values.tasks))
    unmount_timeout: float = field(default=300.0, metadata=key(values.parse_duration))
    fill_warning: int = field(default=80, metadata=key(values.parse_percent_int))
    xen: XenSettings | None = field(default=None, metadata=key(XenSettings))
    watchdog: WatchdogSettings | None = field(default=None, metadata=key(WatchdogSettings))
    vmdisks: VmDiskSettings | None = field(default=None, metadata=key(VmDiskSettings))
    # for thin snapshots: always set (its defaults) whether the file has the section or not
    thin_pool: ThinPoolSettings = field(default_factory=ThinPoolSettings, metadata=key(ThinPoolSettings))

    @property
    def xl_timeout(self) -> float:
        """The timeout of the job's xl calls: its xen.timeout, or the default for a job with VM
        disks and no xen: section."""
        return self.xen.timeout if self.xen is not None else XL_TIMEOUT


@dataclass(frozen=True)
class Settings:
    """Host-wide settings that apply to every job."""

    path: str = field(default=DEFAULT_PATH, metadata=key(values.parse_search_path))
    log_file: str | None = field(default="/var/log/xenlvm.log",
                                 metadata=key(values.optional_path, null_disables=True))
    lock_dir: str = field(default="/run/xenlvm", metadata=key(values.parse_absolute_path))
    lock_timeout: float = field(default=120.0, metadata=key(values.parse_duration))
    command_timeout: float = field(default=120.0, metadata=key(values.parse_duration))
    # per job: state.json, the Xen configuration export
    state_dir: str = field(default="/var/lib/xenlvm", metadata=key(values.parse_absolute_path))
    # node_exporter textfile, e.g. /var/lib/node_exporter/xenlvm.prom
    metrics_file: str | None = field(default=None, metadata=key(values.optional_path, null_disables=True))
    # status calls a snapshot older than this stale
    stale_after: float = field(default=86400.0, metadata=key(values.parse_duration))


@dataclass(frozen=True)
class Config:
    path: str
    settings: Settings
    jobs: dict[str, Job] = field(default_factory=dict)


def config_path(option: str | None) -> str:
    """The configuration file to use: --config, else $XENLVM_CONFIG, else the default."""
    return option or os.environ.get("XENLVM_CONFIG") or DEFAULT_CONFIG_PATH
