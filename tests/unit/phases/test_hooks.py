"""pre and post on a fake dom0 (tests/unit/fakehost.py): pre leaves nothing behind whichever
step fails, post tries every volume and every job whatever fails in one and reports all."""

from __future__ import annotations

import errno
import json

import pytest

from tests.unit.fakehost import ORIGIN_MOUNT
from tests.unit.fakes import Answer, Timeout
from xenlvm.core import context as context_mod
from xenlvm.errors import FileError, MountError, PartialBackup, XenlvmError
from xenlvm.host import mount
from xenlvm.phases import post, pre
from xenlvm.vmdisks import teardown as vmdisk_teardown
from xenlvm.watchdog import process as watchdog_process
from xenlvm.watchdog import watch as watchdog
from xenlvm.xen import domains as xen

XEN = "    xen:\n      domains: auto\n      timeout: 2s\n"


def context(host, jobs: str = "", **settings):
    config = host.config(jobs, **settings)
    return context_mod.Context(config, host.runner), config


def assert_left_as_found(host) -> None:
    """No LV with xenlvm's tag, nothing mounted but the host's own, no domain paused by us."""
    assert host.ours == []
    assert host.mountpoints == ["/", ORIGIN_MOUNT]
    assert host.paused == {"vm3"}  # paused before xenlvm came, and left so
    assert not list((host.root / "run").glob("*.paused"))


def test_pre_snapshots_pauses_and_mounts_and_post_takes_it_all_back(host):
    ctx, config = context(host, host.job_text(extra=XEN))
    pre.run_pre(ctx, list(config.jobs.values()))

    assert host.ours == ["vmbackup"]
    assert host.mountpoints[-1] == str(host.root / "mnt" / "vmbackup")
    assert host.runner.argvs_of("xl", "pause") == [["xl", "pause", "vm1"]]  # its disk is below /srv/xenvm
    assert host.paused == {"vm3"}
    exported = host.root / "state" / "xenvm" / "xen-config" / "vm1.xl-list-l.json"
    assert json.loads(exported.read_text())["config"]["c_info"]["name"] == "vm1"

    post.run_post(context_mod.Context(config, host.runner), list(config.jobs.values()))
    assert_left_as_found(host)


# Each step of pre that can fail, and how: the answer the step's command gives ("run": it did
# its work, then failed, as a command killed after finishing).
PRE_FAILURES = [
    ("lvs", Answer(stderr="  Volume group system is locked", returncode=5), "is locked"),
    ("xl list", Timeout(), "did not finish within 2 s"),
    ("xl list -l", "(domain\n\t(domid 0)\n", "set output_format to json in /etc/xen/xl.conf"),
    ("xl pause", Answer(stderr="libxl: error: libxl_domain.c:590:libxl_domain_pause: Domain 1:Pausing "
                               "domain: Device or resource busy\n"), "could not pause vm1"),
    ("lvcreate", Answer(stderr="  Insufficient free space", returncode=5), "Insufficient free space"),
    ("lvcreate", "run", "failed after doing its work"),
    ("lvcreate", Timeout(), "did not finish"),
    ("mount", Answer(stderr="mount: wrong fs type", returncode=32), "wrong fs type"),
    ("mount", "run", "failed after doing its work"),
]


@pytest.mark.parametrize(("step", "answer", "said"), PRE_FAILURES,
                         ids=[f"{step}-{i}" for i, (step, _, _) in enumerate(PRE_FAILURES)])
def test_pre_leaves_nothing_behind_whichever_step_fails(host, step, answer, said):
    ctx, config = context(host, host.job_text(extra=XEN))
    host.fail(step, answer)
    with pytest.raises(XenlvmError) as caught:
        pre.run_pre(ctx, list(config.jobs.values()))
    assert said in str(caught.value)
    assert_left_as_found(host)


