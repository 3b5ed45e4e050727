"""restore-disk: rebuild a VM disk on a logical volume from a restored <domain>/<disk> folder.

The folder is what sesam backed up below the job's mountpoint (expose: files): layout.json and
p1, p2, ... (or, for a bare filesystem, the filesystem's own files with <disk>.layout.json
beside the folder). Steps, each through the runner and logged:

1. the partition table, exactly as recorded (label id, partition numbers, starts, sizes,
   types, UUIDs, names, attributes): sfdisk; a bare filesystem's disk is wiped instead;
2. each filesystem xenlvm exposed: mkfs with its recorded type, UUID and label, mounted on a
   private directory, the files copied back with cp (owners, modes, times, ACLs, xattrs, hard
   links, sparse files), unmounted;
3. each swap partition: mkswap with its recorded UUID and label.
Guest LVM and anything else xenlvm did not expose are named in the report and not touched.
A failure stops at once; the message says which steps are done and what the disk holds now.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from xenlvm.admin.restore import (
    RestoreFailed,
    RestoreTarget,
    check_target,
    confirm,
    lock,
    parse_target,
)
from xenlvm.core.undo import UndoStack, taken_down
from xenlvm.errors import CommandFailed, UsageError, XenlvmError
from xenlvm.host import mount
from xenlvm.host.fsutil import closed_to_others, is_below
from xenlvm.host.runner import COPY_TIMEOUT, Runner
from xenlvm.vmdisks import layout

log = logging.getLogger("xenlvm")

RESTORABLE = ("ext2", "ext3", "ext4", "xfs")
XFS_META = ("crc", "finobt", "rmapbt", "reflink", "bigtime", "inobtcount")  # mkfs.xfs -m
# cp keeps numeric owners as they are; an explicitly named xattr fails loudly rather than
# silently, and ACLs come with the mode. -T: the folder's contents, and its own attributes, go
# onto the filesystem's root.
COPY = ["cp", "--archive", "--preserve=mode,ownership,timestamps,links,xattr", "--sparse=always",
        "--no-target-directory"]


def mkfs_argv(entry: dict[str, Any], device: str) -> list[str]:
    """The mkfs call that makes the filesystem of a layout's contents entry again: its type,
    UUID and label, and its features, block and inode size when recorded."""
    fstype, uuid, label, made = entry["type"], entry["uuid"], entry["label"], entry.get("mkfs")
    if fstype == "xfs":
        return _mkfs_xfs(uuid, made) + (["-L", label] if label else []) + [device]
    argv = [f"mkfs.{fstype}", "-q", "-F"] + (["-U", uuid] if uuid else [])
    if made:
        argv += ["-b", str(made["block_size"]), "-I", str(made["inode_size"]),
                 "-O", ",".join(["none", *made["features"]])]
    return argv + (["-L", label] if label else []) + [device]


def _mkfs_xfs(uuid: str | None, made: dict[str, Any] | None) -> list[str]:
    argv = ["mkfs.xfs", "-q", "-f"]
    meta = [f"uuid={uuid}"] if uuid else []
    if made:
        flags = made["flags"]
        v5 = flags.get("crc", 1) == 1  # a version 4 filesystem has none of the later features: name only crc
        meta += [f"{k}={flags[k]}" for k in XFS_META if k in flags and (v5 or k == "crc")]
        inode = [f"size={made['inode_size']}"] + [f"{k}={flags[k]}" for k in ("sparse", "nrext64")
                                                  if k in flags and v5]
        argv += ["-b", f"size={made['block_size']}", "-i", ",".join(inode)]
        argv += ["-n", f"ftype={flags['ftype']}"] if "ftype" in flags else []
    return argv + (["-m", ",".join(meta)] if meta else [])


def sfdisk_script(table: dict[str, Any]) -> str:
    """The sfdisk input that recreates table exactly: label id, first/last LBA, each partition
    by number (a gap stays a gap) with its start, size, type, UUID, name, attributes."""
    lines = [f"label: {table['label']}", f"unit: {table['unit']}", f"sector-size: {table['sector_size']}"]
    if table.get("id"):
        lines.append(f"label-id: {table['id']}")
    for key, header in (("first_lba", "first-lba"), ("last_lba", "last-lba")):
        if table.get(key) is not None:
            lines.append(f"{header}: {table[key]}")
    lines.append("")
    for part in table["partitions"]:
        fields = [f"start={part['start']}", f"size={part['size']}", f"type={part['type']}"]
        fields += [f"uuid={part['uuid']}"] if part.get("uuid") else []
        fields += [f'name="{part["name"]}"'] if part.get("name") else []
        fields += [f'attrs="{part["attrs"]}"'] if part.get("attrs") else []
        fields += ["bootable"] if part.get("bootable") else []
        # sfdisk takes the partition number from the digits that end the name before ':'
        lines.append(f"/dev/part{part['number']} : " + ", ".join(fields))
    return "\n".join(lines) + "\n"


class DiskRebuild:
    """One restore-disk run: what it did so far, so that a failure can say where it stopped."""

    def __init__(self, runner: Runner, target: RestoreTarget, disk: dict[str, Any], folder: str) -> None:
        self.runner, self.target, self.disk, self.folder = runner, target, disk, folder
        self.done: list[str] = []
        self.report: list[str] = []

    def run(self) -> list[str]:
        table = self.disk["table"]
        self._step("partition table" if table else "wipe", self._write_table)
        for entry in self.disk["contents"]:
            what = f"partition {entry['partition']}" if entry["partition"] is not None else "the disk"
            if entry.get("exposed_as") is not None and entry["type"] in RESTORABLE:
                self._step(f"{what}: {entry['type']} with its files", lambda e=entry: self._filesystem(e))
            elif entry["type"] == "swap":
                self._step(f"{what}: swap", lambda e=entry: self._swap(e))
            elif entry.get("reason") == "extended":
                self.report.append(f"{what}: an extended partition, recreated with the table")
            else:
                why = entry.get("detail") or f"{entry['type']}: restore-disk does not recreate it"
                self.report.append(f"{what} left as it is ({why}); restore it by hand if the VM needs it")
        return [f"restored {self.disk['domain']}/{self.disk['disk']} onto {self.target}: "
                f"{'; '.join(self.done)}", *self.report]

    def _step(self, name: str, action) -> None:
        log.info("restore-disk %s: %s", self.target, name)
        try:
            action()
        except (XenlvmError, OSError) as exc:  # OSError: the private mount directory
            state = "; ".join(self.done) or "nothing yet"
            raise RestoreFailed(f"restore-disk stopped at '{name}': {exc}\nDone before: {state}. "
                                f"{self.target} is not usable as it is: fix the cause and run restore-disk "
                                "again, which starts over from the partition table.") from None
        self.done.append(name)

    def _write_table(self) -> None:
        table = self.disk["table"]
        if table is None:
            self.runner.change(["wipefs", "--all", "--force", self.target.device])
            return
        self.runner.change(["sfdisk", "--wipe", "always", "--no-tell-kernel", self.target.device],
                           input=sfdisk_script(table))

    def _region(self, number: int | None, undo: UndoStack) -> str:
        """The device that holds partition number (None: the whole LV): a loop device over it."""
        if number is None:
            return self.target.device
        table = self.disk["table"]
        part = next(p for p in table["partitions"] if p["number"] == number)
        unit = table["sector_size"]
        result = self.runner.change(["losetup", "--find", "--show", "--offset", str(part["start"] * unit),
                                     "--sizelimit", str(part["size"] * unit), self.target.device])
        if result is None:
            return f"/dev/loopN (partition {number})"
        loop = result.stdout.strip()
        undo.push(f"detach {loop}", lambda: self.runner.change(["losetup", "--detach", loop]))
        return loop

    def _filesystem(self, entry: dict[str, Any]) -> None:
        source = os.path.normpath(os.path.join(self.folder, entry["exposed_as"]))
        with taken_down() as undo:
            device = self._region(entry["partition"], undo)
            self.runner.change(mkfs_argv(entry, device))
            mountpoint = "/tmp/xenlvm-restore-XXXX" if self.runner.dry_run else \
                tempfile.mkdtemp(prefix="xenlvm-restore-")
            if not self.runner.dry_run:
                undo.push(f"remove {mountpoint}", lambda: os.rmdir(mountpoint))
            options = "nodev,nosuid,noexec" + (",nouuid" if entry["type"] == "xfs" else "")
            self.runner.change(["mount", "-t", entry["type"], "-o", options, device, mountpoint])
            undo.push(f"unmount {mountpoint}", lambda: self.runner.change(["umount", mountpoint]))
            try:
                self.runner.change([*COPY, source, mountpoint], timeout=COPY_TIMEOUT)
            except CommandFailed as exc:
                raise RestoreFailed(f"copying the files of {source} failed: {exc}. The filesystem is made "
                                    "but holds only part of the files") from None

    def _swap(self, entry: dict[str, Any]) -> None:
        with taken_down() as undo:
            device = self._region(entry["partition"], undo)
            self.runner.change(["mkswap"] + (["-U", entry["uuid"]] if entry["uuid"] else []) +
                               (["-L", entry["label"]] if entry["label"] else []) + [device])


def restore_disk(runner: Runner, source: str, target_text: str, *, yes: bool, xl_timeout: float,
                 lock_dir: str) -> list[str]:
    """Rebuild the disk recorded in the restored folder source onto the LV target_text; return
    the report's lines. Refuses (changing nothing) unless the target is safe to overwrite."""
    path = layout.find_disk_layout(source)
    disk = layout.read_disk_layout(path)
    folder = os.path.dirname(path) if disk["table"] is not None else os.path.normpath(source)
    for entry in disk["contents"]:
        if entry.get("exposed_as") is not None and entry["type"] in RESTORABLE:
            files = os.path.normpath(os.path.join(folder, entry["exposed_as"]))
            if not os.path.isdir(files) or os.path.islink(files):
                raise UsageError(f"{files} is missing from the restored folder: restore the whole "
                                 f"{disk['domain']}/{disk['disk']} folder. Nothing was changed.")
    warning = restored_folder_warning(source, mount.read_mounts())
    if warning is not None:
        log.warning("%s", warning)
    parse_target(target_text)
    with lock(runner, lock_dir, target_text):
        target = check_target(runner, target_text, disk["size"], xl_timeout)
        confirm(target, yes, runner.dry_run, "restore-disk")
        return DiskRebuild(runner, target, disk, folder).run()


def restored_folder_warning(folder: str, mounts: list[mount.MountEntry]) -> str | None:
    """What to say when the restored folder lets the guest's files act on dom0: its setuid
    files and device nodes work on a filesystem mounted without nosuid or nodev, for every
    user who can get to them. None when the folder is safe."""
    real = os.path.realpath(folder)
    holding = [e for e in mounts if is_below(real, e.mountpoint, or_same=True) or e.mountpoint == "/"]
    if not holding or closed_to_others(real):
        return None
    mount = max(reversed(holding), key=lambda e: len(e.mountpoint))  # the last mounted of the deepest
    missing = [option for option in ("nosuid", "nodev") if option not in mount.options]
    if not missing:
        return None
    return (f"the restored folder {folder} lies on {mount.mountpoint}, mounted without "
            f"{' and '.join(missing)}, and other users can get to it: the guest's setuid files and "
            "device nodes work there as on dom0's own disks. Remove it once the disk is rebuilt, and "
            "restore into a folder of root's alone (mkdir -m 700) on a filesystem mounted nosuid,nodev "
            "next time (README: Restoring a VM)")
