"""Which bytes of a thin LV differ between two of its thin snapshots, from the pool's metadata:
``thin_delta -m`` (thin-provisioning-tools) over a metadata snapshot of the pool, reserved with
``dmsetup message <pool>-tpool 0 reserve_metadata_snap`` and always released.

thin_delta compares the two devices' block mappings and prints runs of pool blocks
(``data_block_size`` sectors of 512 bytes each), as recorded with 0.9.0 in the sandbox
(tests/unit/data/thin_delta_0.9.0.xml)::

    <superblock uuid="" time="2" transaction="3" data_block_size="128" nr_data_blocks="0">
      <diff left="2" right="3">
        <different begin="0" length="1"/>
        <same begin="7" length="1"/>
        <left_only begin="20" length="1"/>
        <right_only begin="40" length="3"/>
      </diff>
    </superblock>

For a backup of the right (newer) snapshot: ``different`` and ``right_only`` blocks hold new
data and are copied; ``left_only`` blocks were mapped in the base and are not any more (the
guest discarded them): they read as zeros now and are recorded as zeros ranges, which take no
room in the increment; ``same`` blocks are skipped. A block is copied whole even if one byte of
it changed: the pool knows no finer unit.

A metadata snapshot left reserved by a run that was killed (-9) is released by the next run
before it reserves its own; the pool holds one at a time, and xenlvm takes it under a lock of
its own per pool, so a leftover is never another running xenlvm's. Other tools (wyng,
thin_ls, an admin's thin_delta) reserve it too, so xenlvm writes a record
(``<lock dir>/thin-pool-<vg>-<pool>.metadata-snap``, the held root) before it reserves and
removes it after it releases; a leftover is released only when that record says it is xenlvm's.
The lock dir is in /run: after a reboot a leftover is not released (xenlvm refuses, naming the
pool and the command that releases it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from contextlib import contextmanager

from xenlvm.errors import XenlvmError
from xenlvm.host.lock import JobLock
from xenlvm.host.runner import Runner
from xenlvm.increments.fileformat import DATA, ZEROS, Range

log = logging.getLogger("xenlvm")

SECTOR = 512
KINDS = {"different": DATA, "right_only": DATA, "left_only": ZEROS, "same": None}
DELTA_TIMEOUT = 3600.0  # thin_delta reads the pool's mapping trees: minutes on a large pool
POOL_LOCK_TIMEOUT = 600.0


class ThinDeltaFailed(XenlvmError):
    """thin_delta's output or the pool's metadata snapshot cannot be used: the disk needs a
    full image."""


def dm_name(vg: str, lv: str) -> str:
    """The device-mapper name of vg/lv: each '-' doubled, joined by '-' (LVM's rule)."""
    return f"{vg.replace('-', '--')}-{lv.replace('-', '--')}"


def parse_delta(text: str, disk_size: int, *, left: int, right: int) -> list[Range]:
    """Given thin_delta's XML for the thin devices left (the base) and right (the new
    snapshot) of a disk of disk_size bytes, return the byte ranges to back up, sorted, adjacent
    ones of one kind merged, the last one cut at the disk's end. Raise ThinDeltaFailed for
    anything but that output."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise ThinDeltaFailed(f"thin_delta printed no readable XML ({exc})") from None
    block = _number(root, "data_block_size") * SECTOR
    diffs = list(root)
    if root.tag != "superblock" or block <= 0 or len(diffs) != 1 or diffs[0].tag != "diff":
        raise ThinDeltaFailed("thin_delta's output is not one <diff> in a <superblock> with a "
                              "data_block_size")
    diff = diffs[0]
    if (diff.get("left"), diff.get("right")) != (str(left), str(right)):
        raise ThinDeltaFailed(f"thin_delta compared devices {diff.get('left')} and {diff.get('right')}, not "
                              f"{left} and {right}")
    found = []
    for element in diff:
        if element.tag not in KINDS or len(element):
            raise ThinDeltaFailed(f"thin_delta printed <{element.tag}> with {len(element)} children, which "
                                  "xenlvm does not read (was it run with --verbose?)")
        kind = KINDS[element.tag]
        begin, length = _number(element, "begin"), _number(element, "length")
        if kind is not None and length > 0 and begin * block < disk_size:
            found.append(Range(begin * block, min(length * block, disk_size - begin * block), kind))
    return _merged(sorted(found, key=lambda r: r.offset))


def _number(element: ElementTree.Element, name: str) -> int:
    value = element.get(name, "")
    if not value.isdigit():
        raise ThinDeltaFailed(f"thin_delta printed <{element.tag}> with {name}={value!r}, not a number")
    return int(value)


def _merged(ranges: list[Range]) -> list[Range]:
    result: list[Range] = []
    for rng in ranges:
        last = result[-1] if result else None
        if last and rng.offset < last.end:
            raise ThinDeltaFailed(f"thin_delta printed overlapping ranges at byte {rng.offset}")
        if last and last.end == rng.offset and last.kind == rng.kind:
            result[-1] = Range(last.offset, last.length + rng.length, rng.kind)
        else:
            result.append(rng)
    return result


def held_metadata_root(status: str) -> str | None:
    """The metadata snapshot's root block in a thin-pool's dmsetup status line, or None when
    none is held ('-'). Fields: start length thin-pool transaction used/total-metadata
    used/total-data held-root ..."""
    fields = status.split()
    if len(fields) < 7 or fields[2] != "thin-pool":
        raise ThinDeltaFailed(f"dmsetup status of the pool printed {status.strip()!r}, not a thin-pool's "
                              "status")
    return None if fields[6] == "-" else fields[6]


@contextmanager
def metadata_snapshot(runner: Runner, vg: str, pool: str, lock_dir: str) -> Iterator[None]:
    """The pool vg/pool's metadata snapshot, reserved for the block and released after it,
    whatever happens. A leftover is released first only when xenlvm's record says it is
    xenlvm's (a killed run's); any other is another tool's: ThinDeltaFailed, naming the pool."""
    tpool = dm_name(vg, pool) + "-tpool"
    record = os.path.join(lock_dir, f"thin-pool-{dm_name(vg, pool)}.metadata-snap")
    with JobLock(lock_dir, f"thin-pool-{dm_name(vg, pool)}", POOL_LOCK_TIMEOUT):
        _release_leftover(runner, f"{vg}/{pool}", tpool, record)
        _write_record(record, "reserving")  # before the reserve: a kill right after it leaves the record
        try:
            _message(runner, tpool, "reserve_metadata_snap")
        except BaseException:
            if _held_root(runner, tpool) is None:
                _forget(record)
            raise
        _write_record(record, _held_root(runner, tpool) or "reserving")
        try:
            yield
        except BaseException:
            try:
                _release(runner, tpool, record)
            except XenlvmError as exc:  # told beside the error that stopped the block, not instead
                log.error("releasing the metadata snapshot of %s/%s failed: %s (the next run releases it)",
                          vg, pool, exc)
            raise
        _release(runner, tpool, record)