def test_pre_whose_snapshot_is_mounted_read_write_unwinds(host):
    ctx, config = context(host)
    host.fail("mount", lambda argv: host.do(argv[:4] + ("rw",) + argv[5:]))  # a mount that ignores -o ro
    with pytest.raises(MountError, match="mounted read-write although xenlvm asked for read-only"):
        pre.run_pre(ctx, list(config.jobs.values()))
    assert host.ours == [] and host.mountpoints == ["/", ORIGIN_MOUNT]


def test_pre_whose_undo_fails_too_says_both_and_what_to_do(host):
    ctx, config = context(host)
    host.fail("mount", "run")
    host.fail("umount", Answer(stderr="umount: target is busy.", returncode=32))
    host.fail("lvremove", Answer(stderr="  Failed to update pool", returncode=5))
    with pytest.raises(XenlvmError) as caught:
        pre.run_pre(ctx, list(config.jobs.values()))
    message = str(caught.value)
    assert "failed after doing its work" in message and "Undoing pre ALSO failed" in message
    assert "Run 'xenlvm post'" in message


def test_pre_that_cannot_create_a_volumes_mountpoint_names_it_and_its_errno(host, monkeypatch):
    jobs = (f"  xenvm:\n    mountpoint: {host.root / 'mnt' / 'vmbackup'}\n    tasks: [xen_vm1]\n"
            "    volumes:\n      - volume: system/xenvm\n        snapshot: vmbackup\n        size: 64M\n")
    ctx, config = context(host, jobs)

    def full(path, mode=0o777):
        raise OSError(errno.ENOSPC, "No space left on device", path)
    monkeypatch.setattr(pre.os, "mkdir", full)
    with pytest.raises(FileError) as caught:
        pre.run_pre(ctx, list(config.jobs.values()))
    assert f"cannot create the mount point {host.root / 'mnt' / 'vmbackup' / 'xenvm'}: No space left on " \
           "device" in str(caught.value)
    assert host.ours == []


def test_pre_that_cannot_export_the_xen_configuration_names_the_directory(host):
    (host.root / "state").rmdir()
    (host.root / "state").write_text("a file where the state directory should be")
    ctx, config = context(host, host.job_text(extra=XEN))
    with pytest.raises(FileError) as caught:
        pre.run_pre(ctx, list(config.jobs.values()))
    assert f"cannot export the Xen configuration to {host.root / 'state'}" in str(caught.value)
    assert "Not a directory" in str(caught.value)
    assert_left_as_found(host)


def test_a_dry_run_of_pre_changes_nothing_and_announces_every_change(host):
    config = host.config(host.job_text(extra=XEN))
    host.runner.dry_run = True
    pre.run_pre(context_mod.Context(config, host.runner), list(config.jobs.values()))
    assert [argv[:2] for argv in host.runner.changes] == [["xl", "pause"], ["lvcreate", "--snapshot"],
                                                          ["xl", "unpause"], ["mount", "-t"]]
    assert_left_as_found(host)


def test_pre_resumes_domains_a_killed_run_left_paused_first(host):
    ctx, config = context(host, host.job_text(extra=XEN))
    host.paused.add("vm2")
    xen.PauseRecord(str(host.root / "run"), "xenvm").write(["vm2"])
    pre.run_pre(ctx, list(config.jobs.values()))
    assert host.runner.argvs_of("xl", "unpause")[0] == ["xl", "unpause", "vm2"]
    assert host.paused == {"vm3"}


def test_pre_refuses_when_the_record_of_paused_domains_is_corrupt(host):
    ctx, config = context(host, host.job_text(extra=XEN))
    (host.root / "run" / "xenvm.paused").write_text('["vm2", ')
    with pytest.raises(xen.XenError) as caught:
        pre.run_pre(ctx, list(config.jobs.values()))
    assert "cannot be read" in str(caught.value) and "xl unpause NAME" in str(caught.value)
    assert host.ours == []


# ---------------------------------------------------------------------------------------------
# post

def two_jobs(host) -> str:
    (host.root / "mnt" / "second").mkdir()
    second = host.job_text("second", mountpoint=str(host.root / "mnt" / "second")).replace(
        "snapshot: vmbackup", "snapshot: second")
    return host.job_text() + second


