"""The thin pool guard over lvs JSON recorded on real dm-thin (a 64 MiB pool at 95% with the
job's thin snapshot): it grows the pool, or drops only the job's own snapshot; post fails the
backup after a drop, and the metrics carry the pool's peak fill and the guard's actions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.fakes import Answer, FakeRunner, lvs_with
from xenlvm.config.load import parse_config
from xenlvm.core import state
from xenlvm.host.lvm import Lvm
from xenlvm.phases import post
from xenlvm.thinpool import drop as pool_guard_drop
from xenlvm.thinpool import process as pool_guard_process
from xenlvm.thinpool.guard import FAILED, Guard, Guarded, Summary, files, read_spec, read_summary, write_spec

MiB = 1 << 20
RECORDED = "lvs_thin_pool_95_percent.json"
CONFIG = """\
jobs:
  tvm:
    volume: system/tvm
    snapshot: tvmbackup
    mountpoint: /mnt/vmbackup
"""
GUARDED = Guarded("system", "tpool", "tvmbackup", "tvm", "/mnt/vmbackup")


def guard(tmp_path: Path, *reports: str, extra: str = "") -> tuple[Guard, FakeRunner]:
    job = parse_config(CONFIG + extra, "/etc/xenlvm/config.yaml").jobs["tvm"]
    runner = FakeRunner().on("lvs", *(Answer(r) for r in reports)).on("lvextend", Answer()).on(
        "lvremove", Answer())
    paths = files(str(tmp_path), "tvm")
    return Guard(job, [GUARDED], job.thin_pool, Lvm(runner), paths, str(tmp_path), clock=Clock()), runner


class Clock:
    """The guard's clock: each reading is a second later; a look reads it twice, so looks in a
    row are 2 s (the interval) apart, and each lvs takes 1 s."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def at(percent: str, **pool: str) -> str:
    return lvs_with(RECORDED, {"tpool": {"data_percent": percent, **pool}})


def test_the_guard_only_watches_below_protect_at_and_keeps_the_peak(tmp_path):
    watcher, runner = guard(tmp_path, at("80.00"), at("82.00"), at("84.50"), at("83.00"))
    for _ in range(4):
        watcher.look()
    assert runner.changes == []
    summary = read_summary(files(str(tmp_path), "tvm").summary)
    assert summary.peak == {"system/tpool": {"data": 84.5, "metadata": 11.33}} and summary.actions == []


def test_the_guard_grows_a_pool_at_protect_at_from_the_vgs_free_space(tmp_path):
    watcher, runner = guard(tmp_path, at("95.31"), at("76.00"))
    watcher.look()
    watcher.look()
    [lvextend] = runner.changes
    assert lvextend == ["lvextend", "--size", f"{80 * MiB}b", "system/tpool"]
    [action] = read_summary(files(str(tmp_path), "tvm").summary).actions
    assert (action["kind"], action["from"], action["to"], action["fill"]) == \
        ("extend-data", 64 * MiB, 80 * MiB, 95.31)
    assert watcher.guarded == [GUARDED]  # still guarded


def test_without_room_the_guard_drops_only_the_jobs_snapshot_and_stops_guarding_the_pool(tmp_path):
    watcher, runner = guard(tmp_path, at("95.31", vg_free="0"), lvs_with(RECORDED, drop=["tvmbackup"]))
    watcher.look()
    assert runner.changes == [["lvremove", "--force", "--select", "lv_tags=xenlvm_job_tvm",
                                 "system/tvmbackup"]]
    summary = read_summary(files(str(tmp_path), "tvm").summary)
    assert summary.dropped == ["system/tvmbackup"]
    [drop] = summary.actions
    assert drop["kind"] == "drop" and drop["snapshots"] == ["system/tvmbackup"]
    assert drop["reason"].startswith("its data is 95.3% full and growing its data from 64.0 MiB")
    assert watcher.guarded == []


