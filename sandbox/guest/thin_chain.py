"""Guest helper for a thin VM disk's chain (sandbox/chain.py, used by
tests/system/test_increments.py and bench/increments.py): xenlvm's own thin_delta and increment
writer, run on the guest's real dm-thin.

Usage:
  thin_chain.py increment VG POOL BASE_ID NEW_LV NEW_ID OUT RUN BASE_RUN DISK [BASE_IMAGE]
      the increment of VG/NEW_LV (thin id NEW_ID) over the thin device BASE_ID, written to OUT
      (recording the SHA-256 of the full image BASE_IMAGE when given); prints the ranges, the
      file's size and the seconds thin_delta and the writing took, as JSON
  thin_chain.py hold VG POOL READY_FILE
      reserve the pool's metadata snapshot, create READY_FILE (it says held), sleep (the test kills it)
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

from xenlvm.host.runner import Runner
from xenlvm.increments import fileformat as increment
from xenlvm.increments import thin_delta

LOCK_DIR = "/run/xenlvm"


def main(argv: list[str]) -> None:
    runner = Runner(path="/usr/sbin:/usr/bin:/sbin:/bin")
    if argv[0] == "increment":
        vg, pool, base_id, new_lv, new_id, out, run, base_run, disk = argv[1:10]
        base_image = None
        if len(argv) > 10:
            with open(argv[10], "rb") as f:
                base_image = hashlib.sha256(f.read()).digest()  # the test's image: 16 MiB
        device = f"/dev/{vg}/{new_lv}"
        with open(device, "rb") as f:
            size = f.seek(0, os.SEEK_END)
        started = time.monotonic()
        ranges = thin_delta.changed_ranges(runner, vg, pool, base=int(base_id), new=int(new_id),
                                           disk_size=size, lock_dir=LOCK_DIR)
        listed = time.monotonic()
        written = increment.write_increment(out, device, disk=disk, disk_size=size, run=run, base=base_run,
                                            ranges=ranges, base_image_sha256=base_image)
        print(json.dumps({"ranges": [[r.offset, r.length, r.kind] for r in ranges], "size": written,
                          "delta_s": listed - started, "write_s": time.monotonic() - listed}))
    elif argv[0] == "hold":
        vg, pool, ready = argv[1:]
        with thin_delta.metadata_snapshot(runner, vg, pool, LOCK_DIR):
            with open(ready, "w") as f:
                f.write("held\n")
            time.sleep(600)


if __name__ == "__main__":
    main(sys.argv[1:])
