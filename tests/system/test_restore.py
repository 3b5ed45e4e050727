"""The restore drill, end to end on real LVM: a VM disk (MBR or GPT: ext4, swap, XFS) is backed
up as sesam would (pre, tar of the mountpoint, post), wiped, restored from the tar and rebuilt
with restore-disk (or restore-image); then its partition table, filesystem UUIDs and labels
and file trees must be those of the original, and each filesystem must mount and pass fsck -n.

The disk: guest/drill.sh; the file trees and their manifests: guest/drill.py.
"""

from __future__ import annotations

import json
import time

import pytest

from sandbox.world import XEN_SETTINGS, XL
from tests.system.conftest import TESTS
from tests.system.test_vmdisks import VMDISK_CONFIG

pytestmark = pytest.mark.system

TREE = "/mnt/vmbackup"
DISK = "/dev/system/vm4-disk"
BACKUP = "/var/tmp/backup.tar"
RESTORED = "/srv/restored"  # on an ext4 LV of its own: the guest's tmpfs (Linux 6.1) has no user xattrs
DRILL_CONFIG = XEN_SETTINGS + """\
  disks:
    mountpoint: /mnt/vmbackup
    tasks: [xen_vm1]
    unmount_timeout: 4s
    vmdisks:
      domains: [vm4]
      size: 32M
{extra}    xen:
      domains: auto
      timeout: 20s
"""
TAR = ["tar", "--format=posix", "--xattrs", "--xattrs-include=*", "--acls", "--sparse", "--numeric-owner"]


def build_disk(world, label: str) -> None:
    world.guest.run([TESTS / "guest" / "drill.sh", label, "vm4-disk", "vm4", world.guest.python], check=True)
    world.guest.sh("lvcreate -q -y -L 64M -n restored system >/dev/null\n"
                   "mkfs.ext4 -q /dev/system/restored\n"
                   # as the README says: root's alone, on a filesystem where the guest's setuid
                   # files and device nodes do not work
                   f"mkdir -p {RESTORED} && mount -o nosuid,nodev /dev/system/restored {RESTORED}\n"
                   f"chmod 700 {RESTORED}")


def partition_table(world) -> dict:
    """sfdisk's view of the disk, without the device names (the same disk, rebuilt)."""
    table = json.loads(world.guest.run(["sfdisk", "--json", DISK], check=True).stdout)["partitiontable"]
    table.pop("device")
    for part in table["partitions"]:
        part["node"] = part["node"][len(DISK):]
    return table


def partitions(world) -> dict[int, tuple[int, int]]:
    lines = world.guest.run(["partx", "--raw", "--bytes", "--noheadings", "--output", "NR,START,SIZE", DISK],
                            check=True).stdout.split("\n")
    rows = (line.split() for line in lines if line)
    return {int(n): (int(start) * 512, int(size)) for n, start, size in rows}


def identities(world) -> dict[int, dict[str, str]]:
    """Each partition's filesystem (or swap) type, UUID and label, as blkid probes them."""
    found = {}
    for number, (offset, size) in partitions(world).items():
        out = world.guest.run(["blkid", "--probe", "--output", "export", "--offset", str(offset), "--size",
                               str(size), DISK], check=True).stdout
        probed = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        found[number] = {k: probed.get(k, "") for k in ("TYPE", "UUID", "LABEL")}
    return found


def ext4_parameters(world) -> list[str]:
    """The features, block and inode size of the ext4 filesystem in partition 1."""
    out = with_partition(world, 1, 'dumpe2fs -h "$loop" 2>/dev/null')
    wanted = ("Filesystem features", "Block size", "Inode size")
    return [line for line in out.splitlines() if line.startswith(wanted)]


def xfs_parameters(world) -> list[str]:
    """xfs_info of the XFS filesystem in partition 3, without its device's name."""
    out = with_partition(world, 3, 'mkdir -p /run/xfs && mount -o ro "$loop" /run/xfs\n'
                                   'xfs_info /run/xfs; umount /run/xfs')
    return [line.split("=", 1)[1] if line.startswith("meta-data=") else line for line in out.splitlines()]


