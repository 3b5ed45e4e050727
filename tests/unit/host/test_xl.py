"""xenlvm.host.xl: the xl calls, each with the caller's timeout, on output recorded from two Xen
releases (tests/unit/data; the parsing of each output: test_xen.py)."""

from __future__ import annotations

import pytest

from tests.unit.fakes import Answer, FakeRunner, recorded
from xenlvm.config.load import parse_config
from xenlvm.config.model import XL_TIMEOUT
from xenlvm.errors import CommandFailed
from xenlvm.host.xl import Xl, XlView, parse_xl_list, parse_xl_list_long


@pytest.mark.parametrize("release", ["4.11", "4.17"])
def test_a_view_is_one_xl_list_and_one_xl_list_l_with_the_callers_timeout(release):
    runner = FakeRunner().on("xl list", recorded(f"xl_list_xen-{release}.txt"))
    runner.on("xl list -l", recorded(f"xl_list_l_xen-{release}.json"))
    view = Xl(runner, 7.0).view()
    assert view == XlView(parse_xl_list(recorded(f"xl_list_xen-{release}.txt")),
                          parse_xl_list_long(recorded(f"xl_list_l_xen-{release}.json")))
    assert [(c.kind, list(c.argv), c.timeout) for c in runner.calls] == [
        ("query", ["xl", "list"], 7.0), ("query", ["xl", "list", "-l"], 7.0)]


def test_pause_failures_are_read_from_stderr_and_from_the_exit_status():
    # xl pause exits 0 when libxl fails: its error on stderr is the failure
    said = "libxl: error: libxl_domain.c:590:libxl_domain_pause: Domain 2:Pausing domain: busy\n"
    gone = CommandFailed(("xl", "pause", "vm3"), 1, "xl: unable to find domain vm3\n")
    runner = FakeRunner().on("xl pause vm1", "").on("xl pause vm2", Answer(stderr=said))
    runner.on("xl pause vm3", gone)
    failures = Xl(runner, 5.0).control("pause", ["vm1", "vm2", "vm3"])
    assert sorted(failures) == ["vm2", "vm3"]
    assert "Pausing domain: busy" in str(failures["vm2"]) and failures["vm3"] is gone


def test_a_jobs_xl_timeout_is_its_xen_timeout_or_the_default():
    config = parse_config("""jobs:
  paused:
    volume: system/xenvm
    snapshot: snap
    size: 1G
    mountpoint: /mnt/paused
    xen: {domains: [vm1], timeout: 9s}
  disks:
    mountpoint: /mnt/disks
    vmdisks: {domains: auto, size: 1G}
""", "config.yaml")
    assert config.jobs["paused"].xl_timeout == 9.0
    assert config.jobs["disks"].xl_timeout == XL_TIMEOUT
