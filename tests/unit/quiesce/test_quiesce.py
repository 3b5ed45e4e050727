"""Application-consistent snapshots (xen.quiesce) and what a job leaves out (vmdisks.exclude):
the configuration, the freeze/thaw decisions around a window, the record of frozen domains,
the guard's decision when to thaw, and commands killed with their process group."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.unit.fakes import Answer, FakeRunner, Timeout
from tests.unit.vmdisks.test_vmdisks import VGS, discover, disk, xl_for
from tests.unit.vmdisks.test_vmdisks import devices as devices  # noqa: F401 (the fixture)
from tests.unit.xen.test_windows import per_domain_job
from xenlvm.admin import status
from xenlvm.config.load import parse_config
from xenlvm.config.model import (
    AUTO,
    Config,
    Job,
    QuiesceSettings,
    Settings,
    VmDiskSettings,
    XenSettings,
    parse_size,
)
from xenlvm.core import state
from xenlvm.errors import CommandFailed, ConfigError
from xenlvm.host import processes
from xenlvm.host.runner import Runner
from xenlvm.phases import post, pre
from xenlvm.quiesce import check as quiesce_check
from xenlvm.quiesce import freeze as quiesce
from xenlvm.quiesce import guard as quiesce_guard
from xenlvm.quiesce import record as quiesce_record
from xenlvm.xen import windows

FREEZE = "/usr/local/sbin/guest-freeze"
THAW = "/usr/local/sbin/guest-thaw"
QUIESCE = f"""\
      quiesce:
        freeze: [{FREEZE}, "{{domain}}"]
        thaw: [{THAW}, "{{domain}}"]