def test_a_fast_writer_is_met_before_protect_at_with_a_larger_step(tmp_path):
    """70% then 84% a look apart: 14 points per look, so 90% would pass before the next."""
    watcher, runner = guard(tmp_path, at("70.00"), at("84.00"))
    watcher.look()
    assert runner.changes == []
    watcher.look()
    [lvextend] = runner.changes
    assert lvextend[:2] == ["lvextend", "--size"] and int(lvextend[2][:-1]) > 80 * MiB  # past 20% more
    [action] = read_summary(files(str(tmp_path), "tvm").summary).actions
    assert action["fill"] == 84.0


def test_with_extend_false_the_guard_drops_at_once(tmp_path):
    watcher, runner = guard(tmp_path, at("91.00"), extra="    thin_pool:\n      extend: false\n")
    watcher.look()
    assert [argv[0] for argv in runner.changes] == ["lvremove"]


def test_a_snapshot_that_is_no_longer_the_jobs_is_never_dropped(tmp_path):
    foreign = lvs_with(RECORDED, {"tpool": {"vg_free": "0"}, "tvmbackup": {"lv_tags": "someone_else"}})
    watcher, runner = guard(tmp_path, foreign)
    watcher.look()
    assert runner.changes == []
    assert watcher.guarded == []  # not ours: no longer guarded, nothing touched


def test_a_snapshot_recreated_under_the_same_name_is_not_the_guarded_one(tmp_path):
    later = lvs_with(RECORDED, {"tpool": {"vg_free": "0"},
                                "tvmbackup": {"lv_time": "2026-12-06 05:00:00 +0000"}})
    watcher, runner = guard(tmp_path, at("50.00"), later)
    watcher.look()
    watcher.look()
    assert runner.changes == []


def test_the_spec_is_read_back_as_written(tmp_path):
    job = parse_config(CONFIG, "/etc/xenlvm/config.yaml").jobs["tvm"]
    path = str(tmp_path / "tvm.poolguard.spec")
    write_spec(path, "tvm", [GUARDED], job.thin_pool, 3600.0)
    assert read_spec(path) == ([GUARDED], job.thin_pool, 3600.0)


def test_post_fails_the_backup_after_a_drop_and_says_why(tmp_path):
    watcher, _ = guard(tmp_path, at("95.31", vg_free="0"))
    watcher.look()
    summary = read_summary(files(str(tmp_path), "tvm").summary)
    error = pool_guard_process.judge(watcher.job, summary)
    assert error is not None and error.exit_code == 1
    assert str(error).startswith("the backup of job 'tvm' is incomplete: thin pool system/tpool reached "
                                 "95.3% and could not grow (its data is 95.3% full and growing its data from")
    assert "so system/tvmbackup were removed" in str(error)
    assert pool_guard_process.judge(watcher.job, None) is None


def test_the_metrics_carry_the_pools_peak_and_the_guards_actions(tmp_path):
    watcher, _ = guard(tmp_path, at("95.31"))
    watcher.look()
    watcher.finished = 1.0
    watcher.write_summary()
    run = state.RunReport()
    pool_guard_process.report(read_summary(files(str(tmp_path), "tvm").summary), run)
    assert (run.thin_pool_peak_percent, run.pool_guard_actions) == (95.31, 1)
    config = parse_config(f"settings:\n  state_dir: {tmp_path}\n" + CONFIG, "/etc/xenlvm/config.yaml")
    state.record_run(config, ["tvm"], state.RunRecord("post", True, 0, 1.0, 1.0), {"tvm": run})
    metrics = state.render_metrics(config)
    assert 'xenlvm_thin_pool_peak_fill_ratio{job="tvm"} 0.9531' in metrics
    assert 'xenlvm_pool_guard_actions{job="tvm"} 1' in metrics


@pytest.mark.parametrize("finished, said", [(None, True), (2.0, False)])
def test_post_says_when_the_guard_was_not_running_at_the_end(tmp_path, caplog, finished, said):
    watcher, _ = guard(tmp_path, at("50.00"))
    watcher.look()
    watcher.finished = finished
    watcher.write_summary()
    pool_guard_process.report(read_summary(files(str(tmp_path), "tvm").summary), state.RunReport())
    assert ("the pool guard was no longer running at post" in caplog.text) is said


