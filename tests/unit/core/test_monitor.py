"""The monitor processes' common frame: a guard is known by its command line, also one that the
version before the layout by layers started under its former module name (post must stop it)."""

from __future__ import annotations

import pytest

from xenlvm.core.monitor import FORMER_NAMES, runs_module
from xenlvm.quiesce import guard as quiesce_guard
from xenlvm.thinpool import guard as pool_guard
from xenlvm.watchdog import watch


@pytest.mark.parametrize("module", [watch.MODULE, pool_guard.MODULE, quiesce_guard.MODULE])
def test_a_monitor_of_the_job_is_known_by_its_module_and_job(module):
    args = ["/usr/bin/python3", "-m", module, "--config", "/etc/xenlvm/config.yaml", "--job", "vms"]
    assert runs_module(args, module, "vms")
    assert not runs_module(args, module, "other")
    assert not runs_module(["/usr/bin/python3", "-m", "xenlvm.other", "--job", "vms"], module, "vms")


def test_the_guards_started_by_the_flat_layout_are_still_known():
    assert FORMER_NAMES == {pool_guard.MODULE: "xenlvm.pool_guard",
                            quiesce_guard.MODULE: "xenlvm.quiesce_guard"}
    for module, former in FORMER_NAMES.items():
        args = ["/usr/bin/python3", "-m", former, "--config", "c.yaml", "--job", "vms"]
        assert runs_module(args, module, "vms")
        assert not runs_module(["/usr/bin/python3", "-m", former, "--job", "other"], module, "vms")


def test_the_watchdog_keeps_its_name_across_the_move():
    assert watch.MODULE == "xenlvm.watchdog"  # python -m xenlvm.watchdog runs the package's __main__
