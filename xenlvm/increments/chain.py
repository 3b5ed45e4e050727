"""A disk's chain of backups in one folder: a full image and the increments that follow it,
found from any one of its files, proven complete and in order, and read as the disk was at
that run (restore-image writes it).

Names, as sesam restores them into one folder: ``<disk>.<run>.img`` (the full image: the
disk's bytes) and ``<disk>.<run>.incr`` (an increment, xenlvm/increments/fileformat.py), where run is the
run's id, ``YYYYmmddTHHMMSS_<pid>``. Each increment names its base run; the chain of a file is
followed through those names down to a full image.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from xenlvm.errors import IncrementInvalid, XenlvmError
from xenlvm.increments import fileformat as increment
from xenlvm.increments.fileformat import DATA, Increment

FULL, INCREMENT = "img", "incr"
RUN_ID = r"[0-9]{8}T[0-9]{6}_[0-9]+"
_NAME = re.compile(rf"(?P<disk>.+)\.(?P<run>{RUN_ID})\.(?P<kind>{FULL}|{INCREMENT})\Z")


class ChainBroken(XenlvmError):
    """The chain of a file is not complete, not in order or not of one disk: nothing was written."""


def file_name(disk: str, run: str, kind: str) -> str:
    """The name of a run's file of a disk in the chain: kind FULL or INCREMENT."""
    return f"{disk}.{run}.{kind}"


def parse_name(name: str) -> tuple[str, str, str] | None:
    """(disk, run, kind) of a chain file's name, or None for another name."""
    match = _NAME.match(name)
    return (match["disk"], match["run"], match["kind"]) if match else None


@dataclass(frozen=True)
class Chain:
    """A full image and the increments over it, oldest first; the disk as of the last one's run.
    Each file stays open (files: its path's descriptor) from its checks until read_disk has
    read it again, or close(); segments: for each file, the byte runs whose SHA-256 was proven,
    as (offset in the file, length, SHA-256), so that read_disk proves them again as it reads."""

    full: str
    full_run: str
    increments: tuple[Increment, ...]
    files: dict[str, int] = field(default_factory=dict)
    segments: dict[str, tuple[tuple[int, int, bytes], ...]] = field(default_factory=dict)
    full_recorded: bool = False  # the full image's SHA-256 matched the one its first increment recorded

    @property
    def disk_size(self) -> int:
        return self.increments[0].disk_size

    def describe(self) -> list[str]:
        """The chain as restore-image --dry-run lists it, oldest first."""
        proof = ("SHA-256 as recorded in its first increment" if self.full_recorded else
                 "no SHA-256 recorded: only read twice and compared")
        lines = [f"full image {self.full} (run {self.full_run}, {self.disk_size} bytes, {proof})"]
        for inc in self.increments:
            lines.append(f"increment {inc.path} (run {inc.run} over {inc.base}: {len(inc.ranges)} ranges, "
                         f"{inc.data_bytes} bytes of data)")
        return lines

    def close(self) -> None:
        while self.files:
            os.close(self.files.popitem()[1])


def resolve(path: str) -> Chain:
    """The chain that ends with the increment at path, from the files beside it, each opened
    once (not through a symbolic link) and kept open. Raise ChainBroken for a gap (naming the
    missing run), a loop, runs out of order, two files for one run, or files of another disk;
    IncrementInvalid for a damaged increment or full image. Every increment's checksums are
    verified, and the full image is read whole (against the SHA-256 its first increment
    recorded, when it did)."""
    files: dict[str, int] = {}
    try:
        return _proven(_follow(path, files), files)
    except BaseException:
        Chain("", "", (), files).close()
        raise


def _open(files: dict[str, int], path: str) -> int:
    files[path] = increment.open_file(path)
    return files[path]


