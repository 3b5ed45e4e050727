"""expose: image through FUSE (xenlvm.vmdisks.image_server): the server's command line, the proof of its
pid before it is signalled, and post's judgement of a server that died. The real server, FUSE
and the mounts run in the sandbox (tests/system/test_image_server.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.fakes import FakeRunner
from xenlvm.admin import status
from xenlvm.config.load import parse_config
from xenlvm.config.model import SnapshotSpec, Volume
from xenlvm.core.undo import UndoStack
from xenlvm.errors import MountError
from xenlvm.host import processes
from xenlvm.host.fsutil import read_small
from xenlvm.host.lvm import LogicalVolume
from xenlvm.host.mount import MountEntry
from xenlvm.vmdisks import image_server
from xenlvm.vmdisks import teardown as vmdisk_teardown
from xenlvm.vmdisks.kind import image_server_status
from xenlvm.vmdisks.target import VmDiskTarget

JOB = "disks"
CONFIG = (f"jobs:\n  {JOB}:\n    mountpoint: /mnt/vmdisks\n    vmdisks:\n      domains: auto\n"
          "      size: 16M\n      expose: image\n")


def spec(vg: str, lv: str, domain: str, disk: str, expose: str = "image") -> VmDiskTarget:
    """A VM disk target as pre plans it: the disk's snapshot spec, its origin LV, how it is exposed."""
    origin = LogicalVolume(vg, lv, "-wi-ao----", 64 << 20, "", "", frozenset(), None, False, True, 253, 1,
                           f"/dev/mapper/{vg}-{lv}", "")
    return VmDiskTarget(SnapshotSpec(Volume(vg, lv), f"{lv}.xenlvm", f"/mnt/vmdisks/{domain}/{disk}", None),
                        origin, domain, disk, expose)


def test_the_server_opens_every_snapshot_read_only_and_exports_it_read_only_on_its_image_file():
    exports = image_server.exports_of([spec("system", "vm2-disk", "vm2", "xvda"),
                                       spec("system", "vm3-disk", "vm3", "xvda", expose="files"),
                                       spec("data", "vm3-data", "vm3", "xvdb")])
    argv = image_server.server_argv(exports, "/run/xenlvm/disks.images.pid")
    assert argv == [
        "qemu-storage-daemon",
        "--blockdev", "driver=host_device,node-name=disk0,filename=/dev/mapper/system-vm2--disk.xenlvm,"
                      "read-only=on,cache.direct=on,aio=native,auto-read-only=off",
        "--export", "type=fuse,id=export0,node-name=disk0,mountpoint=/mnt/vmdisks/vm2/xvda.img,writable=off",
        "--blockdev", "driver=host_device,node-name=disk1,filename=/dev/mapper/data-vm3--data.xenlvm,"
                      "read-only=on,cache.direct=on,aio=native,auto-read-only=off",
        "--export", "type=fuse,id=export1,node-name=disk1,mountpoint=/mnt/vmdisks/vm3/xvdb.img,writable=off",
        "--pidfile", "/run/xenlvm/disks.images.pid", "--daemonize"]


def test_a_comma_in_a_path_cannot_add_an_option_to_the_server():
    argv = image_server.server_argv([image_server.Export("/dev/vg/a,read-only=off", "/t/x,writable=on.img")],
                                    "/p")
    assert "filename=/dev/vg/a,,read-only=off," in argv[2]
    assert "mountpoint=/t/x,,writable=on.img,writable=off" in argv[4]


def test_dry_run_announces_the_server_and_writes_nothing(tmp_path):
    runner = FakeRunner(dry_run=True)
    config = parse_config(CONFIG)
    undo = UndoStack()
    image_server.serve(runner, str(tmp_path), config.jobs[JOB], [spec("system", "vm2-disk", "vm2", "xvda")],
                       undo)
    assert runner.argvs[0][0] == "qemu-storage-daemon" and len(runner.argvs) == 1
    assert os.listdir(tmp_path) == [] and len(undo) == 0


def test_expose_image_needs_the_server_program_and_says_what_to_install(tmp_path):
    config = parse_config(CONFIG)
    problem = image_server.missing_program(config.jobs[JOB], str(tmp_path))
    assert problem is not None and "qemu-system-common" in problem and "image-copy" in problem
    program = tmp_path / "qemu-storage-daemon"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    assert image_server.missing_program(config.jobs[JOB], str(tmp_path)) is None


