"""A VM disk of a job as the modules of xenlvm.vmdisks take it (plain values, no behaviour), and
the ways its snapshot is exposed (``vmdisks.expose`` in the configuration). The target that pre
plans (xenlvm.vmdisks.target) is one of these records, so that the modules below it never
need to import it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from xenlvm.config.model import SnapshotSpec
from xenlvm.host.lvm import LogicalVolume
from xenlvm.vmdisks.unexposed import NotExposed


class Exposure(str, Enum):
    """How a disk's snapshot is shown to the backup. A str, so that it reads and compares as
    the configuration's word."""

    FILES = "files"  # each filesystem mounted read-only in the tree (xenlvm.vmdisks.expose)
    IMAGE = "image"  # <disk>.img served through FUSE (xenlvm.vmdisks.image_server)
    IMAGE_COPY = "image-copy"  # <disk>.img a sparse copy in image_dir (xenlvm.vmdisks.image_copy)

    @property
    def is_image(self) -> bool:
        """The disk is one file, <mountpoint>/<domain>/<disk>.img."""
        return self is not Exposure.FILES

    def __str__(self) -> str:
        return self.value


@dataclass(eq=False)  # identity: pre's pause windows group targets in sets
class VmDisk:
    """One VM disk: its snapshot spec (mountpoint: <mountpoint>/<domain>/<disk>), its origin LV
    as the inventory saw it, its domain and name there (xvda), how it is exposed; and what
    exposing it found: the image it fell back to (expose: files, when not all of it could be
    files) and what was not exposed."""

    spec: SnapshotSpec
    origin: LogicalVolume
    domain: str
    disk: str
    how: Exposure
    fallback: Exposure | None = None
    not_exposed: NotExposed | None = None

    def __post_init__(self) -> None:
        self.how = Exposure(self.how)  # also given as the configuration's word

    @property
    def label(self) -> str:
        return f"{self.domain}/{self.disk}"

    @property
    def image(self) -> Exposure | None:
        """The image of it the backup reads: its exposure's, or the one it fell back to; None
        when the backup reads its files only (or nothing of it, when neither worked)."""
        return self.how if self.how.is_image else self.fallback

    @property
    def served(self) -> bool:
        """Its image is served by the job's image server (xenlvm.vmdisks.image_server)."""
        return self.image is Exposure.IMAGE
