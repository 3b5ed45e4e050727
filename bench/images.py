"""expose: image without copying (issue 16 part 2), measured in the sandbox: pre's time with a
64 MiB and a 1 GiB VM disk (FUSE, and the copying mode image-copy for comparison), reading the
exposed image with dd against reading the snapshot device directly (same boot, page cache
dropped before each read), and the space pre uses.

bench.run calls image_exposure(); on its own (boots a sandbox, prints the table):

    .venv/bin/python -m bench.images [--rounds 3]
"""

from __future__ import annotations

import sys

from bench.common import Row, Section, progress, section_main
from sandbox.machine import Guest
from sandbox.world import HOOKS, World

SIZES = {"small": 64, "big": 1024}  # MiB: the domain's one disk
CONFIG = """\
settings:
  path: /opt/xen/bin:/usr/sbin:/usr/bin:/sbin:/bin
jobs:
"""
JOB = """\
  {name}:
    mountpoint: /mnt/img-{name}
    tasks: [img_{name}]
    vmdisks:
      domains: [{name}]
      size: 32M
      expose: {expose}
{image_dir}    xen:
      domains: auto
"""
SETUP = """\
set -e
for name in small big; do
    size=$1; [ "$name" = big ] && size=$2
    lvcreate -q -y -L "${size}M" -n "img-$name" system >/dev/null
    # random data in the first 64 MiB (a disk's used part), the rest as LVM leaves it
    dd if=/dev/urandom of="/dev/system/img-$name" bs=1M count=64 conv=fsync status=none
    /opt/xen/bin/xl fake-create "$name" --disk "/dev/system/img-$name,xvda" >/dev/null
    mkdir -p "/mnt/img-$name"
done
# image-copy's image_dir: pre copies a disk only into room for its whole size (1 GiB here), more
# than the guest's /var/tmp (a tmpfs of half its memory) has; the copy is sparse (64 MiB written)
mkdir -p /var/tmp/images && mount -t tmpfs -o size=1200M,mode=0755 tmpfs /var/tmp/images
"""


def _hook(guest: Guest, name: str, job: str) -> float:
    done = guest.run([f"{HOOKS}/{name}", "--job", f"{job}", f"img_{job}", f"/mnt/img-{job}", "FULL",
                      "20261201-230000", "backup-host"], env={})
    if done.rc != 0:
        raise RuntimeError(f"{name} of job {job} failed, so its timing means nothing:\n{done}")
    return done.duration * 1000


def _read_mib_per_s(guest: Guest, path: str) -> float:
    """dd the whole of path into /dev/null after dropping the page cache; MiB/s."""
    done = guest.sh(f"sync; echo 3 > /proc/sys/vm/drop_caches; dd if={path} of=/dev/null bs=1M 2>&1"
                    " | tail -1")
    # "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 8.1 s, 133 MB/s"
    fields = done.stdout.split()
    size, seconds = int(fields[0]), float(fields[fields.index("copied,") + 1])
    return size / seconds / (1 << 20)


def _used_kib(guest: Guest, path: str) -> float:
    return float(guest.sh(f"df -k --output=used {path} | tail -1").stdout.strip())


def image_exposure(guest: Guest, world: World, rounds: int = 3):
    """Measure; return a bench.run.Section."""
    world.build(config=None)
    guest.sh(SETUP.replace("$1", str(SIZES["small"])).replace("$2", str(SIZES["big"])))
    fuse = CONFIG + "".join(JOB.format(name=n, expose="image", image_dir="") for n in SIZES)
    copy = CONFIG + "".join(JOB.format(name=n, expose="image-copy",
                                       image_dir="      image_dir: /var/tmp/images\n") for n in SIZES)
    pre: dict[str, list[float]] = {n: [] for n in SIZES}
    pre_copy: dict[str, list[float]] = {n: [] for n in SIZES}
    image_read, device_read, tree_used, dir_used = [], [], [], []
    for number in range(rounds + 1):  # round 0 warms up and is dropped
        progress(f"images: round {number}/{rounds}" + (" (warm-up)" if number == 0 else ""))
        world.write_config(fuse)
        for name in SIZES:
            before = _used_kib(guest, "/var/tmp/images")
            took = _hook(guest, "sbc_pre", name)
            if number:
                pre[name].append(took)
                tree_used.append(_used_kib(guest, f"/mnt/img-{name}"))
                dir_used.append(_used_kib(guest, "/var/tmp/images") - before)
            if name == "big" and number:
                image_read.append(_read_mib_per_s(guest, "/mnt/img-big/big/xvda.img"))
                device_read.append(_read_mib_per_s(guest, "/dev/system/img-big.xenlvm"))
            _hook(guest, "sbc_post", name)
        if number == 1:  # the copying mode once, for comparison (a 1 GiB copy takes a while)
            world.write_config(copy)
            for name in SIZES:
                pre_copy[name].append(_hook(guest, "sbc_pre", name))
                _hook(guest, "sbc_post", name)
    small = Row("sbc_pre, expose: image (FUSE), 64 MiB disk", pre["small"])
    small_copy = Row("sbc_pre, expose: image-copy, 64 MiB disk", pre_copy["small"])
    device = Row("dd of the snapshot device, 1 GiB (page cache dropped)", device_read, "MiB/s")
    rows = [small,
            Row("sbc_pre, expose: image (FUSE), 1 GiB disk", pre["big"], baseline=small),
            small_copy,
            Row("sbc_pre, expose: image-copy, 1 GiB disk", pre_copy["big"], baseline=small_copy),
            device,
            Row("dd of the exposed image file, 1 GiB (page cache dropped)", image_read, "MiB/s", device),
            Row("space used in the tree's tmpfs after pre (layout files)", tree_used, "KiB"),
            Row("space used in /var/tmp/images by pre (expose: image)", dir_used, "KiB")]
    guest.run(["umount", "/var/tmp/images"], check=True)
    world.build(config=None)
    return Section("expose: image without copying (FUSE) against the copying mode", rows, notes=[
        "targets: pre with 1 GiB within 10% of pre with 64 MiB; the image read at least 80% of the "
        "device read; no space used",
        "each disk is 64 MiB of random data and, for the 1 GiB one, 960 MiB that LVM left as it was; "
        "one domain, one disk per job; image-copy was run once (round 1)"])


def main(argv: list[str] | None = None) -> int:
    return section_main("images", __doc__, image_exposure, argv)


if __name__ == "__main__":
    sys.exit(main())