"""


def config(quiesce: str = QUIESCE, xen: str = "      domains: auto\n", vmdisks: str = "") -> Config:
    volume = "" if vmdisks else "    volume: system/xenvm\n    snapshot: vmbackup\n    size: 1G\n"
    text = f"jobs:\n  vms:\n    mountpoint: /mnt/vms\n{volume}    xen:\n{xen}{quiesce}{vmdisks}"
    return parse_config(text, "/etc/xenlvm/config.yaml")


def config_error(**parts: str) -> str:
    with pytest.raises(ConfigError) as caught:
        config(**parts)
    return str(caught.value)


# ---------------------------------------------------------------------------------------------
# The configuration


def test_the_issues_example_parses_with_its_defaults():
    settings = config().jobs["vms"].xen.quiesce
    assert settings.timeout == 30.0 and settings.on_failure == "crash-consistent"
    assert settings.commands("vm1") == ((FREEZE, "vm1"), (THAW, "vm1"))


def test_domain_is_replaced_only_in_whole_items_and_per_domain_commands_win():
    settings = config(QUIESCE + "        timeout: 5s\n        on_failure: abort\n        per_domain:\n"
                      "          db1: {freeze: [/usr/local/sbin/db-lock, --name, '{domain}'], "
                      "thaw: [/usr/local/sbin/db-unlock]}\n").jobs["vms"].xen.quiesce
    assert settings.commands("db1") == (("/usr/local/sbin/db-lock", "--name", "db1"),
                                        ("/usr/local/sbin/db-unlock",))
    assert settings.commands("vm2") == ((FREEZE, "vm2"), (THAW, "vm2"))
    assert (settings.timeout, settings.on_failure) == (5.0, "abort")


@pytest.mark.parametrize(("quiesce", "said"), [
    (f"      quiesce:\n        freeze: [{FREEZE}, 'root@{{domain}}']\n        thaw: [{THAW}]\n",
     "config.yaml:10: jobs.vms.xen.quiesce.freeze: 'root@{domain}': {domain} is replaced only as a "
     "whole item"),
    ("      quiesce:\n        freeze: [guest-freeze]\n        thaw: [/x]\n",
     "must be an absolute, normalized path"),
    ("      quiesce:\n        freeze: '/usr/bin/ssh vm fsfreeze -f /'\n        thaw: [/x]\n",
     "must be a command as a list"),
    (f"      quiesce:\n        freeze: [{FREEZE}]\n", "give both 'freeze:' and 'thaw:'"),
    ("      quiesce:\n        timeout: 5s\n", "needs 'freeze:' and 'thaw:', or 'per_domain:'"),
    (QUIESCE + "        timeout: 60s\n        max_frozen: 100s\n",
     "max_frozen (100 s) must be more than twice"),
    (QUIESCE + "        on_failure: ignore\n", "'ignore' is not one of: crash-consistent, abort"),
    (QUIESCE + "        per_domain:\n          db1: {freeze: [/x]}\n",
     "db1: give exactly 'freeze:' and 'thaw:'"),
])
def test_mistakes_in_quiesce_are_told_with_line_and_key(quiesce, said):
    assert said in config_error(quiesce=quiesce)


def test_quiesce_needs_mode_pause():
    assert "it needs 'mode: pause'" in config_error(xen="      domains: auto\n      mode: none\n")


VMDISKS = "    vmdisks:\n      domains: auto\n      size: 1G\n      exclude: {}\n"


def test_exclude_takes_domains_and_disks_of_a_domain():
    vmdisks = config(vmdisks=VMDISKS.format("[vm3, vm2/xvdb]")).jobs["vms"].vmdisks
    assert vmdisks.exclude == ("vm3", "vm2/xvdb")
    assert vmdisks.excludes("vm3") and vmdisks.excludes("vm3", "xvda") and vmdisks.excludes("vm2", "xvdb")
    assert not vmdisks.excludes("vm2") and not vmdisks.excludes("vm2", "xvda")


@pytest.mark.parametrize(("exclude", "xen", "said"), [
    ("[vm3, vm3/xvda]", "      domains: auto\n", "'vm3/xvda': its domain is excluded as a whole already"),
    ("[vm2/xvdb/x]", "      domains: auto\n", "is not DOMAIN/DISK"),
    ("[vm3, vm3]", "      domains: auto\n", "names an item twice"),
    ("[vm3]", "      domains: [vm1, vm3]\n", "xen.domains: names 'vm3', which vmdisks.exclude leaves out"),
])
def test_exclude_mistakes_and_contradictions_are_told(exclude, xen, said):
    assert said in config_error(quiesce="", xen=xen, vmdisks=VMDISKS.format(exclude))


# ---------------------------------------------------------------------------------------------
# Excluded domains and disks are not backed up


def vmdisk_job(exclude: tuple[str, ...]) -> Job:
    return Job(name="disks", mountpoint="/mnt/vmdisks", volumes=(),
               vmdisks=VmDiskSettings(domains=AUTO, size=parse_size("16M"), exclude=exclude))


def test_excluded_domains_and_disks_are_not_discovered():
    xl = xl_for({"vm2": [disk("/dev/system/vm2-disk", "xvda")],
                 "vm3": [disk("/dev/system/vm3-disk", "xvda"), disk("/dev/system/thin-disk", "xvdb")]})
    assert [(t.domain, t.disk) for t in discover(vmdisk_job(()), xl, VGS)] == [
        ("vm2", "xvda"), ("vm3", "xvda"), ("vm3", "xvdb")]
    kept = discover(vmdisk_job(("vm2", "vm3/xvdb")), xl, VGS)
    assert [(t.domain, t.disk) for t in kept] == [("vm3", "xvda")]


# ---------------------------------------------------------------------------------------------
# Freeze and thaw around a window


def quiescer(tmp_path, runner: FakeRunner, on_failure: str = "crash-consistent",
             **settings) -> quiesce.Quiescer:
    quiesce_settings = QuiesceSettings(freeze=(FREEZE, "{domain}"), thaw=(THAW, "{domain}"),
                                       on_failure=on_failure, **settings)
    job = Job(name="vms", mountpoint="/mnt/vms", volumes=(),
              xen=XenSettings(domains=AUTO, quiesce=quiesce_settings))
    return quiesce.Quiescer(runner, job, str(tmp_path), "run-1")


def commands(runner: FakeRunner) -> list[str]:
    return [" ".join(call.argv) for call in runner.calls]


def test_each_domain_is_frozen_before_the_body_and_thawed_after_it_in_its_own_process_group(tmp_path):
    runner = FakeRunner().on(FREEZE, "").on(THAW, "")
    q = quiescer(tmp_path, runner)
    with q.frozen(["vm1", "vm2"]) as consistent:
        assert commands(runner) == [f"{FREEZE} vm1", f"{FREEZE} vm2"]
        assert q.record.read().domains == ("vm1", "vm2")
        assert consistent == {"vm1": True, "vm2": True}
    assert commands(runner)[2:] == [f"{THAW} vm1", f"{THAW} vm2"]
    assert len(runner.own_group) == 4 and {c.timeout for c in runner.calls} == {30.0}
    assert q.record.read() is None and q.consistent == {"vm1": True, "vm2": True}


def test_the_record_names_a_domain_before_its_freeze_runs(tmp_path):
    seen = []
    q = None

    def freeze(argv):
        seen.append(q.record.read().domains)
        return ""
    runner = FakeRunner().on(FREEZE, freeze).on(THAW, "")
    q = quiescer(tmp_path, runner)
    with q.frozen(["vm1", "vm2"]):
        pass
    assert seen == [("vm1",), ("vm1", "vm2")]


def test_a_failed_freeze_is_thawed_at_once_and_again_after_the_window_which_goes_on_crash_consistent(
        tmp_path, caplog):
    runner = FakeRunner().on(f"{FREEZE} vm1", Timeout()).on(f"{FREEZE} vm2", "").on(THAW, "")
    q = quiescer(tmp_path, runner)
    with q.frozen(["vm1", "vm2"]) as consistent:
        assert commands(runner) == [f"{FREEZE} vm1", f"{THAW} vm1", f"{FREEZE} vm2"]
        # the timed-out freeze may still freeze vm1 on the guest's side: it stays recorded
        assert q.record.read().domains == ("vm1", "vm2")
    assert consistent == {"vm1": False, "vm2": True}
    assert commands(runner)[3:] == [f"{THAW} vm1", f"{THAW} vm2"]  # the last action on vm1 is a thaw
    assert q.record.read() is None
    assert "could not freeze domain vm1" in caplog.text and "only crash-consistent" in caplog.text


def test_a_failed_freeze_with_abort_stops_the_window_and_thaws_every_domain_tried(tmp_path):
    runner = FakeRunner().on(f"{FREEZE} vm1", "").on(f"{FREEZE} vm2", Answer(returncode=1)).on(THAW, "")
    q = quiescer(tmp_path, runner, "abort")
    body = []
    with pytest.raises(quiesce.QuiesceError, match="could not freeze domain vm2.*'abort'"), \
            q.frozen(["vm1", "vm2", "vm3"]):
        body.append("ran")
    assert not body
    assert commands(runner) == [f"{FREEZE} vm1", f"{FREEZE} vm2", f"{THAW} vm1", f"{THAW} vm2"]
    assert q.record.read() is None


def test_the_body_failing_still_thaws_every_domain_and_the_error_goes_on(tmp_path):
    runner = FakeRunner().on(FREEZE, "").on(THAW, "")
    q = quiescer(tmp_path, runner)
    with pytest.raises(CommandFailed, match="lvcreate"), q.frozen(["vm1", "vm2"]):
        raise CommandFailed(["lvcreate"], 5, "injected")
    assert commands(runner)[2:] == [f"{THAW} vm1", f"{THAW} vm2"]
    assert q.record.read() is None


def test_a_failed_thaw_fails_the_window_thaws_the_others_and_stays_recorded(tmp_path):
    runner = FakeRunner().on(FREEZE, "").on(THAW, "")
    runner.on(f"{THAW} vm1", Answer(returncode=3, stderr="ssh: timeout"))
    q = quiescer(tmp_path, runner)
    with pytest.raises(quiesce.QuiesceError, match=r"could not thaw domain\(s\) vm1: .*STILL FROZEN"), \
            q.frozen(["vm1", "vm2"]):
        pass
    assert commands(runner)[2:] == [f"{THAW} vm1", f"{THAW} vm2"]
    assert q.record.read().domains == ("vm1",)


def test_a_domain_without_commands_is_not_frozen_and_counts_as_crash_consistent(tmp_path):
    runner = FakeRunner().on("/usr/local/sbin/db-lock", "").on("/usr/local/sbin/db-unlock", "")
    from xenlvm.config.model import DomainCommands
    q = quiescer(tmp_path, runner)
    q.settings = QuiesceSettings(per_domain=(DomainCommands("db1", ("/usr/local/sbin/db-lock",),
                                                            ("/usr/local/sbin/db-unlock",)),))
    with q.frozen(["vm1", "db1"]) as consistent:
        pass
    assert consistent == {"vm1": False, "db1": True}
    assert commands(runner) == ["/usr/local/sbin/db-lock", "/usr/local/sbin/db-unlock"]


def test_leftovers_of_a_killed_run_are_thawed_and_an_unthawable_one_stays_recorded(tmp_path):
    runner = FakeRunner().on(f"{THAW} vm1", "").on(f"{THAW} vm2", Answer(returncode=1))
    q = quiescer(tmp_path, runner)
    q.record.write(quiesce.Frozen(("vm1", "vm2"), "run-0", 1000.0))
    with pytest.raises(quiesce.QuiesceError, match=r"vm2 that an earlier run froze could not be thawed"):
        quiesce.thaw_leftovers(runner, q_job(q), str(tmp_path))
    assert q.record.read() == quiesce.Frozen(("vm2",), "run-0", 1000.0)
    runner.on(f"{THAW} vm2", "")
    quiesce.thaw_leftovers(runner, q_job(q), str(tmp_path))
    assert q.record.read() is None


def q_job(q: quiesce.Quiescer) -> Job:
    return Job(name="vms", mountpoint="/mnt/vms", volumes=(),
               xen=XenSettings(domains=AUTO, quiesce=q.settings))


def test_an_unreadable_record_is_an_error_not_nothing_frozen(tmp_path):
    record = quiesce.FreezeRecord(str(tmp_path), "vms")
    (tmp_path / "vms.frozen").write_text("not json")
    with pytest.raises(quiesce.QuiesceError, match="unreadable"):
        record.read()


def test_windows_freeze_before_the_pause_and_thaw_after_the_unpause(tmp_path):
    import contextlib
    events = []

    @contextlib.contextmanager
    def cm(what, names):
        events.append(f"{what} {','.join(names)}")
        yield {} if what == "freeze" else windows.xen.PauseTiming(ms=1.0)
        events.append(f"un{what} {','.join(names)}")

    planned = [windows.Window(("vm1",), ("a",)), windows.Window(("vm2", "vm3"), ("b", "c"))]
    list(windows.run(planned, lambda target: events.append(f"lvcreate {target}"),
                     lambda names: cm("pause", names), lambda names: cm("freeze", names)))
    assert events == ["freeze vm1", "pause vm1", "lvcreate a", "unpause vm1", "unfreeze vm1",
                      "freeze vm2,vm3", "pause vm2,vm3", "lvcreate b", "lvcreate c", "unpause vm2,vm3",
                      "unfreeze vm2,vm3"]


# ---------------------------------------------------------------------------------------------
# The guard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Stop:
    def __init__(self, clock: Clock) -> None:
        self.requested = False
        self.clock = clock

    def wait(self, seconds: float) -> None:
        self.clock.now += max(seconds, 0.01)


def test_the_guard_acts_once_the_windows_deadline_is_up_and_only_on_its_runs_record(tmp_path):
    clock = Clock()
    q = quiescer(tmp_path, FakeRunner(), max_frozen=120.0)
    acted = []
    left = quiesce.Frozen(("vm1",), "run-1", 1000.0, None, 1120.0)
    q.record.write(left)

    def act(record):
        acted.append((record, clock.now))
    quiesce_guard.watch(q, act, lambda: clock.now < 1300.0, Stop(clock), clock)
    assert len(acted) == 1 and acted[0][0] == left and 1120.0 <= acted[0][1] < 1122.0
    other = quiescer(tmp_path, FakeRunner(), max_frozen=120.0)
    other.run = "run-2"  # the record is run-1's: not this guard's to act on
    clock.now, acted = 1000.0, []
    quiesce_guard.watch(other, act, lambda: clock.now < 1500.0, Stop(clock), clock)
    assert not acted and clock.now >= 1500.0


def test_the_guard_exits_when_its_run_is_gone_and_nothing_is_frozen(tmp_path):
    clock = Clock()
    acted = []
    quiesce_guard.watch(quiescer(tmp_path, FakeRunner()), acted.append, lambda: False, Stop(clock), clock)
    assert not acted and clock.now == 1000.0


def test_the_guard_resumes_then_thaws_and_clears_the_record(tmp_path):
    runner = FakeRunner().on(THAW, "")
    q = quiescer(tmp_path, runner)
    left = quiesce.Frozen(("vm1", "vm2"), "run-1", 1.0)
    q.record.write(left)
    resumed = []
    pause_record = type("P", (), {})()
    quiesce_guard.xen.resume_leftovers, real = (lambda xl, record: resumed.append(record)), \
        quiesce_guard.xen.resume_leftovers
    try:
        quiesce_guard.thaw_overdue(q, None, pause_record, left)
    finally:
        quiesce_guard.xen.resume_leftovers = real
    assert resumed == [pause_record] and commands(runner) == [f"{THAW} vm1", f"{THAW} vm2"]
    assert q.record.read() is None


def test_is_guard_proves_a_pid_by_its_command_line():
    assert not quiesce_guard.is_guard(os.getpid(), "vms")


# ---------------------------------------------------------------------------------------------
# The state file, the metrics


def test_each_domains_consistency_is_a_note_and_a_metric(tmp_path):
    report = state.RunReport()
    report.consistent.update({"vm1": True, "vm2": False})
    assert report.notes() == {"application_consistent:vm1": 1.0, "application_consistent:vm2": 0.0}
    cfg = Config(str(tmp_path / "c.yaml"), Settings(state_dir=str(tmp_path)),
                 {"vms": Job(name="vms", mountpoint="/mnt/vms", volumes=())})
    state.record_run(cfg, ["vms"], state.RunRecord("pre", True, 0, 1.0, 1.0), {"vms": report})
    metrics = state.render_metrics(cfg)
    assert 'xenlvm_domain_application_consistent{job="vms",domain="vm1"} 1' in metrics
    assert 'xenlvm_domain_application_consistent{job="vms",domain="vm2"} 0' in metrics


# ---------------------------------------------------------------------------------------------
# A command that times out is killed with its process group


def test_a_timed_out_command_in_its_own_group_is_killed_with_what_it_started(tmp_path):
    pid_file = tmp_path / "child"
    script = f"sleep 60 & echo $! > {pid_file}; wait"
    started = time.monotonic()
    with pytest.raises(CommandFailed) as caught:
        Runner().change(["/bin/sh", "-c", script], timeout=1.0, own_group=True)
    assert caught.value.timed_out and time.monotonic() - started < 10
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{child}") and "Z" not in Path(f"/proc/{child}/stat").read_text().split()[2]:
        assert time.monotonic() < deadline, "the command's child outlived its timeout"
        time.sleep(0.05)


def test_a_command_in_its_own_group_gives_its_output_and_status():
    result = Runner().change(["/bin/sh", "-c", "echo out; echo err >&2"], own_group=True)
    assert (result.stdout, result.stderr, result.returncode) == ("out\n", "err\n", 0)
    with pytest.raises(CommandFailed, match="exit status 3"):
        Runner().change(["/bin/sh", "-c", "exit 3"], own_group=True)


# ---------------------------------------------------------------------------------------------
# pre on the fake dom0 (tests/unit/xen/test_windows.py's per-domain job), and check and status


def quiesced_job(host, window: str, on_failure: str = "crash-consistent"):
    host.runner.on(FREEZE, "").on(THAW, "")
    return per_domain_job(host, window, f"{QUIESCE}        on_failure: {on_failure}\n")


def steps(host) -> list[str]:
    seen = []
    for argv in host.runner.argvs:
        if argv[0] in (FREEZE, THAW) or argv[:2] in (["xl", "pause"], ["xl", "unpause"]):
            seen.append(f"{os.path.basename(argv[0]) if argv[0] != 'xl' else argv[1]} {argv[-1]}")
        elif argv[0] == "lvcreate":
            seen.append(f"lvcreate {argv[-1]}")
    return seen


@pytest.fixture
def guard(monkeypatch):
    """The guard's start and stop, recorded instead of run (the guard has tests of its own)."""
    calls = []
    monkeypatch.setattr(quiesce_guard, "start", lambda config, job, run: calls.append(("start", job)))
    monkeypatch.setattr(quiesce_guard, "stop", lambda config, job: calls.append(("stop", job)))
    return calls


