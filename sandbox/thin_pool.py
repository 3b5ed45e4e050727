"""A small thin pool in the sandbox's world: system/tpool (64 MiB data, 4 MiB metadata) with the
thin volume system/tvm (256 MiB, ext4, mounted at /srv/tvm), 36 MiB of data in /srv/tvm/data,
and a job that snapshots it. Used by tests/system/test_thin_pool.py and bench/thin_pool.py.
"""

from __future__ import annotations

import json

from sandbox.world import World

THIN_CONFIG = """\
settings:
  lock_timeout: 5s
jobs:
  tvm:
    volume: system/tvm
    snapshot: tvmbackup
    mountpoint: /mnt/vmbackup
    tasks: [xen_vm1]
    unmount_timeout: 4s
"""

# A 64 MiB pool whose thin volume holds an ext4 (few inodes, small journal: little metadata)
# with 36 MiB of data, synced: the pool is then about 65% full.
SMALL_POOL = """
set -e
lvcreate -q -y -L 64M -T system/tpool >/dev/null
lvcreate -q -y -V 256M -T system/tpool -n tvm >/dev/null
mkfs.ext4 -q -N 1024 -J size=4 -E lazy_itable_init=0,lazy_journal_init=0 /dev/system/tvm
mkdir -p /srv/tvm && mount /dev/system/tvm /srv/tvm
dd if=/dev/urandom of=/srv/tvm/data bs=1M count=36 2>/dev/null && sync
dmesg -C
"""


def build(world: World, config: str = THIN_CONFIG) -> None:
    world.guest.sh(SMALL_POOL, timeout=120)
    world.write_config(config)


def pool(world: World) -> dict:
    """system/tpool's size and metadata size in bytes, its data and metadata use in percent."""
    out = world.guest.run(["lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o",
                           "lv_size,data_percent,metadata_percent,lv_metadata_size", "system/tpool"],
                          check=True).stdout
    row = json.loads(out)["report"][0]["lv"][0]
    return {"size": int(row["lv_size"]), "data": float(row["data_percent"]),
            "metadata": float(row["metadata_percent"]), "metadata_size": int(row["lv_metadata_size"])}
