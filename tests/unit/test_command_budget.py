"""How many LVM and xl commands pre and post run, counted from the fake dom0's call log
(tests/unit/fakehost.py): pre looks at the host once (one lvs for all the job's VGs, one xl
list and one xl list -l), creates one snapshot per target, and reads lvs again only after a
sweep removed something; post runs one lvs and one lvremove for the whole job."""

from __future__ import annotations

import copy

import pytest

from tests.unit.phases.test_hooks import VMDISKS, XEN, context
from xenlvm.phases import post, pre
from xenlvm.vmdisks import expose as vmdisks
from xenlvm.vmdisks import teardown as vmdisk_teardown

LVM = ("lvs", "vgs", "lvcreate", "lvremove", "lvextend", "lvchange")


def lvm_calls(host) -> dict[str, int]:
    """How often each LVM command ran, e.g. {"lvs": 1, "lvcreate": 2}."""
    counts: dict[str, int] = {}
    for argv in host.runner.argvs:
        if argv[0] in LVM:
            counts[argv[0]] = counts.get(argv[0], 0) + 1
    return counts


def xl_calls(host) -> list[str]:
    return [" ".join(a[1:]) for a in host.runner.argvs if a[0] == "xl"]


def second_vg(host) -> None:
    """A VG 'data' with an origin 'vms', like system/xenvm."""
    origin = next(r for r in host.lvs_rows if r["lv_name"] == "xenvm")
    host.lvs_rows.append({**copy.deepcopy(origin), "vg_name": "data", "lv_name": "vms",
                          "lv_kernel_minor": "40", "lv_dm_path": "/dev/mapper/data-vms"})


def two_vg_job(host, extra: str = "") -> str:
    """A job with system/xenvm and data/vms (second_vg), each snapshot at <mountpoint>/<lv>."""
    second_vg(host)
    return (f"  xenvm:\n    mountpoint: {host.root / 'mnt' / 'vmbackup'}\n    tasks: [xen_vm1]\n"
            f"    unmount_timeout: 1s\n{extra}    volumes:\n"
            "      - volume: system/xenvm\n        snapshot: vmbackup\n        size: 64M\n"
            "      - volume: data/vms\n        snapshot: vmsbackup\n        size: 64M\n")


def pre_then_post(host, jobs: str) -> tuple[dict[str, int], dict[str, int]]:
    ctx, config = context(host, jobs)
    pre.run_pre(ctx, list(config.jobs.values()))
    after_pre = lvm_calls(host)
    host.runner.calls.clear()
    post.run_post(ctx, list(config.jobs.values()))
    return after_pre, lvm_calls(host)


def test_a_volume_job_runs_one_lvs_and_one_lvcreate_in_pre_and_one_lvs_and_one_lvremove_in_post(host):
    in_pre, in_post = pre_then_post(host, host.job_text(extra=XEN))
    assert in_pre == {"lvs": 1, "lvcreate": 1}
    assert in_post == {"lvs": 1, "lvremove": 1}
    assert host.ours == []


def test_a_job_with_volumes_in_two_vgs_reads_both_with_one_lvs_and_removes_all_with_one_lvremove(host):
    in_pre, in_post = pre_then_post(host, two_vg_job(host, XEN))
    assert in_pre == {"lvs": 1, "lvcreate": 2}
    assert in_post == {"lvs": 1, "lvremove": 1}
    [lvremove] = host.runner.argvs_of("lvremove")
    assert lvremove[-2:] == ["data/vmsbackup", "system/vmbackup"]  # in reverse, one call
    assert host.ours == []


def vm_disk_job(host, monkeypatch, volumes: str = "") -> str:
    """A job with Xen and the VM disks of vm1: its xvda is system/vm1-disk (no filesystem on it)."""
    monkeypatch.setattr(vmdisk_teardown, "loops_of", lambda devices, *rest: {})
    monkeypatch.setattr(vmdisks, "probe", lambda runner, device, *rest: {})  # no filesystem found
    disk = next(r for r in host.lvs_rows if r["lv_name"] == "xenvm")
    host.lvs_rows.append({**copy.deepcopy(disk), "lv_name": "vm1-disk", "lv_kernel_minor": "41",
                          "lv_dm_path": "/dev/mapper/system-vm1--disk"})
    return (f"  disks:\n    mountpoint: {host.root / 'mnt' / 'vmbackup'}\n    tasks: [xen_vm1]\n"
            f"    unmount_timeout: 1s\n{volumes}{XEN}{VMDISKS.replace('auto', '[vm1]')}")


def test_a_job_with_vm_disks_and_xen_asks_xl_once_and_lvm_once_per_step(host, monkeypatch):
    ctx, config = context(host, vm_disk_job(host, monkeypatch))
    pre.run_pre(ctx, list(config.jobs.values()))
    assert lvm_calls(host) == {"lvs": 1, "lvcreate": 1}
    # the inventory's two; then the window, and xl list once more to see the domain run again
    assert xl_calls(host) == ["list", "list -l", "pause vm1", "unpause vm1", "list"]
    host.runner.calls.clear()
    post.run_post(ctx, list(config.jobs.values()))
    assert lvm_calls(host) == {"lvs": 1, "lvremove": 1}
    assert host.ours == []


def test_pre_reads_lvs_once_more_only_after_its_sweep_removed_a_leftover(host):
    host.add_snapshot()  # left by a crashed run, mounted
    ctx, config = context(host)
    pre.run_pre(ctx, list(config.jobs.values()))
    assert lvm_calls(host) == {"lvs": 2, "lvremove": 1, "lvcreate": 1}
    assert [a[0] for a in host.runner.argvs if a[0] in ("lvs", "lvremove", "lvcreate")] == [
        "lvs", "lvremove", "lvs", "lvcreate"]


@pytest.mark.parametrize("failing", ["system/vmbackup", "data/vmsbackup"])
def test_post_tells_which_snapshot_one_lvremove_could_not_remove_and_removes_the_others(host, failing):
    ctx, config = context(host, two_vg_job(host))
    pre.run_pre(ctx, list(config.jobs.values()))
    host.unremovable[failing] = "  Failed to update pool\n"
    with pytest.raises(Exception, match=failing) as caught:
        post.run_post(ctx, list(config.jobs.values()))
    assert "Failed to update pool" in str(caught.value)
    assert host.ours == [failing.split("/")[1]]


def test_a_vm_disk_snapshot_lvremove_cannot_remove_is_told_and_its_tree_kept(host, monkeypatch):
    volume = "    volumes:\n      - volume: system/xenvm\n        snapshot: vmbackup\n        size: 64M\n"
    ctx, config = context(host, vm_disk_job(host, monkeypatch, volume))
    pre.run_pre(ctx, list(config.jobs.values()))
    tree = str(host.root / "mnt" / "vmbackup")
    host.unremovable["system/vm1-disk.xenlvm"] = "  Failed to update pool\n"
    with pytest.raises(Exception, match="system/vm1-disk.xenlvm") as caught:
        post.run_post(ctx, list(config.jobs.values()))
    assert "system/vmbackup" not in str(caught.value)
    assert host.ours == ["vm1-disk.xenlvm"]  # the volume's snapshot is removed all the same
    assert tree in host.mountpoints  # the tree stays while a disk snapshot is left: post again
    host.unremovable.clear()
    post.run_post(ctx, list(config.jobs.values()))
    assert host.ours == [] and tree not in host.mountpoints
