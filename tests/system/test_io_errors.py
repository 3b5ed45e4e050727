"""I/O errors under the hooks, on real device-mapper devices that the tests switch between a
healthy `linear` table and an `error` table (every I/O fails) with dmsetup suspend/reload/resume.

Built inside the guest by each test, beside the world's VG system:

    /run/xl/pvs.img (sparse, on tmpfs) -> one loop device -> two device-mapper devices:
      xl-origin  PV of VG flaky, filled by the origin LV flaky/vms (ext4, mounted at /srv/flaky)
      xl-cow     PV of VG flaky, so the snapshot's copy-on-write space can only land here

What the kernel and LVM do, as seen in the guest (Linux 6.1, LVM 2.03.16):
- The copy-on-write PV failing while the origin is written: dm-snapshot invalidates the snapshot
  ("Invalidating snapshot: Error reading/writing"). lvs then shows it exactly like an overflowed
  one (attr 'I', data_percent 100.00, "snapshot invalid"); only the header on the snapshot's
  copy-on-write device tells them apart (the kernel could not mark it invalid there).
- A failing PV: lvs still succeeds (exit 0, "VG flaky is missing PV" warnings, attr 'p'), and LVM
  refuses every change to the VG: lvcreate "Cannot change VG flaky while PVs are missing",
  lvremove "Aborting. LV flaky/... is now incomplete". The origin stays active and mounted.
- Reading under the mounted snapshot what lies on the failing origin PV fails with EIO; the
  snapshot stays valid (only failed copy-on-write invalidates it).
"""

from __future__ import annotations

import json

import pytest

from sandbox.world import DEFAULT_CONFIG
from tests.system.conftest import assert_lock_free

pytestmark = pytest.mark.system

ARGS = ["xen_flaky", "/mnt/flaky", "FULL", "20261129-213000", "backup-host"]
CONFIG = """\
settings:
  lock_timeout: 5s
jobs:
  flaky:
    volume: flaky/vms
    snapshot: vmsnap
    size: 12M
    mountpoint: /mnt/flaky
    tasks: [xen_flaky]
    unmount_timeout: 4s
"""
IMAGE = "/run/xl/pvs.img"
# device -> (sectors, start in the loop device). The PVs start 1 MiB into the loop device, so
# LVM does not also find their labels on the loop device itself (it refuses duplicate PVs).
DEVICES = {"xl-origin": (81920, 2048), "xl-cow": (49152, 83968)}
ORIGIN_PV, COW_PV = "/dev/mapper/xl-origin", "/dev/mapper/xl-cow"

_CREATE = "\n".join(f'dmsetup create {name} --table "0 {sectors} linear $loop {start}"'
                    for name, (sectors, start) in DEVICES.items())
_HEALTHY = " ".join(f'"{name} {sectors} {start}"' for name, (sectors, start) in DEVICES.items())
SETUP = f"""
mkdir -p /run/xl
truncate -s 72M {IMAGE}
loop=$(losetup -f --show {IMAGE})
{_CREATE}
dmsetup mknodes  # no udev in the guest
vgcreate -q flaky {ORIGIN_PV} {COW_PV}
lvcreate -q -y -l 100%PVS -n vms flaky {ORIGIN_PV}  # fills xl-origin: snapshots go to xl-cow
mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 /dev/flaky/vms
mkdir -p /srv/flaky /mnt/flaky
mount /dev/flaky/vms /srv/flaky
head -c 4194304 /dev/urandom > /srv/flaky/disk.img
sync
echo "$loop"
"""
# Idempotent, so that it also clears what a failed setup or test left; world.sh knows only VG system.
TEARDOWN = f"""
[ -e /run/xl ] || exit 0
for m in /mnt/flaky /srv/flaky; do
    if grep -q " $m " /proc/mounts; then umount "$m" || umount -l "$m"; fi
done
loop=$(losetup -j {IMAGE} 2>/dev/null | cut -d: -f1 | head -n 1)
for device in {_HEALTHY}; do
    set -- $device
    if [ -n "$loop" ] && dmsetup info "$1" >/dev/null 2>&1; then
        dmsetup suspend "$1"; dmsetup reload "$1" --table "0 $2 linear $loop $3"; dmsetup resume "$1"
    fi
done
vgremove -q -f flaky >/dev/null 2>&1 || true
for device in xl-origin xl-cow; do dmsetup remove "$device" 2>/dev/null || true; done
[ -z "$loop" ] || losetup -d "$loop"
rm -rf /run/xl
"""


