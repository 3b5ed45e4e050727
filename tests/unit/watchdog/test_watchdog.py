"""The snapshot watchdog: how far it grows a snapshot (from lvs JSON recorded on real LVM), what
it does as a snapshot fills, overflows or vanishes, and that stop() signals only its own monitor."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.unit.fakes import FakeRunner
from tests.unit.fakes import recorded as recorded_file
from xenlvm.config.load import parse_config
from xenlvm.config.model import WatchdogSettings, parse_size
from xenlvm.errors import CommandFailed, XenlvmError
from xenlvm.host.lvm import Lvm, parse_volume_group
from xenlvm.watchdog import process as watchdog_process
from xenlvm.watchdog import watch as watchdog
from xenlvm.watchdog.sizing import limit_reason, next_size
from xenlvm.watchdog.watch import Monitor, Summary, Watched

DATA = Path(__file__).resolve().parents[1] / "data"
MiB = 1 << 20
ORIGIN_SIZE = 320 * MiB  # system/xenvm in the recordings


def recorded(name: str, **snapshot_fields: str) -> str:
    """The recorded lvs report, with some fields of the snapshot's row changed."""
    report = json.loads((DATA / f"lvs_{name}.json").read_text(encoding="utf-8"))
    for row in report["report"][0]["lv"]:
        if row["lv_name"] == "vmbackup":
            row.update(snapshot_fields)
    return json.dumps(report)


def mounted(fill: float, *, size: int = 64 * MiB, free: int | None = None):
    """The VG and its snapshot (64 MiB, 4 MiB extents, 1.6 GiB free) at the given fill."""
    changes = {"data_percent": f"{fill:.2f}", "lv_size": str(size)}
    if free is not None:
        changes["vg_free"] = str(free)
    vg = parse_volume_group(recorded("snapshot_mounted", **changes), "system")
    return vg.get("vmbackup"), vg


def settings(**changes) -> WatchdogSettings:
    if "max_size" in changes:
        changes["max_size"] = parse_size(changes["max_size"])
    return dataclasses.replace(WatchdogSettings(threshold=50, step=100, max_size=parse_size("100%ORIGIN")),
                               **changes)


# ---------------------------------------------------------------------------------------------
# How far to grow


def test_below_the_threshold_the_snapshot_is_left_alone():
    lv, vg = mounted(49.9)
    assert next_size(lv, vg, settings(), ORIGIN_SIZE) is None


def test_at_the_threshold_the_snapshot_grows_by_step():
    lv, vg = mounted(50.0)
    assert next_size(lv, vg, settings(step=100), ORIGIN_SIZE) == 128 * MiB
    assert next_size(lv, vg, settings(step=50), ORIGIN_SIZE) == 96 * MiB


def test_the_new_size_is_rounded_up_to_whole_extents():
    lv, vg = mounted(80.0)
    assert vg.extent_size == 4 * MiB
    # 64 MiB + 30% = 83.2 MiB, which LVM could only give as 21 extents of 4 MiB.
    assert next_size(lv, vg, settings(step=30), ORIGIN_SIZE) == 84 * MiB


def test_growth_stops_at_max_size():
    lv, vg = mounted(90.0)
    assert next_size(lv, vg, settings(max_size="30%ORIGIN"), ORIGIN_SIZE) == 96 * MiB  # not 128
    assert next_size(lv, vg, settings(max_size="100M"), ORIGIN_SIZE) == 100 * MiB


def test_max_size_that_is_not_whole_extents_is_rounded_down_never_exceeded():
    lv, vg = mounted(90.0)
    assert next_size(lv, vg, settings(max_size="99M"), ORIGIN_SIZE) == 96 * MiB


def test_growth_stops_at_the_vg_free_space():
    lv, vg = mounted(90.0, free=8 * MiB)
    assert next_size(lv, vg, settings(), ORIGIN_SIZE) == 72 * MiB


def test_a_snapshot_at_max_size_cannot_grow_and_the_reason_says_so():
    lv, vg = mounted(90.0, size=96 * MiB)
    limits = settings(max_size="30%ORIGIN")
    assert next_size(lv, vg, limits, ORIGIN_SIZE) is None
    assert limit_reason(lv, vg, limits, ORIGIN_SIZE).startswith(
        "it has reached the watchdog's max_size 30%ORIGIN (96.0 MiB)")


