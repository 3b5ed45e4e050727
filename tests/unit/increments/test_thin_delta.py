"""thin_delta's output as recorded on real dm-thin (thin-provisioning-tools 0.9.0, in the
sandbox: tests/unit/data) into byte ranges, and the pool's metadata snapshot, always released."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.fakes import Answer, FakeRunner, recorded
from xenlvm.errors import CommandFailed
from xenlvm.increments import thin_delta
from xenlvm.increments.fileformat import DATA, ZEROS, Range
from xenlvm.increments.thin_delta import ThinDeltaFailed

BLOCK = 128 * 512  # data_block_size="128" sectors in the recording: 64 KiB
DISK = 8 << 20  # the recorded disk: 8 MiB, 128 pool blocks
STATUS_FREE, STATUS_HELD = recorded("dmsetup_status_thin_pool.txt").splitlines()


def test_the_recorded_delta_gives_new_data_and_discarded_blocks_as_zeros():
    """Recorded after writes to blocks 0, 5|6 (one write across their border), 40-42 (unmapped
    at the base) and 127 (the last), and a discard of block 20; block 7 was not touched."""
    ranges = thin_delta.parse_delta(recorded("thin_delta_0.9.0.xml"), DISK, left=2, right=3)
    assert ranges == [Range(0, BLOCK, DATA), Range(5 * BLOCK, 2 * BLOCK, DATA),
                      Range(20 * BLOCK, BLOCK, ZEROS), Range(40 * BLOCK, 3 * BLOCK, DATA),
                      Range(127 * BLOCK, BLOCK, DATA)]


def test_the_devices_swapped_turn_right_only_into_zeros_and_left_only_into_data():
    ranges = thin_delta.parse_delta(recorded("thin_delta_0.9.0_reversed.xml"), DISK, left=3, right=2)
    assert [(r.offset // BLOCK, r.kind) for r in ranges] == [(0, DATA), (5, DATA), (20, DATA), (40, ZEROS),
                                                             (127, DATA)]


def test_the_last_block_is_cut_at_the_disks_end():
    ranges = thin_delta.parse_delta(recorded("thin_delta_0.9.0.xml"), 127 * BLOCK + 4096, left=2, right=3)
    assert ranges[-1] == Range(127 * BLOCK, 4096, DATA)


def test_the_output_of_other_devices_is_refused():
    with pytest.raises(ThinDeltaFailed, match="compared devices 2 and 3, not 2 and 4"):
        thin_delta.parse_delta(recorded("thin_delta_0.9.0.xml"), DISK, left=2, right=4)


@pytest.mark.parametrize(("text", "problem"), [
    ("", "no readable XML"),
    ('<superblock data_block_size="128"></superblock>', "not one <diff>"),
    ('<superblock data_block_size="0"><diff left="1" right="2"/></superblock>', "not one <diff>"),
    ('<superblock data_block_size="128"><diff left="1" right="2"><different><range begin="0" '
     'left_data_begin="0" right_data_begin="6" length="1"/></different></diff></superblock>', "--verbose"),
    ('<superblock data_block_size="128"><diff left="1" right="2"><moved begin="0" length="1"/></diff>'
     '</superblock>', "<moved>"),
    ('<superblock data_block_size="128"><diff left="1" right="2"><same begin="x" length="1"/></diff>'
     '</superblock>', "begin='x'"),
    ('<superblock data_block_size="128"><diff left="1" right="2"><different begin="0" length="4"/>'
     '<left_only begin="2" length="1"/></diff></superblock>', "overlapping"),
])
def test_anything_but_thin_deltas_output_is_refused(text, problem):
    with pytest.raises(ThinDeltaFailed, match=problem):
        thin_delta.parse_delta(text, DISK, left=1, right=2)


@given(st.lists(st.tuples(st.sampled_from(list(thin_delta.KINDS)), st.integers(1, 4)), max_size=12))
def test_many_runs_give_exactly_their_blocks(runs):
    """Any number of runs (OpenNebula #7962 broke with two or more), each of its kind: a block
    is in a range of kind k exactly when thin_delta named it so."""
    elements, expected, begin = [], {}, 0
    for tag, length in runs:
        elements.append(f'<{tag} begin="{begin}" length="{length}"/>')
        for block in range(begin, begin + length):
            if thin_delta.KINDS[tag] is not None:
                expected[block] = thin_delta.KINDS[tag]
        begin += length + (tag == "same")
    text = (f'<superblock data_block_size="8"><diff left="1" right="2">{"".join(elements)}</diff>'
            "</superblock>")
    ranges = thin_delta.parse_delta(text, 1 << 30, left=1, right=2)
    found = {block: r.kind for r in ranges for block in range(r.offset // 4096, r.end // 4096)}
    assert found == expected
    assert all(a.end < b.offset or a.kind != b.kind for a, b in zip(ranges, ranges[1:], strict=False))


def test_the_held_metadata_root_is_read_from_the_pools_status():
    assert thin_delta.held_metadata_root(STATUS_FREE) is None
    assert thin_delta.held_metadata_root(STATUS_HELD) == "100"
    with pytest.raises(ThinDeltaFailed, match="not a thin-pool's status"):
        thin_delta.held_metadata_root("0 2048 linear 254:0 0")


def test_the_device_mapper_names_double_each_dash():
    assert thin_delta.dm_name("my-vg", "thin-pool") == "my--vg-thin--pool"


class Pool:
    """A thin pool as dmsetup sees it: whether a metadata snapshot is held."""

    def __init__(self, held: bool = False) -> None:
        self.held = held

    def status(self, argv):
        return (STATUS_HELD if self.held else STATUS_FREE) + "\n"

    def message(self, argv):
        reserve = argv[-1] == "reserve_metadata_snap"
        if reserve == self.held:  # the kernel: EBUSY for a second reserve, EINVAL for a release of none
            return Answer(stderr="device-mapper: message ioctl failed", returncode=1)
        self.held = reserve
        return ""

    def runner(self, delta="thin_delta_0.9.0.xml") -> FakeRunner:
        runner = FakeRunner().on("dmsetup status", self.status).on("dmsetup message", self.message)
        return runner.on("thin_delta", recorded(delta) if delta else Answer(stderr="no current metadata snap",
                                                                          returncode=1))


def ranges_of(runner, tmp_path):
    return thin_delta.changed_ranges(runner, "system", "pool2", base=2, new=3, disk_size=DISK,
                                     lock_dir=str(tmp_path))


def test_thin_delta_runs_over_a_reserved_metadata_snapshot_that_is_released_after(tmp_path):
    pool = Pool()
    runner = pool.runner()
    assert len(ranges_of(runner, tmp_path)) == 5
    assert [a for a in runner.argvs if a[:2] != ["dmsetup", "status"]] == [
        ["dmsetup", "message", "system-pool2-tpool", "0", "reserve_metadata_snap"],
        ["thin_delta", "-m", "--thin1", "2", "--thin2", "3", "/dev/mapper/system-pool2_tmeta"],
        ["dmsetup", "message", "system-pool2-tpool", "0", "release_metadata_snap"]]
    assert not pool.held


RECORD = "thin-pool-system-pool2.metadata-snap"


@pytest.mark.parametrize("recorded", ["100\n", "reserving\n"])  # killed after the reserve, or during it
def test_a_snapshot_left_reserved_by_a_killed_run_is_released_first(tmp_path, caplog, recorded):
    (tmp_path / RECORD).write_text(recorded)
    pool = Pool(held=True)
    runner = pool.runner()
    ranges_of(runner, tmp_path)
    messages = [a[-1] for a in runner.argvs_of("dmsetup", "message")]
    assert messages == ["release_metadata_snap", "reserve_metadata_snap", "release_metadata_snap"]
    assert "a killed xenlvm run left reserved" in caplog.text
    assert not pool.held
    assert not (tmp_path / RECORD).exists()


@pytest.mark.parametrize("recorded", [None, "7\n"])  # no record, or one of another snapshot
def test_a_snapshot_another_tool_reserved_is_left_alone_and_named(tmp_path, recorded):
    if recorded:
        (tmp_path / RECORD).write_text(recorded)
    pool = Pool(held=True)
    runner = pool.runner()
    with pytest.raises(ThinDeltaFailed, match="the thin pool system/pool2 holds a metadata snapshot "
                       r"\(root 100\) that xenlvm did not reserve.*release_metadata_snap"):
        ranges_of(runner, tmp_path)
    assert runner.argvs_of("dmsetup", "message") == []
    assert pool.held


def test_the_record_of_the_reservation_is_written_before_it_and_removed_after_the_release(tmp_path):
    pool = Pool()
    seen = []

    def message(argv):
        seen.append((argv[-1], (tmp_path / RECORD).read_text() if (tmp_path / RECORD).exists() else None))
        return pool.message(argv)

    runner = pool.runner().on("dmsetup message", message)
    ranges_of(runner, tmp_path)
    assert seen == [("reserve_metadata_snap", "reserving\n"), ("release_metadata_snap", "100\n")]
    assert not (tmp_path / RECORD).exists()


def test_a_failed_reserve_releases_nothing_and_leaves_no_record(tmp_path):
    pool = Pool()
    runner = pool.runner().on("dmsetup message", Answer(stderr="device-mapper: message ioctl failed",
                                                         returncode=1))
    with pytest.raises(CommandFailed):
        ranges_of(runner, tmp_path)
    assert [a[-1] for a in runner.argvs_of("dmsetup", "message")] == ["reserve_metadata_snap"]
    assert not (tmp_path / RECORD).exists()


def test_the_snapshot_is_released_when_thin_delta_fails(tmp_path):
    pool = Pool()
    with pytest.raises(CommandFailed, match="no current metadata snap"):
        ranges_of(pool.runner(delta=None), tmp_path)
    assert not pool.held


def test_the_snapshot_is_released_when_the_output_is_refused(tmp_path):
    pool = Pool()
    with pytest.raises(ThinDeltaFailed):
        thin_delta.changed_ranges(pool.runner(), "system", "pool2", base=2, new=9, disk_size=DISK,
                                  lock_dir=str(tmp_path))
    assert not pool.held
