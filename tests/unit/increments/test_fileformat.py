"""The increment file format (xenlvm/increments/fileformat.py): what is written reads back exactly, its
size is the changed bytes plus the documented overhead, and every damage is refused."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xenlvm.errors import IncrementInvalid
from xenlvm.increments import fileformat as increment
from xenlvm.increments.fileformat import DATA, ZEROS, Range

DISK_SIZE = 4096
FIXTURE = settings(max_examples=60, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])


def disks() -> st.SearchStrategy[bytes]:
    """A disk's bytes: random, from a drawn seed (drawing 4 KiB byte by byte is too large an input)."""
    return st.integers(0, 2**32).map(lambda seed: random.Random(seed).randbytes(DISK_SIZE))


@st.composite
def ranges(draw, disk_size: int = DISK_SIZE) -> list[Range]:
    """Sorted, non-overlapping ranges inside the disk, some touching, data or zeros."""
    cuts = sorted(draw(st.sets(st.integers(0, disk_size), max_size=12)))
    result = []
    for start, end in zip(cuts, cuts[1:], strict=False):
        if draw(st.booleans()):
            result.append(Range(start, end - start, draw(st.sampled_from([DATA, DATA, ZEROS]))))
    return result


def write(tmp_path, content: bytes, chosen: list[Range], name: str = "x.incr", **fields) -> str:
    source = tmp_path / "disk.img"
    source.write_bytes(content)
    path = str(tmp_path / name)
    if os.path.exists(path):
        os.unlink(path)
    values = {"disk": "vm2/xvda", "disk_size": len(content), "run": "20261206T010000_42",
              "base": "20261205T010000_41", **fields}
    increment.write_increment(path, str(source), ranges=chosen, **values)
    return path


@FIXTURE
@given(content=disks(), chosen=ranges())
def test_an_increment_reads_back_with_its_ranges_and_data(tmp_path, content, chosen):
    path = write(tmp_path, content, chosen)
    found = increment.read_increment(path)
    increment.verify_increment(found)
    assert (found.disk, found.disk_size, found.run, found.base) == (
        "vm2/xvda", DISK_SIZE, "20261206T010000_42", "20261205T010000_41")
    assert list(found.ranges) == chosen
    for index, rng in enumerate(chosen):
        if rng.kind == DATA:
            assert b"".join(increment.range_data(found, index)) == content[rng.offset:rng.end]


@FIXTURE
@given(content=disks(), chosen=ranges())
def test_the_size_is_the_changed_bytes_plus_the_documented_overhead(tmp_path, content, chosen):
    path = write(tmp_path, content, chosen)
    data = [r for r in chosen if r.kind == DATA]
    names = len("vm2/xvda") + len("20261206T010000_42") + len("20261205T010000_41") + 3
    overhead = 32 + names + 17 * len(chosen) + 32 + 32 * len(data) + 32
    assert os.path.getsize(path) == sum(r.length for r in data) + overhead


def test_the_header_bound_is_met_exactly_with_the_longest_names_and_the_base_images_sha256(tmp_path):
    source = tmp_path / "disk"
    source.write_bytes(bytes(DISK_SIZE))
    longest = "n" * 255
    size = increment.write_increment(str(tmp_path / "inc"), str(source), disk=longest, disk_size=DISK_SIZE,
                                     run=longest, base=longest, ranges=[], base_image_sha256=bytes(32))
    assert size == increment.MAX_HEADER_BYTES == 896  # the bound the module docstring and README give


@FIXTURE
@given(content=disks(), chosen=ranges(), data=st.data())
def test_any_flipped_byte_is_refused(tmp_path, content, chosen, data):
    path = write(tmp_path, content, chosen)
    raw = bytearray(Path(path).read_bytes())
    where = data.draw(st.integers(0, len(raw) - 1))
    raw[where] ^= data.draw(st.integers(1, 255))
    Path(path).write_bytes(raw)
    with pytest.raises(IncrementInvalid):
        increment.verify_increment(increment.read_increment(path))


@FIXTURE
@given(content=disks(), chosen=ranges(), data=st.data())
def test_a_truncated_or_extended_file_is_refused_before_its_data_is_read(tmp_path, content, chosen, data):
    path = write(tmp_path, content, chosen)
    raw = Path(path).read_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1))
    changed = data.draw(st.sampled_from([raw[:cut], raw + raw[cut:cut + 1] + b"\0"]))
    Path(path).write_bytes(changed)
    with pytest.raises(IncrementInvalid):
        increment.read_increment(path)


