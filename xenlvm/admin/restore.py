"""Restoring a VM disk onto a logical volume: the checks that come before any write, and
restore-image (a whole-disk image file back onto its LV). restore-disk, which rebuilds a disk
from its layout and files, is in xenlvm.admin.rebuild and makes the same checks first.

The target is refused unless it exists, is active and large enough, no domain has it as a
disk, nothing has it mounted, mapped (loop device, device-mapper holder) or open, it has no
snapshot, and the admin said --yes (or asked for a dry run, which changes nothing).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
from contextlib import AbstractContextManager
from dataclasses import dataclass

from xenlvm.config.values import parse_volume
from xenlvm.errors import CommandFailed, SafetyRefusal, UsageError, XenlvmError
from xenlvm.host import mount
from xenlvm.host.lock import JobLock
from xenlvm.host.lvm import LogicalVolume, Lvm, device_path
from xenlvm.host.runner import COPY_TIMEOUT, Runner
from xenlvm.host.xl import Xl, disk_paths
from xenlvm.increments import chain
from xenlvm.increments import fileformat as increment
from xenlvm.vmdisks import teardown as vmdisk_teardown

log = logging.getLogger("xenlvm")

SYS = "/sys"  # loop devices' backing files, device-mapper holders


class RestoreFailed(XenlvmError):
    """A restore step failed; the message says in what state it left the target."""


@dataclass(frozen=True)
class RestoreTarget:
    """The LV a restore overwrites, proven free to be (not a target of pre: xenlvm.targets)."""

    volume: LogicalVolume
    device: str

    def __str__(self) -> str:
        return str(self.volume)  # VG/LV


def parse_target(text: str) -> tuple[str, str]:
    """Given VG/LV (or /dev/VG/LV) from the command line, return (vg, lv), or raise UsageError."""
    try:
        volume = parse_volume(text)
    except ValueError as exc:
        raise UsageError(f"--to {exc}") from None
    return volume.vg, volume.lv


def check_target(runner: Runner, text: str, needed: int, xl_timeout: float) -> RestoreTarget:
    """The target LV named by text, after proving that it can be overwritten with needed bytes;
    raise SafetyRefusal naming the first reason why not. Nothing is changed."""
    vg_name, lv_name = parse_target(text)
    vg = Lvm(runner).volume_group(vg_name)
    volume = vg.get(lv_name)
    if volume is None:
        raise SafetyRefusal(f"the target {text} does not exist: create it first (at least {needed} "
                            f"bytes: lvcreate -L {needed}b -n {lv_name} {vg_name}). Nothing was changed.")
    if volume.major is None or volume.minor is None:
        raise SafetyRefusal(f"the target {text} is not active: lvchange -ay {text}. Nothing was changed.")
    if volume.size < needed:
        raise SafetyRefusal(f"the target {text} has {volume.size} bytes but the disk had {needed}: "
                            f"extend it (lvextend -L {needed}b {text}). Nothing was changed.")
    numbers = (volume.major, volume.minor)
    try:
        records = Xl(runner, xl_timeout).records()
    except XenlvmError as exc:
        raise SafetyRefusal(f"cannot tell whether a domain has {text} as a disk: {exc}. Nothing was "
                            "changed.") from None
    for domain, record in records.items():
        if any(mount.device_numbers(path) == numbers for path in disk_paths(record)):
            raise SafetyRefusal(f"the target {text} is a disk of domain {domain!r}, which exists (running"
                                f" or paused): shut it down first (xl shutdown {domain}). Nothing was "
                                "changed.")
    mounted = [e.mountpoint for e in mount.read_mounts() if (e.major, e.minor) == numbers]
    if mounted:
        raise SafetyRefusal(f"the target {text} is mounted at {', '.join(mounted)}: unmount it first. "
                            "Nothing was changed.")
    loops = vmdisk_teardown.loops_of([numbers], os.path.join(SYS, "block"))
    holders = _holders(numbers)
    if loops or holders:
        raise SafetyRefusal(f"the target {text} is in use by {', '.join([*loops, *holders])} (a loop device "
                            "or a device-mapper device over it): remove those first (losetup --detach, "
                            "kpartx -d). Nothing was changed.")
    snapshots = sorted(lv.name for lv in vg.lvs.values() if lv.origin == lv_name)
    if snapshots:
        raise SafetyRefusal(f"the target {text} has snapshots ({', '.join(snapshots)}): remove them first "
                            "(for xenlvm's own: xenlvm post or xenlvm cleanup; a chain's base, "
                            "<LV>.xenlvm-base.<run>: xenlvm cleanup --bases). Nothing was changed.")
    if volume.is_open:
        raise SafetyRefusal(f"the target {text} is open (lvs shows 'o' in its attributes): a process or "
                            "a kernel user holds it (see 'fuser -v "
                            f"{device_path(vg_name, lv_name)}', 'dmsetup info'). Nothing was changed.")
    return RestoreTarget(volume, device_path(vg_name, lv_name))


def _holders(numbers: tuple[int, int]) -> list[str]:
    """The device-mapper devices built over the device (kpartx mappings, a crypt, ...)."""
    try:
        return sorted(os.listdir(os.path.join(SYS, "dev", "block", f"{numbers[0]}:{numbers[1]}", "holders")))
    except OSError:
        return []


def confirm(target: RestoreTarget, yes: bool, dry_run: bool, what: str) -> None:
    if not yes and not dry_run:
        raise SafetyRefusal(f"{what} overwrites {target} ({target.device}) entirely. Run it with --dry-run "
                            "to see every command, then with --yes to do it. Nothing was changed.")


def lock(runner: Runner, lock_dir: str, target: str) -> AbstractContextManager:
    """One restore per target at a time (a dry run changes nothing and takes no lock)."""
    if runner.dry_run:
        return contextlib.nullcontext()
    return JobLock(lock_dir, "restore-" + target.replace("/", "-"), 0.0)


# ---------------------------------------------------------------------------------------------
# restore-image


def restore_image(runner: Runner, image: str, target_text: str, *, yes: bool, xl_timeout: float,
                  lock_dir: str) -> list[str]:
    """Copy the disk image file image onto the LV target_text, then prove the LV holds exactly
    the image (SHA-256). Return the report's lines. An increment is restored with its chain."""
    if increment.is_increment(image):
        return restore_chain(runner, image, target_text, yes=yes, xl_timeout=xl_timeout, lock_dir=lock_dir)
    try:
        info = os.stat(image)
    except OSError as exc:
        raise UsageError(f"cannot read the image {image}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        raise UsageError(f"{image} is not a disk image (not a regular file, or empty)")
    parse_target(target_text)
    with lock(runner, lock_dir, target_text):
        target = check_target(runner, target_text, info.st_size, xl_timeout)
        confirm(target, yes, runner.dry_run, "restore-image")
        conv = "sparse,fsync" if discard(runner, target) else "fsync"
        argv = ["dd", f"if={image}", f"of={target.device}", "bs=4M", f"conv={conv}", "status=none"]
        try:
            runner.change(argv, timeout=COPY_TIMEOUT)
        except CommandFailed as exc:
            raise RestoreFailed(f"copying {image} onto {target} failed: {exc}. {target} now holds a "
                                "partial copy and is not usable; fix the cause and run restore-image "
                                "again.") from None
        if runner.dry_run:
            return [f"dry run: would compare the SHA-256 of {image} with the first {info.st_size} bytes "
                    f"of {target.device}"]
        expected, found = sha256_of(image, info.st_size), sha256_of(target.device, info.st_size)
        if expected != found:
            raise RestoreFailed(f"{target} does not hold the image after the copy (SHA-256 {found}, the "
                                f"image {expected}): the copy is damaged. Check 'dmesg' for I/O errors and "
                                "run restore-image again; do not start the domain from this disk.")
        return [f"restored {image} onto {target}: {info.st_size} bytes, SHA-256 {found} verified",
                *_tail_note(target, info.st_size)]


def _tail_note(target: RestoreTarget, size: int) -> list[str]:
    """What the report says of a target larger than the disk written onto it."""
    if target.volume.size <= size:
        return []
    return [f"note: {target} is {target.volume.size - size} bytes larger than the image; the rest was "
            "left as it was (a GPT guest sees its backup table short of the end: fix it inside the guest "
            "with 'sfdisk --relocate gpt-bak-std')"]


def discard(runner: Runner, target: RestoreTarget) -> bool:
    """Discard a thin target whole, so that only the data blocks need to be written (it stays
    thin; the rest reads as zeros). Return whether zeros may be skipped."""
    if not target.volume.is_thin:
        return False
    try:
        runner.change(["blkdiscard", target.device], timeout=COPY_TIMEOUT)
        return True
    except CommandFailed as exc:
        log.warning("blkdiscard %s failed (%s): every block is written instead", target, exc.stderr)
        return False


# ---------------------------------------------------------------------------------------------
# restore-image of an increment: the disk as of its run, from its chain


def restore_chain(runner: Runner, image: str, target_text: str, *, yes: bool, xl_timeout: float,
                  lock_dir: str) -> list[str]:
    """Write the disk as of the increment image's run onto the LV target_text, from the chain in
    image's folder, then prove the LV holds it (SHA-256). Every checksum is verified first, and
    again as the bytes are written, read through the descriptors the checks read (a file that
    changed meanwhile stops the write: RestoreFailed, the target holds a partial copy)."""
    parse_target(target_text)
    found = chain.resolve(image)
    try:
        return _restore_chain(runner, found, image, target_text, yes=yes, xl_timeout=xl_timeout,
                              lock_dir=lock_dir)
    finally:
        found.close()


def _restore_chain(runner: Runner, found: chain.Chain, image: str, target_text: str, *, yes: bool,
                   xl_timeout: float, lock_dir: str) -> list[str]:
    size, run = found.disk_size, found.increments[-1].run
    lines = ["the chain, oldest first (every file's SHA-256 verified, and again as it is written):",
             *(f"  {line}" for line in found.describe())]
    with lock(runner, lock_dir, target_text):
        target = check_target(runner, target_text, size, xl_timeout)
        confirm(target, yes, runner.dry_run, "restore-image")
        skip_zeros = discard(runner, target)
        if runner.dry_run:
            return [*lines, f"dry run: would write the disk as of run {run} ({size} bytes) onto "
                    f"{target.device}, then compare its SHA-256 with the chain's"]
        log.info("writing the disk as of run %s onto %s from %d files", run, target,
                 len(found.increments) + 1)
        try:
            expected = _write_disk(found, target.device, skip_zeros)
        except (OSError, XenlvmError) as exc:  # a file of the chain changed after it was verified
            raise RestoreFailed(f"writing the chain of {image} onto {target} failed: {exc}. {target} now "
                                "holds a partial copy and is not usable; fix the cause and run restore-image "
                                "again.") from None
        written = sha256_of(target.device, size)
        if written != expected:
            raise RestoreFailed(f"{target} does not hold the disk after the copy (SHA-256 {written}, the "
                                f"chain {expected}): check 'dmesg' for I/O errors and run restore-image "
                                "again; do not start the domain from this disk.")
        return [*lines, f"restored the disk as of run {run} onto {target}: {size} bytes, SHA-256 {written} "
                "verified", *_tail_note(target, size)]


def _write_disk(found: chain.Chain, device: str, skip_zeros: bool) -> str:
    """Write the chain's disk onto device from its first byte (blocks of zeros are skipped on a
    discarded thin target), synced. Return the SHA-256 of what the device must now hold."""
    digest = hashlib.sha256()
    fd = os.open(device, os.O_WRONLY | os.O_CLOEXEC)
    try:
        position = 0
        for block in chain.read_disk(found):
            digest.update(block)
            if not (skip_zeros and block.count(0) == len(block)):
                os.pwrite(fd, block, position)
            position += len(block)
        os.fsync(fd)
    finally:
        os.close(fd)
    return digest.hexdigest()


def sha256_of(path: str, length: int) -> str:
    """SHA-256 of the first length bytes of path, read from the device, not the page cache."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        remaining = length
        while remaining:
            block = os.read(fd, min(remaining, 4 << 20))
            if not block:
                raise RestoreFailed(f"{path} ended {remaining} bytes short of {length}")
            digest.update(block)
            remaining -= len(block)
    finally:
        os.close(fd)
    return digest.hexdigest()