def _follow(path: str, files: dict[str, int]) -> Chain:
    folder = os.path.dirname(os.path.abspath(path))
    last = increment.read_increment(path, _open(files, path))
    named = parse_name(os.path.basename(path))
    if named is None or named[1] != last.run or named[2] != INCREMENT:
        raise ChainBroken(f"{path} holds run {last.run}, but its name is not <disk>.{last.run}.{INCREMENT}: "
                          "give restore-image the file under the name xenlvm wrote it")
    disk = named[0]
    runs: dict[str, list[str]] = {}
    for name in sorted(os.listdir(folder)):
        parsed = parse_name(name)
        if parsed and parsed[0] == disk:
            runs.setdefault(parsed[1], []).append(name)
    chain = [last]
    while True:
        base = chain[-1].base
        found = runs.get(base, [])
        if not found:
            raise ChainBroken(f"the chain of {path} has a gap: run {base} is missing (neither "
                              f"{file_name(disk, base, FULL)} nor {file_name(disk, base, INCREMENT)} is in "
                              f"{folder}). Restore that run's file of {disk} from the backup into {folder}.")
        if len(found) > 1:
            raise ChainBroken(f"run {base} of {disk} has two files in {folder} ({', '.join(found)}): keep "
                              "the one sesam backed up and remove the other")
        candidate = os.path.join(folder, found[0])
        if candidate in files:
            raise ChainBroken(f"{candidate} is its own base: the chain loops")
        if found[0].endswith(f".{FULL}"):
            _open(files, candidate)
            return Chain(candidate, base, tuple(reversed(chain)))
        older = increment.read_increment(candidate, _open(files, candidate))
        if older.run != base or _time(older.run) >= _time(chain[-1].run):
            raise ChainBroken(f"{candidate} holds run {older.run}, which cannot be the base of run "
                              f"{chain[-1].run}: the chain is out of order")
        chain.append(older)


def _time(run: str) -> str:
    """The run's start time, YYYYmmddTHHMMSS: it sorts as it happened."""
    return run.split("_", 1)[0]


def _proven(chain: Chain, files: dict[str, int]) -> Chain:
    """The chain with its open files, after checking that it is of one disk and one size, every
    increment's checksums and the full image's."""
    last = chain.increments[-1]
    for inc in chain.increments:
        if (inc.disk, inc.disk_size) != (last.disk, last.disk_size):
            raise ChainBroken(f"{inc.path} is of disk {inc.disk} ({inc.disk_size} bytes), {last.path} of "
                              f"{last.disk} ({last.disk_size} bytes): they are not one chain (a disk resized "
                              "since its full image starts a new chain)")
    full_size = os.fstat(files[chain.full]).st_size
    if full_size != chain.disk_size:
        raise ChainBroken(f"the full image {chain.full} has {full_size} bytes, its increments a disk of "
                          f"{chain.disk_size}: it is not their base (or it was truncated)")
    segments = {}
    for inc in chain.increments:
        digests = increment.verify_increment(inc, files[inc.path])
        segments[inc.path] = tuple((at, r.length, d) for r, at, d in zip(inc.ranges, inc.data_at, digests)
                                   if r.kind == DATA)
    recorded = chain.increments[0].base_image_sha256
    full_digest = _sha256(chain.full, files[chain.full], full_size)
    if recorded is not None and recorded != full_digest:
        raise IncrementInvalid(chain.full, f"it fails the SHA-256 that {chain.increments[0].path} recorded "
                               "for its base image: the full image is damaged or is not that run's")
    segments[chain.full] = ((0, full_size, full_digest),)
    return Chain(chain.full, chain.full_run, chain.increments, files, segments, recorded is not None)


def _sha256(path: str, fd: int, size: int) -> bytes:
    digest = hashlib.sha256()
    try:
        for block in increment.blocks(fd, 0, size):
            digest.update(block)
    except OSError as exc:
        raise IncrementInvalid(path, f"it cannot be read ({exc.strerror})") from None
    return digest.digest()


@dataclass(frozen=True)
class Piece:
    """Bytes [start, end) of the restored disk: read from path at offset at, or zeros (path None)."""

    start: int
    end: int
    path: str | None
    at: int = 0