def with_partition(world, number: int, script: str) -> str:
    """Run script with $loop a loop device over partition number; return its output."""
    offset, size = partitions(world)[number]
    return world.guest.sh(f'loop=$(losetup --find --show --offset {offset} --sizelimit {size} {DISK})\n'
                          f'trap \'losetup --detach "$loop"\' EXIT\n{script}').stdout


def manifests(world) -> dict[int, dict]:
    """Each filesystem's file tree (drill.py manifest), read from a read-only mount; before it
    is mounted, each must pass fsck -n."""
    found = {}
    for number, fsck in ((1, "e2fsck -f -n"), (3, "xfs_repair -n")):
        out = with_partition(world, number,
                             f'{fsck} "$loop" >/dev/null 2>&1 || {{ echo fsck failed; exit 1; }}\n'
                             'mkdir -p /run/check && mount -o ro "$loop" /run/check\n'
                             f'{world.guest.python} {TESTS}/guest/drill.py manifest /run/check; rc=$?\n'
                             'umount /run/check; exit $rc')
        found[number] = json.loads(out)
    return found


def back_up_and_wipe(world, extra: str = "") -> float:
    """pre, tar of the mountpoint as sesam reads it, post; the domain shut down, the disk LV
    wiped, the tar extracted to RESTORED. Return how long the backup part took."""
    world.write_config(DRILL_CONFIG.format(extra=extra))
    started = time.monotonic()
    pre = world.pre()
    assert pre.rc == 0, pre
    world.guest.run([*TAR, "--create", "--file", BACKUP, "--directory", TREE, "."], check=True)
    post = world.post()
    assert post.rc == 0, post
    took = time.monotonic() - started
    world.guest.run([XL, "fake-destroy", "vm4"], check=True)
    world.guest.run(["dd", "if=/dev/zero", f"of={DISK}", "bs=4M", "conv=fsync", "status=none"], check=False)
    assert world.guest.run(["blkid", "--probe", DISK]).rc == 2  # nothing left on it
    world.guest.run([*TAR, "--extract", "--same-permissions", "--file", BACKUP, "--directory", RESTORED],
                    check=True)
    return took


@pytest.mark.parametrize("label", ["dos", "gpt"])
def test_restore_drill_rebuilds_the_disk_from_the_backed_up_files(world, label):
    build_disk(world, label)
    table, ids, trees = partition_table(world), identities(world), manifests(world)
    assert ids[2]["TYPE"] == "swap" and ids[3]["LABEL"] == "data" and len(trees[3]["tree"]) == 14
    ext4, xfs = ext4_parameters(world), xfs_parameters(world)
    assert "metadata_csum" not in ext4[0] and len(ext4) == 3, ext4
    assert "reflink=0" in "".join(xfs) and "bigtime=0" in "".join(xfs), xfs
    for tree in trees.values():  # what the comparison below covers is really there
        files = tree["tree"]
        assert tree["hard_links"] == [["etc/data.hardlink", "home/alice/data.bin"]]
        assert files["sparse.img"]["sparse"] and files["etc/null"]["rdev"] == [1, 3]
        assert "system.posix_acl_access" in files["etc/secret"]["xattrs"]
        assert "system.posix_acl_default" in files["home/alice"]["xattrs"]
        assert {"user.checksum", "trusted.owner"} <= set(files["home/alice/data.bin"]["xattrs"])
        assert (files["etc/data.symlink"]["uid"], files["etc/secret"]["mode"]) == (1001, "0o104751")

    backup = back_up_and_wipe(world)
    disk_layout = json.loads(world.guest.read(f"{RESTORED}/vm4/xvda/layout.json"))
    assert disk_layout["table"]["id"] == table["id"]
    domain_layout = json.loads(world.guest.read(f"{RESTORED}/vm4/layout.json"))
    assert domain_layout["disks"] == {"xvda": "xvda/layout.json"}
    assert domain_layout["xl_list_l"]["config"]["c_info"]["name"] == "vm4"

    source = ["--from", f"{RESTORED}/vm4/xvda", "--to", "system/vm4-disk"]
    dry = world.xenlvm("restore-disk", *source, "--dry-run")
    assert dry.rc == 0, dry
    assert "dry run, would run: sfdisk --wipe always --no-tell-kernel /dev/mapper/system-vm4--disk <<'EOF'" \
        in dry.stderr
    assert f"label-id: {table['id']}" in dry.stderr and f"-m uuid={ids[3]['UUID']},crc=1," in dry.stderr
    assert world.guest.run(["blkid", "--probe", DISK]).rc == 2  # the dry run changed nothing

    setuid = f"{RESTORED}/vm4/xvda/p1/etc/secret"  # the guest's setuid file, restored as it was
    world.guest.sh(f"test $(stat -c %a {setuid}) = 4751")
    nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--", "stat", setuid]
    assert world.guest.run(nobody).rc != 0  # out of dom0's users' reach

    started = time.monotonic()
    done = world.xenlvm("restore-disk", *source, "--yes")
    took = time.monotonic() - started
    assert done.rc == 0, done
    assert "the restored folder" not in done.stderr, done  # restored the safe way: no warning
    print(f"drill {label}: backup (pre, tar, post) {backup:.1f} s, restore-disk {took:.1f} s")
    assert "restored vm4/xvda onto system/vm4-disk: partition table; partition 1: ext4 with its files; " \
           "partition 2: swap; partition 3: xfs with its files" in done.stdout, done
    assert partition_table(world) == table
    assert identities(world) == ids
    assert ext4_parameters(world) == ext4
    assert xfs_parameters(world) == xfs
    assert manifests(world) == trees
    assert world.guest.run(["losetup", "--list", "--noheadings"], check=True).stdout == ""


