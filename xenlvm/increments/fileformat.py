"""The increment file: the ranges of a VM disk that changed since a base run, in one
self-describing file that restore-image applies over the chain's full image.

Format version 1 (all integers little-endian, unsigned):

| bytes | field |
|---|---|
| 8 | magic ``XLVMINC\\n`` |
| 2 | version, 1 |
| 2 | flags: 1 when the base image's SHA-256 follows the names, else 0 |
| 4 | number of ranges N |
| 8 | the disk's size in bytes |
| 8 | data bytes: the sum of the lengths of the data ranges |
| 1 + n | the disk's name (ASCII, 1 to 255 bytes, preceded by its length) |
| 1 + n | this run's id (same form) |
| 1 + n | the base run's id (same form) |
| 32 | (flag 1 only) SHA-256 of the base run's full image, which is a plain raw image |
| 17 x N | the ranges, sorted, not overlapping, inside the disk: offset (8), length (8), |
| | kind (1: 0 data, 1 zeros) |
| 32 | SHA-256 of everything above (the header is proven before any data is read) |
| ... | for each data range in order: its bytes, then their SHA-256 (32) |
| 32 | SHA-256 of every byte of the file before it |

A zeros range holds no data: those bytes read as zeros in this run (the guest discarded them).
So the file is the changed bytes plus 49 bytes per data range, 17 per zeros range and a header
of at most 896 bytes (MAX_HEADER_BYTES). N is at most MAX_RANGES (262144): the table is held in
memory.
A reader refuses anything else (IncrementInvalid, naming what is wrong).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from xenlvm.errors import IncrementInvalid, XenlvmError

MAGIC = b"XLVMINC\n"
VERSION = 1
DATA, ZEROS = 0, 1
BASE_IMAGE_SHA256 = 1  # the flag: the header records the SHA-256 of the base run's full image
CHUNK = 4 << 20  # bytes read or written at once: the memory used does not grow with a range
DIGEST = 32
# The most ranges an increment may list: its range table is held in memory (about 300 bytes a
# range in Python), so a hostile header must not make a restore allocate without bound. A real
# one lists runs of pool chunks (64 KiB at least): this many alternating runs are 16 GiB
# changed in 64 KiB pieces; a writer with more merges neighbours or writes a full image.
MAX_RANGES = 1 << 18
_FIXED = struct.Struct("<8sHHIQQ")
_RANGE = struct.Struct("<QQB")
# A file's bytes besides its ranges (17 each in the table, and a data range's bytes and SHA-256):
# the fixed fields, the three names at their longest, the base image's SHA-256, the header's and
# the whole file's SHA-256.
MAX_HEADER_BYTES = _FIXED.size + 3 * (1 + 255) + 3 * 32
_NAME = re.compile(r"[A-Za-z0-9_.:/+-]{1,255}\Z")


@dataclass(frozen=True)
class Range:
    """Bytes [offset, offset + length) of the disk: new data, or zeros (kind ZEROS)."""

    offset: int
    length: int
    kind: int = DATA

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class Increment:
    """An increment file's header, proven; data_at gives where each data range's bytes start."""

    path: str
    disk: str
    disk_size: int
    run: str
    base: str
    ranges: tuple[Range, ...]
    data_at: tuple[int, ...]  # per range: its bytes' offset in the file (-1 for a zeros range)
    header_size: int  # the header, the range table and their SHA-256
    size: int  # the file's size, as the header implies it
    base_image_sha256: bytes | None = None  # recorded when the base run's file is a full image

    @property
    def data_bytes(self) -> int:
        return sum(r.length for r in self.ranges if r.kind == DATA)


def check_ranges(ranges: Sequence[Range], disk_size: int) -> str | None:
    """What is wrong with ranges for a disk of disk_size bytes, or None."""
    if len(ranges) > MAX_RANGES:
        return too_many(len(ranges))
    end = 0
    for number, rng in enumerate(ranges, 1):
        if rng.kind not in (DATA, ZEROS):
            return f"range {number} has an unknown kind {rng.kind}"
        if rng.length <= 0:
            return f"range {number} is empty"
        if rng.offset < end:
            return f"range {number} (at byte {rng.offset}) overlaps or precedes the one before it"
        if rng.end > disk_size:
            return f"range {number} ends at byte {rng.end}, beyond the disk's {disk_size} bytes"
        end = rng.end
    return None


def too_many(count: int) -> str:
    return (f"it lists {count} ranges, more than the {MAX_RANGES} an increment may hold (a damaged or "
            "foreign header)")


def _name_field(what: str, value: str) -> bytes:
    if not _NAME.match(value):
        raise ValueError(f"{what} {value!r} must be 1 to 255 of A-Z a-z 0-9 _ . : / + -")
    return bytes([len(value)]) + value.encode("ascii")


def header_bytes(disk: str, disk_size: int, run: str, base: str, ranges: Sequence[Range],
                 base_image_sha256: bytes | None = None) -> bytes:
    """The header and the range table, followed by their SHA-256."""
    problem = check_ranges(ranges, disk_size)
    if problem:
        raise ValueError(problem)
    if base_image_sha256 is not None and len(base_image_sha256) != DIGEST:
        raise ValueError("base_image_sha256 is a SHA-256 digest of 32 bytes")
    data = sum(r.length for r in ranges if r.kind == DATA)
    flags = 0 if base_image_sha256 is None else BASE_IMAGE_SHA256
    head = _FIXED.pack(MAGIC, VERSION, flags, len(ranges), disk_size, data)
    head += _name_field("disk", disk) + _name_field("run", run) + _name_field("base run", base)
    head += base_image_sha256 or b""
    head += b"".join(_RANGE.pack(r.offset, r.length, r.kind) for r in ranges)
    return head + hashlib.sha256(head).digest()


def write_increment(path: str, source: str, *, disk: str, disk_size: int, run: str, base: str,
                    ranges: Sequence[Range], base_image_sha256: bytes | None = None) -> int:
    """Write the increment of source (the run's snapshot: a block device or a file) to path, a
    new file, reading each data range in chunks of CHUNK bytes. Return the file's size.
    base_image_sha256: the SHA-256 of the base run's full image, when the base is one (restore
    then proves the image). A partial file is removed; the file is synced before this returns."""
    head = header_bytes(disk, disk_size, run, base, ranges, base_image_sha256)
    whole = hashlib.sha256(head)
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with open(path, "xb") as out:
            try:
                out.write(head)
                for rng in ranges:
                    if rng.kind == DATA:
                        digest = _copy_range(fd, rng, out, whole, (source, path))
                        out.write(digest)
                        whole.update(digest)
                out.write(whole.digest())
                out.flush()
                os.fsync(out.fileno())
            except BaseException:
                os.unlink(path)
                raise
            return out.tell()
    finally:
        os.close(fd)


def _copy_range(fd: int, rng: Range, out, whole, names: tuple[str, str]) -> bytes:  # noqa: ANN001
    source, path = names
    digest = hashlib.sha256()
    position = rng.offset
    while position < rng.end:
        block = os.pread(fd, min(CHUNK, rng.end - position), position)
        if not block:
            raise XenlvmError(f"{source} ended at byte {position}, inside the range {rng.offset}+{rng.length}"
                              f" of the increment {path}")
        out.write(block)
        digest.update(block)
        whole.update(block)
        position += len(block)
    return digest.digest()


def is_increment(path: str) -> bool:
    """True when the file starts with the increment's magic (whatever follows)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def open_file(path: str) -> int:
    """A read-only descriptor of the regular file at path, opened without following a symbolic
    link. A restore reads each of its input files through one such descriptor only, from its
    checks to its last write: a file renamed or replaced under its name meanwhile is not read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise IncrementInvalid(path, f"it cannot be opened ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IncrementInvalid(path, "it is not a regular file")
    return fd


def read_increment(path: str, fd: int | None = None) -> Increment:
    """The proven header of the increment file at path (read through fd when given): raise
    IncrementInvalid if it is not one, is of another version, its header fails its checksum or
    the file's size is not the one the header implies. The data is not read (verify_increment does)."""
    own = fd is None
    opened = open_file(path) if fd is None else fd
    try:
        return _read_header(path, opened)
    except OSError as exc:
        raise IncrementInvalid(path, f"it cannot be read ({exc.strerror})") from None
    finally:
        if own:
            os.close(opened)