def test_a_full_vg_leaves_no_room_and_the_reason_says_so():
    lv, vg = mounted(90.0, free=0)
    assert next_size(lv, vg, settings(), ORIGIN_SIZE) is None
    assert limit_reason(lv, vg, settings(), ORIGIN_SIZE).startswith("VG system has no more free space")


def test_less_than_one_extent_of_room_is_no_room():
    lv, vg = mounted(90.0, free=2 * MiB)
    assert next_size(lv, vg, settings(), ORIGIN_SIZE) is None


# ---------------------------------------------------------------------------------------------
# The monitor over successive looks (lvs answers recorded on real LVM, lvextend recorded)


def lvs_answers(*reports: str | CommandFailed, extend: str | CommandFailed = "") -> FakeRunner:
    """The host as the monitor sees it: each look's lvs report in turn, lvextend's answer."""
    return FakeRunner().on("lvs", *reports).on("lvextend", extend).on("vgs", recorded_file("vgs_names.json"))


def monitor_over(tmp_path: Path, runner: FakeRunner, limits: WatchdogSettings | None = None) -> Monitor:
    return Monitor("xenvm", [Watched("system", "vmbackup", ORIGIN_SIZE)], limits or settings(), Lvm(runner),
                   str(tmp_path / "xenvm.watchdog.json"))


def written_summary(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "xenvm.watchdog.json").read_text())


def test_monitor_extends_a_filling_snapshot_and_records_it(tmp_path):
    runner = lvs_answers(recorded("snapshot_mounted", data_percent="20.00"),
                        recorded("snapshot_mounted", data_percent="61.50"),
                        recorded("snapshot_mounted", data_percent="31.00", lv_size=str(128 * MiB)))
    monitor = monitor_over(tmp_path, runner)
    for _ in range(3):
        monitor.look()

    assert runner.argvs_of("lvextend") == [["lvextend", "--size", f"{128 * MiB}b", "system/vmbackup"]]
    summary = monitor.summary()
    assert summary.max_fill == {"system/vmbackup": 61.5}
    assert [(e["lv"], e["fill"], e["from"], e["to"]) for e in summary.extensions] == [
        ("system/vmbackup", 61.5, 64 * MiB, 128 * MiB)]
    assert summary.problems == []
    assert written_summary(tmp_path)["extensions"] == summary.extensions  # written as it happened


def test_monitor_that_cannot_grow_a_snapshot_says_why_once(tmp_path):
    full_vg = recorded("snapshot_mounted", data_percent="75.00", vg_free="0")
    runner = lvs_answers(full_vg, full_vg)
    monitor = monitor_over(tmp_path, runner)
    monitor.look()
    monitor.look()

    assert runner.argvs_of("lvextend") == []
    assert monitor.summary().problems == [
        "cannot extend system/vmbackup at 75.0% full: VG system has no more free space; free space in "
        "the VG or give the snapshot a larger size"]
    assert monitor.watching  # still watched: space may come back


def test_monitor_grows_a_snapshot_as_far_as_the_vg_allows_and_says_it_is_at_the_limit(tmp_path):
    runner = lvs_answers(recorded("snapshot_mounted", data_percent="60.00", vg_free=str(8 * MiB)),
                        recorded("snapshot_mounted", data_percent="70.00", vg_free="0",
                                 lv_size=str(72 * MiB)))
    monitor = monitor_over(tmp_path, runner)
    monitor.look()
    monitor.look()

    assert runner.argvs_of("lvextend") == [["lvextend", "--size", f"{72 * MiB}b", "system/vmbackup"]]
    assert monitor.summary().problems == [
        "system/vmbackup could only be extended to 72.0 MiB instead of 128.0 MiB: VG system has no more "
        "free space; free space in the VG or give the snapshot a larger size"]