def _server_like(pid_file: str) -> subprocess.Popen:
    """A process whose argv[0] is qemu-storage-daemon and which names pid_file (bash exec -a)."""
    script = 'exec -a qemu-storage-daemon "$0" -c "import time; time.sleep(60)" --pidfile "$1"'
    return subprocess.Popen(["bash", "-c", script, sys.executable, pid_file])


def _record(lock_dir: Path, pid: int, start_time: int | None, exports=("/nowhere/vm2/xvda.img",)) -> None:
    paths = image_server.files(str(lock_dir), JOB)
    Path(paths.pid).write_text(f"{pid}\n")
    record = {"pid": pid, "start_time": start_time, "exports": list(exports)}
    Path(paths.record).write_text(json.dumps(record))


def _wait_for_exec(proc: subprocess.Popen) -> None:
    for _ in range(100):
        if (read_small(f"/proc/{proc.pid}/cmdline") or "").startswith("qemu-storage-daemon"):
            return
        time.sleep(0.05)


def test_stop_terminates_the_proven_server_and_is_idempotent(tmp_path):
    paths = image_server.files(str(tmp_path), JOB)
    server = _server_like(paths.pid)
    try:
        _wait_for_exec(server)
        _record(tmp_path, server.pid, processes.start_time(server.pid))
        assert image_server.state(str(tmp_path), JOB) == image_server.ServerState(
            server.pid, True, ("/nowhere/vm2/xvda.img",))
        found = image_server.stop(FakeRunner(), str(tmp_path), JOB, timeout=5)
        assert found is not None and found.running
        assert server.wait(timeout=5) == -signal.SIGTERM
        assert image_server.died_during_backup(found) is None
        assert os.listdir(tmp_path) == []
        assert image_server.stop(FakeRunner(), str(tmp_path), JOB) is None
    finally:
        server.kill()
        server.wait()


def test_a_pid_with_another_start_time_is_never_signalled_and_post_says_the_server_died(tmp_path):
    paths = image_server.files(str(tmp_path), JOB)
    server = _server_like(paths.pid)
    try:
        _wait_for_exec(server)
        start_time = processes.start_time(server.pid)
        assert start_time is not None
        _record(tmp_path, server.pid, start_time - 1)  # the recorded server ended; its pid was reused
        found = image_server.stop(FakeRunner(), str(tmp_path), JOB, timeout=1)
        assert found is not None and not found.running
        assert server.poll() is None  # untouched
        problem = image_server.died_during_backup(found)
        assert problem is not None and "died during the backup" in str(problem)
        assert "cannot be trusted" in str(problem)
    finally:
        server.kill()
        server.wait()


def test_a_process_that_names_another_pid_file_is_not_the_jobs_server(tmp_path):
    other = _server_like(str(tmp_path / "other.images.pid"))
    try:
        _wait_for_exec(other)
        assert not image_server.is_server(other.pid, image_server.files(str(tmp_path), JOB).pid, None)
        assert image_server.is_server(other.pid, str(tmp_path / "other.images.pid"), None)
        assert not image_server.is_server(os.getpid(), str(tmp_path / "other.images.pid"), None)
    finally:
        other.kill()
        other.wait()


def test_a_pre_killed_while_the_server_started_is_not_reported_as_a_dead_server(tmp_path):
    paths = image_server.files(str(tmp_path), JOB)
    Path(paths.record).write_text(json.dumps({"pid": None, "start_time": None, "exports": []}))
    found = image_server.stop(FakeRunner(), str(tmp_path), JOB)
    assert found is not None and not found.started
    assert image_server.died_during_backup(found) is None
    assert image_server.state(str(tmp_path), JOB) is None


def test_only_a_fuse_mount_on_an_image_file_is_taken_for_an_export():
    entry = MountEntry(0, 33, "/mnt/vmdisks/vm2/xvda.img", ("ro",), "fuse", "/dev/fuse")
    assert image_server.is_export(entry)
    assert not image_server.is_export(MountEntry(0, 33, "/mnt/vmdisks/vm2/xvda", ("ro",), "fuse", "x"))
    assert not image_server.is_export(MountEntry(7, 1, "/mnt/vmdisks/vm2/xvda.img", ("ro",), "ext4", "x"))
    assert not image_server.is_export(None)