@pytest.mark.parametrize(("window", "expected"), [
    ("per-domain", ["guest-freeze vm1", "pause vm1", "lvcreate system/xenvm", "lvcreate system/vm1-disk",
                    "unpause vm1", "guest-thaw vm1", "guest-freeze vm2", "pause vm2",
                    "lvcreate system/vm2-root", "unpause vm2", "guest-thaw vm2"]),
    ("together", ["guest-freeze vm1", "guest-freeze vm2", "pause vm1", "pause vm2", "lvcreate system/xenvm",
                  "lvcreate system/vm2-root", "lvcreate system/vm1-disk", "unpause vm1", "unpause vm2",
                  "guest-thaw vm1", "guest-thaw vm2"]),
])
def test_pre_freezes_each_windows_domains_around_its_pause_under_the_guard(host, guard, window, expected):
    config, ctx = quiesced_job(host, window)
    pre.run_pre(ctx, list(config.jobs.values()))
    assert steps(host) == expected  # vm3 was paused already: neither paused nor frozen
    assert guard == [("start", "xenvm"), ("stop", "xenvm")]
    assert ctx.reports["xenvm"].consistent == {"vm1": True, "vm2": True}


def test_pre_with_abort_undoes_everything_when_a_freeze_fails(host, guard):
    config, ctx = quiesced_job(host, "per-domain", "abort")
    host.runner.on(f"{FREEZE} vm2", Answer(returncode=1, stderr="ssh: connect: refused"))
    with pytest.raises(quiesce.QuiesceError, match="could not freeze domain vm2"):
        pre.run_pre(ctx, list(config.jobs.values()))
    assert steps(host)[-2:] == ["guest-freeze vm2", "guest-thaw vm2"]
    assert "pause vm2" not in steps(host)
    removed = sorted(a[-1] for a in host.runner.argvs_of("lvremove"))
    assert removed == ["system/vm1disksnap", "system/xenvmsnap"]


