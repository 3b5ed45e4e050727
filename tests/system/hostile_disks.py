"""Crafted guest disks for the hostile-guest tier (test_hostile_guests.py), built as plain
image files on this machine with mkfs, sfdisk, debugfs and a few bytes written by hand: no
mount, no loop device, no LVM here. The guest copies each onto a logical volume of its own.

Each function makes one disk image at path and returns what the backup must find on it
(path below the disk's directory in the tree -> content), where it can find anything.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import struct
import subprocess
from collections.abc import Callable
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


def cached(name: str, build: Callable[[Path], dict[str, str]]) -> tuple[Path, dict[str, str]]:
    """The image of the disk name, built by build once and kept in .work/hostile-disks (built
    again when this file changes): some take a minute to build (many_files), none changes."""
    key = hashlib.sha256(Path(__file__).read_bytes() + name.encode()).hexdigest()[:16]
    cache = Path(__file__).resolve().parents[2] / ".work" / "hostile-disks"
    image, expected = cache / f"{name}-{key}.img", cache / f"{name}-{key}.json"
    cache.mkdir(parents=True, exist_ok=True)
    # The pytest workers share the cache and often want the same disk (every case uses the good
    # one) at the same moment: one builds it while the others wait, and none removes an image
    # another has just made (they did, and then copied a half-built or missing image).
    with open(cache / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not expected.exists():
            for old in cache.glob(f"{name}-*"):
                shutil.rmtree(old) if old.is_dir() else old.unlink()
            building = cache / f"{name}-{key}.building"
            building.mkdir()
            found = build(building / "disk.img")
            (building / "disk.img").rename(image)
            shutil.rmtree(building)  # and what the builder left beside the image
            written = cache / f".{name}-{key}.json.tmp"
            written.write_text(json.dumps(found))
            written.rename(expected)  # last: the image is complete once this name exists
        return image, json.loads(expected.read_text())


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


def sfdisk(path: Path, script: str) -> list[tuple[int, int]]:
    """Write a partition table with sfdisk; return each partition's (offset, size) in bytes."""
    run("sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(path), stdin=script)
    table = run("partx", "--raw", "--bytes", "--noheadings", "--output", "START,SIZE", str(path))
    return [(int(start) * SECTOR, int(size)) for start, size in (line.split() for line in table.splitlines())]


def refused(path: Path) -> dict[str, str]:
    """MBR: p1 a good ext4, p2 an ext4 with 64 KiB blocks, which blkid knows and dom0's kernel
    (4 KiB pages) refuses to mount."""
    blank(path, 24 * MIB)
    (p1, s1), (p2, s2) = sfdisk(path, "label: dos\nstart=2048, size=8M, type=83\ntype=83\n")
    ext4(path, s1, offset=p1)
    write_file(path, "marker", "refused p1 marker\n", offset=p1)
    ext4(path, s2, "-b", "65536", offset=p2)
    return {"p1/marker": "refused p1 marker"}


def _crc32c(data: bytes) -> int:
    table = []
    for n in range(256):
        value = n
        for _ in range(8):
            value = (value >> 1) ^ 0x82F63B78 if value & 1 else value >> 1
        table.append(value)
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def btrfs(path: Path) -> dict[str, str]:
    """A btrfs superblock as blkid recognises it (mkfs.btrfs is not needed: xenlvm must not
    mount it, only see what it is)."""
    blank(path, 16 * MIB)
    block = bytearray(4096)
    block[32:48] = bytes(range(16))  # fsid
    struct.pack_into("<QQ8sQ", block, 48, 65536, 0, b"_BHRfS_M", 1)
    struct.pack_into("<QQ", block, 112, 16 * MIB, 1 << 20)  # total_bytes, bytes_used
    struct.pack_into("<QQIIII", block, 128, 6, 1, 4096, 16384, 16384, 4096)
    block[0:4] = struct.pack("<I", _crc32c(bytes(block[32:])))
    with open(path, "r+b") as handle:
        handle.seek(65536)
        handle.write(block)
    return {}


def overlapping(path: Path) -> dict[str, str]:
    """MBR whose partitions overlap: p1 and p3 are the same ext4, p2 starts inside it."""
    blank(path, 16 * MIB)
    ext4(path, 8 * MIB, offset=MIB)
    write_file(path, "marker", "overlap marker\n", offset=MIB)
    start, size = MIB // SECTOR, 8 * MIB // SECTOR
    mbr(path, [(0x83, start, size), (0x83, start + size // 2, size), (0x83, start, size)])
    return {"p1/marker": "overlap marker", "p3/marker": "overlap marker"}


def past_the_end(path: Path) -> dict[str, str]:
    """MBR: p1 a good ext4, p2 reaching 100 MiB past the disk's end, with the start of an ext4
    that claims all of it (blkid knows it; the kernel refuses a filesystem larger than its device)."""
    blank(path, 16 * MIB)
    ext4(path, 8 * MIB, offset=MIB)
    write_file(path, "marker", "past marker\n", offset=MIB)
    big = path.with_suffix(".big")
    ext4(big, 104 * MIB)
    with open(big, "rb") as source, open(path, "r+b") as target:
        target.seek(10 * MIB)
        target.write(source.read(6 * MIB))
    big.unlink()
    mbr(path, [(0x83, MIB // SECTOR, 8 * MIB // SECTOR), (0x83, 10 * MIB // SECTOR, 104 * MIB // SECTOR)])
    return {"p1/marker": "past marker"}


def looping_extended(path: Path) -> dict[str, str]:
    """MBR: p1 a good ext4; p2 an extended partition whose chain of EBRs points back to itself."""
    blank(path, 16 * MIB)
    ext4(path, 8 * MIB, offset=MIB)
    write_file(path, "marker", "ebr marker\n", offset=MIB)
    ebr = 10 * MIB // SECTOR
    mbr(path, [(0x83, MIB // SECTOR, 8 * MIB // SECTOR), (0x05, ebr, 4 * MIB // SECTOR)])
    # the EBR: one logical partition, and a link to the next EBR at offset 0: itself
    mbr(path, [(0x83, 2048, 2048), (0x05, 0, 4 * MIB // SECTOR)], at=ebr * SECTOR)
    return {"p1/marker": "ebr marker"}


def gpt_128(path: Path) -> dict[str, str]:
    """GPT with all 128 entries used: 127 tiny empty partitions and an ext4 in the last."""
    blank(path, 16 * MIB)
    script = "label: gpt\n" + "".join(f"start={2048 + 8 * n}, size=8\n" for n in range(127))
    script += "start=4096, size=8M\n"
    parts = sfdisk(path, script)
    assert len(parts) == 128
    ext4(path, parts[-1][1], offset=parts[-1][0])
    write_file(path, "marker", "gpt128 marker\n", offset=parts[-1][0])
    return {"p128/marker": "gpt128 marker"}


EVIL = "ev\nil\x1b[31m\x07\t"


def control_characters(path: Path) -> dict[str, str]:
    """GPT whose partition name and ext4 label hold a newline and control characters, and an
    ext4 whose file names do too (made from a directory with mkfs.ext4 -d)."""
    blank(path, 16 * MIB)
    (offset, size), = sfdisk(path, "label: gpt\nstart=2048, size=12M\n")
    run("sfdisk", "-q", "--part-label", str(path), "1", EVIL)
    source = path.with_suffix(".d")
    source.mkdir()
    (source / "marker").write_text("names marker\n")
    for name in (b"new\nline", b"esc\x1b[2Jape", b"bell\x07", b"not-utf8-\xff\xfe", b"-rf", b" "):
        with open(os.path.join(bytes(source), name), "wb") as handle:
            handle.write(name)
    ext4(path, size, "-L", EVIL[:16], offset=offset, source=source)
    for child in source.iterdir():
        child.unlink()
    source.rmdir()
    return {"p1/marker": "names marker"}


SAME_UUID = "12345678-1234-1234-1234-123456789abc"


def same_uuid(text: str) -> Callable[[Path], dict[str, str]]:
    """MBR: p1 ext4 and p2 XFS, each with the same filesystem UUID in every disk made by this,
    each holding text in its marker."""
    def build(path: Path) -> dict[str, str]:
        blank(path, 48 * MIB)
        (p1, s1), (p2, s2) = sfdisk(path, "label: dos\nstart=2048, size=12M, type=83\ntype=83\n")
        ext4(path, s1, "-U", SAME_UUID, offset=p1)
        write_file(path, "marker", f"{text} ext4\n", offset=p1)
        xfs(path, s2, "-m", f"uuid={SAME_UUID}", "-p", str(_proto(path, f"{text} xfs\n")), offset=p2)
        return {"p1/marker": f"{text} ext4", "p2/marker": f"{text} xfs"}
    return build


def _proto(path: Path, marker: str) -> Path:
    """A mkfs.xfs protofile that puts a file "marker" with that text into the root."""
    content = path.with_suffix(".marker")
    content.write_text(marker)
    proto = path.with_suffix(".proto")
    proto.write_text(f"/dev/null\n0 0\nd--755 0 0\nmarker ---644 0 0 {content}\n$\n")
    return proto


def xfs_marked(path: Path) -> dict[str, str]:
    """A bare XFS with a marker (its log is made dirty in the guest, see test_hostile_guests)."""
    xfs(path, 32 * MIB, "-p", str(_proto(path, "xfs dirty marker\n")))
    return {"marker": "xfs dirty marker"}


def many_files(path: Path, count: int = 100_000) -> dict[str, str]:
    """A bare ext4 with count empty files in 100 folders (mkfs.ext4 -d from a directory)."""
    source = path.with_suffix(".d")
    source.mkdir()
    (source / "marker").write_text("many marker\n")
    for folder in range(100):
        (source / f"d{folder:02d}").mkdir()
        for n in range(count // 100):
            (source / f"d{folder:02d}" / f"f{n:04d}").touch()
    ext4(path, 48 * MIB, "-N", str(count + 2000), "-I", "128", source=source)
    subprocess.run(["rm", "-rf", "--", str(source)], check=True)
    return {"marker": "many marker"}


def links_and_nodes(path: Path) -> dict[str, str]:
    """A bare ext4 with symbolic link loops, links out of the filesystem, a FIFO, device nodes
    (a disk, /dev/mem's numbers) and a setuid-root program."""
    ext4(path, 16 * MIB)
    write_file(path, "marker", "links marker\n")
    debugfs(path, "mkdir loops", "symlink loops/a b", "symlink loops/b a", "symlink loops/self self",
            "symlink loops/up ..", "symlink loops/root /", "symlink loops/shadow /etc/shadow",
            "mknod fifo p", "mknod disk b 8 0", "mknod mem c 1 1",
            "write /bin/true suid", "sif suid mode 0104755", "sif suid uid 0")
    return {"marker": "links marker"}
