"""Jobs with several volumes: each snapshot mounted at <mountpoint>/<name>, all created in one
Xen pause window, and a failure in any of them rolls all of them back."""

from __future__ import annotations

import json

import pytest

from sandbox.world import XEN_SETTINGS, XL
from tests.system.conftest import assert_nothing_left

pytestmark = pytest.mark.system

MULTI_CONFIG = XEN_SETTINGS + """\
  xenvm:
    mountpoint: /mnt/vmbackup
    tasks: [xen_vm1]
    unmount_timeout: 4s
    volumes:
      - volume: system/xenvm
        snapshot: vmbackup
        size: 64M
      - volume: system/data
        snapshot: databackup
        size: 32M
        name: data
    xen:
      domains: [vm1, vm2]
"""


@pytest.fixture
def multi(world):
    """A second volume system/data (ext4, mounted at /srv/data) holding vm2's disk."""
    world.guest.sh(
        "lvcreate -q -y -L 64M -n data system >/dev/null && mkfs.ext4 -q /dev/system/data && "
        "mkdir -p /srv/data && mount /dev/system/data /srv/data && mkdir /srv/data/vm2 && "
        "echo data-at-snapshot > /srv/data/vm2/disk.img\n"
        f"{XL} fake-create vm1 --disk /srv/xenvm/vm1/disk.img,xvda >/dev/null\n"
        f"{XL} fake-create vm2 --disk /srv/data/vm2/disk.img,xvda >/dev/null\n")
    world.write_config(MULTI_CONFIG)
    return world


def _pauses(world) -> list[str]:
    return [" ".join(line.split()[5:7]) for line in world.guest.read("/run/fake-xl/calls.log").splitlines()
            if line.split()[2] == "start" and line.split()[5] in ("pause", "unpause")]


def _lvm_started(world) -> dict[str, int]:
    """How often xenlvm started each LVM tool since the call log was last emptied."""
    started = [line.split()[2] for line in world.fault_calls() if line.split()[1:2] == ["start"]]
    return {tool: started.count(tool) for tool in ("lvs", "vgs", "lvcreate", "lvremove")}


def test_every_volume_is_mounted_below_the_mountpoint_within_one_pause_window(multi):
    multi.reset_faults()
    pre = multi.pre()
    assert pre.rc == 0, pre
    mounts = multi.mounts()
    assert "/mnt/vmbackup/xenvm" in mounts and "/mnt/vmbackup/data" in mounts
    assert "ro" in mounts["/mnt/vmbackup/data"].split(",")
    assert multi.guest.read("/mnt/vmbackup/data/vm2/disk.img") == "data-at-snapshot\n"
    calls = _pauses(multi)  # one window: every pause starts before any unpause (each group at once)
    assert sorted(calls[:2]) == ["pause vm1", "pause vm2"]
    assert sorted(calls[2:]) == ["unpause vm1", "unpause vm2"]
    calls = multi.fault_calls()
    creates = [line for line in calls if " start lvcreate " in line]
    assert len(creates) == 2
    assert _lvm_started(multi) == {"lvs": 1, "vgs": 0, "lvcreate": 2, "lvremove": 0}  # one lvs for the job
    status = json.loads(multi.xenlvm("status", "--json").stdout)[0]
    assert [v["mounted_at"] for v in status["volumes"]] == [["/mnt/vmbackup/xenvm"], ["/mnt/vmbackup/data"]]

    multi.reset_faults()
    post = multi.post()
    assert post.rc == 0, post
    assert _lvm_started(multi) == {"lvs": 1, "vgs": 0, "lvcreate": 0, "lvremove": 1}  # one each for the job
    assert_nothing_left(multi)
    assert "databackup" not in multi.lvs()


def test_failure_on_the_second_volume_rolls_back_the_first(multi):
    multi.guest.run(["touch", "/mnt/vmbackup/data"], check=True)  # not a directory
    pre = multi.pre()
    assert pre.rc == 1, pre
    assert "/mnt/vmbackup/data is not a directory" in pre.stderr
    assert_nothing_left(multi)
    assert "databackup" not in multi.lvs()


@pytest.mark.parametrize("tool", ["lvcreate", "mount"])
def test_second_volume_failing_removes_the_first_and_resumes_domains(multi, tool):
    multi.inject(tool, "fail-call 2 5")  # the first call runs for real, the second fails
    pre = multi.pre()
    assert pre.rc == 1, pre
    assert "injected failure" in pre.stderr
    assert_nothing_left(multi)
    assert "databackup" not in multi.lvs()
    assert "/mnt/vmbackup/xenvm" not in multi.mounts()
    assert multi.guest.run(["test", "-e", "/mnt/vmbackup/xenvm"]).rc == 1  # the directory pre made, too
    assert "--p---" not in multi.guest.run([XL, "list"], check=True).stdout


def test_space_for_all_snapshots_of_a_vg_is_checked_together(multi):
    free = int(multi.guest.run(["vgs", "--noheadings", "--units", "m", "--nosuffix", "-o", "vg_free",
                                "system"], check=True).stdout.strip().split(".")[0])
    # Leave room for the first snapshot (64M) but not for both (64M + 32M).
    multi.guest.run(["lvcreate", "-q", "-y", "-L", f"{free - 80}M", "-n", "filler", "system"], check=True)
    pre = multi.pre()
    assert pre.rc == 1, pre
    assert "for the job's other snapshots" in pre.stderr
    assert_nothing_left(multi)