class Flaky:
    """VG flaky in the guest, the job for it, and the switches that make its PVs fail."""

    def __init__(self, world, loop: str) -> None:
        self.world = world
        self.guest = world.guest
        self.loop = loop

    def fail(self, device: str) -> None:
        """From now on every read and write of device fails with EIO."""
        self._load(device, f"0 {DEVICES[device][0]} error")

    def heal(self, device: str) -> None:
        sectors, start = DEVICES[device]
        self._load(device, f"0 {sectors} linear {self.loop} {start}")

    def _load(self, device: str, table: str) -> None:
        self.guest.run(["/bin/sh", "-ec", 'dmsetup suspend "$1"; dmsetup reload "$1" --table "$2"; '
                        'dmsetup resume "$1"', "sh", device, table], check=True)

    def pre(self):
        return self.world.hook("sbc_pre", *ARGS)

    def post(self):
        return self.world.hook("sbc_post", *ARGS)

    def lvs(self) -> dict[str, dict]:
        """The LVs of VG flaky by name (lvs succeeds, with warnings, while a PV fails)."""
        out = self.guest.run(["lvs", "--reportformat", "json", "-o",
                              "lv_name,lv_attr,lv_tags,data_percent,lv_snapshot_invalid", "flaky"],
                             check=True).stdout
        return {row["lv_name"]: row for row in json.loads(out)["report"][0]["lv"]}

    def assert_origin_untouched(self) -> None:
        """The origin is active (not suspended) and still mounted read-write where the VMs use it."""
        assert self.lvs()["vms"]["lv_attr"][4] == "a", self.lvs()
        assert self.world.mounts().get("/srv/flaky", "").startswith("rw"), self.world.mounts()

    def assert_nothing_left(self) -> None:
        """No snapshot, no mount of it, no process holding the job's lock; the origin untouched."""
        lvs = self.lvs()
        assert "vmsnap" not in lvs, lvs
        assert not [name for name, row in lvs.items() if "xenlvm" in row["lv_tags"].split(",")], lvs
        assert "/mnt/flaky" not in self.world.mounts()
        assert_lock_free(self.world, "flaky")
        self.assert_origin_untouched()


@pytest.fixture
def flaky(world):
    world.guest.run(["/bin/sh", "-c", TEARDOWN])
    done = world.guest.run(["/bin/sh", "-ec", SETUP], check=True)
    world.write_config(CONFIG, faults=True)
    try:
        yield Flaky(world, done.stdout.split()[-1])
    finally:
        world.guest.reap()
        world.guest.run(["/bin/sh", "-c", TEARDOWN], check=True)


def test_cow_device_failing_during_the_backup_is_reported_as_io_errors_not_as_an_overflow(flaky):
    flaky.world.write_config(CONFIG + "    watchdog:\n      interval: 1s\n", faults=True)
    assert flaky.pre().rc == 0
    flaky.fail("xl-cow")
    # The VMs write: dm-snapshot must first copy the old blocks to the failing device.
    flaky.guest.sh("dd if=/dev/urandom of=/srv/flaky/disk.img bs=1M count=2 conv=notrunc,fsync 2>&1")
    snapshot = flaky.lvs()["vmsnap"]
    assert snapshot["lv_attr"][4] == "I", snapshot
    assert snapshot["data_percent"] == "100.00", snapshot  # as after an overflow: lvs cannot tell
    flaky.world.wait_for("flaky/vmsnap became invalid because of I/O errors", path="/var/log/xenlvm.log")
    status = flaky.world.xenlvm("status")
    assert "INVALID (I/O errors on its copy-on-write device)" in status.stdout, status
    assert "OVERFLOWED" not in status.stdout

    post = flaky.post()  # sesam runs post at once, while the device still fails
    assert post.rc == 1, post
    assert "invalid (because of I/O errors on its copy-on-write device)" in post.stderr
    assert "watchdog: flaky/vmsnap became invalid because of I/O errors" in post.stderr
    assert "lvremove" in post.stderr and "overflow" not in post.output
    assert "vmsnap" in flaky.lvs() and "/mnt/flaky" not in flaky.world.mounts()  # LVM refused

    flaky.heal("xl-cow")
    post = flaky.post()
    assert post.rc == 1, post
    assert "became invalid during the backup because of I/O errors" in post.stderr
    assert "cannot be trusted" in post.stderr and "has been removed" in post.stderr
    assert "overflow" not in post.output
    flaky.assert_nothing_left()


