"""The unit tests never look at this machine's block devices; the fake dom0 for those that
need a host (tests/unit/fakehost.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.unit.fakehost import FakeHost
from xenlvm.host import lvm


@pytest.fixture(scope="session", autouse=True)
def no_host_device_mapper(tmp_path_factory):
    """lvm reads /sys/dev/block to see whether a removed snapshot's device is gone: here, an
    empty directory (no device exists) unless a test makes its own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lvm, "SYS_DEV_BLOCK", str(tmp_path_factory.mktemp("sys-dev-block")))
        yield


@pytest.fixture
def host(tmp_path, monkeypatch) -> FakeHost:
    return FakeHost(Path(os.path.realpath(tmp_path)), monkeypatch)
