"""`xenlvm check` on a fake dom0 (tests/unit/fakehost.py): one finding per check, a failure
for each problem with what to do, never a crash on an odd answer."""

from __future__ import annotations

import os
import sys

import pytest

from tests.unit.fakes import Answer, Timeout, lvs_with, recorded
from xenlvm.admin import check, install
from xenlvm.vmdisks import chains, layout

XEN = "    xen:\n      domains: auto\n"
VMDISKS = "    vmdisks:\n      domains: auto\n      size: 16M\n"


def findings(host, jobs: str = "") -> list[tuple[str, str, str]]:
    config = host.config(jobs)
    out = []
    for job in config.jobs.values():
        out += [(f.level, f.check, f.message) for f in check.check_job(config, host.runner, job)]
    return out


def failed(found) -> list[str]:
    return [f"{name}: {message}" for level, name, message in found if level == "fail"]


def test_a_ready_host_passes_every_check(host):
    found = findings(host, host.job_text(extra=XEN))
    assert failed(found) == []
    assert ("ok", "xen", "domains to pause: vm1") in found
    assert {name for _, name, _ in found} >= {"mountpoint", "space", "xen"}


def test_a_leftover_snapshot_mounted_at_the_mountpoint_is_expected_not_a_problem(host):
    host.add_snapshot(lv_attr="swi-aos---")
    assert not [f for f in failed(findings(host)) if f.startswith("mountpoint")]


@pytest.mark.parametrize(("answer", "said"), [
    ("", "cannot understand the output of lvs"),
    ("[]", "cannot understand the output of lvs"),
    (Answer(stderr="  Volume group system is locked", returncode=5), "is locked"),
    (Timeout(), "did not finish"),
])
def test_odd_or_failing_lvs_answers_are_failures_not_crashes(host, answer, said):
    host.runner.on("lvs", answer)
    [problem] = failed(findings(host))
    assert problem.startswith("origin: ") and said in problem


def test_a_missing_volume_group_is_named(host):
    assert failed(findings(host, host.job_text().replace("system/xenvm", "novg/xenvm"))) == [
        "origin: volume group 'novg' not found: check 'volume:' in the configuration against the output "
        "of 'vgs'"]


def test_an_inactive_origin_and_a_vg_missing_a_pv_are_failures(host):
    inactive = {"lv_attr": "-wi-------", "lv_active": "", "vg_attr": "wz-pn-"}
    host.runner.on("lvs", lvs_with("lvs_no_snapshot.json", {"xenvm": inactive}))
    problems = "\n".join(failed(findings(host)))
    assert "is not active" in problems and "lvchange -ay" in problems
    assert "missing" in problems and "vgreduce --removemissing" in problems


def test_an_inactive_leftover_snapshot_is_reported(host):
    host.runner.on("lvs", recorded("lvs_snapshot_inactive.json"))
    assert any(level != "ok" for level, _, _ in findings(host))


def test_xen_failures_and_a_corrupt_pause_record_are_reported(host):
    host.runner.on("xl list -l", recorded("xl_list_l_sxp_xen-4.17.txt"))
    (host.root / "run" / "xenvm.paused").write_text("{")
    problems = failed(findings(host, host.job_text(extra=XEN)))
    assert any("set output_format to json in /etc/xen/xl.conf" in p for p in problems)
    assert any(p.startswith("xen: the record of the domains job 'xenvm' paused") for p in problems)


def test_domains_left_paused_by_a_killed_run_are_a_failure_with_the_fix(host):
    (host.root / "run" / "xenvm.paused").write_text('["vm1"]')
    assert "xen: a killed run may have left vm1 paused: run 'xenlvm cleanup'" in failed(
        findings(host, host.job_text(extra=XEN)))


def test_vm_disks_that_are_lvs_are_listed(host):
    host.lvs_rows.append({**host.lvs_rows[0], "lv_name": "vm1-disk", "lv_kernel_minor": "7",
                          "lv_dm_path": "/dev/mapper/system-vm1--disk"})
    jobs = (f"  disks:\n    mountpoint: {host.root / 'mnt' / 'vmbackup'}\n    tasks: [xen_vm1]\n{VMDISKS}")
    found = findings(host, jobs)
    assert ("ok", "vmdisks", "VM disks to snapshot: vm1/xvda (system/vm1-disk)") in found


