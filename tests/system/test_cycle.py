"""The mission path: pre snapshots and mounts, the backup reads the snapshot, post cleans up."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.system


def test_full_cycle_backs_up_data_as_of_snapshot_time(world):
    pre = world.pre()
    assert pre.rc == 0, pre
    assert "vmbackup" in world.lvs()
    options = world.mounts()["/mnt/vmbackup"].split(",")
    assert {"ro", "nodev", "nosuid", "noexec"} <= set(options)

    # The VM keeps writing after the snapshot: the backup must still see the old data.
    before = world.guest.run(["sha256sum", "/srv/xenvm/vm1/disk.img"], check=True).stdout.split()[0]
    world.guest.sh("head -c 1048576 /dev/urandom | dd of=/srv/xenvm/vm1/disk.img conv=notrunc 2>/dev/null; "
                   "echo new > /srv/xenvm/vm1/written-after-snapshot; sync")
    seen = world.guest.run(["sha256sum", "/mnt/vmbackup/vm1/disk.img"], check=True).stdout.split()[0]
    assert seen == before
    assert world.guest.run(["test", "-e", "/mnt/vmbackup/vm1/written-after-snapshot"]).rc == 1
    assert world.guest.run(["touch", "/mnt/vmbackup/x"]).rc != 0  # read-only

    post = world.post()
    assert post.rc == 0, post
    assert "vmbackup" not in world.lvs()
    assert "/mnt/vmbackup" not in world.mounts()
