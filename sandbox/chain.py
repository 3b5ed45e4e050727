"""A thin VM disk's chain in the sandbox, on real dm-thin: its runs' thin snapshots, the full
image, and increments made by xenlvm's own thin_delta and increment writer (guest/thin_chain.py),
restored with restore-image. Used by tests/system/test_increments.py and bench/increments.py.
"""

from __future__ import annotations

import json

from sandbox.machine import GUEST_FILES, Completed
from sandbox.world import DEFAULT_CONFIG, XEN_SETTINGS, World

CONFIG = XEN_SETTINGS + DEFAULT_CONFIG.split("jobs:\n", 1)[1]  # the stand-in xl for restore-image
FOLDER = "/srv/chain/vm5"
DISK = "xvda"
BLOCK = 64 << 10  # the world's pool: lvcreate's default chunk size for its size


def run_id(number: int) -> str:
    return f"20261206T{number:02d}0000_{4000 + number}"


def chain_file(number: int, folder: str = FOLDER) -> str:
    return f"{folder}/{DISK}.{run_id(number)}.{'img' if number == 0 else 'incr'}"


def sha256(world: World, path: str) -> str:
    return world.guest.run(["sha256sum", path], check=True).stdout.split()[0]


def thin_id(world: World, lv: str) -> str:
    done = world.guest.run(["lvs", "--noheadings", "-o", "thin_id", f"system/{lv}"], check=True)
    return done.stdout.strip()


def snapshot(world: World, number: int) -> str:
    """Run number's thin snapshot of the disk, active; return the SHA-256 of its bytes."""
    world.guest.sh(f"sync; lvcreate -q -y -s -n s{number} system/vm5-disk >/dev/null\n"
                   f"lvchange -q -ay -K system/s{number}")
    return sha256(world, f"/dev/system/s{number}")


def make_increment(world: World, number: int) -> dict:
    """Run number's increment over run number - 1's snapshot (the first records the full image's
    SHA-256): its ranges, size and thin_delta's seconds (guest/thin_chain.py)."""
    helper = [world.guest.python, GUEST_FILES / "thin_chain.py"]
    done = world.guest.run([*helper, "increment", "system", "pool", thin_id(world, f"s{number - 1}"),
                            f"s{number}", thin_id(world, f"s{number}"), chain_file(number), run_id(number),
                            run_id(number - 1), f"vm5/{DISK}", *([chain_file(0)] if number == 1 else [])],
                           check=True)
    return json.loads(done.stdout)


def restore(world: World, path: str, *extra: str) -> Completed:
    return world.xenlvm("restore-image", path, "--to", "system/restored", *extra)