def test_vm_disks_when_xl_fails_is_a_failure(host):
    host.runner.on("xl list", Timeout())
    jobs = (f"  disks:\n    mountpoint: {host.root / 'mnt' / 'vmbackup'}\n    tasks: [xen_vm1]\n{VMDISKS}")
    assert [p for p in failed(findings(host, jobs)) if p.startswith("vmdisks: ") and "did not finish" in p]


def test_the_room_in_a_vg_is_counted_over_every_kinds_snapshots_as_pre_counts_it(host):
    # system has 1724 MiB free: the volume's snapshot (1700M) or the VM disk's (64M) fits alone,
    # not both; pre refuses the job, so check must say so.
    host.lvs_rows.append({**host.lvs_rows[0], "lv_name": "vm1-disk", "lv_kernel_minor": "7",
                          "lv_dm_path": "/dev/mapper/system-vm1--disk"})
    mountpoint = host.root / "mnt" / "vmbackup"
    volume = "    volumes:\n      - volume: system/xenvm\n        snapshot: vmbackup\n        size: 1700M\n"
    disks = "    vmdisks:\n      domains: auto\n      size: 64M\n"
    job = f"  both:\n    mountpoint: {mountpoint}\n    tasks: [xen_vm1]\n"
    assert failed(findings(host, job + volume)) == []
    assert failed(findings(host, job + disks)) == []
    [problem] = failed(findings(host, job + volume + disks))
    assert problem.startswith("space: ") and "system/vm1-disk" in problem and "after 1.7 GiB" in problem


def test_a_thin_pools_need_is_counted_over_every_kinds_snapshots_as_pre_counts_it(host):
    # tpool (1 GiB, half full) holds the volume and the VM disk (300 MiB each): the pool has room
    # for either one's snapshot filling up, not both (thin_pool.extend: false, so the VG's free
    # space does not count). pre warns of it, so check must too.
    row = {**host.lvs_rows[0], "lv_size": str(300 << 20), "lv_attr": "Vwi-aotz--", "pool_lv": "tpool"}
    host.lvs_rows[:] = [
        {**row, "lv_name": "tpool", "lv_attr": "twi-aotz--", "pool_lv": "", "lv_size": str(1 << 30),
         "data_percent": "50.00", "metadata_percent": "10.00", "lv_metadata_size": str(4 << 20),
         "lv_kernel_minor": "2", "lv_dm_path": "/dev/mapper/system-tpool"},
        row,
        {**row, "lv_name": "vm1-disk", "lv_attr": "Vwi-a-tz--", "lv_kernel_minor": "7",
         "lv_dm_path": "/dev/mapper/system-vm1--disk"}]
    mountpoint = host.root / "mnt" / "vmbackup"
    job = (f"  both:\n    mountpoint: {mountpoint}\n    tasks: [xen_vm1]\n"
           "    thin_pool:\n      extend: false\n")
    volume = "    volumes:\n      - volume: system/xenvm\n        snapshot: vmbackup\n"
    disks = "    vmdisks:\n      domains: auto\n      size: 16M\n"

    def pool(jobs: str) -> list[str]:
        return [level for level, name, _ in findings(host, jobs) if name == "thin pool"]

    assert pool(job + volume) == ["ok"]
    assert pool(job + disks) == ["ok"]
    assert pool(job + volume + disks) == ["warn"]


# ---------------------------------------------------------------------------------------------
# The host: configuration, tools, hooks


def test_host_checks_report_the_config_tools_and_hooks(host, tmp_path):
    config = host.config(settings=f"  path: {tmp_path / 'bin'}\n")
    hooks_dir = tmp_path / "sesam"
    hooks_dir.mkdir()
    found = [(f.level, f.check, f.message) for f in check.check_host(config, str(hooks_dir))]
    assert ("fail", "hooks", f"{hooks_dir / 'sbc_pre'} is missing: run 'xenlvm install-hooks'") in found
    assert [m for level, name, m in found if name == "tools"][0].startswith(
        f"not found on {tmp_path / 'bin'}: lvs, lvcreate")
    if os.geteuid() == 0:
        assert ("ok", "config", f"{config.path} is valid, owned by root, writable only by root") in found


