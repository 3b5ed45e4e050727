"""pre's side of the chains (vmdisks.incremental: thin): after the snapshots exist, ONE file
per chained disk, written into the job's staging folder in image_dir and bound read-only into
the tree: ``<mountpoint>/<domain>/<disk>.<run>.incr``, the ranges that changed since the base
run (thin_delta between the base and this run's snapshot, xenlvm.increments.thin_delta), or
``<disk>.<run>.img``, the full image, when bases.plan says so or the changes cannot be read. The
choice and its reason are logged and recorded (xenlvm.increments.record) for post, which keeps
this run's snapshot as the next base, and for status."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence

from xenlvm.config.model import Job
from xenlvm.core.context import Context
from xenlvm.core.ownership import RUN_TAG_PREFIX, depth_of, full_sha256_of, run_id_of, run_tag
from xenlvm.core.undo import UndoStack
from xenlvm.errors import CommandFailed, XenlvmError
from xenlvm.host.fsutil import remove_if_present
from xenlvm.host.lvm import LogicalVolume, Lvm, device_path
from xenlvm.host.runner import Runner
from xenlvm.increments import bases, chain, fileformat, record, thin_delta
from xenlvm.increments.fileformat import Range
from xenlvm.vmdisks.image_copy import bind_read_only, private_staging
from xenlvm.vmdisks.model import Exposure
from xenlvm.vmdisks.target import VmDiskTarget

TYPE_CHECKING = False  # xenlvm/__init__.py says why
if TYPE_CHECKING:
    from typing import Any

log = logging.getLogger("xenlvm")

# What a chain needs beyond a full image: thin_delta and dmsetup (the changes since the base, read
# from the pool's metadata) in pre, lvchange and lvrename (the snapshot kept as the next base) in
# post. Without them the backup still runs, each chained disk's file its full image (check warns).
TOOLS = ("thin_delta", "dmsetup", "lvchange", "lvrename")
SPARSE_BLOCK = 64 << 10  # a full image's blocks of zeros this size are not written: they read as zeros


def run_id(started: float, pid: int) -> str:
    """This run's id, as in its LV tag xenlvm_run_<run> and the chain's file names."""
    return run_tag(started, pid)[len(RUN_TAG_PREFIX):]


def expose_chains(ctx: Context, job: Job, disks: Sequence[VmDiskTarget], undo: UndoStack) -> None:
    """Write and bind each chained disk's file, then record what was written and why."""
    chained = [d for d in disks if d.how is Exposure.CHAIN]
    if not chained:
        return
    run = run_id(ctx.started, os.getpid())
    entries = [entry for d in chained if (entry := _expose(ctx, job, d, run, undo)) is not None]
    if ctx.dry_run:
        return
    path = record.record_path(ctx.config.settings.state_dir, job.name)
    undo.push(f"remove {path}", lambda: remove_if_present(path))
    record.write(ctx.config.settings.state_dir, job.name, run, entries)


def _expose(ctx: Context, job: Job, target: VmDiskTarget, run: str, undo: UndoStack) -> record.Exposed | None:
    spec, what = target.spec, f"{target.domain}/{target.disk}"
    vg = ctx.lvm.volume_group(spec.origin.vg)
    origin = vg.get(spec.origin.lv) or target.origin
    snapshot = vg.get(spec.snapshot)
    size = snapshot.size if snapshot is not None else origin.size
    chosen = bases.plan(job, origin, vg, size)
    if ctx.dry_run:
        log.info("dry run: %s would be %s", what, f"a full image ({chosen.reason})" if chosen.full
                 else f"an increment over {chosen.base}")
        return None
    if snapshot is None:
        raise XenlvmError(f"{what}: lvs does not show its snapshot {spec.snapshot_volume}, which pre just "
                          "created: nothing of it can be exposed")
    ranges = None
    if chosen.base is not None:
        ranges, why = changed_ranges(ctx.runner, chosen.base, snapshot, size, ctx.config.settings.lock_dir)
        if ranges is None:
            log.warning("%s: %s; its full image instead", what, why)
            chosen = bases.full_image(why)
    if chosen.base is None:
        log.info("%s: full image this run: %s", what, chosen.reason)
    name = chain.file_name(target.disk, run, chain.INCREMENT if chosen.base is not None else chain.FULL)
    staging = private_staging(job)
    image = os.path.join(staging, f"{target.domain}.{name}")
    undo.push(f"remove {image}", lambda: remove_if_present(image))
    device = device_path(snapshot.vg, snapshot.name)
    digest = None
    if chosen.base is not None and ranges is not None:
        base_sha256 = full_sha256_of(chosen.base) if depth_of(chosen.base) == 0 else None
        written = fileformat.write_increment(image, device, disk=what, disk_size=size, run=run,
                                             base=run_id_of(chosen.base) or "", ranges=ranges,
                                             base_image_sha256=base_sha256)
    else:
        digest = write_image(device, image, size)
        written = size
    where = os.path.join(os.path.dirname(spec.mountpoint), name)
    bind_read_only(ctx.runner, image, where, staging, undo)
    target.image_file = name
    log.info("%s: %s at %s (%d bytes, %d MiB on disk)", what, "increment" if chosen.base else "full image",
             where, written, os.stat(image).st_blocks * 512 >> 20)
    return record.Exposed(target.domain, target.disk, str(spec.origin), run,
                          record.INCREMENT if chosen.base is not None else record.FULL, where, chosen.depth,
                          run_id_of(chosen.base) if chosen.base is not None else None, chosen.reason,
                          written, digest.hex() if digest is not None else None)


