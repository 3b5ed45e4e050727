"""xenlvm.host.processes: pid files, /proc, and ending a process only once it is proven, on
real processes of this machine (children of the test)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from xenlvm.host import processes

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)", "--job", "vms"]


def _wait_until(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize(("text", "pid"), [("0\n", None), ("1\n", None), ("2\n", 2), ("4242", 4242),
                                           ("-5", None), ("", None), ("12 13", None), ("x", None)])
def test_a_pid_file_names_a_process_xenlvm_started_never_pid_0_or_init(tmp_path, text, pid):
    # kill(0) signals the caller's whole process group, and pid 1 is init: xenlvm started neither
    (tmp_path / "job.pid").write_text(text)
    assert processes.read_pid(str(tmp_path / "job.pid")) == pid
    assert processes.read_pid(str(tmp_path / "absent.pid")) is None


@pytest.mark.parametrize("pid", [-1, 0, 1])
def test_the_smallest_pids_are_never_proven_nor_signalled(pid):
    asked = []
    assert not processes.terminate_proven(pid, lambda checked: asked.append(checked) or True, "init", 0.1)
    assert asked == []


def test_a_running_process_shows_its_command_line_and_start_time():
    proc = subprocess.Popen(SLEEPER)
    try:
        _wait_until(lambda: processes.command_line(proc.pid)[1:2] == ["-c"])
        assert processes.command_line(proc.pid)[:len(SLEEPER)] == SLEEPER
        assert not processes.has_exited(proc.pid)
        started = processes.start_time(proc.pid)
        assert started is not None and started >= processes.start_time(os.getpid())
    finally:
        proc.kill()
        proc.wait()


def test_a_zombie_has_exited_has_no_start_time_and_is_not_signalled():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        _wait_until(lambda: processes.has_exited(proc.pid))  # not collected yet: a zombie
        assert os.path.exists(f"/proc/{proc.pid}")
        assert processes.start_time(proc.pid) is None
        assert not processes.terminate_proven(proc.pid, lambda pid: True, "a zombie", 0.1)
    finally:
        proc.wait()
    assert processes.has_exited(proc.pid) and processes.command_line(proc.pid) == []


def test_a_pid_reused_by_a_process_with_another_command_line_is_left_alone():
    # The pid file names a pid that now belongs to something else: the proof (its command line)
    # fails, so it is never signalled.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "--job", "other"])
    try:
        _wait_until(lambda: processes.command_line(proc.pid)[1:2] == ["-c"])
        is_ours = lambda pid: processes.command_line(pid)[-2:] == ["--job", "vms"]  # noqa: E731
        assert not processes.terminate_proven(proc.pid, is_ours, "the watchdog of job vms", 0.5)
        time.sleep(0.1)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_a_proven_process_is_ended():
    proc = subprocess.Popen(SLEEPER)
    try:
        _wait_until(lambda: processes.command_line(proc.pid)[-2:] == ["--job", "vms"])
        assert processes.terminate_proven(proc.pid, lambda pid: processes.command_line(pid)[-1] == "vms",
                                          "the watchdog of job vms", 5.0)
        assert proc.wait(timeout=5) < 0  # by a signal
    finally:
        proc.kill()
        proc.wait()
