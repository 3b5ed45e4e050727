"""Unit tests for the fake ``xl`` used by the system tests.

The system tests trust this stand-in to behave like Xen's real ``xl``, so the
output layout, error texts, exit codes, fault injection and call log are
pinned down here by running the script as a subprocess on the test host.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

XL = Path(__file__).resolve().parents[2] / "sandbox" / "guest" / "xl"

HEADER = "Name                                        ID   Mem VCPUs\tState\tTime(s)"


@pytest.fixture
def xl(tmp_path):
    """Run the fake xl with a private state directory."""
    state = tmp_path / "xl-state"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(XL), *args],
            env={**os.environ, "XL_STATE": str(state)},
            capture_output=True,
            text=True,
            timeout=30,
        )

    run.state = state
    return run


def create(xl, name: str, *args: str) -> int:
    result = xl("fake-create", name, *args)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def list_rows(xl, *names: str) -> list[list[str]]:
    result = xl("list", *names)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == HEADER
    return [line.split() for line in lines[1:]]


def state_of(xl, name: str) -> str:
    (row,) = list_rows(xl, name)
    return row[4]


def log_lines(xl) -> list[list[str]]:
    text = (xl.state / "calls.log").read_text()
    return [line.split(" ", 4) for line in text.splitlines()]


def test_script_is_executable_python3():
    assert os.access(XL, os.X_OK)
    assert XL.read_text().startswith("#!/usr/bin/env python3\n")


def test_list_uses_xl_column_layout_with_domain0_first(xl):
    assert create(xl, "vm1", "--disk", "/srv/xenvm/vm1/disk.img", "--memory", "2048", "--vcpus", "2") == 1
    assert create(xl, "vm2", "--disk", "/srv/xenvm/vm2/disk.img", "--paused") == 2

    lines = xl("list").stdout.splitlines()

    assert lines[0] == HEADER
    # printf("%-40s %5d %5lu %5d     %c%c%c%c%c%c  %8.1f") from xl_info.c
    assert lines[1].startswith("Domain-0" + " " * 32 + "     0  1024     1     r-----  ")
    assert lines[2].startswith("vm1" + " " * 37 + "     1  2048     2     -b----  ")
    assert lines[3].startswith("vm2" + " " * 37 + "     2  1024     1     --p---  ")
    assert all(len(line) == len(lines[1]) for line in lines[2:])
    assert float(lines[3].split()[-1]) == 0.0  # paused since creation: no CPU time


def test_list_single_domain_and_unknown_domains(xl):
    create(xl, "vm1")

    assert [row[0] for row in list_rows(xl, "vm1")] == ["vm1"]
    assert [row[0] for row in list_rows(xl, "0")] == ["Domain-0"]

    unknown = xl("list", "vm9")
    assert unknown.returncode == 1
    assert unknown.stderr == "vm9 is an invalid domain identifier (rc=-6)\n"

    missing_id = xl("list", "42")
    assert missing_id.returncode == 1
    assert missing_id.stderr.endswith("Error: Domain '42' does not exist.\n")

    two = xl("list", "vm1", "Domain-0")  # real xl takes at most one domain
    assert two.returncode == 1
    assert two.stdout.startswith("Usage: xl [-v] list")


def test_list_long_prints_libxl_domain_config_json(xl):
    create(
        xl,
        "vm1",
        "--disk",
        "/srv/xenvm/vm1/disk.img",
        "--disk",
        "/dev/vg0/vm1-data,xvdc",
        "--vcpus",
        "2",
        "--memory",
        "512",
    )

    result = xl("list", "-l")

    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert [r["domid"] for r in records] == [0, 1]
    dom0, vm1 = records
    assert dom0["config"]["c_info"] == {"type": "pv", "name": "Domain-0"}
    c_info = vm1["config"]["c_info"]
    assert (c_info["type"], c_info["name"]) == ("pv", "vm1")
    assert len(c_info["uuid"]) == 36
    b_info = vm1["config"]["b_info"]
    assert (b_info["max_vcpus"], b_info["avail_vcpus"]) == (2, [0, 1])
    assert b_info["max_memkb"] == b_info["target_memkb"] == 512 * 1024
    disks = vm1["config"]["disks"]
    assert [(d["pdev_path"], d["vdev"], d["backend"], d["format"], d["readwrite"]) for d in disks] == [
        ("/srv/xenvm/vm1/disk.img", "xvda", "qdisk", "raw", 1),
        ("/dev/vg0/vm1-data", "xvdc", "phy", "raw", 1),
    ]
    # yajl beautify style: 4-space indent, blank line inside empty objects,
    # trailing newline from yajl plus one from puts().
    assert '\n                "type.pv": {\n\n                },\n' in result.stdout
    assert result.stdout.endswith("\n]\n\n")


def test_list_long_for_one_domain(xl):
    create(xl, "vm1")
    create(xl, "vm2")

    records = json.loads(xl("list", "-l", "vm2").stdout)

    assert [(r["domid"], r["config"]["c_info"]["name"]) for r in records] == [(2, "vm2")]


def test_pause_is_counted_like_the_hypervisor(xl):
    create(xl, "vm1")

    assert xl("pause", "vm1").returncode == 0
    assert xl("pause", "1").returncode == 0  # already paused: still succeeds
    assert state_of(xl, "vm1") == "--p---"

    assert xl("unpause", "vm1").returncode == 0
    assert state_of(xl, "vm1") == "--p---"  # second pause still holds it
    assert xl("unpause", "vm1").returncode == 0
    assert state_of(xl, "vm1") == "-b----"


def test_unpausing_a_running_domain_logs_einval_but_exits_zero(xl):
    create(xl, "vm1")

    result = xl("unpause", "vm1")

    assert result.returncode == 0
    assert result.stderr.startswith("libxl: error: libxl_domain.c:")
    assert result.stderr.endswith(":domain_unpause_done: Domain 1:Unpausing domain: Invalid argument\n")
    assert state_of(xl, "vm1") == "-b----"


def test_domain0_cannot_be_paused(xl):
    for qualifier in ("Domain-0", "0"):
        result = xl("pause", qualifier)
        assert result.returncode == 0
        assert result.stderr.endswith(":libxl_domain_pause: Domain 0:Pausing domain: Invalid argument\n")
    assert state_of(xl, "Domain-0") == "r-----"


def test_unknown_domain_errors(xl):
    by_name = xl("pause", "vm9")
    assert (by_name.returncode, by_name.stderr) == (1, "vm9 is an invalid domain identifier (rc=-6)\n")

    by_id = xl("pause", "42")  # digits are used as domid without checking
    assert by_id.returncode == 0
    assert by_id.stderr.endswith("Domain 42:Pausing domain: No such process\n")

    domid = xl("domid", "vm9")
    assert (domid.returncode, domid.stderr) == (
        1,
        "Can't get domid of domain name 'vm9', maybe this domain does not exist.\n",
    )

    domname = xl("domname", "7")
    assert (domname.returncode, domname.stderr) == (
        1,
        "Can't get domain name of domain id '7', maybe this domain does not exist.\n",
    )


def test_domid_and_domname_convert_both_ways(xl):
    create(xl, "vm1")
    create(xl, "vm2")

    assert xl("domid", "vm2").stdout == "2\n"
    assert xl("domid", "Domain-0").stdout == "0\n"
    assert xl("domname", "1").stdout == "vm1\n"
    invalid = xl("domname", "abc")
    assert (invalid.returncode, invalid.stderr) == (1, "Invalid domain id.\n\n")


def test_missing_argument_is_a_usage_error(xl):
    result = xl("pause")

    assert result.returncode == 2
    assert result.stderr == "'xl pause' requires at least 1 argument.\n\n"
    assert result.stdout.startswith("Usage: xl [-vf] pause <Domain>")


def test_domids_are_not_reused_after_fake_destroy(xl):
    create(xl, "vm1")
    assert xl("fake-destroy", "vm1").returncode == 0
    assert [row[0] for row in list_rows(xl)] == ["Domain-0"]

    assert create(xl, "vm1") == 2
    assert (
        xl(
            "fake-destroy",
            "vm1",
        ).returncode
        == 0
    )
    assert xl("fake-destroy", "vm1").returncode == 1
    assert xl("fake-destroy", "Domain-0").returncode == 1


def test_fake_create_rejects_duplicates_and_domain0(xl):
    create(xl, "vm1")

    assert xl("fake-create", "vm1").returncode == 1
    assert xl("fake-create", "Domain-0").returncode == 2
    assert xl("fake-create", "123").returncode == 2


def test_injected_failure_with_count_then_success(xl):
    create(xl, "vm1", "--paused")
    (xl.state / "inject").write_text("fail unpause vm1 2\n")

    for _ in range(2):
        failed = xl("unpause", "vm1")
        assert failed.returncode == 1
        assert "Unpausing domain" in failed.stderr
        assert state_of(xl, "vm1") == "--p---"

    assert xl("unpause", "vm1").returncode == 0
    assert state_of(xl, "vm1") == "-b----"
    assert (xl.state / "inject").read_text() == ""


def test_injected_failure_matches_only_its_target(xl):
    create(xl, "vm1")
    create(xl, "vm2")
    (xl.state / "inject").write_text("# comment\nfail pause vm2\n")

    assert xl("pause", "vm1").returncode == 0
    assert xl("pause", "vm2").returncode == 1
    assert xl("pause", "2").returncode == 1  # domid alias of vm2
    assert state_of(xl, "vm2") == "-b----"


def test_injected_list_failure(xl):
    (xl.state).mkdir()
    (xl.state / "inject").write_text("fail list * 1\n")

    failed = xl("list", "-l")

    assert failed.returncode == 1
    assert failed.stdout == ""
    assert failed.stderr.endswith("libxl_list_domain failed.\n")
    assert xl("list").returncode == 0


def test_injected_hang_blocks_until_killed_and_is_logged(xl):
    create(xl, "vm1")
    (xl.state / "inject").write_text("hang pause vm1 1\n")
    env = {**os.environ, "XL_STATE": str(xl.state)}
    proc = subprocess.Popen(
        [str(XL), "pause", "vm1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not any(e[1:3] == [str(proc.pid), "start"] for e in log_lines(xl)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
        assert proc.poll() is None  # still hanging
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == -signal.SIGTERM

    assert [e[2:] for e in log_lines(xl) if e[1] == str(proc.pid)] == [
        ["start", "-", "xl pause vm1"],
        ["end", "143", "xl pause vm1"],
    ]
    assert state_of(xl, "vm1") == "-b----"  # hung before acting
    assert xl("pause", "vm1").returncode == 0  # the rule fired only once


def test_calls_log_records_start_and_end_in_order(xl):
    create(xl, "vm1")
    xl("pause", "vm1")
    xl("pause", "vm9")
    xl("unpause", "vm1")

    entries = log_lines(xl)

    assert [(e[2], e[3], e[4]) for e in entries] == [
        ("start", "-", "xl fake-create vm1"),
        ("end", "0", "xl fake-create vm1"),
        ("start", "-", "xl pause vm1"),
        ("end", "0", "xl pause vm1"),
        ("start", "-", "xl pause vm9"),
        ("end", "1", "xl pause vm9"),
        ("start", "-", "xl unpause vm1"),
        ("end", "0", "xl unpause vm1"),
    ]
    stamps = [int(e[0]) for e in entries]
    assert stamps == sorted(stamps)
    assert abs(stamps[-1] - time.time_ns()) < 60 * 10**9  # wall clock, in ns
    for start, end in zip(entries[::2], entries[1::2]):
        assert start[1] == end[1]  # same pid


def test_concurrent_pauses_are_all_counted(xl):
    create(xl, "vm1")
    env = {**os.environ, "XL_STATE": str(xl.state)}
    procs = [subprocess.Popen([str(XL), "pause", "vm1"], env=env) for _ in range(8)]
    assert [p.wait(timeout=30) for p in procs] == [0] * 8

    domain = json.loads((xl.state / "domains" / "vm1.json").read_text())
    assert domain["pause_count"] == 8
    assert len(log_lines(xl)) == 2 + 16