def test_post_goes_on_with_the_next_job_when_one_fails_and_reports_both(host):
    ctx, config = context(host, two_jobs(host))
    host.add_snapshot(lv_attr="swi-aos---")
    host.add_snapshot("second", "second", str(host.root / "mnt" / "second"), lv_attr="swi-aos---")
    host.fail("lvremove", Answer(stderr="  Failed to update pool", returncode=5))

    with pytest.raises(XenlvmError) as caught:
        post.run_post(ctx, list(config.jobs.values()))
    assert "Failed to update pool" in str(caught.value)
    assert host.ours == ["vmbackup"]  # the first job's removal failed; the second's went on
    assert host.mountpoints == ["/", ORIGIN_MOUNT]


def test_post_collects_the_failures_of_every_job(host):
    ctx, config = context(host, two_jobs(host))
    host.add_snapshot(lv_attr="swi-aos---")
    host.add_snapshot("second", "second", str(host.root / "mnt" / "second"), lv_attr="swi-aos---")
    host.runner.on("lvremove", Answer(stderr="  Failed to update pool", returncode=5))
    with pytest.raises(XenlvmError) as caught:
        post.run_post(ctx, list(config.jobs.values()))
    assert str(caught.value).startswith("post failed for 2 jobs: ")
    assert str(caught.value).count("Failed to update pool") == 2


def test_an_os_error_in_one_job_does_not_stop_the_others(host, monkeypatch):
    ctx, config = context(host, two_jobs(host))
    host.add_snapshot(lv_attr="swi-aos---")
    host.add_snapshot("second", "second", str(host.root / "mnt" / "second"), lv_attr="swi-aos---")
    real, calls = mount.read_mounts, []

    def unreadable_once():
        calls.append(1)
        if len(calls) == 1:
            raise PermissionError(errno.EACCES, "Permission denied", "/proc/self/mountinfo")
        return real()
    monkeypatch.setattr(mount, "read_mounts", unreadable_once)

    with pytest.raises(XenlvmError) as caught:
        post.run_post(ctx, list(config.jobs.values()))
    assert "cannot use /proc/self/mountinfo: Permission denied" in str(caught.value)
    assert host.ours == ["vmbackup"]  # the second job was cleaned up all the same


def test_a_bug_in_one_job_does_not_stop_the_others_and_says_it_is_a_bug(host, monkeypatch):
    ctx, config = context(host, two_jobs(host))
    host.add_snapshot("second", "second", str(host.root / "mnt" / "second"), lv_attr="swi-aos---")
    real = post.clean_up

    def broken_first(ctx, job, judge_backup=True):
        if job.name == "xenvm":
            raise TypeError("unsupported format string passed to NoneType.__format__")
        real(ctx, job, judge_backup)
    monkeypatch.setattr(post, "clean_up", broken_first)
    with pytest.raises(XenlvmError) as caught:
        post.run_post(ctx, list(config.jobs.values()))
    assert "a bug in xenlvm" in str(caught.value) and "TypeError" in str(caught.value)
    assert host.ours == []


def test_post_with_a_corrupt_pause_record_still_removes_the_snapshot_and_says_so(host):
    ctx, config = context(host, host.job_text(extra=XEN))
    host.add_snapshot(lv_attr="swi-aos---")
    (host.root / "run" / "xenvm.paused").write_bytes(b"\xff\xfe not json")
    with pytest.raises(xen.XenError) as caught:
        post.run_post(ctx, list(config.jobs.values()))
    assert "cannot be read" in str(caught.value)
    assert host.ours == [] and host.mountpoints == ["/", ORIGIN_MOUNT]


