"""xenlvm.core.ownership: the tags xenlvm puts on its snapshots, the proof before it touches
one, and the guarded removal, on LVs as real lvs showed them (tests/unit/data)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tests.unit.fakes import Answer, FakeRunner, lvs_with
from tests.unit.increments.test_bases import NO_LVS, RUN1, RUN2, SHA, base, chained_job
from xenlvm.config.model import Job, SnapshotSpec, Volume, parse_size
from xenlvm.core import ownership
from xenlvm.errors import SafetyRefusal
from xenlvm.host import lvm
from xenlvm.host.lvm import LogicalVolume, Lvm, VolumeGroup, parse_lvs_json

SPEC = SnapshotSpec(Volume("system", "xenvm"), "vmbackup", "/mnt/vmbackup", parse_size("1G"))
JOB = Job(name="xenvm", mountpoint="/mnt/vmbackup", volumes=(SPEC,), tasks=("xen_vm1",))
RUN = "xenlvm_run_20261129T213500_829"  # the run that created the recorded snapshot


def lvs(changes: dict[str, dict[str, str]] | None = None) -> dict[str, LogicalVolume]:
    """system/xenvm and its snapshot system/vmbackup, as pre left them (mounted), changed."""
    return {lv.name: lv for lv, _ in parse_lvs_json(lvs_with("lvs_snapshot_mounted.json", changes))}


OURS = lvs()["vmbackup"]


def test_a_volumes_snapshot_is_tagged_with_owner_job_and_run_and_a_vm_disks_also_as_such():
    run = ownership.run_tag(0.0, 829)
    assert run.startswith("xenlvm_run_") and run.endswith("_829")
    assert ownership.tags_for(JOB, run) == ["xenlvm", "xenlvm_job_xenvm", run]
    assert ownership.tags_for(JOB, run, vm_disk=True) == ["xenlvm", "xenlvm_job_xenvm", run, "xenlvm_vmdisk"]


def test_the_recorded_snapshot_is_the_jobs_and_its_runs():
    assert ownership.owns(JOB, SPEC, OURS)
    assert ownership.run_of(OURS) == RUN
    assert ownership.created_by(JOB, SPEC, OURS, RUN)
    assert not ownership.created_by(JOB, SPEC, OURS, "xenlvm_run_20261130T213500_900")  # an earlier run's


@pytest.mark.parametrize("tags", ["", "xenlvm", "xenlvm_job_xenvm,xenlvm_run_20261129T213500_829",
                                  "xenlvm,xenlvm_job_other"])
def test_a_foreign_lv_under_the_snapshots_name_is_refused_and_nothing_runs(tags):
    foreign = lvs({"vmbackup": {"lv_tags": tags}})["vmbackup"]
    runner = FakeRunner()
    assert not ownership.owns(JOB, SPEC, foreign)
    with pytest.raises(SafetyRefusal, match="does not carry xenlvm's tags for job 'xenvm'"):
        ownership.prove(JOB, SPEC, foreign)
    with pytest.raises(SafetyRefusal):
        ownership.remove_one(Lvm(runner), JOB, SPEC, foreign)
    failures = ownership.remove(Lvm(runner), JOB, [(SPEC, foreign), (SPEC, foreign)])
    assert list(failures) == ["system/vmbackup"]
    assert runner.calls == []


def test_an_origin_with_a_snapshot_nobody_told_xenlvm_about_is_never_removed():
    # The admin snapshotted xenlvm's snapshot: lvremove --force would take theirs along.
    theirs = lvs({"vmbackup": {"lv_attr": "owi-aos---"}})["vmbackup"]
    assert theirs.is_origin and ownership.owns(JOB, SPEC, theirs)
    runner = FakeRunner()
    with pytest.raises(SafetyRefusal, match="somebody made a snapshot of it"):
        ownership.prove(JOB, SPEC, theirs)
    with pytest.raises(SafetyRefusal, match="somebody made a snapshot of it"):
        ownership.remove_one(Lvm(runner), JOB, SPEC, theirs)
    assert runner.calls == []


def test_a_snapshot_that_lost_its_tag_before_lvremove_is_left_and_told(tmp_path, monkeypatch):
    # Proven, then its tags go: lvremove's --select matches nothing and exits 0; the device
    # is still there, so it was not removed.
    monkeypatch.setattr(lvm, "SYS_DEV_BLOCK", str(tmp_path))
    (tmp_path / "254:3" / "dm").mkdir(parents=True)
    (tmp_path / "254:3" / "dm" / "name").write_text("system-vmbackup\n")
    runner = FakeRunner().on("lvremove", "")
    with pytest.raises(SafetyRefusal, match="lost xenlvm's tags just before removal"):
        ownership.remove_one(Lvm(runner), JOB, SPEC, OURS)
    assert runner.argvs == [["lvremove", "--force", "--select", "lv_tags=xenlvm_job_xenvm",
                             "system/vmbackup"]]

    second_spec = dataclasses.replace(SPEC, snapshot="vmbackup2")
    second = dataclasses.replace(OURS, name="vmbackup2", major=254, minor=4)  # its device is gone
    both = [(SPEC, OURS), (second_spec, second)]
    failures = ownership.remove(Lvm(FakeRunner().on("lvremove", "")), JOB, both)
    assert list(failures) == ["system/vmbackup"] and "lost xenlvm's tags" in str(failures["system/vmbackup"])


def test_the_monitors_act_only_on_the_snapshot_they_first_saw():
    same = ownership.SameSnapshots("xenvm")
    assert same.still_ours(OURS)
    assert same.still_ours(OURS)
    recreated = lvs({"vmbackup": {"lv_time": "2026-11-29 23:10:00 +0000"}})["vmbackup"]
    assert not same.still_ours(recreated)  # removed and made again under its name: not acted on
    assert not ownership.SameSnapshots("other").still_ours(OURS)  # another job's monitor


def test_vm_disk_snapshots_are_found_by_tags_and_xenlvms_name_and_proven_by_its_spec():
    tags = "xenlvm,xenlvm_vmdisk,xenlvm_job_xenvm," + RUN
    disk = lvs({"vmbackup": {"lv_name": "xenvm.xenlvm", "lv_tags": tags}})["xenvm.xenlvm"]
    vgs = {"system": VolumeGroup("system", 0, 0, 0, {disk.name: disk})}
    assert ownership.vm_disk_snapshot_name("xenvm") == "xenvm.xenlvm"
    assert ownership.vm_disk_snapshots(JOB, vgs) == [disk]
    spec = ownership.vm_disk_spec(JOB, disk)
    assert (spec.origin, spec.snapshot) == (Volume("system", "xenvm"), "xenvm.xenlvm")
    ownership.prove(JOB, spec, disk)
    assert ownership.vm_disk_snapshots(dataclasses.replace(JOB, name="other"), vgs) == []



# ---------------------------------------------------------------------------------------------
# the chains' bases: which LV is one, and their guarded removal


def test_a_base_is_proven_by_its_tags_its_origin_and_its_runs_name():
    job = chained_job().jobs["disks"]
    assert ownership.is_base(base(RUN1), job)
    assert not ownership.is_base(base(RUN1, job="other"), job)
    assert not ownership.is_base(base(RUN1, name="vm5-disk.keep"), job)  # renamed by an admin: kept
    assert not ownership.is_base(base(RUN1, name=f"vm5-disk.xenlvm-base.{RUN2}"), job)  # name of another run
    assert not ownership.is_base(base(RUN1, origin=""), job)  # its origin is gone
    two_runs = base(RUN1)
    assert not ownership.is_base(dataclasses.replace(two_runs, tags=two_runs.tags | {f"xenlvm_run_{RUN2}"}),
                                 job)
    assert ownership.full_sha256_of(base(RUN1)) == SHA and ownership.full_sha256_of(base(RUN1, 1)) is None
    assert ownership.run_id_of(base(RUN1)) == RUN1 and ownership.run_of(base(RUN1)) == f"xenlvm_run_{RUN1}"
    assert ownership.depth_of(base(RUN2, 3)) == 3


@pytest.mark.parametrize("dropped", ["xenlvm", "xenlvm_job_disks", "xenlvm_base"])
def test_an_lv_named_as_a_base_without_the_jobs_tags_is_no_base_and_is_not_removed(dropped):
    job = chained_job().jobs["disks"]
    named = base(RUN1)
    named = dataclasses.replace(named, tags=named.tags - {dropped})
    assert named.name == ownership.base_name("vm5-disk", RUN1) and not ownership.is_base(named, job)
    runner = FakeRunner().on("lvremove", Answer())
    with pytest.raises(SafetyRefusal, match="is not a base xenlvm kept for job 'disks'"):
        ownership.remove_bases(Lvm(runner), job, [named])
    assert runner.argvs == []


def test_removing_bases_proves_each_and_lets_lvm_check_the_tags_again():
    job = chained_job().jobs["disks"]
    runner = FakeRunner().on("lvremove", Answer()).on("lvs", Answer(stdout=NO_LVS))
    ownership.remove_bases(Lvm(runner), job, [base(RUN1), base(RUN2, 1)])
    guard = "lv_tags=xenlvm_base && lv_tags=xenlvm_job_disks"
    assert runner.argvs_of("lvremove") == [["lvremove", "--force", "--select", guard,
                                            f"system/vm5-disk.xenlvm-base.{RUN1}",
                                            f"system/vm5-disk.xenlvm-base.{RUN2}"]]
    with pytest.raises(SafetyRefusal, match="is not a base xenlvm kept for job 'disks'"):
        ownership.remove_bases(Lvm(runner), job, [base(RUN1), base(RUN2, job="other")])
    assert len(runner.argvs_of("lvremove")) == 1  # nothing removed


def test_a_base_that_lost_its_tags_just_before_removal_is_refused_by_name():
    job = chained_job().jobs["disks"]
    still = {"report": [{"lv": [{"lv_name": f"vm5-disk.xenlvm-base.{RUN1}", "vg_name": "system"}]}]}
    runner = FakeRunner().on("lvremove", Answer()).on("lvs", Answer(stdout=json.dumps(still)))
    with pytest.raises(SafetyRefusal, match=f"system/vm5-disk.xenlvm-base.{RUN1} lost xenlvm's tags just "
                       "before removal; it was left untouched"):
        ownership.remove_bases(Lvm(runner), job, [base(RUN1)])
    assert len(runner.argvs_of("lvremove")) == 1  # lvremove's guard matched nothing; lvs still shows it
