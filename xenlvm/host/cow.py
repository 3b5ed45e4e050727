"""Why a classic snapshot became invalid, which lvs cannot tell: the header of its
copy-on-write device says."""

from __future__ import annotations

import errno
import mmap
import os
import struct

from xenlvm.host.lvm import LogicalVolume

# dm-snapshot's persistent copy-on-write store begins with this magic ("SnAp"), then a valid flag.
_COW_MAGIC = 0x70416E53


def invalid_cause(snapshot: LogicalVolume) -> str:
    """Why an invalid classic snapshot became invalid: "io_errors", "overflow", or "unknown".

    lvs cannot tell: it shows both as invalid and 100% full. The kernel also marks the
    invalidation in the header of the snapshot's copy-on-write device, which it can do after an
    overflow but not while that device fails. So: the device fails with EIO now, or its header
    still says valid, means I/O errors; a header marked invalid means an overflow; a device that
    cannot be opened (inactive, not root) or a header of another shape tells nothing.
    """
    try:
        fd = os.open(f"{snapshot.dm_path}-cow", os.O_RDONLY | os.O_DIRECT)
    except OSError:
        return "unknown"
    # O_DIRECT (page-aligned buffer) reads what is on the device now, not a cached copy.
    with mmap.mmap(-1, 4096) as header:
        try:
            read = os.preadv(fd, [header], 0)
        except OSError as exc:
            return "io_errors" if exc.errno == errno.EIO else "unknown"
        finally:
            os.close(fd)
        return cause_from_cow_header(header[:read])


def cause_from_cow_header(header: bytes) -> str:
    """Given the first bytes of a dm-snapshot copy-on-write device, see invalid_cause."""
    if len(header) < 8:
        return "unknown"
    magic, valid = struct.unpack_from("<II", header)
    if magic != _COW_MAGIC:
        return "unknown"
    return "io_errors" if valid == 1 else "overflow"


def invalidated_by_io_errors(snapshot: LogicalVolume) -> bool:
    """Whether I/O errors, as far as can be known, invalidated the snapshot (see invalid_cause)."""
    return invalid_cause(snapshot) == "io_errors"