def test_post_of_a_job_with_two_volumes_removes_the_second_when_the_first_fails(host):
    jobs = (f"  xenvm:\n    mountpoint: {host.root / 'mnt' / 'vmbackup'}\n    tasks: [xen_vm1]\n"
            "    unmount_timeout: 1s\n    volumes:\n"
            "      - volume: system/xenvm\n        snapshot: vmbackup\n        size: 64M\n"
            "      - volume: system/xenvm\n        snapshot: second\n        size: 64M\n        name: two\n")
    ctx, config = context(host, jobs)
    for name, below in (("vmbackup", "xenvm"), ("second", "two")):
        (host.root / "mnt" / "vmbackup" / below).mkdir()
        host.add_snapshot(name, mountpoint=str(host.root / "mnt" / "vmbackup" / below))
    host.unremovable["system/vmbackup"] = "  Failed to update pool\n"
    with pytest.raises(XenlvmError, match="system/vmbackup"):
        post.run_post(ctx, list(config.jobs.values()))
    assert len(host.ours) == 1  # the other volume's snapshot was removed
    assert host.mountpoints == ["/", ORIGIN_MOUNT]  # both were unmounted


def test_post_reports_an_overflowed_snapshot_after_removing_it(host):
    ctx, config = context(host)
    host.add_snapshot(lv_attr="swi-Ios---", data_percent="100.00", lv_snapshot_invalid="snapshot invalid")
    with pytest.raises(XenlvmError, match="overflowed during the backup"):
        post.run_post(ctx, list(config.jobs.values()))
    assert host.ours == []


def test_cleanup_only_warns_about_an_overflowed_snapshot(host):
    ctx, config = context(host)
    host.add_snapshot(lv_attr="swi-Ios---", data_percent="100.00", lv_snapshot_invalid="snapshot invalid")
    post.run_post(ctx, list(config.jobs.values()), judge_backup=False)
    assert host.ours == []


def test_post_leaves_a_foreign_lv_with_the_snapshot_name_alone(host):
    ctx, config = context(host)
    host.add_snapshot(lv_tags="")
    post.run_post(ctx, list(config.jobs.values()))
    assert "vmbackup" in host.lv_names


def test_post_refuses_a_snapshot_also_mounted_elsewhere(host):
    ctx, config = context(host)
    host.add_snapshot(lv_attr="swi-aos---")
    host.add_snapshot("other", lv_attr="swi-a-s---")
    host._mount_line("/dev/mapper/system-vmbackup", "/mnt/elsewhere", "ext4", "ro")
    with pytest.raises(MountError, match="also mounted at /mnt/elsewhere"):
        post.run_post(ctx, list(config.jobs.values()))
    assert "vmbackup" in host.lv_names


def test_post_when_the_volume_group_is_gone_has_nothing_to_clean_up(host):
    ctx, config = context(host, host.job_text().replace("system/xenvm", "novg/xenvm"))
    post.run_post(ctx, list(config.jobs.values()))
    assert host.runner.changes == []


def test_post_resumes_domains_a_killed_run_left_paused(host):
    ctx, config = context(host, host.job_text(extra=XEN))
    host.paused.add("vm1")
    xen.PauseRecord(str(host.root / "run"), "xenvm").write(["vm1"])
    post.run_post(ctx, list(config.jobs.values()))
    assert host.paused == {"vm3"}
    assert not (host.root / "run" / "xenvm.paused").exists()


# ---------------------------------------------------------------------------------------------
# Leftovers, the watchdog and VM disks as pre and post see them

VMDISKS = "    vmdisks:\n      domains: auto\n      size: 16M\n"


def test_pre_removes_the_leftover_of_a_crashed_run_before_making_a_fresh_snapshot(host):
    ctx, config = context(host)
    host.add_snapshot(lv_attr="swi-aos---")  # mounted, tagged by an earlier run
    pre.run_pre(ctx, list(config.jobs.values()))
    assert host.runner.argvs_of("umount") == [["umount", str(host.root / "mnt" / "vmbackup")]]
    assert len(host.runner.argvs_of("lvremove")) == 1 and len(host.runner.argvs_of("lvcreate")) == 1
    [row] = [r for r in host.lvs_rows if r["lv_name"] == "vmbackup"]
    assert "xenlvm_run_20261129T213500_829" not in row["lv_tags"]  # the new run's snapshot