def test_the_readers_of_a_device_are_the_processes_with_files_on_it_never_the_guard_itself(tmp_path):
    """What the guard would stop: here the device of tmp_path's filesystem, held by a child
    whose working directory is there; the guard itself (also there) and init are never named."""
    import os
    import subprocess

    from xenlvm.thinpool.drop import readers_of

    device = os.stat(tmp_path).st_dev
    child = subprocess.Popen(["sleep", "30"], cwd=tmp_path)
    here = os.getcwd()
    try:
        os.chdir(tmp_path)
        readers = readers_of(os.major(device), os.minor(device))
        assert child.pid in readers and os.getpid() not in readers and 1 not in readers
        assert readers_of(4095, 4095) == []  # a device nobody holds
    finally:
        os.chdir(here)
        child.kill()
        child.wait()


def test_a_drop_is_on_record_before_its_first_change_so_a_guard_killed_mid_drop_still_fails_post(
        tmp_path, monkeypatch):
    """post stops the guard after 10 s: a drop that takes longer must already be in the summary."""
    seen = []

    def killed_mid_drop(*args):
        seen.append(read_summary(files(str(tmp_path), "tvm").summary))
        raise SystemExit(-9)

    monkeypatch.setattr(pool_guard_drop, "drop", killed_mid_drop)
    watcher, _ = guard(tmp_path, at("95.31", vg_free="0"))
    with pytest.raises(SystemExit):
        watcher.look()
    [summary] = seen
    assert [(a["kind"], a["snapshots"]) for a in summary.actions] == [("dropping", ["system/tvmbackup"])]
    error = pool_guard_process.judge(watcher.job, summary)
    assert error is not None and error.exit_code == 1
    assert "the pool guard began to remove system/tvmbackup and was stopped before it finished" in str(error)


def test_a_finished_drop_replaces_its_dropping_record(tmp_path):
    watcher, _ = guard(tmp_path, at("95.31", vg_free="0"))
    watcher.look()
    assert [a["kind"] for a in read_summary(files(str(tmp_path), "tvm").summary).actions] == ["drop"]


def test_post_fails_when_a_guarded_snapshot_vanished_that_the_guard_did_not_record(tmp_path):
    watcher, _ = guard(tmp_path, at("50.00"))
    watcher.look()
    summary = read_summary(files(str(tmp_path), "tvm").summary)
    error = pool_guard_process.judge(watcher.job, summary, ["system/tvmbackup"])
    assert error is not None and error.exit_code == 1
    assert "the thin snapshot(s) system/tvmbackup vanished during the backup, and the pool guard did not " \
           "record removing them" in str(error)
    assert pool_guard_process.judge(watcher.job, None, ["system/tvmbackup"]) is not None
    assert pool_guard_process.judge(watcher.job, summary, []) is None


def test_a_snapshot_the_guard_dropped_is_accounted_for(tmp_path):
    watcher, _ = guard(tmp_path, at("95.31", vg_free="0"))
    watcher.look()
    error = pool_guard_process.judge(watcher.job, read_summary(files(str(tmp_path), "tvm").summary),
                                     ["system/tvmbackup"])
    assert error is not None and "did not record" not in str(error)


def test_post_reads_which_snapshots_the_guard_guarded_from_its_spec(tmp_path):
    config = parse_config(CONFIG + f"settings:\n  lock_dir: {tmp_path}\n", "/etc/xenlvm/config.yaml")
    assert pool_guard_process.guarded_by(config, "tvm") == []
    write_spec(files(str(tmp_path), "tvm").spec, "tvm", [GUARDED], config.jobs["tvm"].thin_pool, 60.0)
    assert pool_guard_process.guarded_by(config, "tvm") == [GUARDED]


def test_post_finds_the_guarded_snapshots_that_vanished_from_lvs_as_it_read_them_before_teardown():
    def found(report: str) -> dict:
        return dict(Lvm(FakeRunner().on("lvs", Answer(report))).volume_groups(["system"]))

    assert post._vanished(found(at("50.00")), [GUARDED]) == []
    assert post._vanished(found(lvs_with(RECORDED, drop=["tvmbackup"])), [GUARDED]) == ["system/tvmbackup"]
    unknown = {"system": None}
    assert post._vanished(unknown, [GUARDED]) == []  # a VG lvs could not read: not judged


