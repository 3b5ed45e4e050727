"""The pause windows (xenlvm/xen/windows.py): which domains share a window, and pre running the
windows one after another on the fake dom0, each domain resumed whatever fails."""

from __future__ import annotations

import copy
import logging
import signal

import pytest

from tests.unit.fakehost import FakeHost
from tests.unit.vmdisks.test_vmdisks import lv
from xenlvm.admin import status
from xenlvm.config.model import (
    AUTO,
    Auto,
    Job,
    SnapshotSpec,
    VmDiskSettings,
    Volume,
    WindowMode,
    XenSettings,
    parse_size,
)
from xenlvm.core import context as context_mod
from xenlvm.core import state
from xenlvm.errors import CommandFailed
from xenlvm.host import interrupts
from xenlvm.host.mount import MountEntry
from xenlvm.phases import kinds, pre
from xenlvm.targets.volume import VolumeTarget
from xenlvm.vmdisks.target import VmDiskTarget
from xenlvm.xen import domains as xen
from xenlvm.xen import windows

# ---------------------------------------------------------------------------------------------
# Which domains share a window


def plan(uses: dict[str, set[str]], mode: str = windows.PER_DOMAIN, targets: str = "abcdef"):
    return [(w.domains, "".join(w.targets)) for w in windows.plan(list(targets), uses, mode)]


def test_per_domain_gives_each_domain_a_window_with_only_its_own_disks():
    assert plan({"vm1": {"a"}, "vm2": {"b", "c"}, "vm3": {"d"}}, targets="abcd") == [
        (("vm1",), "a"), (("vm2",), "bc"), (("vm3",), "d")]


def test_domains_on_one_shared_volume_share_its_window():
    # the manual's layout: every VM a folder of files on one LV
    assert plan({"vm1": {"a"}, "vm2": {"a"}, "vm3": {"a"}}, targets="a") == [(("vm1", "vm2", "vm3"), "a")]


def test_sharing_is_transitive_and_the_windows_follow_the_jobs_order():
    # vm1 and vm2 share b, vm2 and vm3 share d: one window for the three; vm4 alone
    uses = {"vm4": {"f"}, "vm1": {"a", "b"}, "vm2": {"b", "d"}, "vm3": {"d", "e"}}
    assert plan(uses) == [(("vm1", "vm2", "vm3"), "abde"), ((), "c"), (("vm4",), "f")]


def test_a_volume_no_domain_uses_is_snapshotted_without_a_pause():
    assert plan({"vm1": {"b"}}, targets="abc") == [((), "a"), (("vm1",), "b"), ((), "c")]


def test_together_is_one_window_for_every_domain_and_every_volume():
    assert plan({"vm1": {"a"}, "vm2": {"b"}}, windows.TOGETHER, "abc") == [(("vm1", "vm2"), "abc")]


def test_a_domain_whose_disks_are_on_none_of_the_volumes_is_paused_for_all_of_them(caplog):
    with caplog.at_level(logging.WARNING, "xenlvm"):
        assert plan({"vm1": {"a"}, "vm9": set()}, targets="ab") == [(("vm1", "vm9"), "ab")]
    assert "no disk of vm9 is on one of the job's volumes" in caplog.text


def test_the_default_is_per_domain_with_vmdisks_and_together_for_volumes_only():
    def job(window: WindowMode | Auto = AUTO, vmdisks: bool = False) -> Job:
        disks = VmDiskSettings(domains=AUTO, size=parse_size("1G")) if vmdisks else None
        return Job(name="j", volumes=(), mountpoint="/mnt/j", vmdisks=disks,
                   xen=XenSettings(domains=AUTO, window=window))
    assert kinds.window_mode(job(vmdisks=True)) == windows.PER_DOMAIN
    assert kinds.window_mode(job()) == windows.TOGETHER
    assert kinds.window_mode(job(WindowMode.PER_DOMAIN)) == windows.PER_DOMAIN
    assert kinds.window_mode(job(WindowMode.TOGETHER, vmdisks=True)) == windows.TOGETHER


