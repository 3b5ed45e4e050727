"""The whole command line against any host: whatever the commands answer (failures, timeouts,
programs missing, odd JSON, any text) and whatever state the files are in, every command exits
0, 1 or 2, and without --debug nobody sees a traceback or is told of a bug in xenlvm.

The host is the fake dom0 of tests/unit/fakehost.py (recorded LVM and xl output, changed by
the commands xenlvm runs); hypothesis replaces some of its answers and breaks some files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.fakehost import FakeHost
from tests.unit.fakes import Answer, Timeout, recorded
from xenlvm import app, cli
from xenlvm.errors import CommandFailed
from xenlvm.host import interrupts

COMMANDS = {
    "pre": ["pre", "--job", "xenvm"],
    "post": ["post", "xen_vm1"],
    "status": ["status"],
    "status --json": ["status", "--json"],
    "check": ["check", "--hooks-dir", "{root}/hooks"],
    "cleanup": ["cleanup"],
    "install-hooks": ["install-hooks", "--dir", "{root}/hooks"],
}
STEPS = ("lvs", "vgs", "lvcreate", "lvremove", "mount", "umount", "blkid", "xl list", "xl list -l",
         "xl pause", "xl unpause")
# Per step, what a host may really answer (recorded, tests/unit/data) and odd answers of its shape.
LVS = ["lvs_snapshot_mounted.json", "lvs_snapshot_overflowed.json", "lvs_snapshot_inactive.json",
       "lvs_thin_pool_with_thick_snapshot.json", "lvs_no_snapshot.json"]
LVS_ODD = ["", "{", "[]", "null", "0", '"text"', '{"report": []}', '{"report": [{}]}',
           '{"report": [{"lv": {}}]}', '{"report": [{"lv": [{}]}]}',
           '{"report": [{"lv": [{"lv_name": 1, "vg_name": null}]}]}',
           '{"report": [{"lv": [{"lv_name": "vmbackup", "vg_name": "system", "lv_size": "x"}]}]}']
XL_LIST_ODD = ["", "Name ID Mem VCPUs State Time(s)\nvm1 x 1 1 -b---- 1.0\n", "Name\n\n\n",
               "Name ID Mem VCPUs State Time(s)\nvm 1 1 1024 1 --p--- 1.0\n"]
XL_LONG_ODD = ["", "[]", "{}", '[{"config": {}}]',
               '[{"domid": 1, "config": {"c_info": {"name": "vm1"}, '
               '"disks": [{"pdev_path": 7}, {"vdev": null}, "text"]}}]',
               '[{"config": {"c_info": {"name": ["x"]}}}]']
ANSWERED = {
    "lvs": st.one_of(st.sampled_from(LVS).map(recorded), st.sampled_from(LVS_ODD)),
    "vgs": st.sampled_from([recorded("vgs_names.json"), '{"report": [{"vg": []}]}', "{", ""]),
    "xl list": st.sampled_from([recorded("xl_list_xen-4.11.txt"), *XL_LIST_ODD]),
    "xl list -l": st.sampled_from([recorded("xl_list_l_xen-4.11.json"),
                                   recorded("xl_list_l_sxp_xen-4.17.txt"), *XL_LONG_ODD]),
}


def _failure(argv) -> CommandFailed:
    return CommandFailed(argv, None, "", not_found=True)


def answers_for(step: str) -> st.SearchStrategy:
    """What the step's command answers: its own kind of output (recorded or odd), any text, a
    failure with any words, a timeout, or no such program."""
    own = ANSWERED.get(step, st.just(""))
    return st.one_of(
        own, own, own,  # its own kind of output, most often
        st.text(max_size=80),
        st.builds(Answer, stdout=st.sampled_from(["", "{"]), stderr=st.text(max_size=60),
                  returncode=st.integers(0, 255)),
        st.just(Timeout()),
        st.just(_failure),
    )


host_answers = st.lists(
    st.sampled_from(STEPS).flatmap(lambda step: st.tuples(st.just(step), answers_for(step))),
    max_size=4).map(dict)

# The job's snapshot as a host may have it: lvs fields of the recordings (LVM 2.03.16)
SNAPSHOTS = {
    "none": None,
    "mounted": {"lv_attr": "swi-aos---"},
    "unmounted": {"lv_attr": "swi-a-s---"},
    "inactive": {"lv_attr": "swi---s---", "data_percent": "", "lv_snapshot_invalid": "unknown",
                 "lv_active": "", "lv_kernel_major": "-1", "lv_kernel_minor": "-1"},
    "overflowed": {"lv_attr": "swi-Ios---", "data_percent": "100.00",
                   "lv_snapshot_invalid": "snapshot invalid"},
    "foreign": {"lv_attr": "-wi-a-----", "lv_tags": "", "origin": ""},
}

# What can be wrong with the files xenlvm reads and writes.
FILE_FAULTS = ("none", "config missing", "config is a directory", "config not yaml", "config not utf-8",
               "pause record corrupt", "pause record is a directory", "state corrupt", "state dir is a file",
               "mount table unreadable", "hook dir is a file", "lock dir is a file",
               "xen config dir is a file")


def _break(host: FakeHost, fault: str) -> None:
    root = host.root
    config = root / "config.yaml"
    if fault == "config missing":
        config.unlink()
    elif fault == "config is a directory":
        config.unlink()
        config.mkdir()
    elif fault == "config not yaml":
        config.write_text("jobs: [\n")
    elif fault == "config not utf-8":
        config.write_bytes(b"jobs:\n  \xff\xfe: {}\n")
    elif fault == "pause record corrupt":
        (root / "run" / "xenvm.paused").write_bytes(b"\xff[")
    elif fault == "pause record is a directory":
        (root / "run" / "xenvm.paused").mkdir()
    elif fault == "state corrupt":
        (root / "state" / "xenvm").mkdir(parents=True, exist_ok=True)
        (root / "state" / "xenvm" / "state.json").write_text("{not json")
    elif fault == "state dir is a file":
        shutil.rmtree(root / "state")
        (root / "state").write_text("")
    elif fault == "mount table unreadable":
        host.mountinfo.unlink()
        host.mountinfo.mkdir()
    elif fault == "hook dir is a file":
        (root / "hooks").rmdir()
        (root / "hooks").write_text("")
    elif fault == "lock dir is a file":
        shutil.rmtree(root / "run")
        (root / "run").write_text("")
    elif fault == "xen config dir is a file":
        (root / "etc-xen").rmdir()
        (root / "etc-xen").write_text("")


@contextlib.contextmanager
def _fake_dom0():
    """A FakeHost in a fresh directory, wired into the command line (one per example)."""
    logger = logging.getLogger("xenlvm")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        host = FakeHost(Path(os.path.realpath(tmp)), patch)
        (host.root / "hooks").mkdir()
        (host.root / "etc-xen").mkdir()
        patch.setattr(app, "make_runner", lambda config, dry_run=False: host.runner)
        patch.setattr(app.os, "geteuid", lambda: 0)
        patch.setattr(interrupts, "install", lambda: None)
        try:
            yield host
        finally:
            for handler in logger.handlers:
                if handler not in handlers:
                    handler.close()
            logger.handlers[:] = handlers
            logger.propagate, logger.level = propagate, level


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command=st.sampled_from(sorted(COMMANDS)), debug=st.booleans(),
       leftover=st.sampled_from(sorted(SNAPSHOTS)),
       replaced=host_answers,
       fault=st.sampled_from(FILE_FAULTS))
def test_every_command_exits_0_1_or_2_and_shows_no_traceback_without_debug(command, debug, leftover,
                                                                          replaced, fault):
    with _fake_dom0() as host:
        extra = f"    xen:\n      domains: auto\n      config_dir: {host.root / 'etc-xen'}\n"
        host.config(host.job_text(extra=extra))
        if SNAPSHOTS[leftover] is not None:
            host.add_snapshot(**SNAPSHOTS[leftover])
        for step, answer in replaced.items():
            host.runner.on(step, answer)
        _break(host, fault)
        args = [a.replace("{root}", str(host.root)) for a in COMMANDS[command]]
        result = CliRunner().invoke(cli.main, [*(["--debug"] if debug else []), "--config",
                                               str(host.root / "config.yaml"), *args])

    said = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exception is None or isinstance(result.exception, SystemExit), said
    assert result.exit_code in (0, 1, 2), said
    if not debug:
        assert "Traceback" not in said, said
        assert "a bug in xenlvm" not in said, said