VG_UUID, LV_UUID = "lfHD4V-0dLC-ssad-4Xkc-i4l8-P5qk-fX3ue1", "4OtN3d-Hqyf-9ATB-sTqQ-0zuB-PkcL-Bp2Eix"
DM_UUID = "LVM-lfHD4V0dLCssad4Xkci4l8P5qkfX3ue14OtN3dHqyf9ATBsTqQ0zuBPkcLBp2Eix"


def snapshot_row(**changes: str):
    vgs = Lvm(FakeRunner().on("lvs", Answer(lvs_with(RECORDED, {"tvmbackup": changes})))).volume_groups(
        ["system"])
    return vgs["system"].get("tvmbackup")


def test_lvs_gives_each_lv_its_device_mapper_uuid_as_the_kernel_shows_it():
    from xenlvm.host.lvm import LV_FIELDS

    assert {"lv_uuid", "vg_uuid"} <= set(LV_FIELDS)
    assert snapshot_row(vg_uuid=VG_UUID, lv_uuid=LV_UUID).dm_uuid == DM_UUID
    assert snapshot_row().dm_uuid == ""  # an lvs without them: unknown


@pytest.mark.parametrize(("uuid", "stopped"), [
    (DM_UUID + "\n", True),  # still the snapshot's device
    ("LVM-lfHD4V0dLCssad4Xkci4l8P5qkfX3ue1" + "x" * 32 + "\n", False),  # the number now names another LV
    (None, False),  # no device there any more
])
def test_readers_are_stopped_only_while_the_device_number_is_still_the_snapshots(tmp_path, monkeypatch, uuid,
                                                                                 stopped):
    lv = snapshot_row(vg_uuid=VG_UUID, lv_uuid=LV_UUID)
    if uuid is not None:
        (tmp_path / f"dev/block/{lv.major}:{lv.minor}/dm").mkdir(parents=True)
        (tmp_path / f"dev/block/{lv.major}:{lv.minor}/dm/uuid").write_text(uuid)
    monkeypatch.setattr(pool_guard_drop, "SYS", str(tmp_path))
    monkeypatch.setattr(pool_guard_drop, "readers_of", lambda major, minor: [4242])
    terminated = []
    monkeypatch.setattr(pool_guard_drop, "terminate_proven",
                        lambda pid, is_ours, what, timeout: terminated.append((pid, is_ours(pid))))
    monkeypatch.setattr(pool_guard_drop.vmdisk_teardown, "loops_of", lambda devices: {})
    assert pool_guard_drop._stop_readers(Lvm(FakeRunner()), lv) is stopped
    assert terminated == ([(4242, True)] if stopped else [])


def test_no_reader_is_stopped_when_lvs_gave_no_uuid_to_prove_the_device(tmp_path, monkeypatch):
    lv = snapshot_row()
    monkeypatch.setattr(pool_guard_drop, "readers_of", lambda major, minor: [4242])
    monkeypatch.setattr(pool_guard_drop, "terminate_proven", lambda *args: pytest.fail("killed unproven"))
    assert pool_guard_drop._stop_readers(Lvm(FakeRunner()), lv) is False


def test_the_writers_rate_is_measured_in_bytes_across_a_growth_of_the_pool(tmp_path):
    """95.31% of 64 MiB, grown to 80 MiB; 2 s later 85% of 80 MiB: 7 MiB more in 2 s (8.75 points
    of the grown pool per look), though the percentage fell: 90% would pass before the next look."""
    watcher, runner = guard(tmp_path, at("95.31"), at("85.00", lv_size=str(80 * MiB)))
    watcher.look()
    assert len(runner.changes) == 1
    watcher.look()
    assert len(runner.changes) == 2
    assert [a["fill"] for a in read_summary(files(str(tmp_path), "tvm").summary).actions] == [95.31, 85.0]


