"""Targets: one thing pre snapshots and shows to sesam, made at run time from the configuration
and the host as the inventory saw it (never kept in the frozen configuration).

Every kind goes through the same steps, in pre's order: ``prepare`` (queries only, before any
change), the snapshot (created by pre inside the pause window, tagged by xenlvm.core.ownership),
``expose`` (after the window, each change registering its undo). Tearing down, with proof of
ownership, is the kind's too: xenlvm.phases.teardown. The kinds: a volume of the job, mounted at a
path (xenlvm.targets.volume); a VM disk that xl shows, exposed as files or an image
(xenlvm.vmdisks.target). A third kind is one new class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from xenlvm.config.model import Job, SnapshotSpec
from xenlvm.core.context import Context
from xenlvm.core.undo import UndoStack
from xenlvm.host.lvm import LogicalVolume
from xenlvm.host.mounts import MountEntry


class Target(ABC):
    """One snapshot to make and show: spec says what (origin, snapshot name, size, where),
    origin is the origin LV as the inventory saw it."""

    vm_disk = False  # its snapshot carries the VM-disk tag beside xenlvm's others (ownership.tags_for)
    domain: str | None = None  # the Xen domain whose disk this is, if it is a VM disk

    def __init__(self, spec: SnapshotSpec, origin: LogicalVolume) -> None:
        self.spec = spec
        self.origin = origin

    def origin_mountpoints(self, mounts: Sequence[MountEntry]) -> list[str]:
        """Where the origin is mounted on the host (xen.domains auto looks for disks below)."""
        return []

    def prepare(self, ctx: Context, mounts: Sequence[MountEntry]) -> None:  # noqa: B027 (optional)
        """What must be read from the host before any change (queries only)."""

    @abstractmethod
    def expose(self, ctx: Context, job: Job, undo: UndoStack) -> None:
        """After the snapshot exists: make it readable for the backup, registering each undo."""

    def __str__(self) -> str:
        return str(self.spec.origin)