def test_post_thaws_what_a_killed_pre_left_frozen(host):
    config, ctx = quiesced_job(host, "per-domain")
    quiesce.FreezeRecord(str(host.root / "run"), "xenvm").write(quiesce.Frozen(("vm2",), "run-0", 1.0))
    post.run_post(ctx, list(config.jobs.values()))
    assert steps(host) == ["guest-thaw vm2"]
    assert quiesce.FreezeRecord(str(host.root / "run"), "xenvm").read() is None


def test_check_tells_unsafe_programs_and_a_leftover(tmp_path):
    script = tmp_path / "guest-freeze"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o775)
    assert "writable by its group or by everyone (mode 775)" in quiesce_check.program_problem(str(script))
    script.chmod(0o755)
    assert quiesce_check.program_problem(str(script)) is None
    assert "No such file" in quiesce_check.program_problem(str(tmp_path / "missing"))
    settings = QuiesceSettings(freeze=(str(script), "{domain}"), thaw=(str(tmp_path / "missing"),))
    job = Job(name="vms", mountpoint="/mnt/vms", volumes=(),
              xen=XenSettings(domains=AUTO, quiesce=settings))
    assert [f.level for f in quiesce_check.check_commands(job)] == ["fail"]
    cfg = Config(str(tmp_path / "c.yaml"), Settings(lock_dir=str(tmp_path)), {"vms": job})
    quiesce.FreezeRecord(str(tmp_path), "vms").write(quiesce.Frozen(("vm1",), "run-0", 1.0))
    [leftover] = quiesce_check.check_leftover(cfg, job)
    assert leftover.level == "fail" and "left vm1 FROZEN" in leftover.message


