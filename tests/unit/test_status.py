"""How `xenlvm status` words a snapshot's state for a person."""

from __future__ import annotations

import pytest

from xenlvm.status import describe


def _report(**volume) -> dict:
    snapshot = {"volume": "system/xenvm", "snapshot": "system/vmbackup", "mountpoint": "/mnt/vmbackup",
                "present": True, "owned_by_xenlvm": True, "thin": False, "fill_percent": 100.0,
                "valid": True, "invalid_cause": None, "mounted_at": ["/mnt/vmbackup"],
                "created": "2026-11-30 01:00:00 +0000", "age_seconds": 600,
                "created_by_run": "xenlvm_run_1_2", "stale": False, **volume}
    return {"job": "xenvm", "mountpoint": "/mnt/vmbackup", "volumes": [snapshot], "last_runs": {},
            "problems": []}


@pytest.mark.parametrize(("volume", "said"), [
    ({}, "100.0% full, valid"),
    ({"valid": False, "invalid_cause": "overflow"}, "100.0% full, OVERFLOWED (invalid)"),
    ({"valid": False, "invalid_cause": "io_errors"},
     "100.0% full, INVALID (I/O errors on its copy-on-write device)"),
    ({"valid": False, "invalid_cause": "unknown"},
     "100.0% full, INVALID (overflowed or I/O errors: its copy-on-write header cannot be read)"),
])
def test_an_invalid_snapshot_is_called_overflowed_only_when_it_overflowed(volume, said):
    first = describe(_report(**volume))[1]
    assert first == f"  system/xenvm -> system/vmbackup at /mnt/vmbackup: snapshot present, xenlvm's, {said}"
