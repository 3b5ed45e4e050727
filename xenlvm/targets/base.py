"""Targets and their kinds. A target is one thing pre snapshots and shows to sesam, made at run
time from the configuration and the host as the inventory saw it (never kept in the frozen
configuration). A kind owns the whole life of its targets:

- pre: ``sweep`` what an earlier run left, ``plan`` the targets (queries only), each target's
  ``prepare`` (queries only, before any change), its snapshot (created by pre inside the pause
  window, tagged by xenlvm.core.ownership), its ``expose`` (after the window, each change
  registering its undo), and the kind's ``before_snapshots`` and ``after_expose`` for what
  its targets share;
- the host: ``find`` what it may have left of a job, from the configuration and the inventory
  alone (post, status and pre's sweep run in other processes than the pre that made it);
- post: ``stop`` what holds its snapshots open, ``release`` them (unmount, with proof of
  ownership: xenlvm.core.ownership), then ``removed`` for what goes once they are removed
  (post removes every kind's snapshots with one lvremove), and ``judge`` the backup;
- ``status`` and ``check``.

The kinds: a volume of the job, mounted at a path (xenlvm.targets.volume); a VM disk that xl
shows, exposed as files or an image (xenlvm.vmdisks.kind). pre, post, status, check and the
sweep loop over the kinds registered in xenlvm.phases.kinds: a third kind is one new module
with its Kind and Target, and one line there (beside its section of the configuration, in
xenlvm.config, if it has one). What lies below the kinds takes plain values from them (the
scope of the inventory, the pause windows' snapshots), never a kind.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xenlvm.config.model import Config, Job, SnapshotSpec, WindowMode
from xenlvm.core.context import Context
from xenlvm.core.inventory import Inventory
from xenlvm.core.preflight import Finding
from xenlvm.core.undo import UndoStack
from xenlvm.errors import XenlvmError, host_file_error
from xenlvm.host.lvm import LogicalVolume
from xenlvm.host.mount import MountEntry
from xenlvm.xen import windows
from xenlvm.xen.domains import XlView

TYPE_CHECKING = False  # xenlvm/__init__.py says why
if TYPE_CHECKING:
    from typing import Any


class Target(ABC):
    """One snapshot to make and show: spec says what (origin, snapshot name, size, where),
    origin is the origin LV as the inventory saw it."""

    vm_disk = False  # its snapshot carries the VM-disk tag beside xenlvm's others (ownership.tags_for)

    def __init__(self, spec: SnapshotSpec, origin: LogicalVolume) -> None:
        self.spec = spec
        self.origin = origin

    def domain_of(self) -> str | None:
        """The Xen domain whose disk this is, if it is a VM disk."""
        return None

    def kept_as_base(self) -> bool:
        """Whether its thin snapshot stays after the backup, as its chain's base until the next
        run (thinpool.check_thin_pools counts it at its origin's whole size)."""
        return False

    def origin_mountpoints(self, mounts: Sequence[MountEntry]) -> list[str]:
        """Where the origin is mounted on the host (xen.domains auto looks for disks below)."""
        return []

    def prepare(self, ctx: Context, mounts: Sequence[MountEntry]) -> None:  # noqa: B027 (optional)
        """What must be read from the host before any change (queries only)."""

    @abstractmethod
    def expose(self, ctx: Context, job: Job, undo: UndoStack) -> None:
        """After the snapshot exists: make it readable for the backup, registering each undo."""

    def window_snapshot(self, mounts: Sequence[MountEntry]) -> windows.Snapshot:
        """Its snapshot as the pause windows take it (xenlvm.xen.windows)."""
        major, minor = self.origin.major, self.origin.minor
        return windows.Snapshot(str(self.spec.snapshot_volume), str(self.spec.origin),
                                (major, minor) if major is not None and minor is not None else None,
                                tuple(self.origin_mountpoints(mounts)), self.domain_of())

    def __str__(self) -> str:
        return str(self.spec.origin)


@dataclass(frozen=True)
class Artefacts:
    """What one kind may have left of a job on the host. snapshots: those that exist and are
    proven the job's, each with the spec that proves it (lvremove takes both). A kind adds
    what else it leaves (mounts, processes, files) in a subclass; what a kind keeps beyond a
    run on purpose is not among them (post and the sweep leave it; status shows it)."""

    snapshots: tuple[tuple[SnapshotSpec, LogicalVolume], ...] = ()

    @property
    def anything(self) -> bool:
        """Whether there is anything to tear down."""
        return bool(self.snapshots)


@dataclass(frozen=True)
class Removal:
    """A snapshot post removes: its spec, the LV, and where a failure to remove it is told
    (a key of post's failures, in the order they are reported)."""

    key: str
    spec: SnapshotSpec
    snapshot: LogicalVolume


@dataclass(frozen=True)
class Shown:
    """One snapshot as status shows it: where its kind says it is (None: no one place),
    whether it is present (lv), where it is really exposed now."""

    spec: SnapshotSpec
    mountpoint: str | None
    snapshot: LogicalVolume | None
    exposed_at: tuple[str, ...] = ()


Failures = dict[str, list[XenlvmError]]


class Kind(ABC):
    """One kind of target, through its whole life (see the module's docstring)."""

    name: str  # in status ("kind") and messages

    @abstractmethod
    def in_job(self, job: Job) -> bool:
        """Whether the job has targets of this kind."""

    # -- what of the host a run reads for it (xenlvm.core.inventory.Scope) -----------------------
    def named_vgs(self, job: Job) -> list[str]:
        """The volume groups the configuration names for it."""
        return []

    def every_vg(self, job: Job) -> bool:
        """Whether its snapshots may be in any volume group (lvs then lists them all)."""
        return False

    def needs_xl(self, job: Job) -> bool:
        """Whether planning it asks xl."""
        return False

    def mounts_tree(self, job: Job) -> bool:
        """Whether it mounts a tree of root's alone at the job's mountpoint (other targets
        are then exposed inside it)."""
        return False

    def window_mode(self, job: Job) -> WindowMode | None:
        """The pause windows it suits when xen.window is not set (xenlvm.xen.windows), or None."""
        return None

    def excluded_domains(self, job: Job) -> tuple[str, ...]:
        """Domains the configuration leaves out of the backup."""
        return ()

    # -- pre ------------------------------------------------------------------------------------
    def sweep(self, ctx: Context, job: Job, host: Inventory, found: Artefacts) -> bool:
        """Remove what an earlier run of the job left (found); return whether there was any."""
        return False

    @abstractmethod
    def plan(self, ctx: Context, job: Job, host: Inventory) -> list[Target]:
        """The job's targets of this kind (queries only); refuse (PreflightFailed) what cannot be."""

    def before_snapshots(self, ctx: Context, job: Job, targets: Sequence[Target],  # noqa: B027 (optional)
                         undo: UndoStack) -> None:
        """What its targets need before their snapshots are taken."""

    def after_expose(self, ctx: Context, job: Job, targets: Sequence[Target],  # noqa: B027 (optional)
                     undo: UndoStack, host: Inventory, consistent: dict[str, bool]) -> None:
        """What its targets share once each is exposed (consistent: per domain, whether it froze)."""

    # -- the host -------------------------------------------------------------------------------
    @abstractmethod
    def find(self, config: Config, job: Job, host: Inventory) -> Artefacts:
        """What it may have left of the job on the host (queries only)."""

    # -- post -----------------------------------------------------------------------------------
    def stop(self, ctx: Context, job: Job, judge_backup: bool) -> None:  # noqa: B027 (optional)
        """Before its snapshots are found and released: stop what holds them open."""

    @abstractmethod
    def release(self, ctx: Context, job: Job, host: Inventory, found: Artefacts, failures: Failures,
                sound: bool) -> list[Removal]:
        """Unmount what exposes its snapshots, with proof; return those to remove. Each failure
        goes into failures under the key of what failed. sound: the backup is sound so far (a
        kind may then keep what its next run builds on, as the VM disks' chain bases)."""

    def removed(self, ctx: Context, job: Job, found: Artefacts,  # noqa: B027 (optional)
                removed: Sequence[LogicalVolume], failures: Failures) -> None:
        """After post's lvremove (removed: what went): what is left to clean up."""

    def judge(self, ctx: Context, job: Job, judge_backup: bool) -> None:  # noqa: B027 (optional)
        """After everything is cleaned up and no snapshot was invalid: raise what makes the
        backup fail or partial (judge_backup=False, xenlvm cleanup: only warn)."""

    # -- status and check -----------------------------------------------------------------------
    @abstractmethod
    def shown(self, job: Job, host: Inventory, found: Artefacts) -> list[Shown]:
        """Its snapshots for status: where each should be and where it really is exposed."""

    def status(self, config: Config, job: Job, found: Artefacts) -> dict[str, Any]:
        """What else status reports of it (keys of the job's report)."""
        return {}

    def describe(self, report: dict[str, Any]) -> list[str]:
        """Those keys of a job's status report (if it has them) as lines for a person."""
        return []

    def host_findings(self, config: Config, job: Job) -> list[Finding]:
        """check's findings of the host for it, the same for every job of the kind (e.g. the
        programs only it runs); check reports each once."""
        return []

    def check(self, config: Config, job: Job, host: Inventory,
              xl: XlView | XenlvmError | None) -> tuple[list[Finding], list[Target]]:
        """check's findings for it, and the targets pre would plan now: check checks those of
        every kind together as pre does (origins, snapshot names, room in each VG, thin pools,
        mountpoints). xl: the xl view, or the error asking xl raised."""
        return [], []

    def snapshot_at(self, job: Job, host: Inventory, path: str) -> LogicalVolume | None:
        """For check: its snapshot that pre's sweep would find mounted at path (then expected
        there, not a problem), or None."""
        return None


def collect(errors: list[XenlvmError], step: Callable[..., Any], *args: Any) -> Any:
    """Run step; a failure goes into errors (the rest of post still runs). Return its result."""
    try:
        return step(*args)
    except XenlvmError as exc:
        errors.append(exc)
    except OSError as exc:
        errors.append(host_file_error(exc))
    return None