def test_check_must_find_every_tool_pre_and_post_run_and_the_layout_tools_for_vm_disks(host, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("lvs", "lvcreate", "lvremove", "lvextend", "vgs", "mount", "umount", "blkid", "losetup",
                 "partx"):
        (bin_dir / tool).write_text("#!/bin/sh\n")
        (bin_dir / tool).chmod(0o755)
    settings = f"  path: {bin_dir}\n"
    tools = [f for f in check.check_host(host.config(settings=settings), str(tmp_path)) if f.check == "tools"]
    assert [f.level for f in tools] == ["ok"] and "lvextend" in tools[0].message
    (bin_dir / "lvextend").unlink()  # the watchdog's
    tools = [f for f in check.check_host(host.config(settings=settings), str(tmp_path)) if f.check == "tools"]
    assert tools[0].message.startswith(f"not found on {bin_dir}: lvextend;")
    (bin_dir / "lvextend").write_text("#!/bin/sh\n")
    (bin_dir / "lvextend").chmod(0o755)
    disks = host.config(f"  disks:\n    mountpoint: {host.root / 'mnt' / 'vmbackup'}\n{VMDISKS}",
                        settings=settings)
    found = check.check_host(disks, str(tmp_path))
    tools = [f for f in found if f.check == "tools"]
    assert [f.level for f in tools] == ["fail"]
    assert tools[0].message.startswith(f"not found on {bin_dir}: xl;")
    warned = [f for f in found if f.check == "layout tools"]  # the backup runs without them: a warning
    assert [f.level for f in warned] == ["warn"]
    assert warned[0].message.startswith(f"not found on {bin_dir}: sfdisk, dumpe2fs, xfs_info;")
    for tool in layout.TOOLS:
        (bin_dir / tool).write_text("#!/bin/sh\n")
        (bin_dir / tool).chmod(0o755)
    found = [f for f in check.check_host(disks, str(tmp_path)) if f.check == "layout tools"]
    assert [f.level for f in found] == ["ok"]

def test_a_job_with_incremental_thin_warns_without_the_tools_its_chains_need(host, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    settings = f"  path: {bin_dir}\n"
    disks = f"  disks:\n    mountpoint: {host.root / 'mnt' / 'vmbackup'}\n{VMDISKS}"
    chained = disks + (f"      expose: image-copy\n      image_dir: {tmp_path / 'images'}\n"
                       "      incremental: thin\n")

    def incremental(jobs: str) -> list[tuple[str, str]]:
        found = check.check_host(host.config(jobs, settings=settings), str(tmp_path))
        return [(f.level, f.message) for f in found if f.check == "incremental tools"]

    assert incremental(disks) == []  # no chains: nothing to say
    # pre still backs up every disk (its full image at every run): a warning, not a failure
    [(level, message)] = incremental(chained)
    assert level == "warn"
    assert message.startswith(f"not found on {bin_dir}: thin_delta, dmsetup, lvchange, lvrename;")
    for tool in chains.TOOLS:
        (bin_dir / tool).write_text("#!/bin/sh\n")
        (bin_dir / tool).chmod(0o755)
    assert incremental(chained) == [("ok", "found thin_delta, dmsetup, lvchange, lvrename")]


def test_hooks_that_are_not_xenlvms_or_bound_elsewhere_are_reported(tmp_path):
    (tmp_path / "sbc_pre").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "sbc_post").write_text(install.hook_text("post", "/opt/other/python3", None))
    found = [(f.level, f.message) for f in check.check_hooks(str(tmp_path))]
    assert found[0][0] == "fail" and "is not xenlvm's" in found[0][1]
    assert found[1][0] == "warn" and "not this installation" in found[1][1]
    install.install_hooks(str(tmp_path), sys.executable)
    assert [f.level for f in check.check_hooks(str(tmp_path))] == ["ok", "ok"]
