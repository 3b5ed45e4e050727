"""A disk's chain of backups in one folder: a full image and the increments that follow it,
found from any one of its files, proven complete and in order, and read as the disk was at
that run (restore-image writes it).

Names, as sesam restores them into one folder: ``<disk>.<run>.img`` (the full image: the
disk's bytes) and ``<disk>.<run>.incr`` (an increment, xenlvm/increment.py), where run is the
run's id, ``YYYYmmddTHHMMSS_<pid>``. Each increment names its base run; the chain of a file is
followed through those names down to a full image.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from xenlvm import increment
from xenlvm.errors import IncrementInvalid, XenlvmError
from xenlvm.increment import DATA, Increment

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
    """A full image and the increments over it, oldest first; the disk as of the last one's run."""

    full: str
    full_run: str
    increments: tuple[Increment, ...]

    @property
    def disk_size(self) -> int:
        return self.increments[0].disk_size

    def describe(self) -> list[str]:
        """The chain as restore-image --dry-run lists it, oldest first."""
        lines = [f"full image {self.full} (run {self.full_run}, {self.disk_size} bytes)"]
        for inc in self.increments:
            lines.append(f"increment {inc.path} (run {inc.run} over {inc.base}: {len(inc.ranges)} ranges, "
                         f"{inc.data_bytes} bytes of data)")
        return lines


def resolve(path: str) -> Chain:
    """The chain that ends with the increment at path, from the files beside it. Raise
    ChainBroken for a gap (naming the missing run), a loop, runs out of order, two files for one
    run, or files of another disk; IncrementInvalid for a damaged increment. Every increment's
    checksums are verified."""
    folder = os.path.dirname(os.path.abspath(path))
    last = increment.read_increment(path)
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
        if found[0].endswith(f".{FULL}"):
            return _proven(Chain(candidate, base, tuple(reversed(chain))))
        older = increment.read_increment(candidate)
        if older.run != base or _time(older.run) >= _time(chain[-1].run):
            raise ChainBroken(f"{candidate} holds run {older.run}, which cannot be the base of run "
                              f"{chain[-1].run}: the chain is out of order")
        chain.append(older)


def _time(run: str) -> str:
    """The run's start time, YYYYmmddTHHMMSS: it sorts as it happened."""
    return run.split("_", 1)[0]


def _proven(chain: Chain) -> Chain:
    """The chain, after checking that it is of one disk and one size and every increment's
    checksums."""
    last = chain.increments[-1]
    for inc in chain.increments:
        if (inc.disk, inc.disk_size) != (last.disk, last.disk_size):
            raise ChainBroken(f"{inc.path} is of disk {inc.disk} ({inc.disk_size} bytes), {last.path} of "
                              f"{last.disk} ({last.disk_size} bytes): they are not one chain (a disk resized "
                              "since its full image starts a new chain)")
    full_size = os.path.getsize(chain.full)
    if full_size != chain.disk_size:
        raise ChainBroken(f"the full image {chain.full} has {full_size} bytes, its increments a disk of "
                          f"{chain.disk_size}: it is not their base (or it was truncated)")
    for inc in chain.increments:
        increment.verify_increment(inc)
    return chain


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
    increment.CHUNK bytes."""
    files: dict[str, int] = {}
    try:
        for piece in pieces(chain):
            position = piece.start
            while position < piece.end:
                length = min(increment.CHUNK, piece.end - position)
                if piece.path is None:
                    block = bytes(length)
                else:
                    if piece.path not in files:
                        files[piece.path] = os.open(piece.path, os.O_RDONLY | os.O_CLOEXEC)
                    block = os.pread(files[piece.path], length, piece.at + position - piece.start)
                    if len(block) != length:
                        raise IncrementInvalid(piece.path, "it became shorter while it was read")
                yield block
                position += length
    finally:
        for fd in files.values():
            os.close(fd)