def test_a_domain_uses_its_own_disks_any_origin_it_has_as_a_disk_and_volumes_holding_its_files(monkeypatch):
    monkeypatch.setattr(windows.mount, "device_numbers",
                        {"/dev/mapper/system-vm2--disk": (254, 1), "/dev/system/shared": (254, 5)}.get)
    volume = VolumeTarget(SnapshotSpec(Volume("system", "xenvm"), "vmbackup", "/mnt/b/xenvm"),
                          lv("xenvm", (254, 0)))
    vm2_disk = VmDiskTarget(SnapshotSpec(Volume("system", "vm2-disk"), "vm2-disk.xenlvm", "/mnt/b/vm2/xvda"),
                            lv("vm2-disk", (254, 1)), "vm2", "xvda", "files")
    shared = VmDiskTarget(SnapshotSpec(Volume("system", "shared"), "shared.xenlvm", "/mnt/b/vm3/xvdb"),
                          lv("shared", (254, 5)), "vm3", "xvdb", "files")  # found for vm3; vm4 has it too
    mounts = [MountEntry(254, 0, "/srv/xenvm", ("rw",), "ext4", "/dev/mapper/system-xenvm")]
    domains = [xen.Domain("vm1", 1, False, ("/srv/xenvm/vm1/disk.img", "/srv/xenvmx/other.img")),
               xen.Domain("vm2", 2, False, ("/dev/mapper/system-vm2--disk",)),  # another path to it
               xen.Domain("vm3", 3, False, ()),
               xen.Domain("vm4", 4, False, ("/dev/system/shared",))]
    volume, vm2_disk, shared = snapshots = [t.window_snapshot(mounts) for t in (volume, vm2_disk, shared)]
    uses = windows.domain_uses(domains, snapshots)
    assert uses == {"vm1": {volume}, "vm2": {vm2_disk}, "vm3": {shared}, "vm4": {shared}}
    assert [w.domains for w in windows.plan([volume, vm2_disk, shared], uses, windows.PER_DOMAIN)] == [
        ("vm1",), ("vm2",), ("vm3", "vm4")]


def test_a_window_with_domains_and_no_pause_is_a_bug_not_an_unpaused_snapshot():
    with pytest.raises(ValueError, match="needs a pause"):
        list(windows.run([windows.Window(("vm1",), ("a",))], lambda target: None))


# ---------------------------------------------------------------------------------------------
# The windows of a real pre, on the fake dom0: vm1 has a file on system/xenvm and its own LV
# vm1-disk, vm2 its own LV vm2-root (the recorded xl list -l of Xen 4.17); vm3 is paused already.


def add_lv(host: FakeHost, name: str) -> None:
    row = copy.deepcopy(next(r for r in host.lvs_rows if r["lv_name"] == "xenvm"))
    row.update(lv_name=name, lv_kernel_minor=str(max(int(r["lv_kernel_minor"]) for r in host.lvs_rows) + 1),
               lv_dm_path=f"/dev/mapper/system-{name.replace('-', '--')}", lv_attr="-wi-a-----")
    host.lvs_rows.append(row)


def per_domain_job(host: FakeHost, window: str = "per-domain", xen_extra: str = ""):
    add_lv(host, "vm1-disk")
    add_lv(host, "vm2-root")
    config = host.config(f"""  xenvm:
    mountpoint: {host.root / 'mnt' / 'vmbackup'}
    tasks: [xen_vm1]
    unmount_timeout: 1s
    volumes:
      - {{volume: system/xenvm, snapshot: xenvmsnap, size: 64M}}
      - {{volume: system/vm2-root, snapshot: vm2rootsnap, size: 64M}}
      - {{volume: system/vm1-disk, snapshot: vm1disksnap, size: 64M}}
    xen:
      domains: [vm1, vm2, vm3]
      timeout: 2s
      window: {window}
{xen_extra}""")
    return config, context_mod.Context(config, host.runner)


def sequence(host: FakeHost) -> list[str]:
    """The pauses, resumes and lvcreates of the run, in order."""
    seen = []
    for argv in host.runner.argvs:
        if argv[:2] in (["xl", "pause"], ["xl", "unpause"]):
            seen.append(" ".join(argv[1:]))
        elif argv[0] == "lvcreate":
            seen.append(f"lvcreate {argv[-1]}")
    return seen


def test_per_domain_pauses_each_domain_only_for_the_snapshots_of_its_own_volumes(host):
    config, ctx = per_domain_job(host)
    records = []
    host.fail("lvcreate", *[lambda argv: (records.append(record(host)), host.do(argv))[1]] * 3)
    pre.run_pre(ctx, list(config.jobs.values()))
    assert sequence(host) == ["pause vm1", "lvcreate system/xenvm", "lvcreate system/vm1-disk", "unpause vm1",
                              "pause vm2", "lvcreate system/vm2-root", "unpause vm2"]
    assert records == [["vm1"], ["vm1"], ["vm2"]]  # the record names the window's domains only
    assert record(host) == [] and host.paused == {"vm3"}  # vm3 was paused before and stays so
    notes = ctx.reports["xenvm"].notes()
    assert set(notes) == {"pause_window_ms", "pause_window_ms:vm1", "pause_window_ms:vm2"}
    assert notes["pause_window_ms"] == max(notes["pause_window_ms:vm1"], notes["pause_window_ms:vm2"])