def changed_ranges(runner: Runner, base: LogicalVolume, snapshot: LogicalVolume, size: int,
                   lock_dir: str) -> tuple[list[Range] | None, str]:
    """The ranges of snapshot that differ from base, read from the pool's metadata, or None and
    why they cannot be used (then the disk's full image is written)."""
    try:
        ids = thin_ids(runner, snapshot.vg, [base.name, snapshot.name])
        ranges = thin_delta.changed_ranges(runner, snapshot.vg, snapshot.pool, base=ids[base.name],
                                           new=ids[snapshot.name], disk_size=size, lock_dir=lock_dir)
    except XenlvmError as exc:
        return None, f"the changes since its base {base} cannot be read: {exc}"
    problem = fileformat.check_ranges(ranges, size)
    if problem is not None:
        return None, f"thin_delta's ranges cannot make an increment: {problem}"
    return ranges, ""


def thin_ids(runner: Runner, vg: str, names: Sequence[str]) -> dict[str, int]:
    """The thin device id of each named thin LV of vg, as the pool's metadata knows it."""
    try:
        ids = Lvm(runner).thin_ids(vg, names)
    except CommandFailed:
        raise
    except XenlvmError as exc:  # lvs printed no usable id
        raise thin_delta.ThinDeltaFailed(str(exc)) from None
    missing = [name for name in names if name not in ids]
    if missing:
        raise thin_delta.ThinDeltaFailed(f"lvs does not show {', '.join(missing)} in {vg}")
    return ids


def write_image(source: str, path: str, size: int) -> bytes:
    """Copy the first size bytes of source (the snapshot) into path, a new sparse file: blocks of
    SPARSE_BLOCK zeros are not written. Return their SHA-256 (the next increment records it).
    A partial file is removed; the file is synced before this returns."""
    digest = hashlib.sha256()
    zeros, chunk_of_zeros = bytes(SPARSE_BLOCK), bytes(fileformat.CHUNK)
    data = bytearray(fileformat.CHUNK)  # one buffer: no new pages to fault in per read
    buffer = memoryview(data)
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with open(path, "xb") as out:
            try:
                position = 0
                while position < size:
                    got = os.preadv(fd, [buffer[:min(fileformat.CHUNK, size - position)]], position)
                    if got <= 0:
                        raise OSError(0, "the file ended early")
                    digest.update(buffer[:got])
                    # bytes compared as bytearray slices (memcmp); a memoryview compares item by item
                    if got < fileformat.CHUNK or data != chunk_of_zeros:
                        for at in range(0, got, SPARSE_BLOCK):
                            end = min(at + SPARSE_BLOCK, got)
                            if data[at:end] != zeros[:end - at]:
                                os.pwrite(out.fileno(), buffer[at:end], position + at)
                    position += got
                out.truncate(size)
                os.fsync(out.fileno())
            except BaseException:
                os.unlink(path)
                raise
    except OSError as exc:
        raise XenlvmError(f"writing the full image of {source} into {path} failed: {exc.strerror}") from None
    finally:
        os.close(fd)
    return digest.digest()


def describe(report: dict[str, Any]) -> list[str]:
    """The job's chain bases (each holds the pool blocks its disk was overwritten in since its
    run) and what its last pre wrote of each chained disk, and why."""
    lines = []
    for base in report.get("bases") or []:
        depth = base["depth"]
        lines.append(f"  base of {base['disk']}: {base['base']} (run {base['run']}, "
                     f"{'its full image' if depth == 0 else f'increment {depth}'}; "
                     f"{'active' if base['active'] else 'inactive'}; in pool {base['pool']}, where it holds "
                     "every block the disk was overwritten in since)")
    lines += [f"  last chain file: {record.Exposed(**e).describe()}" for e in report.get("chain_files") or []]
    return lines
