"""A disk's chain in one folder (xenlvm/increments/chain.py): from any increment, the disk as of its run
is read back exactly; a gap, a loop, a damaged or foreign file is refused, naming it."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xenlvm.errors import IncrementInvalid
from xenlvm.increments import chain
from xenlvm.increments import fileformat as increment
from xenlvm.increments.chain import ChainBroken, Piece
from xenlvm.increments.fileformat import DATA, ZEROS, Range

BLOCK = 64  # the pool's block in these tests
SIZE = 16 * BLOCK
FIXTURE = settings(max_examples=40, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])


def run_id(number: int) -> str:
    return f"20261206T{number:02d}0000_{100 + number}"


def changed_ranges(old: bytes, new: bytes) -> list[Range]:
    """The blocks that differ, merged: zeros where the new block is all zeros (discarded)."""
    result: list[Range] = []
    for offset in range(0, len(new), BLOCK):
        block = new[offset:offset + BLOCK]
        if block == old[offset:offset + BLOCK]:
            continue
        kind = ZEROS if block.count(0) == len(block) else DATA
        last = result[-1] if result else None
        if last and last.end == offset and last.kind == kind:
            result[-1] = Range(last.offset, last.length + len(block), kind)
        else:
            result.append(Range(offset, len(block), kind))
    return result


def write_chain(folder: Path, states: list[bytes], disk: str = "xvda", *, record_full: bool = False
                ) -> list[Path]:
    """The files of a chain, one per state: the first a full image, each next one an increment
    over the one before (the first recording the full image's SHA-256 when record_full). Return
    their paths."""
    paths = [folder / chain.file_name(disk, run_id(0), chain.FULL)]
    paths[0].write_bytes(states[0])
    source = folder.parent / f"{folder.name}-snapshot"
    for number in range(1, len(states)):
        source.write_bytes(states[number])
        path = folder / chain.file_name(disk, run_id(number), chain.INCREMENT)
        increment.write_increment(str(path), str(source), disk=f"vm2/{disk}", disk_size=len(states[0]),
                                  run=run_id(number), base=run_id(number - 1),
                                  ranges=changed_ranges(states[number - 1], states[number]),
                                  base_image_sha256=hashlib.sha256(states[0]).digest()
                                  if record_full and number == 1 else None)
        paths.append(path)
    return paths


@st.composite
def histories(draw) -> list[bytes]:
    """A disk and 1 to 4 later states of it: writes and discards at random blocks and bytes,
    the first and last blocks included at times."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    states = [rng.randbytes(SIZE)]
    for _ in range(draw(st.integers(1, 4))):
        disk = bytearray(states[-1])
        for _ in range(draw(st.integers(0, 5))):
            start = draw(st.sampled_from([0, SIZE - 1, rng.randrange(SIZE)]))
            length = min(draw(st.integers(1, 3 * BLOCK)), SIZE - start)
            disk[start:start + length] = bytes(length) if rng.random() < 0.3 else rng.randbytes(length)
        states.append(bytes(disk))
    return states


@pytest.fixture
def folder(tmp_path) -> Path:
    path = tmp_path / "vm2"
    path.mkdir()
    return path


@FIXTURE
@given(states=histories())
def test_every_run_reads_back_as_the_disk_was(folder, states):
    for old in folder.iterdir():
        old.unlink()
    paths = write_chain(folder, states)
    (folder / "xvdb.20261206T000000_100.img").write_bytes(b"another disk")  # beside it, ignored
    for number in range(1, len(states)):
        found = chain.resolve(str(paths[number]))
        assert [i.run for i in found.increments] == [run_id(n) for n in range(1, number + 1)]
        assert b"".join(chain.read_disk(found)) == states[number]


@FIXTURE
@given(disk=st.binary(min_size=1, max_size=64), data=st.data())
def test_patches_laid_over_pieces_give_the_bytes_of_the_last_writer(disk, data):
    """The overlay, against a bytearray: a piece's bytes are its start's offset, patched ones -1."""
    size = len(disk)
    model = list(range(size))
    pieces = [Piece(0, size, "full")]
    for layer in range(data.draw(st.integers(1, 3))):
        cuts = sorted(data.draw(st.sets(st.integers(0, size), max_size=6)))
        patches = [Piece(a, b, f"layer{layer}", 1000 * layer + a)
                   for a, b in zip(cuts, cuts[1:], strict=False) if data.draw(st.booleans())]
        for patch in patches:
            model[patch.start:patch.end] = range(1000 * layer + patch.start, 1000 * layer + patch.end)
        pieces = chain.overlay(pieces, patches)
    flat = [p.at + i - p.start for p in pieces for i in range(p.start, p.end)]
    assert flat == model
    assert all(a.end == b.start for a, b in zip(pieces, pieces[1:], strict=False))


def history(count: int) -> list[bytes]:
    rng = random.Random(count)
    states = [rng.randbytes(SIZE)]
    for number in range(1, count):
        disk = bytearray(states[-1])
        disk[number * BLOCK:number * BLOCK + 10] = rng.randbytes(10)
        states.append(bytes(disk))
    return states


def test_a_gap_is_refused_naming_the_missing_run(folder):
    paths = write_chain(folder, history(4))
    paths[2].unlink()
    with pytest.raises(ChainBroken, match=f"gap: run {run_id(2)} is missing .*xvda.{run_id(2)}.incr"):
        chain.resolve(str(paths[3]))


def test_a_missing_full_image_is_a_gap_too(folder):
    paths = write_chain(folder, history(2))
    paths[0].unlink()
    with pytest.raises(ChainBroken, match=f"run {run_id(0)} is missing"):
        chain.resolve(str(paths[1]))


def test_a_damaged_increment_anywhere_in_the_chain_is_refused(folder):
    paths = write_chain(folder, history(4))
    raw = bytearray(paths[1].read_bytes())
    raw[-40] ^= 0xFF  # inside the last range's data or checksum
    paths[1].write_bytes(raw)
    with pytest.raises(IncrementInvalid, match=str(paths[1])):
        chain.resolve(str(paths[3]))


def test_two_files_of_one_run_are_refused(folder):
    paths = write_chain(folder, history(3))
    os.link(paths[1], folder / chain.file_name("xvda", run_id(1), chain.FULL))
    with pytest.raises(ChainBroken, match=f"run {run_id(1)} of xvda has two files"):
        chain.resolve(str(paths[2]))


def test_a_base_that_is_not_older_is_refused_as_out_of_order(folder):
    states = history(2)
    (folder / chain.file_name("xvda", run_id(5), chain.FULL)).write_bytes(states[0])
    source = folder.parent / "source"
    source.write_bytes(states[1])
    path = folder / chain.file_name("xvda", run_id(3), chain.INCREMENT)
    increment.write_increment(str(path), str(source), disk="vm2/xvda", disk_size=SIZE, run=run_id(3),
                              base=run_id(4), ranges=[Range(0, BLOCK)])
    older = folder / chain.file_name("xvda", run_id(4), chain.INCREMENT)
    increment.write_increment(str(older), str(source), disk="vm2/xvda", disk_size=SIZE, run=run_id(4),
                              base=run_id(5), ranges=[Range(0, BLOCK)])
    with pytest.raises(ChainBroken, match="cannot be the base of run .* out of order"):
        chain.resolve(str(path))


def test_a_full_image_of_another_size_is_refused(folder):
    paths = write_chain(folder, history(2))
    paths[0].write_bytes(paths[0].read_bytes()[:-1])
    with pytest.raises(ChainBroken, match=f"has {SIZE - 1} bytes, its increments a disk of {SIZE}"):
        chain.resolve(str(paths[1]))


def test_increments_of_another_disk_under_its_name_are_refused(folder):
    paths = write_chain(folder, history(3))
    source = folder.parent / "vm2-snapshot"  # write_chain's, holding the last state
    paths[1].unlink()
    increment.write_increment(str(paths[1]), str(source), disk="vm3/xvda", disk_size=SIZE, run=run_id(1),
                              base=run_id(0), ranges=[Range(0, BLOCK)])
    with pytest.raises(ChainBroken, match="is of disk vm3/xvda .* not one chain"):
        chain.resolve(str(paths[2]))


def test_a_renamed_increment_is_refused(folder):
    paths = write_chain(folder, history(2))
    renamed = folder / "xvda-monday.incr"
    paths[1].rename(renamed)
    with pytest.raises(ChainBroken, match=f"holds run {run_id(1)}, but its name is not"):
        chain.resolve(str(renamed))


def test_the_chain_is_listed_oldest_first(folder):
    paths = write_chain(folder, history(3))
    lines = chain.resolve(str(paths[2])).describe()
    assert lines[0] == (f"full image {paths[0]} (run {run_id(0)}, {SIZE} bytes, no SHA-256 recorded: only "
                        "read twice and compared)")
    assert lines[1].startswith(f"increment {paths[1]} (run {run_id(1)} over {run_id(0)}: 1 ranges")
    assert len(lines) == 3


def test_zeros_ranges_read_as_zeros_and_data_as_written(folder):
    states = [bytes(range(256)) * 4, bytes(64) + bytes(range(64, 256)) + bytes(range(256)) * 3]
    paths = write_chain(folder, states)
    found = chain.resolve(str(paths[1]))
    assert [r.kind for r in found.increments[0].ranges] == [ZEROS]
    assert b"".join(chain.read_disk(found)) == states[1]
    assert DATA == 0


def test_a_full_image_recorded_in_its_first_increment_is_proven_by_its_sha256(folder):
    states = history(3)
    paths = write_chain(folder, states, record_full=True)
    found = chain.resolve(str(paths[2]))
    assert found.full_recorded
    assert "SHA-256 as recorded in its first increment" in found.describe()[0]
    assert b"".join(chain.read_disk(found)) == states[2]
    paths[0].write_bytes(b"\0" + states[0][1:])  # one byte rotted, the size the same
    with pytest.raises(IncrementInvalid, match=f"{paths[0]}: it fails the SHA-256 that .* recorded"):
        chain.resolve(str(paths[2]))


def test_a_chain_file_that_is_a_symbolic_link_is_refused(folder, tmp_path):
    paths = write_chain(folder, history(3))
    elsewhere = tmp_path / "elsewhere.incr"
    paths[1].rename(elsewhere)
    paths[1].symlink_to(elsewhere)
    with pytest.raises(IncrementInvalid, match=f"{paths[1]}: it cannot be opened"):
        chain.resolve(str(paths[2]))


def test_files_replaced_under_their_names_after_the_checks_are_not_read(folder):
    """The chain reads each file through the descriptor its checks read: a file put in its
    place later (sesam restoring again into the folder) is not what is written."""
    states = history(4)
    paths = write_chain(folder, states)
    found = chain.resolve(str(paths[3]))
    for path in paths:
        damaged = bytearray(path.read_bytes())
        damaged[len(damaged) // 2] ^= 1
        path.unlink()
        path.write_bytes(damaged)
    assert b"".join(chain.read_disk(found)) == states[3]
    assert found.files == {}  # closed after


@pytest.mark.parametrize("which", [0, 1, 3])  # the full image, an increment below, the last
def test_a_file_changed_in_place_after_its_checks_fails_the_read_that_uses_it(folder, which):
    states = history(4)
    paths = write_chain(folder, states)
    found = chain.resolve(str(paths[3]))
    with open(paths[which], "r+b") as f:  # the same file: the descriptor sees the change
        at = max(found.increments[which - 1].data_at) + 3 if which else 5  # in a range's data, or the image
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(IncrementInvalid, match=f"{paths[which]}: bytes .* changed since they were verified"):
        b"".join(chain.read_disk(found))
    assert found.files == {}