def test_restore_image_drill_puts_back_every_byte(world):
    build_disk(world, "gpt")
    original = world.guest.run(["sha256sum", DISK], check=True).stdout.split()[0]
    table, ids = partition_table(world), identities(world)
    world.guest.sh("mkdir -p /var/tmp/images")
    back_up_and_wipe(world, "      expose: image-copy\n      image_dir: /var/tmp/images\n")
    image = f"{RESTORED}/vm4/xvda.img"
    assert json.loads(world.guest.read(f"{RESTORED}/vm4/layout.json"))["disks"] == {"xvda": "xvda.img"}

    refused = world.xenlvm("restore-image", image, "--to", "system/vm4-disk")
    assert refused.rc == 1 and "then with --yes to do it. Nothing was changed." in refused.stderr, refused
    done = world.xenlvm("restore-image", image, "--to", "system/vm4-disk", "--yes")
    assert done.rc == 0, done
    assert f"SHA-256 {original} verified" in done.stdout
    assert world.guest.run(["sha256sum", DISK], check=True).stdout.split()[0] == original
    assert partition_table(world) == table and identities(world) == ids
    manifests(world)  # each filesystem passes fsck -n and mounts


def test_restore_disk_refuses_a_disk_that_a_domain_has_or_a_loop_device_maps(world):
    world.guest.run([TESTS / "guest" / "vmdisks.sh"], check=True)  # smaller disks than the drill's
    world.write_config(VMDISK_CONFIG.format(extra=""))
    assert world.pre().rc == 0
    world.guest.sh(f"mkdir -p /var/tmp/restored && cp -a {TREE}/vm2 /var/tmp/restored/")
    assert world.post().rc == 0
    disk = "/dev/system/vm2-disk"
    before = world.guest.run(["sha256sum", disk], check=True).stdout
    restore = ["restore-disk", "--from", "/var/tmp/restored/vm2/xvda", "--to", "system/vm2-disk", "--yes"]
    refused = world.xenlvm(*restore)
    assert refused.rc == 1, refused
    assert "the target system/vm2-disk is a disk of domain 'vm2', which exists" in refused.stderr
    world.guest.run([XL, "fake-destroy", "vm2"], check=True)
    loop = world.guest.run(["losetup", "--find", "--show", disk], check=True).stdout.strip()
    refused = world.xenlvm(*restore)
    world.guest.run(["losetup", "--detach", loop], check=True)
    assert refused.rc == 1, refused
    assert f"the target system/vm2-disk is in use by {loop}" in refused.stderr
    assert world.guest.run(["sha256sum", disk], check=True).stdout == before
