"""Crafted guest disks for the hostile-guest tier (test_hostile_guests.py), built as plain
image files on this machine with mkfs, sfdisk, debugfs and a few bytes written by hand: no
mount, no loop device, no LVM here. The guest copies each onto a logical volume of its own.

Each function makes one disk image at path and returns what the backup must find on it
(path below the disk's directory in the tree -> content), where it can find anything.
"""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

MIB = 1 << 20
SECTOR = 512
SBIN = "/usr/sbin:/sbin:/usr/bin:/bin"
# mkfs.xfs refuses filesystems below 300 MiB unless it believes it runs under xfstests
XFS_ENV = {"PATH": SBIN, "TEST_DIR": "/tmp", "TEST_DEV": "/dev/null", "QA_CHECK_FS": "1"}


def run(*argv: str, stdin: str | None = None, env: dict | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                          env=env or {"PATH": SBIN, "E2FSPROGS_FAKE_TIME": "1700000000"})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def blank(path: Path, size: int) -> None:
    with open(path, "wb") as handle:
        handle.truncate(size)


def ext4(path: Path, size: int, *options: str, offset: int = 0, source: Path | None = None) -> None:
    """An ext4 filesystem of size bytes at offset in path (created when missing)."""
    if not path.exists():
        blank(path, offset + size)
    made = path if offset == 0 else path.with_suffix(".part")
    if offset:
        blank(made, size)
    run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", *options,
        *(["-d", str(source)] if source else []), str(made), str(size // 1024) + "k")
    if offset:
        _place(made, path, offset)


def xfs(path: Path, size: int, *options: str, offset: int = 0) -> None:
    made = path.with_suffix(".part")
    blank(made, size)
    run("mkfs.xfs", "-q", "-f", *options, str(made), env=XFS_ENV)
    if not path.exists():
        blank(path, offset + size)
    _place(made, path, offset)


def _place(part: Path, disk: Path, offset: int) -> None:
    with open(part, "rb") as source, open(disk, "r+b") as target:
        target.seek(offset)
        while chunk := source.read(MIB):
            target.write(chunk)
    part.unlink()


def debugfs(path: Path, *requests: str, offset: int = 0) -> str:
    """Run debugfs -w requests on the ext filesystem at offset in path."""
    where = f"{path}?offset={offset}" if offset else str(path)
    return run("debugfs", "-w", "-f", "-", where, stdin="\n".join(requests) + "\n")


def write_file(path: Path, name: str, content: str, offset: int = 0) -> None:
    source = path.parent / f".{path.name}.{name.replace('/', '_')}"
    source.write_text(content)
    debugfs(path, f"write {source} {name}", offset=offset)
    source.unlink()


def mbr(path: Path, entries: list[tuple[int, int, int]], at: int = 0, boot: bool = True) -> None:
    """Write an MBR (or an EBR at byte at) with entries (type, start sector, sectors)."""
    table = b"".join(struct.pack("<B3sB3sII", 0, b"\0\0\0", kind, b"\0\0\0", start, count)
                     for kind, start, count in entries)
    table += b"\0" * (64 - len(table))
    with open(path, "r+b") as handle:
        handle.seek(at + 446)
        handle.write(table + b"\x55\xaa")
    del boot


# ---------------------------------------------------------------------------------------------
# the cases


def panic_on_error(path: Path) -> dict[str, str]:
    """ext4 that asks the kernel to panic on any error (tune2fs -e panic), with one directory
    whose block is garbage: reading that directory makes ext4 report an error."""
    ext4(path, 16 * MIB)
    write_file(path, "marker", "panic marker\n")
    debugfs(path, "mkdir victim", *(f"write /dev/null victim/file{n:03d}" for n in range(150)))
    run("tune2fs", "-e", "panic", str(path))
    blocks = run("debugfs", "-R", "blocks victim", str(path)).split()
    size = _block_size(path)
    with open(path, "r+b") as handle:
        for block in blocks:
            handle.seek(int(block) * size)
            handle.write(os.urandom(size))
    return {"marker": "panic marker"}


def _block_size(path: Path) -> int:
    for line in run("dumpe2fs", "-h", str(path)).splitlines():
        if line.startswith("Block size:"):
            return int(line.split(":")[1])
    raise RuntimeError(f"no block size in {path}")
