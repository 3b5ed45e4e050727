"""Increments from thin-pool metadata (issue 27), measured in the sandbox on real dm-thin with
xenlvm's increments/thin_delta.py and increments/fileformat.py (driven by
sandbox/guest/thin_chain.py, as the system test does), and pre through the hooks:

- the increment's size against the bytes changed, for 1%, 10% and 50% of a 128 MiB thin disk
  changed in 256 KiB extents, and 1% changed as scattered 4 KiB writes (each costs a whole
  64 KiB pool block), against the full image that expose: image shows every run;
- thin_delta's time (reserve, thin_delta -m, release) against the pool's mapped size;
- restore-image of a full image plus 6 increments against the full image alone;
- pre through the hooks (vmdisks.incremental: thin, expose: image-copy) for a 64 GiB virtual
  thin disk: its increment after 192 MiB changed against its full image (the disk whole) of the
  same state. (192 MiB, not the issue's 1 GiB: the sandbox's VG has 2 GiB for both thin pools,
  the disk's and image_dir's.)

bench.run calls increments(); on its own (boots a sandbox, prints the table):

    .venv/bin/python -m bench.increments [--rounds 3]
"""

from __future__ import annotations

import json
import random
import sys

from bench.common import Row, Section, progress, section_main
from sandbox import chain as drill
from sandbox.machine import Guest
from sandbox.world import SESAM_ARGS, XEN_SETTINGS, XL, World

SIZE = 128 << 20
EXTENT = 256 << 10
# Each run after the full one: (percent of the disk changed, bytes per write)
RUNS = [(1, EXTENT), (10, EXTENT), (50, EXTENT), (1, 4096), (1, EXTENT), (1, EXTENT)]
PWRITE = """\
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
length = int(sys.argv[2])
for offset in sys.argv[3:]:
    os.pwrite(fd, os.urandom(length), int(offset))
os.fsync(fd)
"""
BIG = 64 << 30  # the virtual thin disk whose pre is timed, with BIG_CHANGE bytes changed
BIG_CHANGE = 192 << 20
BIG_CONFIG = XEN_SETTINGS + """\
  disks:
    mountpoint: /mnt/vmbackup
    tasks: [xen_vm1]
    vmdisks:
      domains: [vm6]
      size: 16M
      expose: image-copy
      image_dir: /srv/images
      incremental: thin
    xen:
      domains: auto
      timeout: 60s
"""


def _change(guest: Guest, percent: float, length: int, rng: random.Random, size: int = SIZE,
            device: str = "/dev/system/vm5-disk") -> int:
    """Write random bytes to percent of the disk (size bytes) in writes of length bytes at
    distinct aligned offsets; return the bytes changed."""
    count = max(1, round(size * percent / 100 / length))
    offsets = rng.sample(range(0, size, length), count)
    guest.run([guest.python, "-c", PWRITE, device, str(length), *map(str, offsets)], check=True)
    return count * length


def _hooks_run(world: World, kind: str) -> float:
    """pre and post of the chained job; return pre's seconds, after checking that it wrote kind."""
    pre = world.hook("sbc_pre", *SESAM_ARGS, timeout=3600)  # a full image reads the whole disk
    if pre.rc != 0:
        raise RuntimeError(f"pre failed, so its time means nothing:\n{pre}")
    [entry] = json.loads(world.guest.read("/var/lib/xenlvm/disks/increments.json"))["disks"]
    post = world.post()
    if post.rc != 0 or entry["kind"] != kind:
        raise RuntimeError(f"expected pre to write {kind}, it wrote {entry}; post: {post}")
    return pre.duration


def pre_of_a_big_disk(guest: Guest, world: World, rng: random.Random) -> list:
    """pre's time for the BIG disk: its increment after BIG_CHANGE bytes changed, then (its base
    dropped) its full image of the same state."""
    world.build(layout="thin", config=None)
    # image_dir must have room for the disk's full size (pre checks): a 70 GiB thin LV in a pool of
    # its own, which only the blocks written take room in
    guest.sh("lvcreate -q -y -L 1000M -T system/ipool >/dev/null\n"
             "lvcreate -q -y -V 70G -T system/ipool -n images >/dev/null 2>&1\n"
             "mkfs.xfs -q -K /dev/system/images\n"
             "mkdir -p -m 700 /srv/images && mount /dev/system/images /srv/images\n"
             f"lvcreate -q -y -V {BIG}b -T system/pool -n vm6-disk >/dev/null 2>&1\n"
             f"{XL} fake-create vm6 --disk /dev/system/vm6-disk,xvda >/dev/null")
    world.write_config(BIG_CONFIG)
    progress("increments: pre of a 64 GiB thin disk, its first full image")
    _change(guest, BIG_CHANGE * 100 / BIG, EXTENT, rng, BIG, "/dev/system/vm6-disk")
    _hooks_run(world, "full")
    progress("increments: pre of the 64 GiB thin disk after 192 MiB changed: the increment")
    _change(guest, BIG_CHANGE * 100 / BIG, EXTENT, rng, BIG, "/dev/system/vm6-disk")
    increment = _hooks_run(world, "increment")
    if world.xenlvm("cleanup", "--bases").rc != 0:
        raise RuntimeError("xenlvm cleanup --bases failed")
    progress("increments: pre of the same 64 GiB thin disk, whole (its full image)")
    whole = _hooks_run(world, "full")
    guest.sh("umount /srv/images")
    whole_row = Row("pre, a 64 GiB thin disk (384 MiB mapped) exposed whole: its full image", [whole * 1000])
    return [whole_row, Row("pre, the same disk after 192 MiB changed: its increment", [increment * 1000],
                            baseline=whole_row)]


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
    rows += pre_of_a_big_disk(guest, world, rng)
    world.build(config=None)
    return Section("Increments from thin-pool metadata (thin_delta) against full images", rows, notes=[
        "target: an increment is at most the bytes changed plus 1% of the disk plus a fixed header "
        "(for writes of at least one pool block: a 4 KiB write costs a 64 KiB block)",
        "a 128 MiB thin disk, all written before the full image; pool blocks of 64 KiB; each run's "
        "increment is made over the previous run's thin snapshot, then that snapshot is removed",
        "the chain restored is checked against the disk as of its last run (SHA-256)",
        "pre of the 64 GiB disk: through the hooks, one round each; the full image reads all 64 GiB "
        "(unmapped blocks read as zeros) and writes the mapped ones, the increment reads and writes only "
        "the 192 MiB changed (thin_delta over the base)"])


def main(argv: list[str] | None = None) -> int:
    return section_main("increments", __doc__, increments, argv, rounds_help="measured restore rounds [3]")


if __name__ == "__main__":
    sys.exit(main())
