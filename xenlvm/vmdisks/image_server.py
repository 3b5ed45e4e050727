"""expose: image, without a copy: each VM disk snapshot is shown as a regular, read-only file
``<mountpoint>/<domain>/<disk>.img`` whose bytes are the snapshot's, served through FUSE by
one qemu-storage-daemon per job (Debian package qemu-system-common). The snapshot is opened
read-only (``read-only=on`` on the block device, ``writable=off`` on the export) and the
export's mount is made read-only on top, so not even root can write through it.

The server lives from pre to post, supervised like the watchdog: it is started detached
(``--daemonize``: it returns once every export is mounted), its pid and start time are
recorded beside the job's lock, and before it is stopped the pid is proven to be this job's
server (its command line names this job's pid file, its start time is the recorded one) and
pinned with a pidfd. post stops it before the snapshots are removed (it holds them open); a
server that is not running at post died during the backup, and post says so and fails.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from xenlvm.config.model import Job
from xenlvm.core.undo import UndoStack
from xenlvm.errors import MountError, XenlvmError
from xenlvm.host import mount, processes
from xenlvm.host.fsutil import read_small, remove_if_present, write_atomically
from xenlvm.host.lvm import device_path
from xenlvm.host.runner import Runner, which
from xenlvm.vmdisks.model import Exposure, VmDisk

log = logging.getLogger("xenlvm")

PROGRAM = "qemu-storage-daemon"
PACKAGE = "qemu-system-common"
START_TIMEOUT = 60.0  # opening the devices and mounting each export
STOP_TIMEOUT = 10.0
# The kernel reads ahead of a sequential reader (sesam) by this much per export: FUSE's default
# of 128 KiB leaves the server idle between requests; measured in the sandbox, 4 MiB more than
# doubles the throughput of reading an image (README, Performance).
READ_AHEAD_KIB = 4096
_SYS_BDI = "/sys/class/bdi"


@dataclass(frozen=True)
class Files:
    pid: str  # written by the server itself (--pidfile)
    record: str  # written by xenlvm: pid, start time, exports


@dataclass(frozen=True)
class Export:
    device: str  # the snapshot's block device
    target: str  # the regular file the export is mounted on


@dataclass(frozen=True)
class ServerState:
    pid: int
    running: bool  # the proven server process still runs
    exports: tuple[str, ...]
    started: bool = True  # pre recorded it running (else pre was killed while starting it)
    devices: tuple[str, ...] = ()  # what each export serves (a record of an older xenlvm: none)


def files(lock_dir: str, job_name: str) -> Files:
    base = os.path.join(lock_dir, f"{job_name}.images")
    return Files(pid=f"{base}.pid", record=f"{base}.json")


def exports_of(disks: Sequence[VmDisk]) -> list[Export]:
    """The exports for the job's VM disks exposed as images (or, with expose: files, given as an
    image because not all of it could be exposed as files): <mountpoint>/<domain>/<disk>.img."""
    return [Export(device_path(d.spec.origin.vg, d.spec.snapshot), f"{d.spec.mountpoint}.img")
            for d in disks if d.served]


def server_argv(exports: Sequence[Export], pid_file: str, program: str = PROGRAM) -> list[str]:
    """The server's command line: per disk a read-only block device node and a read-only FUSE
    export of it mounted on its image file. The snapshot is read with O_DIRECT and Linux AIO
    (cache.direct=on,aio=native): a backup reads every block once, so it would only push the
    dom0's useful cache out, and it was the fastest variant measured (README, Performance)."""
    argv = [program]
    for number, export in enumerate(exports):
        node = f"disk{number}"
        argv += ["--blockdev", f"driver=host_device,node-name={node},filename={_escape(export.device)},"
                 "read-only=on,cache.direct=on,aio=native,auto-read-only=off",
                 "--export", f"type=fuse,id=export{number},node-name={node},"
                 f"mountpoint={_escape(export.target)},writable=off"]
    return [*argv, "--pidfile", pid_file, "--daemonize"]


def _escape(value: str) -> str:
    """A value inside QEMU's comma-separated options: a comma is written twice."""
    return value.replace(",", ",,")


def missing_program(job: Job, path: str) -> str | None:
    """For expose: image, what is missing to serve the images (the server program), or None."""
    if job.vmdisks is None or Exposure(job.vmdisks.expose) is not Exposure.IMAGE \
            or which(PROGRAM, path) is not None:
        return None
    return (f"vmdisks.expose: image needs {PROGRAM} (Debian package {PACKAGE}, with FUSE) on PATH "
            f"({path}): install it, or use expose: image-copy (a full copy into image_dir)")


# ---------------------------------------------------------------------------------------------
# pre: start