def test_status_tells_each_domains_consistency_and_a_guest_left_frozen():
    run = {"notes": {"application_consistent:vm1": 1.0, "application_consistent:vm2": 0.0}}
    assert status._consistency(run) == ["    application-consistent: vm1; crash-consistent only: vm2"]
    report = {"job": "vms", "mountpoint": "/mnt/vms", "volumes": [], "problems": [], "last_runs": {},
              "domains": {"paused": [], "missing": [], "left_paused_by_a_killed_run": [],
                          "left_frozen_by_a_killed_run": ["vm1"]}}
    assert "  LEFT FROZEN by a killed run: vm1 - run xenlvm cleanup now (every write in them hangs)" in \
        status.describe(report)


def test_auto_leaves_an_excluded_domain_out_unless_it_shares_a_volume_that_is_backed_up(caplog):
    from xenlvm.phases import kinds
    from xenlvm.xen import domains as xen
    job = Job(name="vms", mountpoint="/mnt/vms", volumes=(), xen=XenSettings(domains=AUTO),
              vmdisks=VmDiskSettings(domains=AUTO, size=parse_size("16M"), exclude=("vm3", "vm4")))
    view = xl_for({"vm2": [disk("/dev/system/vm2-disk", "xvda")],
                   "vm3": [disk("/dev/system/vm3-disk", "xvda")],
                   "vm4": [disk("/srv/xenvm/vm4/disk.img", "xvda")]}).view()
    chosen = xen.select_domains(job, view, ["/srv/xenvm"], disk_domains=["vm2"],
                                excluded=kinds.excluded_domains(job))
    assert [d.name for d in chosen] == ["vm2", "vm4"]  # vm4's file lies on the backed-up volume
    assert "domain vm4 is excluded (vmdisks.exclude) but has a disk on a volume" in caplog.text
    assert "vm3" not in caplog.text