def _release_leftover(runner: Runner, name: str, tpool: str, record: str) -> None:
    held = _held_root(runner, tpool)
    recorded = _read_record(record)
    if held is None:
        _forget(record)
    elif recorded in (held, "reserving"):
        log.warning("the thin pool %s holds a metadata snapshot that a killed xenlvm run left reserved "
                    "(%s): releasing it", name, record)
        _release(runner, tpool, record)
    else:
        raise ThinDeltaFailed(
            f"the thin pool {name} holds a metadata snapshot (root {held}) that xenlvm did not reserve"
            f"{'' if recorded is None else f' (its record {record} names root {recorded})'}: another tool "
            "(wyng, thin_ls, an admin's thin_delta) may be using it, so xenlvm leaves it alone. If nothing "
            f"uses it, release it: dmsetup message {tpool} 0 release_metadata_snap")


def _release(runner: Runner, tpool: str, record: str) -> None:
    """Release the pool's metadata snapshot if it holds one (a reserve that failed or was never
    made leaves none), then forget the record."""
    if _held_root(runner, tpool) is not None:
        _message(runner, tpool, "release_metadata_snap")
    _forget(record)


def _write_record(record: str, root: str) -> None:
    """Record (atomically) that xenlvm holds or is reserving the pool's metadata snapshot."""
    temporary = f"{record}.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{root}\n")
    os.replace(temporary, record)


def _read_record(record: str) -> str | None:
    try:
        with open(record, encoding="ascii", errors="replace") as f:
            return f.read(64).strip() or "reserving"
    except FileNotFoundError:
        return None


def _forget(record: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record)


def _held_root(runner: Runner, tpool: str) -> str | None:
    return held_metadata_root(runner.query(["dmsetup", "status", tpool]).stdout)


def _message(runner: Runner, tpool: str, message: str) -> None:
    runner.change(["dmsetup", "message", tpool, "0", message])


def changed_ranges(runner: Runner, vg: str, pool: str, *, base: int, new: int, disk_size: int,
                   lock_dir: str) -> list[Range]:
    """The byte ranges in which the thin device new differs from base (their thin_id in the
    pool vg/pool), for a disk of disk_size bytes (see parse_delta)."""
    tmeta = f"/dev/mapper/{dm_name(vg, pool)}_tmeta"
    with metadata_snapshot(runner, vg, pool, lock_dir):
        # --thin1/--thin2: the names every release takes (0.9 also --snap1, 1.x also --root1)
        out = runner.query(["thin_delta", "-m", "--thin1", str(base), "--thin2", str(new), tmeta],
                           timeout=DELTA_TIMEOUT).stdout
    return parse_delta(out, disk_size, left=base, right=new)
