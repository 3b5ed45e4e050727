"""sesam's calling convention: which jobs a hook call is for, and how its arguments are logged."""

from __future__ import annotations

import os

import pytest

from xenlvm.config.load import parse_config
from xenlvm.errors import UsageError
from xenlvm.sesam import describe_arguments, select_jobs

CONFIG = parse_config("""\
jobs:
  xenvm:
    volume: system/xenvm
    snapshot: vmbackup
    size: 1G
    mountpoint: /mnt/vmbackup
    tasks: [xen_vm1, xen_vm2]
  data:
    volume: system/data
    snapshot: databackup
    size: 20%ORIGIN
    mountpoint: /mnt/databackup
    tasks: [data_daily]
""", "/etc/xenlvm/config.yaml")


def names(jobs) -> list[str]:
    return [job.name for job in jobs]


# ---------------------------------------------------------------------------------------------
# select_jobs


def test_job_is_selected_by_one_of_its_task_names():
    assert names(select_jobs(CONFIG, ["xen_vm2", "FULL", "20261129"])) == ["xenvm"]


def test_job_is_selected_by_its_mountpoint():
    assert names(select_jobs(CONFIG, ["-s", "/mnt/databackup", "C"])) == ["data"]


def test_mountpoint_with_trailing_slash_selects_the_job():
    assert names(select_jobs(CONFIG, ["/mnt/vmbackup/"])) == ["xenvm"]


@pytest.mark.parametrize("args", [
    [],
    ["other_task", "/srv/www", "FULL"],
    ["XEN_VM1"],            # task names are exact
    ["xen_vm"],             # not a prefix match
    ["/mnt/vmbackup2"],
    ["/mnt"],
    ["/"],
    ["xen_vm1 "],
])
def test_arguments_of_another_task_select_no_job(args):
    assert select_jobs(CONFIG, args) == []


def test_arguments_matching_two_jobs_select_both_in_config_order():
    assert names(select_jobs(CONFIG, ["data_daily", "/mnt/vmbackup"])) == ["xenvm", "data"]


def test_explicit_job_names_select_those_jobs_in_config_order():
    assert names(select_jobs(CONFIG, [], ["data", "xenvm"])) == ["xenvm", "data"]


def test_explicit_job_names_win_over_sesam_arguments():
    assert names(select_jobs(CONFIG, ["xen_vm1"], ["data"])) == ["data"]


def test_unknown_job_name_is_a_usage_error_listing_the_configured_jobs():
    with pytest.raises(UsageError) as caught:
        select_jobs(CONFIG, ["xen_vm1"], ["xenvm", "nosuch"])
    message = str(caught.value)
    assert "'nosuch'" in message
    assert "/etc/xenlvm/config.yaml" in message
    assert "xenvm, data" in message
    assert caught.value.exit_code == 2


MULTI_CONFIG = parse_config("""\
jobs:
  xenvm:
    mountpoint: /mnt/vmbackup
    tasks: [xen_all]
    volumes:
      - volume: system/xenvm
        snapshot: vmbackup
        size: 1G
      - volume: system/data
        snapshot: databackup
        size: 1G
  web:
    volume: system/web
    snapshot: webbackup
    size: 1G
    mountpoint: /mnt/webbackup
""", "/etc/xenlvm/config.yaml")


@pytest.mark.parametrize("args", [["xen_all", "FULL"], ["-s", "/mnt/vmbackup", "C"], ["/mnt/vmbackup/"]])
def test_job_with_several_volumes_is_selected_by_its_task_or_its_mountpoint(args):
    assert names(select_jobs(MULTI_CONFIG, args)) == ["xenvm"]


def test_job_with_several_volumes_runs_once_for_both_its_task_and_its_mountpoint():
    args = ["xen_all", "/mnt/vmbackup", "/mnt/webbackup"]
    assert names(select_jobs(MULTI_CONFIG, args)) == ["xenvm", "web"]


# ---------------------------------------------------------------------------------------------
# describe_arguments: whatever sesam passes, one printable line, never an exception


def test_no_arguments_are_described_as_none():
    assert describe_arguments([]) == "(none)"


def test_plain_arguments_are_shown_in_order():
    line = describe_arguments(["xen_vm1", "FULL", "/mnt/vmbackup"])
    assert line.index("xen_vm1") < line.index("FULL") < line.index("/mnt/vmbackup")


def test_non_utf8_arguments_stay_visible_and_loggable():
    arg = os.fsdecode(b"caf\xe9")  # how Python hands over a Latin-1 byte on a UTF-8 system
    line = describe_arguments([arg, "ok"])
    assert "\\udce9" in line
    line.encode("ascii")  # safe for any log handler
    assert "ok" in line


def test_newlines_in_arguments_do_not_split_the_log_line():
    line = describe_arguments(["first\nsecond", "tab\there", "cr\rlf"])
    assert "\n" not in line and "\r" not in line and "\t" not in line
    assert "first\\nsecond" in line


def test_very_long_argument_is_shortened():
    line = describe_arguments(["x" * 100_000])
    assert len(line) < 1000
    assert line.endswith("...")


def test_hundreds_of_arguments_are_summarised():
    line = describe_arguments([f"arg{i}" for i in range(500)])
    assert "arg0" in line and "arg63" in line
    assert "arg64'" not in line
    assert "and 436 more" in line
    assert len(line) < 64 * 300


@pytest.mark.parametrize("args", [
    ["\x00", "\udcff\udcfe", "\u202e", "🙂" * 300, ""],
    [os.fsdecode(bytes(range(1, 256)))] * 200,
])
def test_describe_arguments_never_raises_and_stays_one_ascii_line(args):
    line = describe_arguments(args)
    assert "\n" not in line
    line.encode("ascii")