def test_another_file_is_refused_as_not_an_increment(tmp_path):
    image = tmp_path / "xvda.img"
    image.write_bytes(b"\0" * 4096)
    with pytest.raises(IncrementInvalid, match="not a xenlvm increment file"):
        increment.read_increment(str(image))
    assert not increment.is_increment(str(image))


def test_a_newer_version_is_refused_by_name(tmp_path):
    path = write(tmp_path, b"a" * 100, [Range(0, 10)])
    raw = bytearray(Path(path).read_bytes())
    raw[8] = 2
    Path(path).write_bytes(raw)
    with pytest.raises(IncrementInvalid, match="version 2.*reads version 1"):
        increment.read_increment(path)


def test_a_header_listing_more_ranges_than_an_increment_may_hold_is_refused_before_its_table(tmp_path):
    """A hostile count must not make read_increment build millions of ranges: the file is as
    large as the count implies (sparse), so only the cap stops it."""
    path = write(tmp_path, b"a" * 100, [Range(0, 10)])
    raw = bytearray(Path(path).read_bytes())
    count = increment.MAX_RANGES + 1
    raw[12:16] = count.to_bytes(4, "little")
    Path(path).write_bytes(raw)
    os.truncate(path, len(raw) + count * 17 + 64)
    with pytest.raises(IncrementInvalid, match=f"it lists {count} ranges, more than the 262144"):
        increment.read_increment(path)


def test_the_writer_refuses_more_ranges_than_an_increment_may_hold(tmp_path, monkeypatch):
    monkeypatch.setattr(increment, "MAX_RANGES", 2)
    with pytest.raises(ValueError, match="it lists 3 ranges, more than the 2"):
        write(tmp_path, b"a" * 100, [Range(0, 10), Range(20, 10), Range(40, 10)])
    assert not (tmp_path / "x.incr").exists()


def test_the_base_images_sha256_reads_back_when_recorded_and_is_under_the_header_checksum(tmp_path):
    digest = bytes(range(32))
    path = write(tmp_path, b"a" * 100, [Range(0, 10)], base_image_sha256=digest)
    found = increment.read_increment(path)
    increment.verify_increment(found)
    assert found.base_image_sha256 == digest
    plain = write(tmp_path, b"a" * 100, [Range(0, 10)], name="plain.incr")
    assert increment.read_increment(plain).base_image_sha256 is None
    raw = bytearray(Path(path).read_bytes())
    at = raw.index(digest)
    raw[at] ^= 1
    Path(path).write_bytes(raw)
    with pytest.raises(IncrementInvalid, match="its header fails its SHA-256"):
        increment.read_increment(path)


def test_an_unknown_flag_is_refused(tmp_path):
    path = write(tmp_path, b"a" * 100, [Range(0, 10)])
    raw = bytearray(Path(path).read_bytes())
    raw[10] = 2
    Path(path).write_bytes(raw)
    with pytest.raises(IncrementInvalid, match=r"flags 2\).*reads version 1"):
        increment.read_increment(path)


def test_a_damaged_range_is_named_with_its_bytes(tmp_path):
    path = write(tmp_path, bytes(range(256)) * 4, [Range(0, 10), Range(512, 100)])
    found = increment.read_increment(path)
    raw = bytearray(Path(path).read_bytes())
    raw[found.data_at[1] + 5] ^= 1
    Path(path).write_bytes(raw)
    with pytest.raises(IncrementInvalid, match=r"range 2 \(bytes 512 to 612 of the disk\) fails its SHA-256"):
        increment.verify_increment(increment.read_increment(path))


def test_ranges_longer_than_a_chunk_are_copied_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(increment, "CHUNK", 7)
    content = os.urandom(1000)
    path = write(tmp_path, content, [Range(3, 500), Range(600, 400)])
    found = increment.read_increment(path)
    increment.verify_increment(found)
    assert b"".join(increment.range_data(found, 1)) == content[600:]


@pytest.mark.parametrize(("chosen", "problem"), [
    ([Range(10, 5), Range(12, 5)], "range 2 .*overlaps"),
    ([Range(0, 0)], "range 1 is empty"),
    ([Range(90, 20)], "beyond the disk's 100 bytes"),
    ([Range(0, 1, 7)], "unknown kind 7"),
])
def test_the_writer_refuses_ranges_that_cannot_be_read_back(tmp_path, chosen, problem):
    with pytest.raises(ValueError, match=problem):
        write(tmp_path, b"x" * 100, chosen)
    assert not os.path.exists(tmp_path / "x.incr")


def test_a_source_shorter_than_a_range_leaves_no_file(tmp_path):
    with pytest.raises(Exception, match="ended at byte 100"):
        write(tmp_path, b"x" * 100, [Range(50, 100)], disk_size=200)
    assert not os.path.exists(tmp_path / "x.incr")