def _read_header(path: str, fd: int) -> Increment:
    size = os.fstat(fd).st_size
    raw = os.pread(fd, _FIXED.size + 3 * 256 + DIGEST, 0)
    magic, version, flags, count, disk_size, data = _unpack(path, _FIXED, raw, 0)
    if magic != MAGIC:
        raise IncrementInvalid(path, "it is not a xenlvm increment file (no XLVMINC magic)")
    if version != VERSION or flags & ~BASE_IMAGE_SHA256:
        raise IncrementInvalid(path, f"it is of format version {version} (flags {flags}); this "
                               f"xenlvm reads version {VERSION}: use the xenlvm that wrote it")
    if count > MAX_RANGES:  # before the table is read: it is held in memory
        raise IncrementInvalid(path, too_many(count))
    at, names = _FIXED.size, []
    for _ in range(3):
        length = raw[at] if at < len(raw) else 0
        names.append(raw[at + 1:at + 1 + length].decode("ascii", "replace"))
        at += 1 + length
    base_image = raw[at:at + DIGEST] if flags & BASE_IMAGE_SHA256 else None
    at += DIGEST if base_image is not None else 0
    # a damaged count must not make it read more than the file holds
    table = os.pread(fd, count * _RANGE.size + DIGEST, at) if at + count * _RANGE.size <= size else b""
    ranges = tuple(Range(*_unpack(path, _RANGE, table, i * _RANGE.size)) for i in range(count))
    head = raw[:at] + table[:count * _RANGE.size]
    if len(head) != at + count * _RANGE.size or table[count * _RANGE.size:] != hashlib.sha256(head).digest():
        raise IncrementInvalid(path, "its header fails its SHA-256: the file is damaged")
    problem = check_ranges(ranges, disk_size)
    if problem or not all(_NAME.match(n) for n in names):
        raise IncrementInvalid(path, problem or "a name in its header is not valid")
    data_at, position = [], len(head) + DIGEST
    for rng in ranges:
        data_at.append(position if rng.kind == DATA else -1)
        position += rng.length + DIGEST if rng.kind == DATA else 0
    expected = position + DIGEST
    if size != expected or sum(r.length for r in ranges if r.kind == DATA) != data:
        raise IncrementInvalid(path, f"it has {size} bytes where its header says {expected}: the file is "
                               "truncated or has bytes appended")
    return Increment(path, names[0], disk_size, names[1], names[2], ranges, tuple(data_at),
                     len(head) + DIGEST, expected, base_image)


