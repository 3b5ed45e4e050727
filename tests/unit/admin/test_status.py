"""How `xenlvm status` words a snapshot's state for a person."""

from __future__ import annotations

import json

import pytest

from tests.unit.fakes import Answer, Timeout, lvs_with, recorded
from xenlvm.admin.status import describe, job_status


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


# ---------------------------------------------------------------------------------------------
# status over what lvs and xl answer on a fake dom0 (tests/unit/fakehost.py)

XEN = "    xen:\n      domains: auto\n"


def status_of(host, jobs: str = "") -> dict:
    config = host.config(jobs)
    [report] = [job_status(config, host.runner, job, now=1764452100.0) for job in config.jobs.values()]
    json.dumps(report)  # what status --json prints
    return report


def test_an_inactive_snapshot_has_no_fill_and_no_known_validity(host):
    host.runner.on("lvs", recorded("lvs_snapshot_inactive.json"))  # recorded after lvchange -an
    report = status_of(host)
    [volume] = report["volumes"]
    assert (volume["present"], volume["active"]) == (True, False)
    assert (volume["fill_percent"], volume["valid"]) == (None, None)
    lines = describe(report)
    assert lines[1].endswith("snapshot present, xenlvm's, fill unknown, INACTIVE (activate it with "
                             "'lvchange -ay', or run xenlvm cleanup), valid or not: unknown while inactive")


def test_an_overflowed_snapshot_is_invalid_and_its_cause_unknown_without_its_device(host):
    host.runner.on("lvs", recorded("lvs_snapshot_overflowed.json"))
    [volume] = status_of(host)["volumes"]
    assert (volume["valid"], volume["invalid_cause"], volume["fill_percent"]) == (False, "unknown", 100.0)


def test_a_row_missing_fields_is_still_described(host):
    report = json.loads(recorded("lvs_snapshot_mounted.json"))
    for field in ("lv_attr", "data_percent", "lv_time", "lv_kernel_major", "lv_active"):
        report["report"][0]["lv"][0].pop(field)
    host.runner.on("lvs", json.dumps(report))
    lines = describe(status_of(host))
    assert "snapshot present, xenlvm's, fill unknown, INACTIVE" in lines[1]
    assert lines[2].startswith("    created at an unknown time (?) by xenlvm_run_")


@pytest.mark.parametrize(("answer", "problem"), [
    ("", "cannot understand the output of lvs"),
    ('{"report": []}', "cannot understand the output of lvs"),
    ('{"report": [{"lv": [{"lv_name": "x"}]}]}', "a row has KeyError"),
    (Answer(stderr="  Volume group system is locked", returncode=5), "Volume group system is locked"),
    (Timeout(), "did not finish within 120 s"),
])
def test_an_lvs_that_fails_or_answers_oddly_is_a_problem_not_a_crash(host, answer, problem):
    host.runner.on("lvs", answer)
    report = status_of(host)
    assert report["volumes"][0]["present"] is False
    assert any(problem in p for p in report["problems"]), report["problems"]
    assert describe(report)[-1].startswith("  problem: ")


def test_a_volume_group_missing_a_pv_is_a_problem(host):
    host.runner.on("lvs", lvs_with("lvs_snapshot_mounted.json", {
        "vmbackup": {"vg_attr": "wz-pn-"}, "xenvm": {"vg_attr": "wz-pn-"}}))
    assert any("missing" in p and "vgreduce --removemissing" in p for p in status_of(host)["problems"])


def test_domains_paused_missing_and_left_paused_by_a_killed_run(host):
    (host.root / "run" / "xenvm.paused").write_text('["vm1"]')
    domains = status_of(host, host.job_text(extra=XEN))["domains"]
    assert domains == {"paused": ["vm3"], "missing": [], "left_paused_by_a_killed_run": ["vm1"],
                       "left_frozen_by_a_killed_run": []}


def test_a_failing_xl_and_a_corrupt_record_are_reported(host):
    host.runner.on("xl list", Answer(stderr="xc: error: Could not obtain handle on privileged command "
                                            "interface: No such file or directory", returncode=1))
    (host.root / "run" / "xenvm.paused").write_text("garbage")
    report = status_of(host, host.job_text(extra=XEN))
    assert "Could not obtain handle" in report["domains"]["error"]
    assert any("cannot be read" in p for p in report["problems"])
    assert "  domains: cannot ask xl: " in "\n".join(describe(report))


def test_the_last_runs_are_described(host):
    state = host.root / "state" / "xenvm"
    state.mkdir(parents=True)
    (state / "state.json").write_text(json.dumps({
        "pre": {"ok": True, "exit_code": 0, "started": 1764450000.0, "duration": 2.5, "message": ""},
        "post": {"ok": False, "exit_code": 1, "started": 1764451000.0, "duration": 1.0, "message": "boom"}}))
    lines = describe(status_of(host))
    assert any(line.startswith("  last pre: ") and line.endswith(", 2.5 s, ok") for line in lines)
    assert any(line.endswith("FAILED (exit 1): boom") for line in lines)


def test_how_often_the_watchdog_extended_is_told_with_the_last_post(host):
    state = host.root / "state" / "xenvm"
    state.mkdir(parents=True)
    (state / "state.json").write_text(json.dumps({
        "post": {"ok": True, "exit_code": 0, "started": 1764451000.0, "duration": 1.0, "message": "",
                 "notes": {"fill_percent": 91.5, "watchdog_extensions": 2.0}}}))
    lines = describe(status_of(host))
    assert any(line.startswith("  last post: ") and line.endswith(
        "ok; the watchdog extended its snapshots 2 time(s)") for line in lines)