def test_read_errors_under_the_mounted_snapshot_then_recovery_let_post_succeed(flaky):
    assert flaky.pre().rc == 0
    flaky.guest.sh("sync; echo 3 > /proc/sys/vm/drop_caches")
    flaky.fail("xl-origin")  # what the VMs did not change since pre, the snapshot reads from here
    read = flaky.guest.run(["cat", "/mnt/flaky/disk.img"])
    assert read.rc != 0 and "Input/output error" in read.stderr, read
    flaky.heal("xl-origin")
    assert flaky.guest.sh("wc -c < /mnt/flaky/disk.img").stdout.strip() == "4194304"
    assert flaky.lvs()["vmsnap"]["lv_attr"][4] == "a"  # reads do not invalidate it

    post = flaky.post()
    assert post.rc == 0, post
    assert "unmounted and removed" in post.stdout
    flaky.assert_nothing_left()


def test_origin_device_failing_at_post_time_fails_post_clearly_and_a_later_post_cleans_up(flaky):
    assert flaky.pre().rc == 0
    flaky.guest.sh("sync")
    flaky.fail("xl-origin")
    post = flaky.post()
    assert post.rc == 1, post
    assert "lvremove --force --select lv_tags=xenlvm_job_flaky flaky/vmsnap failed" in post.stderr
    assert "missing PV" in post.stderr  # LVM's reason, passed on, and xenlvm's advice
    assert "volume group flaky is missing a physical volume" in post.stderr
    assert "once the disk is back, run 'xenlvm post' again" in post.stderr
    assert "vmsnap" in flaky.lvs()
    flaky.assert_origin_untouched()

    flaky.heal("xl-origin")
    post = flaky.post()
    assert post.rc == 0, post
    flaky.assert_nothing_left()
    assert flaky.guest.sh("wc -c < /srv/flaky/disk.img").stdout.strip() == "4194304"


def test_io_errors_during_pre_fail_it_and_the_next_post_cleans_up_once_the_device_is_back(flaky):
    # The origin's PV failing before pre: lvs shows the VG partial, and pre refuses before any
    # change (LVM would refuse lvcreate anyway), as check and status tell. A job on a healthy VG
    # is not held back by it.
    flaky.world.write_config(CONFIG + DEFAULT_CONFIG.split("jobs:\n", 1)[1], faults=True)
    flaky.guest.sh("sync")
    flaky.fail("xl-origin")
    assert flaky.world.pre().rc == 0 and flaky.world.post().rc == 0
    flaky.world.reset_faults()  # an empty calls log for the flaky job's pre
    pre = flaky.pre()
    assert pre.rc == 1, pre
    assert "volume group flaky is missing a physical volume" in pre.stderr
    assert "'vgreduce --removemissing'" in pre.stderr and "Nothing was changed" in pre.stderr
    calls = flaky.world.fault_calls()
    assert [c for c in calls if " start lvs " in c] and not [c for c in calls if " lvcreate " in c], calls
    check = flaky.world.xenlvm("check")
    assert check.rc == 1 and "FAIL [flaky] volume group: volume group flaky is missing" in check.stdout, check
    assert "problem: volume group flaky is missing a physical volume" in flaky.world.xenlvm("status").stdout
    flaky.heal("xl-origin")
    flaky.assert_nothing_left()

    # Failing between lvcreate and mount: mount fails, and undoing lvcreate fails too (LVM
    # refuses to change the VG), so pre says to run post, which cleans up once the device is back.
    pid = flaky.world.start_held("sbc_pre", "mount", *ARGS, log="/run/pre.out")
    flaky.fail("xl-origin")
    flaky.world.release("mount")
    assert flaky.guest.wait(pid) == 1
    output = flaky.guest.read("/run/pre.out")
    assert "could not mount the snapshot /dev/mapper/flaky-vmsnap" in output, output
    assert "Undoing pre ALSO failed" in output and "Run 'xenlvm post'" in output
    assert "vmsnap" in flaky.lvs()

    flaky.heal("xl-origin")
    flaky.world.reset_faults()
    post = flaky.post()
    assert post.rc == 0, post
    flaky.assert_nothing_left()