@pytest.mark.parametrize(("io_errors", "problem"), [
    (False, "system/vmbackup overflowed at 64.0 MiB and became invalid"),
    (True, "system/vmbackup became invalid because of I/O errors on its copy-on-write device"),
])
def test_monitor_records_an_invalid_snapshot_with_its_cause_and_stops_watching(tmp_path, monkeypatch,
                                                                                 io_errors, problem):
    # lvs shows an overflow and an I/O invalidation alike; the copy-on-write header tells them apart
    monkeypatch.setattr(watchdog, "invalidated_by_io_errors", lambda lv: io_errors)
    runner = lvs_answers((DATA / "lvs_snapshot_overflowed.json").read_text())
    monitor = monitor_over(tmp_path, runner)
    monitor.look()

    assert not monitor.watching
    summary = monitor.summary()
    assert summary.max_fill == {"system/vmbackup": 100.0}
    assert summary.problems[0].startswith(problem), summary.problems
    assert runner.argvs_of("lvextend") == []


def test_monitor_stops_watching_a_snapshot_that_is_gone(tmp_path):
    report = json.loads(recorded("snapshot_mounted"))
    report["report"][0]["lv"] = [r for r in report["report"][0]["lv"] if r["lv_name"] != "vmbackup"]
    monitor = monitor_over(tmp_path, lvs_answers(json.dumps(report)))
    monitor.look()

    assert not monitor.watching
    assert monitor.summary().problems == ["system/vmbackup was removed while the watchdog watched it"]


def test_monitor_never_extends_an_lv_without_the_jobs_tags(tmp_path):
    runner = lvs_answers(recorded("snapshot_mounted", data_percent="90.00", lv_tags=""))
    monitor = monitor_over(tmp_path, runner)
    monitor.look()

    assert runner.argvs_of("lvextend") == []
    assert not monitor.watching
    assert "replaced by another LV" in monitor.summary().problems[0]


def test_monitor_never_extends_a_snapshot_recreated_under_the_same_name(tmp_path):
    runner = lvs_answers(recorded("snapshot_mounted", data_percent="10.00"),
                        recorded("snapshot_mounted", data_percent="90.00",
                                 lv_tags="xenlvm,xenlvm_job_xenvm,xenlvm_run_20261130T213500_4711",
                                 lv_time="2026-11-30 21:35:00 +0000"))
    monitor = monitor_over(tmp_path, runner)
    monitor.look()
    monitor.look()

    assert runner.argvs_of("lvextend") == []
    assert not monitor.watching


def test_a_failed_lvextend_is_a_problem_and_watching_goes_on(tmp_path):
    error = CommandFailed(["lvextend"], 5, "Insufficient free space: 16 extents needed, but only 2 available")
    runner = lvs_answers(recorded("snapshot_mounted", data_percent="90.00"), extend=error)
    monitor = monitor_over(tmp_path, runner)
    monitor.look()

    assert monitor.watching
    assert "Insufficient free space" in monitor.summary().problems[0]


def test_a_failing_lvs_is_one_problem_and_watching_goes_on(tmp_path):
    error = CommandFailed(["lvs"], 5, "Volume group system is locked")
    runner = lvs_answers(error, error, recorded("snapshot_mounted", data_percent="10.00"))
    monitor = monitor_over(tmp_path, runner)
    for _ in range(3):
        monitor.look()

    assert monitor.watching
    assert monitor.summary().max_fill == {"system/vmbackup": 10.0}
    assert len(monitor.summary().problems) == 1
    assert "could not always look at VG system" in monitor.summary().problems[0]


# ---------------------------------------------------------------------------------------------
# start and stop


def config_in(tmp_path: Path, bin_dir: Path | None = None):
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(f"""\
        settings:
          lock_dir: {tmp_path / 'run'}
          log_file: {tmp_path / 'xenlvm.log'}
          path: {bin_dir or '/usr/bin:/bin'}
        jobs:
          xenvm:
            volume: system/xenvm
            snapshot: vmbackup
            size: 64M
            mountpoint: /mnt/vmbackup
        """))
    path.chmod(0o600)
    return parse_config(path.read_text(), str(path))


@pytest.fixture
def stand_in():
    """Start a harmless process with the given argv; kill it afterwards."""
    started: list[subprocess.Popen] = []

    def start(*argv: str) -> subprocess.Popen:
        started.append(subprocess.Popen(argv))
        time.sleep(0.3)  # until exec has replaced the command line
        return started[-1]

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def write_pid_file(config, pid: int) -> None:
    paths = watchdog.files(config.settings.lock_dir, "xenvm")
    os.makedirs(config.settings.lock_dir, exist_ok=True)
    Path(paths.pid).write_text(f"{pid}\n")