def test_pre_goes_on_without_a_watchdog_that_cannot_start(host, monkeypatch, caplog):
    ctx, config = context(host, host.job_text(extra="    watchdog: {threshold: 50}\n"))

    def cannot_start(*args, **kwargs):
        raise XenlvmError("the snapshot watchdog did not start within 30 s")
    monkeypatch.setattr(watchdog_process, "start", cannot_start)
    pre.run_pre(ctx, list(config.jobs.values()))
    assert "the backup goes on without the watchdog" in caplog.text
    assert host.ours == ["vmbackup"]


def test_post_reports_what_the_watchdog_did_and_notes_the_fill(host, monkeypatch, caplog):
    ctx, config = context(host, host.job_text(extra="    watchdog: {threshold: 50}\n"))
    host.add_snapshot(lv_attr="swi-aos---", data_percent="40.00")
    summary = watchdog.Summary({"system/vmbackup": 91.5}, [
        {"lv": "system/vmbackup", "at": 1.0, "fill": 91.5, "from": 64 << 20, "to": 128 << 20}],
        ["cannot extend system/vmbackup: VG system has no more free space"])
    monkeypatch.setattr(watchdog_process, "stop", lambda config, job: summary)
    with caplog.at_level("INFO", "xenlvm"):
        post.run_post(ctx, list(config.jobs.values()))
    assert ("the watchdog extended system/vmbackup from 64.0 MiB to 128.0 MiB when it was 91.5% full"
            in caplog.text)
    assert "watchdog: cannot extend" in caplog.text
    assert ctx.reports["xenvm"].notes() == {"fill_percent": 91.5, "watchdog_extensions": 1.0}


def test_post_warns_about_a_snapshot_that_was_nearly_full(host, caplog):
    ctx, config = context(host)
    host.add_snapshot(lv_attr="swi-aos---", data_percent="85.00")
    post.run_post(ctx, list(config.jobs.values()))
    assert "was 85.0% full before removal - close to overflowing" in caplog.text


def test_pre_of_a_vm_disk_job_that_finds_no_disk_on_an_lv_changes_nothing(host):
    jobs = f"  disks:\n    mountpoint: {host.root / 'mnt' / 'vmbackup'}\n    tasks: [xen_vm1]\n{VMDISKS}"
    ctx, config = context(host, jobs)
    with pytest.raises(XenlvmError, match="found no VM disk on a logical volume"):
        pre.run_pre(ctx, list(config.jobs.values()))
    assert host.runner.changes == []


def test_post_of_a_vm_disk_job_with_nothing_left_asks_lvs_once_and_changes_nothing(host, monkeypatch):
    monkeypatch.setattr(vmdisk_teardown, "loops_of", lambda devices: {})
    jobs = (f"  disks:\n    mountpoint: {host.root / 'mnt' / 'vmbackup'}\n    tasks: [xen_vm1]\n"
            "    volumes:\n      - volume: system/xenvm\n        snapshot: vmbackup\n        size: 64M\n"
            f"{VMDISKS}")
    ctx, config = context(host, jobs)
    post.run_post(ctx, list(config.jobs.values()))
    assert len(host.runner.argvs_of("lvs")) == 1
    assert host.runner.changes == []


def _dead_image_server(host) -> None:
    """The record of a job's image server (expose: image) whose process no longer runs."""
    (host.root / "run" / "disks.images.json").write_text(
        '{"pid": 4194305, "start_time": 1, "exports": ["/mnt/vmbackup/vm1/xvda.img"]}')


def test_post_fails_when_the_image_server_died_during_the_backup_and_still_cleans_up(host, monkeypatch):
    monkeypatch.setattr(vmdisk_teardown, "loops_of", lambda devices: {})
    jobs = f"  disks:\n    mountpoint: {host.root / 'mnt' / 'vmbackup'}\n    tasks: [xen_vm1]\n{VMDISKS}"
    ctx, config = context(host, jobs)
    _dead_image_server(host)
    with pytest.raises(XenlvmError, match="died during the backup.*cannot be trusted"):
        post.run_post(ctx, list(config.jobs.values()))
    assert len(host.runner.argvs_of("lvs")) == 1  # the rest of post ran
    assert not (host.root / "run" / "disks.images.json").exists()
    post.run_post(ctx, list(config.jobs.values()))  # said once: the next post succeeds


