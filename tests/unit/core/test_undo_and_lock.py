"""Undo registered as you go, and one run per job at a time."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from xenlvm.core.undo import UndoStack, taken_down
from xenlvm.errors import CleanupFailed, LockTimeout, XenlvmError
from xenlvm.host.lock import JobLock

# ---------------------------------------------------------------------------------------------
# UndoStack


def test_unwind_undoes_in_reverse_order():
    done: list[str] = []
    undo = UndoStack()
    undo.push("remove snapshot", lambda: done.append("lvremove"))
    undo.push("unmount", lambda: done.append("umount"))

    assert undo.unwind() == []
    assert done == ["umount", "lvremove"]


def test_unwind_continues_past_a_failing_step_and_reports_it():
    done: list[str] = []

    def busy() -> None:
        raise OSError("target is busy")

    undo = UndoStack()
    undo.push("remove snapshot system/vmbackup", lambda: done.append("lvremove"))
    undo.push("unmount /mnt/vmbackup", busy)
    undo.push("release something", lambda: done.append("release"))

    failed = undo.unwind()

    assert done == ["release", "lvremove"]
    assert failed == ["unmount /mnt/vmbackup: target is busy"]


def test_every_failing_step_is_reported():
    def fail(message: str):
        def step() -> None:
            raise RuntimeError(message)
        return step

    undo = UndoStack()
    undo.push("first", fail("one"))
    undo.push("second", fail("two"))
    assert undo.unwind() == ["second: two", "first: one"]


def test_what_a_step_set_up_for_itself_is_taken_down_when_it_ends_well_or_not():
    done: list[str] = []
    with taken_down() as undo:
        undo.push("detach /dev/loop7", lambda: done.append("losetup"))
        undo.push("unmount /tmp/x", lambda: done.append("umount"))
    assert done == ["umount", "losetup"]
    with pytest.raises(RuntimeError, match="cp failed"), taken_down() as undo:
        undo.push("unmount /tmp/x", lambda: done.append("umount again"))
        raise RuntimeError("cp failed")
    assert done[-1] == "umount again"


def test_a_failed_take_down_is_told_beside_the_steps_own_error():
    def busy() -> None:
        raise OSError("target is busy")

    with pytest.raises(CleanupFailed) as caught, taken_down() as undo:
        undo.push("unmount /tmp/x", busy)
        raise RuntimeError("cp failed")
    assert str(caught.value) == "cp failed; cleaning up ALSO failed: unmount /tmp/x: target is busy"
    assert isinstance(caught.value.original, RuntimeError)
    with pytest.raises(CleanupFailed, match="^cleaning up failed: unmount /tmp/x: target is busy$"), \
            taken_down() as undo:
        undo.push("unmount /tmp/x", busy)


def test_unwind_empties_the_stack_so_nothing_is_undone_twice():
    calls: list[int] = []
    undo = UndoStack()
    undo.push("once", lambda: calls.append(1))
    undo.unwind()
    assert len(undo) == 0
    assert undo.unwind() == []
    assert calls == [1]


def test_discard_keeps_what_was_done():
    calls: list[int] = []
    undo = UndoStack()
    undo.push("step", lambda: calls.append(1))
    assert len(undo) == 1
    undo.discard()
    assert undo.unwind() == []
    assert calls == []


# ---------------------------------------------------------------------------------------------
# JobLock


def test_lock_writes_the_holders_pid(tmp_path):
    with JobLock(str(tmp_path), "xenvm", timeout=1) as lock:
        assert Path(lock.path) == tmp_path / "xenvm.lock"
        assert (tmp_path / "xenvm.lock").read_text() == f"{os.getpid()}\n"


def test_lock_creates_its_directory_private(tmp_path):
    lock_dir = tmp_path / "run" / "xenlvm"
    with JobLock(str(lock_dir), "xenvm", timeout=1):
        assert lock_dir.is_dir()
        assert lock_dir.stat().st_mode & 0o777 == 0o700


def test_second_lock_on_the_same_job_times_out_naming_the_holder(tmp_path):
    with JobLock(str(tmp_path), "xenvm", timeout=1):
        start = time.monotonic()
        with pytest.raises(LockTimeout) as caught, JobLock(str(tmp_path), "xenvm", timeout=0.3):
            pass
        waited = time.monotonic() - start
    assert 0.3 <= waited < 5
    message = str(caught.value)
    assert f"pid {os.getpid()}" in message
    assert "'xenvm'" in message
    assert str(tmp_path / "xenvm.lock") in message


def test_locks_of_different_jobs_do_not_block_each_other(tmp_path):
    with JobLock(str(tmp_path), "xenvm", timeout=0.2), JobLock(str(tmp_path), "data", timeout=0.2):
        pass


def test_lock_is_released_on_exit(tmp_path):
    with JobLock(str(tmp_path), "xenvm", timeout=0.2):
        pass
    start = time.monotonic()
    with JobLock(str(tmp_path), "xenvm", timeout=0.2):
        pass
    assert time.monotonic() - start < 0.2


def test_lock_is_released_when_the_body_raises(tmp_path):
    with pytest.raises(RuntimeError), JobLock(str(tmp_path), "xenvm", timeout=0.2):
        raise RuntimeError("pre failed")
    with JobLock(str(tmp_path), "xenvm", timeout=0.2):
        pass


HOLDER = textwrap.dedent("""\
    import sys, time
    from xenlvm.host.lock import JobLock
    with JobLock(sys.argv[1], "xenvm", timeout=5):
        print("locked", flush=True)
        time.sleep(60)
""")


@pytest.fixture
def other_run(tmp_path):
    """Another xenlvm process that holds the lock of job xenvm until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_lock_held_by_another_process_times_out_naming_that_pid(tmp_path, other_run):
    with pytest.raises(LockTimeout) as caught, JobLock(str(tmp_path), "xenvm", timeout=0.3):
        pass
    assert f"pid {other_run.pid}" in str(caught.value)


def test_lock_of_a_process_that_died_is_free_at_once(tmp_path, other_run):
    other_run.kill()
    other_run.wait()
    with JobLock(str(tmp_path), "xenvm", timeout=0.5):
        assert (tmp_path / "xenvm.lock").read_text() == f"{os.getpid()}\n"


def test_lock_waits_for_a_run_that_finishes_in_time(tmp_path, other_run):
    start = time.monotonic()
    killer = subprocess.Popen(["/bin/sh", "-c", f"sleep 0.5; kill {other_run.pid}"])
    try:
        with JobLock(str(tmp_path), "xenvm", timeout=10):
            assert time.monotonic() - start >= 0.4
            assert (tmp_path / "xenvm.lock").read_text() == f"{os.getpid()}\n"
    finally:
        killer.wait()


def test_lock_file_that_is_a_symlink_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("precious\n")
    (tmp_path / "xenvm.lock").symlink_to(target)
    with pytest.raises(XenlvmError) as caught, JobLock(str(tmp_path), "xenvm", timeout=0.2):
        pass
    assert "cannot open the lock file" in str(caught.value)
    assert target.read_text() == "precious\n"