# ---------------------------------------------------------------------------------------------
# Review fixes: a record of another run is never replaced


def test_check_quiesce_refuses_while_a_killed_run_left_a_guest_frozen(tmp_path, guard):
    runner = FakeRunner().on(FREEZE, "").on(THAW, "")
    q = quiescer(tmp_path, runner)
    cfg = Config(str(tmp_path / "c.yaml"), Settings(lock_dir=str(tmp_path)), {"vms": q_job(q)})
    q.record.write(quiesce.Frozen(("vm1",), "run-0", 1.0))
    [finding] = quiesce_check.try_freeze(cfg, runner, q_job(q), ["vm2"])
    assert finding.level == "fail" and "run 'xenlvm cleanup' first" in finding.message
    assert not runner.calls and not guard  # the old guard is not stopped, nothing frozen
    assert q.record.read() == quiesce.Frozen(("vm1",), "run-0", 1.0)


def test_a_window_never_replaces_the_record_of_another_run(tmp_path):
    runner = FakeRunner().on(FREEZE, "").on(THAW, "")
    q = quiescer(tmp_path, runner)
    q.record.write(quiesce.Frozen(("vm1",), "run-0", 1.0))
    with pytest.raises(quiesce.QuiesceError, match="run-0 may have left vm1 FROZEN"), q.frozen(["vm2"]):
        pass
    assert not runner.calls and q.record.read() == quiesce.Frozen(("vm1",), "run-0", 1.0)


# ---------------------------------------------------------------------------------------------
# Review fixes: a freeze that outlives its run or its timeout


def test_the_record_names_the_running_freezes_process_group_with_its_start_time(tmp_path):
    script = tmp_path / "freeze"
    script.write_text(f"#!/bin/sh\necho $$ > {tmp_path}/pid\nfor i in $(seq 100); do\n"  # up to 5 s
                      f"  grep -q '\"freezing\": \\[' {tmp_path}/vms.frozen && break; sleep 0.05\ndone\n"
                      f"cat {tmp_path}/vms.frozen > {tmp_path}/seen\n")
    script.chmod(0o755)
    q = quiescer(tmp_path, Runner())
    q.settings = QuiesceSettings(freeze=(str(script), "{domain}"), thaw=("/bin/true",))
    with q.frozen(["vm1"]):
        assert q.record.read().freezing is None  # the freeze is over
    import json
    seen = json.loads((tmp_path / "seen").read_text())
    pid = int((tmp_path / "pid").read_text())
    assert seen["domains"] == ["vm1"] and seen["freezing"][0] == pid and seen["freezing"][1] > 0


def start_group() -> tuple[object, tuple[int, int]]:
    import subprocess
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    return proc, (proc.pid, processes.start_time(proc.pid))


def test_who_thaws_a_killed_runs_guests_first_kills_its_proven_freeze(tmp_path):
    runner = FakeRunner().on(THAW, "")
    q = quiescer(tmp_path, runner)
    proc, group = start_group()
    other, (other_pid, other_start) = start_group()
    try:
        q.record.write(quiesce.Frozen(("vm1",), "run-0", 1.0, group))
        quiesce.thaw_leftovers(runner, q_job(q), str(tmp_path))
        assert proc.wait(timeout=5) == -9
        q.record.write(quiesce.Frozen(("vm1",), "run-0", 1.0, (other_pid, other_start + 1)))
        quiesce.thaw_leftovers(runner, q_job(q), str(tmp_path))  # not proven: not that process
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_the_guard_kills_the_hanging_freeze_before_it_thaws(tmp_path, monkeypatch):
    runner = FakeRunner().on(THAW, "")
    q = quiescer(tmp_path, runner)
    proc, group = start_group()
    left = quiesce.Frozen(("vm1",), "run-1", 1.0, group)
    q.record.write(left)
    monkeypatch.setattr(quiesce_guard.xen, "resume_leftovers", lambda xl, record: None)
    quiesce_guard.thaw_overdue(q, None, None, left)
    assert proc.wait(timeout=5) == -9 and commands(runner) == [f"{THAW} vm1"]