def test_cleanup_only_warns_about_an_image_server_that_died(host, monkeypatch, caplog):
    monkeypatch.setattr(vmdisk_teardown, "loops_of", lambda devices: {})
    jobs = f"  disks:\n    mountpoint: {host.root / 'mnt' / 'vmbackup'}\n    tasks: [xen_vm1]\n{VMDISKS}"
    ctx, config = context(host, jobs)
    _dead_image_server(host)
    post.run_post(ctx, list(config.jobs.values()), judge_backup=False)
    assert "died during the backup" in caplog.text


def test_two_partial_jobs_keep_post_partial_and_a_real_failure_wins(host, monkeypatch):
    ctx, config = context(host, two_jobs(host))
    outcomes = {}
    monkeypatch.setattr(post, "clean_up", lambda ctx, job, judge: (_ for _ in ()).throw(outcomes[job.name]))
    jobs = list(config.jobs.values())
    outcomes.update({j.name: PartialBackup(f"the backup of job {j.name} is partial") for j in jobs})
    with pytest.raises(PartialBackup) as partial:
        post.run_post(ctx, jobs)
    assert partial.value.exit_code == 3 and "the backups of 2 jobs are partial" in str(partial.value)
    outcomes[jobs[1].name] = XenlvmError("lvremove failed")
    with pytest.raises(XenlvmError) as failed:
        post.run_post(ctx, jobs)
    assert failed.value.exit_code == 1 and "post failed for 2 jobs" in str(failed.value)


def test_pre_starts_the_pool_guard_right_after_the_snapshots_before_exposing_them(host, monkeypatch):
    """Exposing (a mount, an image copy of hours) runs while the pools fill: it runs guarded."""
    ctx, config = context(host)
    started = []
    monkeypatch.setattr(pre, "_start_pool_guard", lambda ctx, job, targets, undo: started.append(
        (len(host.runner.argvs_of("lvcreate")), len(host.runner.argvs_of("mount")))))
    pre.run_pre(ctx, list(config.jobs.values()))
    assert started == [(1, 0)]  # after the lvcreate, before the mount
    assert len(host.runner.argvs_of("mount")) == 1


@pytest.mark.parametrize(("finished", "problems", "running", "lost"), [
    (None, [], False, True),  # killed: its last summary has no end
    (5.0, ["the pool guard failed and stopped guarding: OSError: boom"], False, True),  # crashed
    (5.0, [], False, False),  # ended by itself (its snapshots gone, or its lifetime over)
    (None, [], True, False),  # running when post began: post stops it
])
def test_post_fails_and_notes_a_pool_guard_that_crashed_or_was_killed_and_still_cleans_up(
        host, monkeypatch, finished, problems, running, lost):
    from pathlib import Path

    from xenlvm.thinpool import guard as pool_guard
    from xenlvm.thinpool import process as pool_guard_process

    ctx, config = context(host)
    host.add_snapshot(lv_attr="swi-aos---")
    paths = pool_guard.files(str(host.root / "run"), "xenvm")
    guarded = [pool_guard.Guarded("system", "tpool", "vmbackup", "xenvm", "")]
    pool_guard.write_spec(paths.spec, "xenvm", guarded, config.jobs["xenvm"].thin_pool, 60.0)
    Path(paths.summary).write_text(json.dumps({"peak": {}, "actions": [], "dropped": [], "problems": problems,
                                               "finished": finished}))
    monkeypatch.setattr(pool_guard_process, "running", lambda config, job: running)
    if lost:
        with pytest.raises(XenlvmError, match="thin pool guard of job 'xenvm' crashed or was killed") as e:
            post.run_post(ctx, list(config.jobs.values()))
        assert e.value.exit_code == 1
    else:
        post.run_post(ctx, list(config.jobs.values()))
    assert ctx.reports["xenvm"].pool_guard_lost == int(lost)
    assert host.ours == [] and not Path(paths.spec).exists()  # cleaned up all the same