def _unpack(path: str, layout: struct.Struct, raw: bytes, at: int) -> tuple:
    if len(raw) < at + layout.size:
        raise IncrementInvalid(path, "it is shorter than its header: the file is truncated")
    return layout.unpack_from(raw, at)


def verify_increment(increment: Increment, fd: int | None = None) -> tuple[bytes, ...]:
    """Read the whole file (through fd when given) and check each range's SHA-256 and the
    file's; raise IncrementInvalid naming the first damaged range. Return each range's proven
    SHA-256 (empty for a zeros range), which a restore checks again as it writes."""
    own = fd is None
    opened = open_file(increment.path) if fd is None else fd
    try:
        return _verify(increment, opened)
    except OSError as exc:
        raise IncrementInvalid(increment.path, f"it cannot be read ({exc.strerror})") from None
    finally:
        if own:
            os.close(opened)


def _verify(increment: Increment, fd: int) -> tuple[bytes, ...]:
    whole = hashlib.sha256(os.pread(fd, increment.header_size, 0))
    if len(increment.ranges) != len(increment.data_at):
        raise ValueError("an Increment has one data_at per range")
    digests = []
    for number, (rng, at) in enumerate(zip(increment.ranges, increment.data_at), 1):
        if at < 0:
            digests.append(b"")
            continue
        digest = hashlib.sha256()
        for block in blocks(fd, at, rng.length):
            digest.update(block)
            whole.update(block)
        recorded = os.pread(fd, DIGEST, at + rng.length)
        whole.update(recorded)
        if digest.digest() != recorded:
            raise IncrementInvalid(increment.path, f"range {number} (bytes {rng.offset} to {rng.end} "
                                   "of the disk) fails its SHA-256: the file is damaged")
        digests.append(recorded)
    if os.pread(fd, DIGEST, increment.size - DIGEST) != whole.digest():
        raise IncrementInvalid(increment.path, "the file fails its SHA-256: it is damaged")
    return tuple(digests)


def blocks(fd: int, at: int, length: int) -> Iterator[bytes]:
    """length bytes of fd from offset at, in blocks of at most CHUNK bytes; OSError if it ends early."""
    while length:
        block = os.pread(fd, min(CHUNK, length), at)
        if not block:
            raise OSError(0, "the file ended early")
        yield block
        at += len(block)
        length -= len(block)


def range_data(increment: Increment, index: int) -> Iterator[bytes]:
    """The bytes of data range index, in chunks of at most CHUNK bytes (read, not verified again)."""
    fd = open_file(increment.path)
    try:
        yield from blocks(fd, increment.data_at[index], increment.ranges[index].length)
    finally:
        os.close(fd)