def test_stop_never_signals_a_pid_that_is_no_longer_the_watchdog(tmp_path, stand_in):
    config = config_in(tmp_path)
    sleeper = stand_in("sleep", "60")
    write_pid_file(config, sleeper.pid)

    assert watchdog_process.stop(config, "xenvm", timeout=1) is None
    assert sleeper.poll() is None  # untouched
    assert not os.path.exists(watchdog.files(config.settings.lock_dir, "xenvm").pid)


def test_stop_never_signals_the_watchdog_of_another_job(tmp_path, stand_in):
    config = config_in(tmp_path)
    other = stand_in(sys.executable, "-c", "import time; time.sleep(60)", "-m", "xenlvm.watchdog",
                     "--job", "other")
    write_pid_file(config, other.pid)

    assert watchdog_process.stop(config, "xenvm", timeout=1) is None
    assert other.poll() is None


def test_stop_terminates_the_jobs_watchdog_and_is_idempotent(tmp_path, stand_in):
    config = config_in(tmp_path)
    ours = stand_in(sys.executable, "-c", "import time; time.sleep(60)", "-m", "xenlvm.watchdog",
                    "--job", "xenvm")
    write_pid_file(config, ours.pid)

    summary = watchdog_process.stop(config, "xenvm", timeout=5)
    assert ours.wait(timeout=5) == -signal.SIGTERM
    assert summary == Summary(problems=[
        f"the watchdog (pid {ours.pid}) was stopped before it wrote a summary"])
    assert watchdog_process.stop(config, "xenvm") is None


def test_start_with_nothing_to_watch_writes_nothing(tmp_path):
    config = config_in(tmp_path)
    assert watchdog_process.start(config, "xenvm", [], settings()) is None
    assert not os.path.exists(config.settings.lock_dir)


def test_start_fails_clearly_when_the_monitor_cannot_run(tmp_path):
    config = dataclasses.replace(config_in(tmp_path), path=str(tmp_path / "missing.yaml"))
    with pytest.raises(XenlvmError, match="the snapshot watchdog did not start"):
        watchdog_process.start(config, "xenvm", [Watched("system", "vmbackup", ORIGIN_SIZE)], settings())
    assert os.listdir(config.settings.lock_dir) == []


def test_start_and_stop_a_real_monitor_against_stand_in_lvm_tools(tmp_path):
    """The whole process life on this machine: stand-in lvs/lvextend (no real LVM here)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    report = tmp_path / "lvs.json"
    report.write_text(recorded("snapshot_mounted", data_percent="60.00"))
    calls = tmp_path / "lvextend.calls"
    (bin_dir / "lvs").write_text(f"#!/bin/sh\nexec /bin/cat {report}\n")
    (bin_dir / "lvextend").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n'
                                      f"exec /bin/sed -i -e 's/\"67108864\"/\"134217728\"/' "
                                      f"-e 's/\"60.00\"/\"30.00\"/' {report}\n")
    for tool in ("lvs", "lvextend"):
        (bin_dir / tool).chmod(0o755)
    config = config_in(tmp_path, bin_dir)

    pid = watchdog_process.start(config, "xenvm", [Watched("system", "vmbackup", ORIGIN_SIZE)],
                         settings(interval=0.2))
    assert pid is not None and watchdog_process.is_watchdog(pid, "xenvm")
    os.kill(pid, signal.SIGINT)  # meant for the pre that started it
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + 20
    while not calls.exists() and time.monotonic() < deadline:
        time.sleep(0.1)

    assert watchdog_process.is_watchdog(pid, "xenvm")
    summary = watchdog_process.stop(config, "xenvm")
    assert calls.read_text() == f"--size {128 * MiB}b system/vmbackup\n"
    assert summary is not None and summary.problems == []
    assert summary.max_fill == {"system/vmbackup": 60.0}
    assert [(e["from"], e["to"]) for e in summary.extensions] == [(64 * MiB, 128 * MiB)]
    assert not os.path.exists(f"/proc/{pid}") or not watchdog_process.is_watchdog(pid, "xenvm")
    assert os.listdir(config.settings.lock_dir) == []
    log = (tmp_path / "xenlvm.log").read_text()
    assert "job xenvm: extended the snapshot system/vmbackup from 64.0 MiB to 128.0 MiB" in log
    assert "the watchdog was asked to stop; exiting" in log  # SIGTERM: a clean exit