def test_a_timed_out_command_keeps_what_it_wrote_on_stderr():
    with pytest.raises(CommandFailed) as caught:
        Runner().change(["/bin/sh", "-c", "echo partial >&2; sleep 60"], timeout=1.0, own_group=True)
    assert caught.value.timed_out and "partial" in caught.value.stderr


# ---------------------------------------------------------------------------------------------
# Review fixes: the guard's deadline is per window, it keeps guarding, and pre knows it acted


def test_each_windows_deadline_leaves_time_for_its_freezes_on_the_boot_clock(tmp_path):
    seen = []
    q = None

    def freeze(argv):
        seen.append(q.record.read())
        return ""
    runner = FakeRunner().on(FREEZE, freeze).on(THAW, "")
    q = quiescer(tmp_path, runner, timeout=30.0, max_frozen=61.0)
    now = time.clock_gettime(time.CLOCK_BOOTTIME)
    with q.frozen(["vm1", "vm2", "vm3"]):
        after = q.record.read()
    assert [round(r.deadline - now) for r in seen] == [90 + 61, 60 + 61, 30 + 61]
    assert round(after.deadline - now) == 61 and abs(after.since - now) < 5  # boot clock, not Unix time


def test_the_guard_keeps_guarding_the_later_windows_after_it_acted(tmp_path):
    clock = Clock()
    q = quiescer(tmp_path, FakeRunner())
    first = quiesce.Frozen(("vm1",), "run-1", 1000.0, None, 1010.0)
    second = quiesce.Frozen(("vm2",), "run-1", 1050.0, None, 1060.0)
    q.record.write(first)
    acted = []

    def act(record):
        acted.append(record)
        q.record.write(second) if record == first else q.record.clear()
    quiesce_guard.watch(q, act, lambda: clock.now < 1100.0, Stop(clock), clock)
    assert acted == [first, second]


def test_a_window_the_guard_thawed_in_its_middle_is_only_crash_consistent(tmp_path, caplog, monkeypatch):
    runner = FakeRunner().on(FREEZE, "").on(THAW, "")
    q = quiescer(tmp_path, runner)
    monkeypatch.setattr(quiesce_guard.xen, "resume_leftovers", lambda xl, record: None)
    with q.frozen(["vm1", "vm2"]):
        quiesce_guard.thaw_overdue(quiescer(tmp_path, runner), None, None, q.record.read())
    assert q.consistent == {"vm1": False, "vm2": False}
    assert "the quiesce guard resumed and thawed vm1, vm2 in the middle of their window" in caplog.text
    assert not (tmp_path / "vms.quiesce-guard.acted").exists()


def test_the_guards_thaw_waits_for_pres_and_acts_only_on_the_record_it_saw(tmp_path, monkeypatch):
    import threading
    runner = FakeRunner().on(THAW, "")
    q = quiescer(tmp_path, runner)
    left = quiesce.Frozen(("vm1",), "run-1", 1.0, None, 2.0)
    q.record.write(left)
    monkeypatch.setattr(quiesce_guard.xen, "resume_leftovers", lambda xl, record: None)
    with quiesce.thaw_lock(q.record):  # pre, between two freezes of its window
        guard_thread = threading.Thread(target=quiesce_guard.thaw_overdue, args=(q, None, None, left))
        guard_thread.start()
        time.sleep(0.3)
        assert not runner.calls  # the guard waits
        q.record.write(quiesce.Frozen(("vm1", "vm2"), "run-1", 1.0, None, 100.0))  # pre goes on
    guard_thread.join(timeout=10)
    assert not runner.calls and not (tmp_path / "vms.quiesce-guard.acted").exists()


# ---------------------------------------------------------------------------------------------
# Review fixes: a signal during or just before the thaws


@pytest.fixture
def signals(monkeypatch):
    from xenlvm.host import interrupts
    monkeypatch.setattr(interrupts, "_state", {"depth": 0, "pending": None, "seen": False})
    return interrupts


def test_a_signal_during_the_thaws_is_raised_after_they_are_recorded(tmp_path, signals):
    import signal

    def thaw_under_signal(argv):
        signals._handle(signal.SIGTERM, None)  # arrives while the thaw runs: held back
        return ""
    runner = FakeRunner().on(FREEZE, "").on(f"{THAW} vm1", thaw_under_signal).on(f"{THAW} vm2", "")
    q = quiescer(tmp_path, runner)
    with pytest.raises(signals.Interrupted), q.frozen(["vm1", "vm2"]):
        pass
    assert commands(runner)[2:] == [f"{THAW} vm1", f"{THAW} vm2"]
    assert q.record.read() is None  # both thawed: no stale record for the next run