def test_together_pauses_every_domain_for_every_snapshot(host):
    config, ctx = per_domain_job(host, "together")
    pre.run_pre(ctx, list(config.jobs.values()))
    assert sequence(host) == ["pause vm1", "pause vm2", "lvcreate system/xenvm", "lvcreate system/vm2-root",
                              "lvcreate system/vm1-disk", "unpause vm1", "unpause vm2"]


def record(host: FakeHost) -> list[str]:
    return xen.PauseRecord(str(host.root / "run"), "xenvm").read()


def assert_all_resumed_and_nothing_left(host: FakeHost) -> None:
    assert host.paused == {"vm3"} and record(host) == []
    assert host.ours == []
    assert [m for m in host.mountpoints if "vmbackup" in m] == []


def test_a_failing_lvcreate_in_the_second_window_resumes_all_and_undoes_the_first(host):
    config, ctx = per_domain_job(host)
    failed = CommandFailed(("lvcreate",), 5, "  Insufficient free space\n")
    host.fail("lvcreate", host.do, host.do, failed)  # vm1's two, then vm2's
    with pytest.raises(CommandFailed):
        pre.run_pre(ctx, list(config.jobs.values()))
    assert sequence(host)[-3:] == ["pause vm2", "lvcreate system/vm2-root", "unpause vm2"]
    assert [a[-1] for a in host.runner.argvs_of("lvremove")] == ["system/vm1disksnap", "system/xenvmsnap"]
    assert_all_resumed_and_nothing_left(host)


def test_a_failing_pause_of_the_second_window_undoes_the_first(host):
    config, ctx = per_domain_job(host)
    host.fail("xl pause vm2", CommandFailed(("xl", "pause", "vm2"), 1, "libxl: error: ..."))
    with pytest.raises(xen.XenError, match="could not pause vm2"):
        pre.run_pre(ctx, list(config.jobs.values()))
    assert "lvcreate system/vm2-root" not in sequence(host)
    assert_all_resumed_and_nothing_left(host)


def test_sigterm_inside_the_second_window_resumes_it_starts_no_other_and_undoes_all(host, monkeypatch):
    monkeypatch.setattr(interrupts, "_state", {"depth": 0, "pending": None, "seen": False})
    config, ctx = per_domain_job(host)

    def signalled_while_running(argv):
        with interrupts.deferred():  # as Runner.change: the signal waits for lvcreate to finish
            done = host.do(argv)
            interrupts._handle(signal.SIGTERM, None)
        return done

    host.fail("lvcreate", host.do, host.do, signalled_while_running)
    with pytest.raises(interrupts.Interrupted, match="SIGTERM"):
        pre.run_pre(ctx, list(config.jobs.values()))
    assert sequence(host)[-3:] == ["pause vm2", "lvcreate system/vm2-root", "unpause vm2"]
    assert sorted(a[-1] for a in host.runner.argvs_of("lvremove")) == [
        "system/vm1disksnap", "system/vm2rootsnap", "system/xenvmsnap"]
    assert_all_resumed_and_nothing_left(host)


def test_the_state_file_metrics_and_status_show_each_domains_window(host):
    config = host.config(settings=f"  metrics_file: {host.root / 'xenlvm.prom'}\n")
    report = state.RunReport()
    report.add_window(("vm1",), 120.0)
    report.add_window(("vm2", 'odd"name'), 95.0)
    state.record_run(config, ["xenvm"], state.RunRecord("pre", True, 0, 1.0, 2.0), {"xenvm": report})
    metrics = (host.root / "xenlvm.prom").read_text()
    assert 'xenlvm_pause_window_seconds{job="xenvm"} 0.120' in metrics
    assert 'xenlvm_domain_pause_window_seconds{job="xenvm",domain="vm2"} 0.095' in metrics
    assert 'domain="odd\\"name"' in metrics
    line = status._pauses(state.read_state(config, "xenvm")["pre"])
    assert line == ', domains paused at most 120 ms (odd"name 95 ms, vm1 120 ms, vm2 95 ms)'