@pytest.mark.parametrize(("summary", "lost"), [
    (None, True),  # killed before its first summary
    (Summary(), True),  # killed: its last summary has no end
    (Summary(problems=[FAILED + ": OSError: boom"], finished=5.0), True),  # crashed
    (Summary(problems=["the pool guard: its summary x is unreadable (y)"], finished=0.0), True),
    (Summary(finished=5.0), False),  # ended by itself
])
def test_a_guard_not_running_at_post_was_lost_unless_it_ended_by_itself(summary, lost):
    assert pool_guard_process.was_lost(summary) is lost


def test_a_lost_guard_fails_the_backup_and_is_a_metric(tmp_path):
    job = parse_config(CONFIG, "/etc/xenlvm/config.yaml").jobs["tvm"]
    error = pool_guard_process.judge(job, Summary(), lost=True)
    assert error is not None and error.exit_code == 1 and "crashed or was killed" in str(error)
    assert pool_guard_process.judge(job, Summary(finished=5.0)) is None
    config = parse_config(f"settings:\n  state_dir: {tmp_path}\n" + CONFIG, "/etc/xenlvm/config.yaml")
    state.record_run(config, ["tvm"], state.RunRecord("post", False, 1, 1.0, 1.0),
                     {"tvm": state.RunReport(pool_guard_lost=1)})
    assert 'xenlvm_pool_guard_lost{job="tvm"} 1' in state.render_metrics(config)


def test_the_readers_of_a_vm_disks_loop_devices_are_stopped_too_then_the_loops_detached(tmp_path,
                                                                                         monkeypatch):
    """A VM disk's files are read through loop devices on its snapshot: those readers hold it."""
    lv = snapshot_row(vg_uuid=VG_UUID, lv_uuid=LV_UUID)
    (tmp_path / f"dev/block/{lv.major}:{lv.minor}/dm").mkdir(parents=True)
    (tmp_path / f"dev/block/{lv.major}:{lv.minor}/dm/uuid").write_text(DM_UUID + "\n")
    monkeypatch.setattr(pool_guard_drop, "SYS", str(tmp_path))
    monkeypatch.setattr(pool_guard_drop.vmdisk_teardown, "loops_of",
                        lambda devices: {"/dev/loop3": (7, 3)} if devices == [(lv.major, lv.minor)] else {})
    monkeypatch.setattr(pool_guard_drop, "readers_of", lambda major, minor: [4343] if major == 7 else [])
    terminated = []
    monkeypatch.setattr(pool_guard_drop, "terminate_proven",
                        lambda pid, is_ours, what, timeout: terminated.append((pid, is_ours(pid))))
    runner = FakeRunner().on("losetup", Answer())
    assert pool_guard_drop._stop_readers(Lvm(runner), lv) is True
    assert terminated == [(4343, True)]
    assert runner.changes == [["losetup", "--detach", "/dev/loop3"]]


def test_a_guard_drop_unmounts_a_vm_disks_filesystems_lazily_while_they_are_read(monkeypatch):
    from xenlvm.host.mount import MountEntry
    from xenlvm.vmdisks import teardown as vmdisk_teardown

    job = parse_config("jobs:\n  vms:\n    mountpoint: /mnt/vmdisks\n    vmdisks:\n      domains: auto\n"
                       "      size: 16M\n",
                       "/etc/xenlvm/config.yaml").jobs["vms"]
    lv = snapshot_row()
    part = MountEntry(7, 3, "/mnt/vmdisks/vm2/xvda1", ("ro",), "ext4", "/dev/loop3")
    monkeypatch.setattr(vmdisk_teardown, "loops_of", lambda devices: {"/dev/loop3": (7, 3)})
    monkeypatch.setattr(vmdisk_teardown.mount, "read_mounts", lambda: [part])
    runner = FakeRunner().on("umount", Answer()).on("losetup", Answer(returncode=1, stderr="busy"))
    vmdisk_teardown.release(runner, job, [lv], 1.0, lazy=True)
    assert runner.changes == [["umount", "--lazy", "/mnt/vmdisks/vm2/xvda1"],
                              ["losetup", "--detach", "/dev/loop3"]]  # busy: left for after the readers