def test_a_signal_just_before_the_hold_of_the_thaws_does_not_skip_them(tmp_path, signals, monkeypatch):
    import contextlib
    import signal
    real = signals.deferred
    first = []

    @contextlib.contextmanager
    def deferred():
        if not first:  # the signal lands in the instant before the hold begins
            first.append(True)
            signals._handle(signal.SIGINT, None)
        with real():
            yield
    runner = FakeRunner().on(FREEZE, "").on(THAW, "")
    q = quiescer(tmp_path, runner)
    with pytest.raises(signals.Interrupted), q.frozen(["vm1", "vm2"]):
        monkeypatch.setattr(signals, "deferred", deferred)  # the next hold is the thaws'
    assert commands(runner)[2:] == [f"{THAW} vm1", f"{THAW} vm2"] and q.record.read() is None


# ---------------------------------------------------------------------------------------------
# Review fixes: the guard's pidfd, unsafe domain names, exclude typos, is_guard


def test_the_guard_is_started_with_a_pidfd_of_pre_already_open(tmp_path):
    fake_guard = tmp_path / "python"  # stands in for the guard: says which process its fd is
    fake_guard.write_text(f"#!/bin/sh\ngrep ^Pid: /proc/$$/fdinfo/${{10}} > {tmp_path}/parent\n"
                          f"echo $$ > {tmp_path}/vms.quiesce-guard.pid\nexec sleep 30\n")
    fake_guard.chmod(0o755)
    cfg = Config(str(tmp_path / "c.yaml"), Settings(lock_dir=str(tmp_path)), {})
    pid = quiesce_guard.start(cfg, "vms", "run-1", python=str(fake_guard))
    try:
        assert (tmp_path / "parent").read_text().split() == ["Pid:", str(os.getpid())]
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_the_guard_sees_its_parent_end_through_the_pidfd():
    import subprocess
    child = subprocess.Popen(["sleep", "30"])
    alive = quiesce_guard.parent_alive(os.pidfd_open(child.pid))
    assert alive()
    child.kill()
    child.wait()
    assert not alive()


def test_a_domain_name_that_would_become_an_option_is_never_frozen(tmp_path, caplog):
    runner = FakeRunner().on(FREEZE, "").on(THAW, "")
    q = quiescer(tmp_path, runner)
    with q.frozen(["-oProxyCommand=touch /tmp/x", "vm2"]) as consistent:
        pass
    assert commands(runner) == [f"{FREEZE} vm2", f"{THAW} vm2"]
    assert consistent == {"-oProxyCommand=touch /tmp/x": False, "vm2": True}
    assert "'-oProxyCommand=touch /tmp/x': its name is not a Xen domain name" in caplog.text
    aborting = quiescer(tmp_path, FakeRunner(), "abort")
    with pytest.raises(quiesce.QuiesceError, match="not a Xen domain name.*'abort'"), \
            aborting.frozen(["vm1", "-x"]):
        pass
    assert not aborting.runner.calls


def test_an_exclude_that_names_no_domain_is_warned_about_in_check():
    from xenlvm.vmdisks import kind as vmdisk_kind
    from xenlvm.vmdisks import target as vmdisk_target
    job = vmdisk_job(("vm3", "vm9", "vm8/xvdb", "vm2/xvdc"))
    view = xl_for({"vm2": [disk("/dev/system/vm2-disk", "xvda")],
                   "vm3": [disk("/dev/system/vm3-disk", "xvda")]}).view()
    assert vmdisk_target.unmatched_excludes(job, view) == ["vm9", "vm8/xvdb"]
    findings, _ = vmdisk_kind.check_disks(job, view, VGS, "/usr/sbin:/usr/bin:/sbin:/bin")
    assert [f.message for f in findings if f.level == "warn"] == [
        f"vmdisks.exclude: {item!r} names no domain xl knows (a typo?): nothing is left out for it"
        for item in ("vm9", "vm8/xvdb")]


def test_is_guard_knows_a_guard_of_the_job_by_its_command_line():
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", quiesce_guard.MODULE,
                             "--job", "vms", "--run", "run-1"])
    try:
        deadline = time.monotonic() + 10
        while not quiesce_guard.is_guard(proc.pid, "vms"):  # its command line, once exec'd
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert not quiesce_guard.is_guard(proc.pid, "other")
    finally:
        proc.kill()
        proc.wait()


def test_the_guards_note_for_a_run_that_is_over_is_removed_by_the_next_run(tmp_path):
    q = quiescer(tmp_path, FakeRunner())
    quiesce_record.note_guard_acted(q.record, quiesce.Frozen(("vm1",), "run-0", 1.0))
    quiesce.thaw_leftovers(q.runner, q_job(q), str(tmp_path))
    assert not (tmp_path / "vms.quiesce-guard.acted").exists()
