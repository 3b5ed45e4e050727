"""Preflight decisions, taken on volume groups parsed from lvs output recorded on real LVM and
on real directories under tmp_path."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from xenlvm.config.model import Job, Size, SnapshotSpec, Volume, parse_size
from xenlvm.core.preflight import (
    Finding,
    check_job_volumes,
    check_mountpoint,
    check_snapshot_name,
    check_space,
    check_volumes,
    failures,
    snapshot_bytes,
)
from xenlvm.host.lvm import VolumeGroup, parse_volume_group
from xenlvm.host.mount import MountEntry
from xenlvm.sizes import human_size

DATA = Path(__file__).resolve().parents[1] / "data"

SPEC = SnapshotSpec(origin=Volume("system", "xenvm"), snapshot="vmbackup", mountpoint="/mnt/vmbackup",
                    size=parse_size("1G"))
JOB = Job(name="xenvm", mountpoint="/mnt/vmbackup", volumes=(SPEC,), tasks=("xen_vm1",))


def spec_with(**changes: object) -> SnapshotSpec:
    return dataclasses.replace(SPEC, **changes)


def job_of(spec: SnapshotSpec) -> Job:
    """JOB with spec as its only volume."""
    return dataclasses.replace(JOB, volumes=(spec,))


def recorded_vg(name: str) -> VolumeGroup:
    return parse_volume_group((DATA / f"lvs_{name}.json").read_text(encoding="utf-8"), "system")


def without(vg: VolumeGroup, *lv_names: str) -> VolumeGroup:
    return dataclasses.replace(vg, lvs={n: lv for n, lv in vg.lvs.items() if n not in lv_names})


def with_lv(vg: VolumeGroup, name: str, **changes: object) -> VolumeGroup:
    return dataclasses.replace(vg, lvs={**vg.lvs, name: dataclasses.replace(vg.lvs[name], **changes)})


@pytest.fixture
def vg_before_pre() -> VolumeGroup:
    """The recorded VG as it was before pre created the snapshot: the origin, 1.6 GiB free."""
    return without(recorded_vg("snapshot_mounted"), "vmbackup")


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings}


# ---------------------------------------------------------------------------------------------
# check_volumes


def test_ready_volume_group_passes_every_check(vg_before_pre):
    findings = by_check(check_volumes(JOB, SPEC, vg_before_pre))
    assert {check: f.level for check, f in findings.items()} == {
        "origin": "ok", "snapshot name": "ok", "space": "ok"}
    assert failures(list(findings.values())) == []


def test_missing_origin_fails_naming_the_volume_and_the_job(vg_before_pre):
    spec = spec_with(origin=Volume("system", "xenvms"))
    [finding] = check_volumes(job_of(spec), spec, vg_before_pre)
    assert finding.level == "fail"
    assert "system/xenvms" in finding.message
    assert "'xenvm'" in finding.message


def test_inactive_origin_fails_and_says_how_to_activate_it(vg_before_pre):
    vg = with_lv(vg_before_pre, "xenvm", active=False)
    finding = by_check(check_volumes(JOB, SPEC, vg))["origin"]
    assert finding.level == "fail"
    assert "lvchange -ay system/xenvm" in finding.message


def test_origin_that_is_itself_a_snapshot_fails():
    vg = recorded_vg("snapshot_mounted")
    spec = spec_with(origin=Volume("system", "vmbackup"), snapshot="vmbackup2")
    finding = by_check(check_volumes(job_of(spec), spec, vg))["origin"]
    assert finding.level == "fail"
    assert "snapshot of xenvm" in finding.message


def test_leftover_snapshot_of_a_crashed_run_is_a_warning_not_a_failure():
    findings = by_check(check_volumes(JOB, SPEC, recorded_vg("snapshot_mounted")))
    assert findings["snapshot name"].level == "warn"
    assert "leftover" in findings["snapshot name"].message


# ---------------------------------------------------------------------------------------------
# check_snapshot_name


def test_free_snapshot_name_is_ok():
    assert check_snapshot_name(JOB, SPEC, None).level == "ok"


def test_own_leftover_snapshot_is_a_warning():
    leftover = recorded_vg("snapshot_overflowed").lvs["vmbackup"]
    finding = check_snapshot_name(JOB, SPEC, leftover)
    assert finding.level == "warn"
    assert "system/vmbackup" in finding.message


def test_foreign_volume_named_like_the_snapshot_fails():
    foreign = dataclasses.replace(recorded_vg("snapshot_mounted").lvs["vmbackup"], tags=frozenset())
    finding = check_snapshot_name(JOB, SPEC, foreign)
    assert finding.level == "fail"
    assert "system/vmbackup" in finding.message
    assert "did not create" in finding.message


def test_another_jobs_snapshot_of_the_same_name_fails():
    snapshot = recorded_vg("snapshot_mounted").lvs["vmbackup"]
    assert check_snapshot_name(dataclasses.replace(JOB, name="other"), SPEC, snapshot).level == "fail"


def test_tagged_snapshot_of_the_same_name_in_another_volume_group_is_not_our_leftover():
    # The job's tags, origin and name, but in VG data while the spec's volume is in system.
    elsewhere = dataclasses.replace(recorded_vg("snapshot_mounted").lvs["vmbackup"], vg="data")
    finding = check_snapshot_name(JOB, SPEC, elsewhere)
    assert finding.level == "fail"
    assert "data/vmbackup" in finding.message


def test_leftover_of_the_jobs_second_volume_is_a_warning():
    second = SnapshotSpec(Volume("system", "data"), "databackup", "/mnt/vmbackup/data", parse_size("1G"))
    job = dataclasses.replace(JOB, volumes=(SPEC, second))
    leftover = dataclasses.replace(recorded_vg("snapshot_mounted").lvs["vmbackup"], name="databackup",
                                   origin="data")
    finding = check_snapshot_name(job, second, leftover)
    assert finding.level == "warn"
    assert "system/databackup" in finding.message
    assert check_snapshot_name(job, SPEC, leftover).level == "fail"  # not the first volume's snapshot


def test_origin_named_like_the_snapshot_fails():
    origin = recorded_vg("snapshot_mounted").lvs["xenvm"]
    spec = spec_with(snapshot="xenvm")
    assert check_snapshot_name(job_of(spec), spec, origin).level == "fail"


# ---------------------------------------------------------------------------------------------
# check_space


def sized(text: str) -> SnapshotSpec:
    return spec_with(size=parse_size(text))


def test_snapshot_that_fits_in_the_free_space_is_ok(vg_before_pre):
    finding = check_space(JOB, SPEC, vg_before_pre, vg_before_pre.lvs["xenvm"])
    assert finding.level == "ok"
    assert "1.0 GiB" in finding.message and "1.6 GiB" in finding.message


def test_volume_group_too_small_for_the_size_fails_naming_vg_and_free_space(vg_before_pre):
    finding = check_space(JOB, sized("2G"), vg_before_pre, vg_before_pre.lvs["xenvm"])
    assert finding.level == "fail"
    assert "volume group system" in finding.message
    assert "1.6 GiB free" in finding.message
    assert "2.0 GiB (2G)" in finding.message
    assert "vgextend" in finding.message


def test_percent_of_origin_is_measured_on_the_origin(vg_before_pre):
    finding = check_space(JOB, sized("20%ORIGIN"), vg_before_pre, vg_before_pre.lvs["xenvm"])
    assert finding.level == "ok"
    assert "64.0 MiB" in finding.message  # 20% of the recorded 320 MiB origin


def test_all_free_space_fits_exactly(vg_before_pre):
    assert check_space(JOB, sized("100%FREE"), vg_before_pre, vg_before_pre.lvs["xenvm"]).level == "ok"


def test_percent_of_the_whole_vg_does_not_fit_in_its_free_part(vg_before_pre):
    assert check_space(JOB, sized("100%VG"), vg_before_pre, vg_before_pre.lvs["xenvm"]).level == "fail"


def test_size_is_rounded_up_to_whole_extents_before_comparing(vg_before_pre):
    free, origin = vg_before_pre.free, vg_before_pre.lvs["xenvm"]
    just_fits = spec_with(size=Size(text="x", bytes=free - 1))
    one_byte_over = spec_with(size=Size(text="x", bytes=free + 1))
    assert check_space(JOB, just_fits, vg_before_pre, origin).level == "ok"
    assert check_space(JOB, one_byte_over, vg_before_pre, origin).level == "fail"


def test_classic_origin_without_size_fails_asking_for_a_size(vg_before_pre):
    spec = spec_with(size=None)
    finding = check_space(job_of(spec), spec, vg_before_pre, vg_before_pre.lvs["xenvm"])
    assert finding.level == "fail"
    assert "set 'size:'" in finding.message
    assert "'xenvm'" in finding.message


def test_thin_origin_without_size_needs_no_space_of_its_own():
    vg = without(recorded_vg("thin_pool_with_thick_snapshot"), "vmbackup")
    vg = with_lv(vg, "xenvm", attr="Vwi-aotz--")  # as lvs shows it once the classic snapshot is gone
    spec = spec_with(size=None)
    finding = check_space(job_of(spec), spec, vg, vg.lvs["xenvm"])
    assert finding.level == "ok"
    assert "pool" in finding.message


def test_thin_origin_with_a_classic_snapshot_needs_no_size():
    vg = recorded_vg("thin_pool_with_thick_snapshot")
    spec = spec_with(snapshot="thinbackup", size=None)
    assert check_space(job_of(spec), spec, vg, vg.lvs["xenvm"]).level == "ok"


def test_thick_snapshot_of_a_thin_origin_is_measured_against_vg_free_space():
    vg = recorded_vg("thin_pool_with_thick_snapshot")
    spec = spec_with(snapshot="second", size=parse_size("1.5G"))
    finding = check_space(job_of(spec), spec, vg, vg.lvs["xenvm"])
    assert finding.level == "fail"  # 1.5 GiB > the recorded 1.24 GiB free
    assert "1.2 GiB free" in finding.message


# ---------------------------------------------------------------------------------------------
# snapshot_bytes and the space the job's other snapshots reserve


def test_snapshot_bytes_of_an_absolute_size_is_that_size(vg_before_pre):
    assert snapshot_bytes(SPEC, vg_before_pre, vg_before_pre.lvs["xenvm"]) == 1 << 30


def test_snapshot_bytes_of_a_percent_is_measured_like_check_space(vg_before_pre):
    origin = vg_before_pre.lvs["xenvm"]
    assert snapshot_bytes(sized("20%ORIGIN"), vg_before_pre, origin) == 64 << 20  # of 320 MiB
    assert snapshot_bytes(sized("100%FREE"), vg_before_pre, origin) == vg_before_pre.free


def test_snapshot_bytes_are_rounded_up_to_whole_extents(vg_before_pre):
    origin, extent = vg_before_pre.lvs["xenvm"], vg_before_pre.extent_size
    assert extent == 4 << 20
    def of(size_bytes: int) -> int:
        return snapshot_bytes(spec_with(size=Size(text="x", bytes=size_bytes)), vg_before_pre, origin)

    assert of(1) == extent
    assert of(extent + 1) == 2 * extent
    assert of(2 * extent) == 2 * extent


def test_snapshot_bytes_without_an_extent_size_are_the_bytes_asked_for(vg_before_pre):
    vg = dataclasses.replace(vg_before_pre, extent_size=0)
    assert snapshot_bytes(spec_with(size=Size(text="x", bytes=12345)), vg, vg.lvs["xenvm"]) == 12345


def test_thin_snapshot_takes_no_bytes_from_the_volume_group():
    vg = recorded_vg("thin_pool_with_thick_snapshot")
    assert snapshot_bytes(spec_with(size=None), vg, vg.lvs["xenvm"]) == 0


def test_space_reserved_by_the_jobs_other_snapshots_is_not_free(vg_before_pre):
    origin = vg_before_pre.lvs["xenvm"]
    assert check_space(JOB, SPEC, vg_before_pre, origin).level == "ok"  # fits on its own
    finding = check_space(JOB, SPEC, vg_before_pre, origin, reserved=1 << 30)
    assert finding.level == "fail"
    assert "1.0 GiB (1G)" in finding.message
    assert "volume group system" in finding.message
    # 1.6 GiB free less the 1 GiB reserved: 636 MiB left for this snapshot.
    assert "has only 636.0 MiB free after 1.0 GiB for the job's other snapshots" in finding.message
    assert "vgextend" in finding.message


def test_failure_without_reserved_space_does_not_mention_other_snapshots(vg_before_pre):
    finding = check_space(JOB, sized("2G"), vg_before_pre, vg_before_pre.lvs["xenvm"])
    assert finding.level == "fail"
    assert "other snapshots" not in finding.message


def test_snapshot_that_fits_beside_the_reserved_space_reports_what_is_left(vg_before_pre):
    finding = check_space(JOB, sized("512M"), vg_before_pre, vg_before_pre.lvs["xenvm"], reserved=1 << 30)
    assert finding.level == "ok"
    assert "512.0 MiB for the snapshot" in finding.message
    assert "636.0 MiB free in system" in finding.message


def test_reserved_space_is_compared_to_the_byte(vg_before_pre):
    origin = vg_before_pre.lvs["xenvm"]
    wanted = snapshot_bytes(SPEC, vg_before_pre, origin)
    exactly_enough = vg_before_pre.free - wanted
    assert check_space(JOB, SPEC, vg_before_pre, origin, reserved=exactly_enough).level == "ok"
    assert check_space(JOB, SPEC, vg_before_pre, origin, reserved=exactly_enough + 1).level == "fail"


def test_two_snapshots_that_fit_one_at_a_time_do_not_fit_together(vg_before_pre):
    # As pre does for a job with several volumes in one VG: each check reserves what the
    # snapshots before it take.
    first = SPEC
    second = SnapshotSpec(Volume("system", "xenvm"), "vmbackup2", "/mnt/vmbackup/second", parse_size("1G"))
    origin = vg_before_pre.lvs["xenvm"]
    assert check_space(JOB, second, vg_before_pre, origin).level == "ok"  # alone, it fits
    assert check_space(JOB, first, vg_before_pre, origin).level == "ok"
    reserved = snapshot_bytes(first, vg_before_pre, origin)
    assert check_space(JOB, second, vg_before_pre, origin, reserved).level == "fail"


def test_thin_snapshot_needs_no_free_space_whatever_is_reserved():
    vg = without(recorded_vg("thin_pool_with_thick_snapshot"), "vmbackup")
    vg = with_lv(vg, "xenvm", attr="Vwi-aotz--")
    spec = spec_with(size=None)
    assert check_space(job_of(spec), spec, vg, vg.lvs["xenvm"], reserved=vg.free + (1 << 30)).level == "ok"


def test_check_volumes_counts_the_reserved_space(vg_before_pre):
    findings = by_check(check_volumes(JOB, SPEC, vg_before_pre, reserved=1 << 30))
    assert {check: f.level for check, f in findings.items()} == {
        "origin": "ok", "snapshot name": "ok", "space": "fail"}
    assert "after 1.0 GiB for the job's other snapshots" in findings["space"].message


def test_check_volumes_reserves_nothing_by_default(vg_before_pre):
    # 1.6 GiB free: a 1G snapshot fits unless something is reserved.
    assert by_check(check_volumes(JOB, SPEC, vg_before_pre))["space"].level == "ok"
    assert by_check(check_volumes(JOB, SPEC, vg_before_pre, 0))["space"].level == "ok"


def test_check_volumes_of_a_second_volume_names_that_volume(vg_before_pre):
    vg = dataclasses.replace(vg_before_pre, lvs={
        **vg_before_pre.lvs, "data": dataclasses.replace(vg_before_pre.lvs["xenvm"], name="data")})
    second = SnapshotSpec(Volume("system", "data"), "databackup", "/mnt/vmbackup/data", parse_size("1G"))
    job = dataclasses.replace(JOB, volumes=(SPEC, second))
    findings = by_check(check_volumes(job, second, vg, reserved=snapshot_bytes(SPEC, vg, vg.lvs["xenvm"])))
    assert findings["origin"].level == "ok" and "system/data" in findings["origin"].message
    assert findings["snapshot name"].level == "ok"
    assert "system/databackup" in findings["snapshot name"].message
    assert findings["space"].level == "fail"


@pytest.mark.parametrize(("size", "text"), [
    (512, "512 B"), (1023, "1023 B"), (67108864, "64.0 MiB"), (1740636160, "1.6 GiB"),
    (3 << 40, "3.0 TiB"), (5 << 50, "5120.0 TiB"),
])
def test_human_size(size, text):
    assert human_size(size) == text


# ---------------------------------------------------------------------------------------------
# check_mountpoint


@pytest.fixture
def real_tmp(tmp_path) -> Path:
    return Path(os.path.realpath(tmp_path))


def test_empty_real_directory_is_a_good_mountpoint(real_tmp):
    (real_tmp / "mnt").mkdir()
    assert check_mountpoint(str(real_tmp / "mnt"), []).level == "ok"


def test_missing_mountpoint_fails_and_says_how_to_create_it(real_tmp):
    finding = check_mountpoint(str(real_tmp / "mnt"), [])
    assert finding.level == "fail"
    assert f"mkdir -p {real_tmp / 'mnt'}" in finding.message


def test_symlink_as_mountpoint_fails(real_tmp):
    (real_tmp / "elsewhere").mkdir()
    (real_tmp / "mnt").symlink_to(real_tmp / "elsewhere")
    finding = check_mountpoint(str(real_tmp / "mnt"), [])
    assert finding.level == "fail"
    assert "symbolic link" in finding.message


def test_file_as_mountpoint_fails(real_tmp):
    (real_tmp / "mnt").write_text("not a directory")
    finding = check_mountpoint(str(real_tmp / "mnt"), [])
    assert finding.level == "fail"
    assert "not a directory" in finding.message


def test_mountpoint_below_a_symlinked_directory_fails(real_tmp):
    (real_tmp / "real" / "vmbackup").mkdir(parents=True)
    (real_tmp / "link").symlink_to(real_tmp / "real")
    finding = check_mountpoint(str(real_tmp / "link" / "vmbackup"), [])
    assert finding.level == "fail"
    assert "below a symbolic link" in finding.message
    assert str(real_tmp / "real" / "vmbackup") in finding.message


def mount_at(path: Path, major: int = 0, minor: int = 45, source: str = "tmpfs", fstype: str = "tmpfs",
             ) -> MountEntry:
    return MountEntry(major, minor, str(path), ("rw", "relatime"), fstype, source)


def test_mountpoint_with_something_mounted_on_it_fails_naming_it(real_tmp):
    (real_tmp / "mnt").mkdir()
    mounts = [mount_at(real_tmp / "mnt", 8, 17, "/dev/sdb1", "ext4")]
    finding = check_mountpoint(str(real_tmp / "mnt"), mounts)
    assert finding.level == "fail"
    assert "/dev/sdb1" in finding.message


def test_mountpoint_with_the_jobs_own_snapshot_mounted_is_ok(real_tmp):
    (real_tmp / "mnt").mkdir()
    snapshot = recorded_vg("snapshot_mounted").lvs["vmbackup"]  # 254:3
    mounts = [mount_at(real_tmp / "mnt", 254, 3, "/dev/mapper/system-vmbackup", "xfs")]
    assert check_mountpoint(str(real_tmp / "mnt"), mounts, snapshot).level == "ok"


def test_mountpoint_with_another_device_on_top_of_the_snapshot_fails(real_tmp):
    (real_tmp / "mnt").mkdir()
    snapshot = recorded_vg("snapshot_mounted").lvs["vmbackup"]
    mounts = [mount_at(real_tmp / "mnt", 254, 3, "/dev/mapper/system-vmbackup", "xfs"),
              mount_at(real_tmp / "mnt")]  # something mounted over the snapshot
    assert check_mountpoint(str(real_tmp / "mnt"), mounts, snapshot).level == "fail"


def test_mounts_elsewhere_do_not_matter(real_tmp):
    (real_tmp / "mnt" / "sub").mkdir(parents=True)
    mounts = [mount_at(real_tmp), mount_at(real_tmp / "mnt" / "sub"), mount_at(real_tmp / "mnt2")]
    assert check_mountpoint(str(real_tmp / "mnt"), mounts).level == "ok"


def test_failures_keeps_only_the_failed_findings():
    findings = [Finding("ok", "a", ""), Finding("warn", "b", ""), Finding("fail", "c", "x")]
    assert failures(findings) == [findings[2]]


def test_a_volume_group_missing_a_pv_fails_first_and_warns_against_vgreduce(vg_before_pre):
    partial = dataclasses.replace(vg_before_pre, partial=True)
    findings = check_job_volumes(JOB, {"system": partial})
    assert (findings[0].level, findings[0].check) == ("fail", "volume group")
    assert findings[0].message.startswith("volume group system is missing a physical volume")
    assert "Do not run 'vgreduce --removemissing' for a disk that can come back" in findings[0].message
    assert "volume group" not in by_check(check_job_volumes(JOB, {"system": vg_before_pre}))