def overlay(pieces: list[Piece], patches: list[Piece]) -> list[Piece]:
    """pieces (covering the disk, sorted) with the sorted, disjoint patches laid over them."""
    starts = [p.start for p in pieces]
    result: list[Piece] = []
    position = 0
    for patch in [*patches, Piece(pieces[-1].end, pieces[-1].end, None)]:
        index = max(bisect.bisect_right(starts, position) - 1, 0)
        while index < len(pieces) and pieces[index].start < patch.start:
            piece = pieces[index]
            start, end = max(piece.start, position), min(piece.end, patch.start)
            if start < end:
                at = piece.at + (start - piece.start) if piece.path else 0
                result.append(Piece(start, end, piece.path, at))
            index += 1
        if patch.end > patch.start:
            result.append(patch)
        position = patch.end
    return result


def pieces(chain: Chain) -> list[Piece]:
    """Where each byte of the disk as of the chain's last run comes from."""
    result = [Piece(0, chain.disk_size, chain.full)]
    for inc in chain.increments:
        if len(inc.ranges) != len(inc.data_at):
            raise ValueError("an Increment has one data_at per range")
        patches = [Piece(r.offset, r.end, inc.path if r.kind == DATA else None, max(at, 0))
                   for r, at in zip(inc.ranges, inc.data_at)]
        result = overlay(result, patches)
    return result


def read_disk(chain: Chain) -> Iterator[bytes]:
    """The disk as of the chain's last run, from its first byte, in blocks of at most
    increment.CHUNK bytes, read through the descriptors its checks read. Each proven byte run
    that a block comes from is read whole and its SHA-256 checked again (IncrementInvalid when
    it changed since: the blocks before were yielded already). The files are closed after."""
    readers = {path: _ProvenReader(path, fd, chain.segments[path]) for path, fd in chain.files.items()}
    try:
        for piece in pieces(chain):
            position = piece.start
            while position < piece.end:
                length = min(increment.CHUNK, piece.end - position)
                if piece.path is None:
                    yield bytes(length)
                else:
                    yield readers[piece.path].read(piece.at + position - piece.start, length)
                position += length
        for reader in readers.values():
            reader.finish()
    finally:
        chain.close()


class _ProvenReader:
    """Reads one file of the chain at rising offsets; every byte of each proven run it enters
    is hashed (the ones it skips too) and the run's SHA-256 is checked when it leaves it."""

    def __init__(self, path: str, fd: int, segments: tuple[tuple[int, int, bytes], ...]) -> None:
        self.path, self.fd, self.segments = path, fd, segments
        self.starts = [segment[0] for segment in segments]
        self.current: int | None = None
        self.digest = hashlib.sha256()
        self.position = 0

    def read(self, at: int, length: int) -> bytes:
        index = bisect.bisect_right(self.starts, at) - 1
        if index != self.current:
            self.finish()
            self.current, self.digest, self.position = index, hashlib.sha256(), self.segments[index][0]
        start, size, _ = self.segments[index]
        if at < self.position or at + length > start + size:
            raise ValueError(f"read_disk reads {self.path} at rising offsets inside its proven runs")
        self._hash_to(at)
        block = os.pread(self.fd, length, at)
        if len(block) != length:
            raise IncrementInvalid(self.path, "it became shorter while it was read")
        self.digest.update(block)
        self.position += length
        return block

    def finish(self) -> None:
        """Check the SHA-256 of the run being read, its rest read first."""
        if self.current is None:
            return
        start, size, expected = self.segments[self.current]
        self._hash_to(start + size)
        self.current = None
        if self.digest.digest() != expected:
            raise IncrementInvalid(self.path, f"bytes {start} to {start + size} of it changed since they "
                                   "were verified (another writer, or a failing disk)")

    def _hash_to(self, end: int) -> None:
        try:
            for block in increment.blocks(self.fd, self.position, end - self.position):
                self.digest.update(block)
        except OSError:
            raise IncrementInvalid(self.path, "it became shorter while it was read") from None
        self.position = end
