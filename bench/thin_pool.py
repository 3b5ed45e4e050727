"""The fastest writer the thin pool guard keeps up with (issue 26; README, Thin pools).

The world of tests/system/test_thin_pool.py (sandbox/thin_pool.py): a 64 MiB pool system/tpool
whose thin volume holds 36 MiB that the job's thin snapshot shares. For each pace, pre, then the
VM overwrites those 36 MiB in synced chunks (each chunk, then a pause), then post. Per run: the
writer's rate, the pool's size after the guard grew it, and whether the kernel switched the pool to
out-of-data-space (writes queued) at any time. Defaults of thin_pool: (interval 2s, protect_at
90%: 6.4 MiB of headroom).

Not part of `make bench`; alone, in a boot of its own (prints one line per run, writes nothing):
.venv/bin/python -m bench.thin_pool [--paces 1:0.25,2:0.25,4:0.25,4:0]   (chunk MiB:pause s)
"""

from __future__ import annotations

import argparse
import time

from sandbox import thin_pool as thin
from sandbox.machine import Guest
from sandbox.world import World


def run(world: World, chunk: int, pause: float) -> str:
    world.build()
    thin.build(world)
    before = thin.pool(world)
    pre = world.pre()
    if pre.rc != 0:
        return f"chunk {chunk} MiB, pause {pause} s: pre failed: {pre.stderr.strip()}"
    started = time.monotonic()
    done = world.guest.sh(f"set -e; for i in $(seq 0 {36 // chunk - 1}); do dd if=/dev/zero of=/srv/tvm/data "
                          f"bs=1M count={chunk} seek=$((i * {chunk})) conv=notrunc,fsync 2>/dev/null; "
                          f"sleep {pause}; done", timeout=600, check=False)
    took = time.monotonic() - started
    after = thin.pool(world)
    kernel = world.guest.run(["dmesg"]).stdout
    post = world.post()
    return (f"chunk {chunk} MiB, pause {pause} s: {36 / took:.1f} MiB/s, writer exit {done.rc}; pool "
            f"{before['size'] >> 20} -> {after['size'] >> 20} MiB; out of data space: "
            f"{'out-of-data-space' in kernel}; post exit {post.rc}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.thin_pool", description=__doc__.splitlines()[0])
    parser.add_argument("--paces", default="1:0.25,2:0.25,4:0.25,4:0")
    args = parser.parse_args()
    guest = Guest("bench-thin-pool")
    guest.boot()
    try:
        for pace in args.paces.split(","):
            chunk, pause = pace.split(":")
            print(run(World(guest), int(chunk), float(pause)), flush=True)
    finally:
        guest.halt()


if __name__ == "__main__":
    main()