def test_read_ahead_is_set_on_the_exports_backing_device_info_and_a_failure_only_warns(tmp_path, caplog):
    bdi = tmp_path / "0:33"
    bdi.mkdir()
    (bdi / "read_ahead_kb").write_text("128\n")
    entry = MountEntry(0, 33, "/mnt/vmdisks/vm2/xvda.img", ("ro",), "fuse", "/dev/fuse")
    image_server._read_ahead(entry, 4096, str(tmp_path))
    assert (bdi / "read_ahead_kb").read_text() == "4096\n"
    image_server._read_ahead(dataclasses.replace(entry, minor=34), 4096, str(tmp_path))
    assert "could not set the read-ahead of /mnt/vmdisks/vm2/xvda.img" in caplog.text


def test_status_shows_the_server_running_or_not_and_what_it_serves(tmp_path):
    config = parse_config(CONFIG.replace("jobs:\n", f"settings:\n  lock_dir: {tmp_path}\njobs:\n"))
    assert image_server_status(image_server.state(config.settings.lock_dir, JOB)) is None
    _record(tmp_path, 4194305, 1)  # its process is gone
    found = image_server_status(image_server.state(config.settings.lock_dir, JOB))
    assert found == {"pid": 4194305, "running": False, "exports": ["/nowhere/vm2/xvda.img"]}
    report = {"job": JOB, "mountpoint": "/mnt/vmdisks", "volumes": [], "image_server": found,
              "last_runs": {}, "problems": []}
    assert "  image server (pid 4194305): NOT RUNNING: reads of the images fail; run post (or xenlvm " \
           "cleanup) to clean up" in status.describe(report)
    report["image_server"] = {**found, "running": True}
    assert "  image server (pid 4194305): running, serving /nowhere/vm2/xvda.img" in status.describe(report)


def test_a_fuse_image_below_the_mountpoint_is_unmounted_only_inside_xenlvms_own_tree(monkeypatch):
    # The server mounts its exports on files of xenlvm's tmpfs; an admin's own FUSE *.img below
    # the job's mountpoint, without that tree, is not xenlvm's and is never unmounted.
    job = parse_config(CONFIG).jobs[JOB]
    export = MountEntry(0, 40, "/mnt/vmdisks/vm2/xvda.img", ("ro",), "fuse", "/dev/fuse")
    tree = MountEntry(0, 39, "/mnt/vmdisks", ("rw",), "tmpfs", vmdisk_teardown.tree_source(job))
    monkeypatch.setattr(vmdisk_teardown, "loops_of", lambda devices: {})
    for mounts, unmounted in (([tree, export], True), ([export], False)):
        monkeypatch.setattr(vmdisk_teardown.mount, "read_mounts", lambda mounts=mounts: list(mounts))
        runner = FakeRunner().on("umount", "")
        monkeypatch.setattr(vmdisk_teardown.mount, "unmount_with_retry",
                            lambda runner, target, timeout: runner.change(["umount", target]))
        if unmounted:
            vmdisk_teardown.release(runner, job, [], 1.0)
            assert runner.argvs == [["umount", export.mountpoint]]
        else:
            with pytest.raises(MountError, match="something xenlvm did not mount"):
                vmdisk_teardown.release(runner, job, [], 1.0)
            assert runner.argvs == []


@pytest.mark.parametrize("text", ["0\n", "1\n"])
def test_a_pid_file_naming_pid_0_or_init_is_no_trace_of_a_server(tmp_path, text):
    Path(image_server.files(str(tmp_path), JOB).pid).write_text(text)
    assert image_server.state(str(tmp_path), JOB) is None


def test_the_record_names_what_each_export_serves_for_status_and_an_older_record_names_none(tmp_path):
    paths = image_server.files(str(tmp_path), JOB)
    exports = image_server.exports_of([spec("system", "vm2-disk", "vm2", "xvda"),
                                       spec("data", "vm3-data", "vm3", "xvdb")])
    image_server._write_record(paths.record, None, exports)
    found = image_server.state(str(tmp_path), JOB)
    assert found is not None and found.exports == ("/mnt/vmdisks/vm2/xvda.img", "/mnt/vmdisks/vm3/xvdb.img")
    assert found.devices == ("/dev/mapper/system-vm2--disk.xenlvm", "/dev/mapper/data-vm3--data.xenlvm")
    _record(tmp_path, 4194305, 1)  # as xenlvm before it wrote the devices
    assert image_server.state(str(tmp_path), JOB).devices == ()