def serve(runner: Runner, lock_dir: str, job: Job, disks: Sequence[VmDisk], undo: UndoStack) -> None:
    """Serve each image-exposed disk snapshot of disks as a read-only file in the job's tree,
    with one detached server; its stop is registered on undo before it starts."""
    exports = exports_of(disks)
    if not exports:
        return
    paths = files(lock_dir, job.name)
    argv = server_argv(exports, paths.pid)
    if runner.dry_run:
        runner.change(argv)
        return
    earlier = stop(runner, lock_dir, job.name)
    if earlier is not None:
        log.warning("an image server of an earlier run of job %s (pid %d) was still there; stopped it",
                    job.name, earlier.pid)
    for export in exports:
        os.makedirs(os.path.dirname(export.target), mode=0o700, exist_ok=True)  # the tree: root's alone
        with open(export.target, "x"):  # FUSE mounts the export on an existing regular file
            pass
    undo.push("stop the image server", lambda: stop(runner, lock_dir, job.name))
    _write_record(paths.record, None, exports)  # before the start: a killed pre leaves it to find
    runner.change(argv, timeout=START_TIMEOUT)
    pid = processes.read_pid(paths.pid)
    start_time = processes.start_time(pid) if pid is not None else None
    if pid is None or start_time is None:
        raise XenlvmError(f"{PROGRAM} reported success but is not running (pid file {paths.pid}); "
                          "see the log file for its messages")
    _write_record(paths.record, (pid, start_time), exports)
    for export in exports:
        runner.change(["mount", "-o", "remount,bind,ro", export.target])
        entry = mount.mounted_at(export.target, mount.read_mounts())
        if not is_export(entry) or entry is None or "ro" not in entry.options:
            raise MountError(f"after starting {PROGRAM}, {export.target} is not its read-only export")
        _read_ahead(entry, READ_AHEAD_KIB)
    log.info("image server %s (pid %d) serves %d disk snapshot(s) read-only, without copying: %s",
             PROGRAM, pid, len(exports), ", ".join(e.target for e in exports))


def _read_ahead(entry: mount.MountEntry, kib: int, sys_bdi: str = _SYS_BDI) -> None:
    """Let the kernel read kib ahead on the export (its backing device info, by the mount's
    device numbers). Only speed depends on it: a failure is logged and the backup goes on."""
    path = os.path.join(sys_bdi, f"{entry.major}:{entry.minor}", "read_ahead_kb")
    try:
        with open(path, "w", encoding="ascii") as handle:
            handle.write(f"{kib}\n")
    except OSError as exc:
        log.warning("could not set the read-ahead of %s (%s: %s); reading it may be slower",
                    entry.mountpoint, path, exc.strerror)


def _write_record(path: str, process: tuple[int, int] | None, exports: Sequence[Export]) -> None:
    pid, start_time = process if process is not None else (None, None)
    write_atomically(path, json.dumps({"pid": pid, "start_time": start_time,
                                       "exports": [e.target for e in exports],
                                       "devices": [e.device for e in exports]}) + "\n",
                     dir_mode=0o700)


# ---------------------------------------------------------------------------------------------
# post (and pre's sweep, and pre's undo): stop


def state(lock_dir: str, job_name: str) -> ServerState | None:
    """The job's image server as its files say, and whether that proven process runs; None
    when there is no trace of one."""
    paths = files(lock_dir, job_name)
    record = _read_record(paths.record)
    pid = record.get("pid") if isinstance(record.get("pid"), int) else processes.read_pid(paths.pid)
    if record == {} and pid is None:
        return None
    exports = tuple(str(t) for t in record.get("exports", []) if isinstance(t, str))
    devices = tuple(str(d) for d in record.get("devices", []) if isinstance(d, str))
    devices = devices if len(devices) == len(exports) else ()
    started = isinstance(record.get("pid"), int)
    if pid is None:
        return ServerState(0, False, exports, started, devices)
    start_time = record.get("start_time") if isinstance(record.get("start_time"), int) else None
    return ServerState(pid, is_server(pid, paths.pid, start_time), exports, started, devices)


def stop(runner: Runner, lock_dir: str, job_name: str, timeout: float = STOP_TIMEOUT) -> ServerState | None:
    """Stop the job's image server (SIGTERM: it unmounts its exports; SIGKILL after timeout)
    and unmount what a dead one left mounted (a FUSE mount whose server is gone answers every
    read with an error). Return the server as it was found (running or not); None when there
    was none. Removes its files; calling it again returns None."""
    paths = files(lock_dir, job_name)
    found = state(lock_dir, job_name)
    if found is None:
        return None
    if found.running and not runner.dry_run:
        start_time = _read_record(paths.record).get("start_time")
        processes.terminate_proven(found.pid, lambda pid: is_server(pid, paths.pid, start_time),
                         f"the image server of job {job_name}", timeout)
    for target in found.exports:
        mount.unmount_if(runner, target, is_export)
    if not runner.dry_run:
        for path in (paths.pid, paths.record):
            remove_if_present(path)
    return found


def died_during_backup(found: ServerState | None) -> XenlvmError | None:
    """post's judgement: a server that no longer ran at post served nothing for part of the
    backup, so sesam's reads of the images failed (or may have) and the backup is unsound."""
    if found is None or found.running or not found.started:
        return None
    return XenlvmError(f"the image server ({PROGRAM}, pid {found.pid or 'unknown'}) was not running at "
                       f"post: it died during the backup, and from then on every read of "
                       f"{', '.join(found.exports) or 'the images'} failed. The backup of this run "
                       "cannot be trusted; everything was still cleaned up. See the log file and "
                       "the kernel log for why it ended")


# ---------------------------------------------------------------------------------------------
# proof


def is_export(entry: mount.MountEntry | None) -> bool:
    """A FUSE mount on an image file of the tree: what the server mounts (the tree's tmpfs is
    xenlvm's own, and nothing else mounts FUSE on its *.img files)."""
    return entry is not None and entry.fstype == "fuse" and entry.mountpoint.endswith(".img")


def is_server(pid: int, pid_file: str, start_time: int | None) -> bool:
    """True when pid runs this job's server: its command line is the server's with this job's
    pid file, and (when recorded) it started when the recorded process started."""
    args = processes.command_line(pid)
    if not args or os.path.basename(args[0]) != PROGRAM or \
            not any(args[i:i + 2] == ["--pidfile", pid_file] for i in range(len(args))):
        return False
    return start_time is None or processes.start_time(pid) == start_time


def _read_record(path: str) -> dict:
    try:
        record = json.loads(read_small(path) or "{}")
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}
