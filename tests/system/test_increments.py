"""The restore drill of a chain on real dm-thin: a thin VM disk, a full image, then increments
made by xenlvm's thin_delta and increment writer (guest/thin_chain.py) after writes at many
offsets (the first and last byte, across pool-block borders, new blocks, discards); each run
restored with restore-image must be byte-identical to the disk at that run. A damaged
increment and a chain with a gap are refused; a metadata snapshot left by a run killed with -9
is released by the next."""

from __future__ import annotations

import signal

import pytest

from sandbox.chain import (
    BLOCK,
    CONFIG,
    FOLDER,
    chain_file,
    make_increment,
    restore,
    run_id,
    sha256,
    snapshot,
)
from sandbox.machine import GUEST_FILES
from xenlvm.increments import fileformat

pytestmark = pytest.mark.system

SIZE = 16 << 20
# Each run's writes: (offset, length) of random bytes, or (offset, -length) discarded.
WRITES = [
    [(0, 8 << 20)],
    [(0, 1), (SIZE - 100, 100), (3 * BLOCK - 10, 20), (10 << 20, 1 << 20), (4 << 20, -BLOCK)],
    [*((block * BLOCK + 7, 4096) for block in range(0, 256, 37)), (10 << 20, -(1 << 20)), (SIZE - 1, 1)],
    [(5 * BLOCK + 100, 3 * BLOCK), (12 << 20, 5000), (2 << 20, -(2 * BLOCK))],
]


def write(world, writes) -> None:
    for offset, length in writes:
        if length > 0:
            world.guest.sh(f"head -c {length} /dev/urandom | dd of=/dev/system/vm5-disk bs=64k seek={offset} "
                           "oflag=seek_bytes iflag=fullblock conv=notrunc,fsync status=none")
        else:
            world.guest.run(["blkdiscard", "-o", str(offset), "-l", str(-length), "/dev/system/vm5-disk"],
                            check=True)


def touched_blocks(writes) -> int:
    """How many pool blocks the writes (and discards) touched."""
    return len({block for offset, length in writes
                for block in range(offset // BLOCK, (offset + abs(length) - 1) // BLOCK + 1)})


def back_up(world, runs: int) -> tuple[list[str], list[dict]]:
    """A thin disk vm5-disk and an empty thin target restored, then runs runs of WRITES, each
    followed by its snapshot and its file: the full image, then increments (the base of each is
    removed once the next exists). Return each run's SHA-256 and each increment's ranges and size."""
    world.build(layout="thin", config=CONFIG)
    world.guest.sh(f"lvcreate -q -y -V {SIZE}b -T system/pool -n vm5-disk >/dev/null\n"
                   f"lvcreate -q -y -V {SIZE}b -T system/pool -n restored >/dev/null\nmkdir -p {FOLDER}")
    expected, made = [], []
    for number, writes in enumerate(WRITES[:runs]):
        write(world, writes)
        expected.append(snapshot(world, number))
        if number == 0:
            world.guest.run(["dd", "if=/dev/system/s0", f"of={chain_file(0)}", "bs=4M", "status=none"],
                            check=True)
        else:
            made.append(make_increment(world, number))
            world.guest.run(["lvremove", "-q", "-f", f"system/s{number - 1}"], check=True)
    return expected, made


def held(world) -> bool:
    status = world.guest.run(["dmsetup", "status", "system-pool-tpool"], check=True).stdout.split()
    return status[6] != "-"


def test_restore_drill_of_a_chain_made_from_thin_delta(world):
    expected, made = back_up(world, len(WRITES))
    assert len(set(expected)) == len(WRITES)
    for number, increment in enumerate(made, 1):
        data = sum(length for _, length, kind in increment["ranges"] if kind == 0)
        assert data <= touched_blocks(WRITES[number]) * BLOCK, (number, increment)  # only the blocks written
        assert increment["size"] <= data + 49 * len(increment["ranges"]) + fileformat.MAX_HEADER_BYTES
        print(f"run {number}: increment {increment['size']} bytes, {len(increment['ranges'])} ranges")

    dry = restore(world, chain_file(3), "--dry-run")
    assert dry.rc == 0, dry
    assert [line.split()[0:3] for line in dry.stdout.splitlines()[1:5]] == [
        ["full", "image", chain_file(0)], ["increment", chain_file(1), "(run"],
        ["increment", chain_file(2), "(run"], ["increment", chain_file(3), "(run"]]
    assert "SHA-256 as recorded in its first increment" in dry.stdout.splitlines()[1], dry
    for number in range(len(WRITES)):
        done = restore(world, chain_file(number), "--yes")
        assert done.rc == 0, done
        assert f"SHA-256 {expected[number]} verified" in done.stdout
        assert sha256(world, "/dev/system/restored") == expected[number]


def test_restore_refuses_a_damaged_increment_and_a_chain_with_a_gap(world):
    back_up(world, 3)
    before = sha256(world, "/dev/system/restored")
    world.guest.sh(f"mkdir -p /srv/gap && cp {chain_file(0)} {chain_file(2)} /srv/gap/\n"
                   f"mkdir -p /srv/bad && cp {FOLDER}/* /srv/bad/\n"
                   f"printf X | dd of={chain_file(1, '/srv/bad')} bs=1 seek=2000 conv=notrunc status=none")
    gap = restore(world, chain_file(2, "/srv/gap"), "--yes")
    assert gap.rc == 1 and f"gap: run {run_id(1)} is missing" in gap.stderr, gap
    bad = restore(world, chain_file(2, "/srv/bad"), "--yes")
    assert bad.rc == 1 and "fails its SHA-256" in bad.stderr and chain_file(1, "/srv/bad") in bad.stderr, bad
    assert sha256(world, "/dev/system/restored") == before  # nothing was written


def test_a_metadata_snapshot_left_by_a_killed_run_is_released_by_the_next(world):
    back_up(world, 1)
    helper = [world.guest.python, GUEST_FILES / "thin_chain.py"]
    pid = world.guest.spawn([*helper, "hold", "system", "pool", "/run/held"])
    world.wait_for("held", path="/run/held")
    assert held(world)
    world.guest.signal(pid, signal.SIGKILL)
    world.guest.wait(pid)
    assert held(world)  # kill -9: nothing could release it
    write(world, WRITES[1])
    snapshot(world, 1)
    assert make_increment(world, 1)["ranges"]
    assert not held(world)
