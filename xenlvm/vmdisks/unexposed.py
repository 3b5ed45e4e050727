"""VM disks that could not be exposed as files (expose: files): a filesystem the kernel refused
to mount (a feature dom0 lacks, a corrupt superblock, a 64 KiB block size), or btrfs, which
xenlvm does not mount (see vmdisks.NOT_MOUNTED). One such disk does not stop the job: every
other disk is exposed and pre succeeds. The disk's bytes are backed up as a raw image where
possible (xenlvm.vmdisks.expose.fall_back); either way a note in the tree says what was not exposed
and why, and a record beside the job's lock tells ``status`` and post, which then exits 3
(errors.PartialBackup): the backup holds everything but those files.

    <mountpoint>/<domain>/<disk>.NOT-EXPOSED.txt   the note, for whoever restores from the backup
    <lock_dir>/<job>.not-exposed.json               the record, from pre to post
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from xenlvm.core.undo import UndoStack
from xenlvm.errors import PartialBackup
from xenlvm.host.fsutil import read_small, remove_if_present, write_atomically

log = logging.getLogger("xenlvm")

NOTE_SUFFIX = ".NOT-EXPOSED.txt"


@dataclass(frozen=True)
class NotExposed:
    """What of one disk was not exposed as files, why, and where its bytes are instead."""

    domain: str
    disk: str
    problems: tuple[str, ...]  # "partition 3: <why>", or "the disk: <why>"
    image: str | None  # the disk's raw image in the tree (relative to the mountpoint), or None

    def instead(self) -> str:
        return (f"its bytes are in the raw image {self.image}" if self.image else
                "its bytes are NOT in the backup (see above why no image of it was made)")

    def describe(self) -> str:
        return f"{self.domain}/{self.disk}: {'; '.join(self.problems)}; {self.instead()}"


def note_path(mountpoint: str) -> str:
    """The note for the disk exposed at mountpoint (<mountpoint>/<domain>/<disk>)."""
    return f"{mountpoint}{NOTE_SUFFIX}"


def write_note(mountpoint: str, found: NotExposed) -> None:
    """Tell, in the tree itself, what of the disk is not there as files and why."""
    lines = [f"xenlvm did not expose everything of {found.domain}/{found.disk} as files:", ""]
    lines += [f"  {problem}" for problem in found.problems]
    lines += ["", f"Instead, {found.instead()}.",
              "Restore the disk from the image with 'xenlvm restore-image'." if found.image else
              "Back this disk up another way (expose: image, or from inside the VM).", ""]
    with open(note_path(mountpoint), "x", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    os.chmod(note_path(mountpoint), 0o644)


def record_path(lock_dir: str, job_name: str) -> str:
    return os.path.join(lock_dir, f"{job_name}.not-exposed.json")


def record(lock_dir: str, job_name: str, found: Sequence[NotExposed], undo: UndoStack) -> None:
    """pre: keep what was not exposed for status and post (or remove an earlier run's record)."""
    path = record_path(lock_dir, job_name)
    if not found:
        remove_if_present(path)
        return
    undo.push(f"remove {path}", lambda: remove_if_present(path))
    write_atomically(path, json.dumps([asdict(f) for f in found], indent=2) + "\n", dir_mode=0o700)
    for item in found:
        log.warning("not exposed as files: %s", item.describe())


def read(lock_dir: str, job_name: str) -> list[NotExposed]:
    """The record pre left (empty when there is none). One that cannot be read gives one entry
    that says so: what pre did not expose is not known, so the backup cannot pass as complete."""
    path = record_path(lock_dir, job_name)
    try:
        entries = json.loads(read_small(path) or "[]")
        return [NotExposed(str(e["domain"]), str(e["disk"]), tuple(map(str, e["problems"])),
                           None if e.get("image") is None else str(e["image"])) for e in entries]
    except (ValueError, KeyError, TypeError) as exc:
        log.error("%s cannot be read (%s); what pre did not expose is not known", path, exc)
        return [NotExposed("?", "?", (f"the record {path} of what pre did not expose cannot be read "
                                      f"({exc}): any VM disk of the job may lack files",), None)]


def verdict(lock_dir: str, job_name: str, found: Sequence[NotExposed], judge_backup: bool) -> None:
    """post, after everything was cleaned up: forget the record; a backup that lacked some files
    is partial (PartialBackup, exit 3), or only a warning for xenlvm cleanup."""
    remove_if_present(record_path(lock_dir, job_name))
    if not found:
        return
    message = (f"the backup of job {job_name} is partial: not exposed as files: "
               f"{' | '.join(f.describe() for f in found)}. Everything was cleaned up. Repair the "
               "filesystem inside the VM, or back that VM up with expose: image")
    if not judge_backup:
        log.warning("%s", message)
        return
    raise PartialBackup(message)
