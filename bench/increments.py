"""Increments from thin-pool metadata (issue 27), measured in the sandbox on real dm-thin with
xenlvm's thin_delta.py and increment.py (driven by sandbox/guest/thin_chain.py, as the
system test does; pre does not write increments yet):

- the increment's size against the bytes changed, for 1%, 10% and 50% of a 128 MiB thin disk
  changed in 256 KiB extents, and 1% changed as scattered 4 KiB writes (each costs a whole
  64 KiB pool block), against the full image that expose: image shows every run;
- thin_delta's time (reserve, thin_delta -m, release) against the pool's mapped size;
- restore-image of a full image plus 6 increments against the full image alone.

bench.run calls increments(); on its own (boots a sandbox, prints the table):

    .venv/bin/python -m bench.increments [--rounds 3]
"""

from __future__ import annotations

import random
import sys

from bench.common import Row, Section, progress, section_main
from sandbox import chain as drill
from sandbox.machine import Guest
from sandbox.world import World

SIZE = 128 << 20
EXTENT = 256 << 10
# Each run after the full one: (percent of the disk changed, bytes per write)
RUNS = [(1, EXTENT), (10, EXTENT), (50, EXTENT), (1, 4096), (1, EXTENT), (1, EXTENT)]
PWRITE = """\
import os, sys
fd = os.open("/dev/system/vm5-disk", os.O_WRONLY)
length = int(sys.argv[1])
for offset in sys.argv[2:]:
    os.pwrite(fd, os.urandom(length), int(offset))
os.fsync(fd)
"""


def _change(guest: Guest, percent: int, length: int, rng: random.Random) -> int:
    """Write random bytes to percent of the disk in writes of length bytes at distinct aligned
    offsets; return the bytes changed."""
    count = max(1, round(SIZE * percent / 100 / length))
    offsets = rng.sample(range(0, SIZE, length), count)
    guest.run([guest.python, "-c", PWRITE, str(length), *map(str, offsets)], check=True)
    return count * length


def _mapped_mib(guest: Guest) -> float:
    """The pool's mapped data: used data blocks (dmsetup status) times the 64 KiB block."""
    fields = guest.run(["dmsetup", "status", "system-pool-tpool"], check=True).stdout.split()
    return int(fields[5].split("/")[0]) * drill.BLOCK / (1 << 20)


def increments(guest: Guest, world: World, rounds: int = 3):
    """Measure; return a bench.run.Section."""
    rng = random.Random(27)
    world.build(layout="thin", config=drill.CONFIG)
    guest.sh(f"lvcreate -q -y -V {SIZE}b -T system/pool -n vm5-disk >/dev/null\n"
             f"lvcreate -q -y -V {SIZE}b -T system/pool -n restored >/dev/null\nmkdir -p {drill.FOLDER}\n"
             f"head -c {SIZE} /dev/urandom | dd of=/dev/system/vm5-disk bs=1M iflag=fullblock conv=fsync "
             "status=none")
    expected = drill.snapshot(world, 0)
    guest.run(["dd", "if=/dev/system/s0", f"of={drill.chain_file(0)}", "bs=4M", "status=none"], check=True)
    full = Row("the full image (what expose: image shows every run)", [SIZE / (1 << 20)], "MiB")
    rows, delta_rows = [full], []
    for number, (percent, length) in enumerate(RUNS, 1):
        progress(f"increments: run {number}, {percent}% changed in writes of {length} bytes")
        changed = _change(guest, percent, length, rng)
        expected = drill.snapshot(world, number)
        mapped = _mapped_mib(guest)
        made = drill.make_increment(world, number)
        guest.run(["lvremove", "-q", "-f", f"system/s{number - 1}"], check=True)
        if number <= 4:
            what = f"{length >> 10} KiB extents" if length >= EXTENT else "scattered 4 KiB writes"
            changed_row = Row(f"run {number}: bytes changed, {percent}% of the disk in {what}",
                               [changed / (1 << 20)], "MiB")
            rows += [changed_row, Row(f"run {number}: its increment file ({len(made['ranges'])} ranges)",
                                       [made["size"] / (1 << 20)], "MiB", changed_row),
                     Row(f"run {number}: the increment file less the bytes changed",
                          [(made["size"] - changed) / 1024], "KiB")]
        delta_rows.append(Row(f"thin_delta with reserve and release, pool {mapped:.0f} MiB mapped",
                               [made["delta_s"] * 1000]))
    alone, chained = [], []
    for number in range(rounds + 1):  # round 0 warms up and is dropped
        progress(f"increments: restore round {number}/{rounds}")
        for path, into in ((drill.chain_file(0), alone), (drill.chain_file(len(RUNS)), chained)):
            done = drill.restore(world, path, "--yes")
            if done.rc != 0:
                raise RuntimeError(f"restore-image {path} failed, so its timing means nothing:\n{done}")
            if number:
                into.append(done.duration * 1000)
        if drill.sha256(world, "/dev/system/restored") != expected:
            raise RuntimeError("the chain restored is not the disk as of its last run")
    alone_row = Row("restore-image of the full image alone (128 MiB)", alone)
    rows += delta_rows + [alone_row, Row(f"restore-image of the full image and {len(RUNS)} increments",
                                          chained, baseline=alone_row)]
    world.build(config=None)
    return Section("Increments from thin-pool metadata (thin_delta) against full images", rows, notes=[
        "target: an increment is at most the bytes changed plus 1% of the disk plus a fixed header "
        "(for writes of at least one pool block: a 4 KiB write costs a 64 KiB block)",
        "a 128 MiB thin disk, all written before the full image; pool blocks of 64 KiB; each run's "
        "increment is made over the previous run's thin snapshot, then that snapshot is removed",
        "the chain restored is checked against the disk as of its last run (SHA-256)"])


def main(argv: list[str] | None = None) -> int:
    return section_main("increments", __doc__, increments, argv, rounds_help="measured restore rounds [3]")


if __name__ == "__main__":
    sys.exit(main())
