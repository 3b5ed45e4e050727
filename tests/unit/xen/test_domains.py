"""Xen: xl's output of two releases (built from their sources, tests/unit/data), the domains a
job picks, the pause window and its resume retries, the record of paused domains."""

from __future__ import annotations

import json
import logging

import pytest

from tests.unit.fakes import Answer, FakeRunner, Timeout, recorded
from xenlvm.config.load import parse_config
from xenlvm.errors import CommandFailed, FileError, PreflightFailed
from xenlvm.host.xl import Xl, disk_paths, parse_xl_list, parse_xl_list_long
from xenlvm.xen import domains as xen
from xenlvm.xen import export as xen_export

RELEASES = ["4.11", "4.17"]
BUSY = ("libxl: error: libxl_domain.c:590:libxl_domain_unpause: Domain 1:Unpausing domain: "
        "Device or resource busy\n")


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    delays: list[float] = []
    monkeypatch.setattr(xen.time, "sleep", delays.append)
    return delays


def xl_of(release: str = "4.17", **answers) -> Xl:
    runner = FakeRunner().on("xl list", recorded(f"xl_list_xen-{release}.txt"))
    runner.on("xl list -l", recorded(f"xl_list_l_xen-{release}.json"))
    for command, answer in answers.items():
        runner.on(command.replace("_", " "), *answer)
    return Xl(runner, 5.0)


def job(domains="auto", missing="warn", volume="system/xenvm"):
    listed = "auto" if domains == "auto" else json.dumps(list(domains))
    config = parse_config(f"""jobs:
  xenvm:
    volume: {volume}
    snapshot: vmbackup
    size: 1G
    mountpoint: /mnt/vmbackup
    xen: {{domains: {listed}, missing: {missing}}}
""", "config.yaml")
    return config.jobs["xenvm"]


# ---------------------------------------------------------------------------------------------
# xl's output, as two releases print it


@pytest.mark.parametrize("release", RELEASES)
def test_xl_list_gives_every_domain_with_its_id_and_whether_it_is_paused(release):
    assert parse_xl_list(recorded(f"xl_list_xen-{release}.txt")) == {
        "Domain-0": (0, False), "vm1": (1, False), "vm2": (3, False), "vm3": (4, True)}


@pytest.mark.parametrize("release", RELEASES)
def test_xl_list_l_gives_each_domains_record_and_its_disks(release):
    records = parse_xl_list_long(recorded(f"xl_list_l_xen-{release}.json"))
    assert list(records) == ["Domain-0", "vm1", "vm2", "vm3"]
    assert disk_paths(records["Domain-0"]) == ()  # no "disks" at all: empty arrays are left out
    assert disk_paths(records["vm1"]) == ("/dev/system/vm1-disk", "/dev/mapper/system-vm1--swap",
                                              "/srv/xenvm/vm1/data.img")
    assert disk_paths(records["vm3"]) == ("/dev/dm-3", "/var/lib/xen/images/vm3-data.qcow2")  # no CD


def test_sxp_output_says_to_set_json_in_xl_conf():
    with pytest.raises(xen.XenError) as caught:
        parse_xl_list_long(recorded("xl_list_l_sxp_xen-4.17.txt"))
    assert "set output_format to json in /etc/xen/xl.conf" in str(caught.value)


@pytest.mark.parametrize("text", ["{not json", '{"domid": 1}', '[{"domid": 1}]', "[1, 2]",
                                  '[{"config": {"c_info": {"name": null}}}]', '"a string"',
                                  # found by test_command_line_properties: check crashed on these
                                  '[{"config": {"c_info": {"name": "vm1"}, "disks": ["text"]}}]',
                                  '[{"config": {"c_info": {"name": "vm1"}, "disks": [{"pdev_path": 7}]}}]',
                                  '[{"config": {"c_info": {"name": "vm1"}, "disks": {"vdev": "xvda"}}}]',
                                  '[{"config": {"c_info": {"name": "vm1"}, "disks": [{"vdev": null}]}}]'])
def test_xl_list_l_output_that_is_not_xls_is_a_xen_error(text):
    with pytest.raises(xen.XenError, match="cannot understand the output of 'xl list -l'"):
        parse_xl_list_long(text)


def test_xl_list_output_with_a_column_that_is_not_a_number_is_a_xen_error():
    text = recorded("xl_list_xen-4.17.txt").replace("    1  1024", "    x  1024")
    with pytest.raises(xen.XenError, match="cannot understand the output of 'xl list'"):
        parse_xl_list(text)


# ---------------------------------------------------------------------------------------------
# Which domains a job pauses


@pytest.mark.parametrize("release", RELEASES)
def test_auto_picks_the_running_domains_with_a_disk_below_the_origins_mountpoint(release):
    chosen = xen.select_domains(job(), xl_of(release).view(), ["/srv/xenvm"])
    assert [(d.name, d.domid, d.paused) for d in chosen] == [("vm1", 1, False)]
    assert chosen[0].record["config"]["c_info"]["uuid"] == "7e2e6a42-3f1c-4b8e-9d3a-0c1f2b3a4d51"


def test_auto_with_an_unmounted_origin_is_refused():
    with pytest.raises(PreflightFailed, match="is not mounted"):
        xen.select_domains(job(), xl_of().view(), [])


@pytest.mark.parametrize("release", RELEASES)
def test_named_domains_missing_ones_warn_or_fail(release, caplog):
    with caplog.at_level(logging.WARNING, "xenlvm"):
        chosen = xen.select_domains(job(["vm2", "vm3", "vm9"]), xl_of(release).view(), [])
    assert [(d.name, d.paused) for d in chosen] == [("vm2", False), ("vm3", True)]
    assert "domain 'vm9' does not exist or is not running" in caplog.text
    with pytest.raises(PreflightFailed, match="xen.missing is 'fail'"):
        xen.select_domains(job(["vm9"], missing="fail"), xl_of(release).view(), [])


# ---------------------------------------------------------------------------------------------
# The pause window


def domain(name: str, paused: bool = False) -> xen.Domain:
    return xen.Domain(name, 1, paused)


def paused_host(tmp_path, **answers):
    """xl over a fake whose xl list shows vm1 as answered (paused or not)."""
    return xl_of(**answers), xen.PauseRecord(str(tmp_path), "xenvm")


RUNNING = recorded("xl_list_xen-4.17.txt")
VM1_PAUSED = RUNNING.replace("-b----     812.0", "--p---     812.0")


def test_the_window_pauses_runs_the_body_and_resumes_and_forgets_the_record(tmp_path):
    xl, record = paused_host(tmp_path, xl_pause=[""], xl_unpause=[""])
    with xen.paused(xl, [domain("vm1")], record) as window:
        assert record.read() == ["vm1"]  # written before the pause
        assert window.ms is None  # measured when it closes
    assert xl.runner.changes == [["xl", "pause", "vm1"], ["xl", "unpause", "vm1"]]
    assert record.read() == [] and window.ms is not None and window.ms >= 0


def test_a_failed_pause_resumes_and_says_nothing_was_snapshotted(tmp_path):
    xl, record = paused_host(tmp_path, xl_pause=[Answer(stderr=BUSY.replace("unpause", "pause"))],
                             xl_unpause=[""])
    with pytest.raises(xen.XenError, match="could not pause vm1.*Nothing was snapshotted"), \
            xen.paused(xl, [domain("vm1")], record):
        raise AssertionError("the body must not run")
    assert ["xl", "unpause", "vm1"] in xl.runner.changes


def test_resume_retries_until_xl_list_shows_the_domain_running(tmp_path, no_sleep):
    xl, record = paused_host(tmp_path, xl_pause=[""], xl_unpause=[Answer(stderr=BUSY), ""])
    xl.runner.on("xl list", VM1_PAUSED, RUNNING)  # after the failed unpause; after the retry
    with xen.paused(xl, [domain("vm1")], record):
        pass
    assert xl.runner.argvs_of("xl", "unpause") == [["xl", "unpause", "vm1"]] * 2
    assert no_sleep == [0.5] and record.read() == []


def test_a_domain_that_stays_paused_is_an_error_naming_the_fix_and_the_record_stays(tmp_path, no_sleep):
    xl, record = paused_host(tmp_path, xl_pause=[""], xl_unpause=[Answer(stderr=BUSY)])
    xl.runner.on("xl list", VM1_PAUSED)
    with pytest.raises(xen.XenError) as caught, xen.paused(xl, [domain("vm1")], record):
        pass
    assert "STILL PAUSED after 4 attempts" in str(caught.value) and "xl unpause vm1" in str(caught.value)
    assert len(xl.runner.argvs_of("xl", "unpause")) == xen.UNPAUSE_ATTEMPTS
    assert record.read() == ["vm1"]  # the next run resumes it


def test_a_resume_failure_is_reported_beside_the_original_error_not_instead(tmp_path, caplog):
    xl, record = paused_host(tmp_path, xl_pause=[""], xl_unpause=[Timeout()])
    xl.runner.on("xl list", VM1_PAUSED)
    with caplog.at_level(logging.ERROR, "xenlvm"), pytest.raises(RuntimeError, match="lvcreate failed"), \
            xen.paused(xl, [domain("vm1")], record):
        raise RuntimeError("lvcreate failed")
    assert "STILL PAUSED" in caplog.text


def test_resume_when_xl_list_fails_assumes_still_paused_and_retries(tmp_path):
    xl, _ = paused_host(tmp_path, xl_unpause=[""])
    xl.runner.on("xl list", Timeout(), RUNNING)
    xen.resume(xl, ["vm1"])
    assert xl.runner.argvs_of("xl", "unpause") == [["xl", "unpause", "vm1"]]


def test_nothing_to_pause_runs_no_xl(tmp_path):
    xl, record = paused_host(tmp_path)
    with xen.paused(xl, [], record):
        pass
    assert xl.runner.changes == []


def test_a_dry_run_window_writes_no_record_and_only_announces(tmp_path):
    xl, record = paused_host(tmp_path)
    xl.runner.dry_run = True
    with xen.paused(xl, [domain("vm1")], record):
        pass
    assert xl.runner.changes == [["xl", "pause", "vm1"], ["xl", "unpause", "vm1"]]
    assert not (tmp_path / "xenvm.paused").exists()


def test_xl_control_counts_an_error_on_stderr_as_a_failure_though_xl_exits_0():
    xl = xl_of(xl_pause=[Answer(stderr=BUSY)])
    failures = xl.control("pause", ["vm1"])
    assert "reported: libxl: error" in str(failures["vm1"])
    xl = xl_of(xl_pause=[Answer(stderr="xl: some warning\n", returncode=0)])
    assert xl.control("pause", ["vm1"]) == {}
    xl = xl_of(xl_pause=[Answer(returncode=1, stderr="oops")])
    assert isinstance(xl.control("pause", ["vm1"])["vm1"], CommandFailed)


# ---------------------------------------------------------------------------------------------
# The record of paused domains


def test_leftovers_of_a_killed_run_are_resumed_and_the_record_cleared(tmp_path):
    xl, record = paused_host(tmp_path, xl_unpause=[""])
    xl.runner.on("xl list", VM1_PAUSED, VM1_PAUSED, RUNNING)
    record.write(["vm1", "vm2", "gone"])
    xen.resume_leftovers(xl, record)
    assert xl.runner.argvs_of("xl", "unpause") == [["xl", "unpause", "vm1"]]  # only the paused one
    assert record.read() == []


def test_no_record_means_nothing_to_resume(tmp_path):
    xl, record = paused_host(tmp_path)
    xen.resume_leftovers(xl, record)
    assert xl.runner.calls == []


@pytest.mark.parametrize(("content", "said"), [
    (b'["vm1", ', "not the JSON xenlvm writes"),
    (b"\xff\xfe", "not the JSON xenlvm writes"),
    (b'{"vm1": true}', "not the list of domain names xenlvm writes"),
    (b"[1, 2]", "not the list of domain names xenlvm writes"),
])
def test_a_corrupt_record_is_an_error_saying_how_to_find_paused_domains(tmp_path, content, said):
    (tmp_path / "xenvm.paused").write_bytes(content)
    with pytest.raises(xen.XenError) as caught:
        xen.PauseRecord(str(tmp_path), "xenvm").read()
    message = str(caught.value)
    assert said in message and str(tmp_path / "xenvm.paused") in message
    assert "'xl list'" in message and "xl unpause NAME" in message


def test_an_unreadable_record_is_an_error_with_the_systems_reason(tmp_path):
    (tmp_path / "xenvm.paused").mkdir()  # open() fails: Is a directory
    with pytest.raises(xen.XenError, match="Is a directory"):
        xen.PauseRecord(str(tmp_path), "xenvm").read()


def test_a_record_that_cannot_be_written_is_a_file_error_before_any_pause(tmp_path):
    record = xen.PauseRecord(str(tmp_path / "missing-dir"), "xenvm")
    with pytest.raises(FileError, match="No such file or directory. Nothing was paused"):
        record.write(["vm1"])


# ---------------------------------------------------------------------------------------------
# Exporting the configuration


def test_export_writes_each_domains_record_and_its_config_files(tmp_path):
    etc = tmp_path / "etc-xen"
    (etc / "auto").mkdir(parents=True)
    (etc / "vm1.cfg").write_text('name = "vm1"\nmemory = 1024\n')
    (etc / "auto" / "vm2.cfg").write_text("name='vm2'\n")
    (etc / "other.cfg").write_text('name = "other"\n')
    records = parse_xl_list_long(recorded("xl_list_l_xen-4.17.json"))
    domains = [xen.Domain(n, 1, False, (), records[n]) for n in ("vm1", "vm2")]
    xen_export.export_configuration(job(), domains, str(tmp_path / "out"), str(etc))
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["vm1.cfg", "vm1.xl-list-l.json", "vm2.cfg", "vm2.xl-list-l.json"]
    assert json.loads((tmp_path / "out" / "vm2.xl-list-l.json").read_text()) == records["vm2"]


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "/etc/cron.d/x", "-rf", "vm\n1"])
def test_a_domain_whose_name_is_not_a_file_name_is_not_exported_and_nothing_is_written_outside(
        tmp_path, caplog, name):
    out = tmp_path / "state" / "xenvm" / "xen-config"
    record = {"domid": 7, "config": {"c_info": {"name": name}}}
    domains = [xen.Domain(name, 7, False, (), record), xen.Domain("vm1", 1, False, (), {"domid": 1})]
    xen_export.export_configuration(job(), domains, str(out), str(tmp_path / "etc-xen"))
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["state/xenvm/xen-config/vm1.xl-list-l.json"]
    assert f"{name!r} is not a Xen domain name" in caplog.text


def test_the_export_directory_is_below_state_dir_unless_given_or_disabled():
    def directory(export_dir: str) -> str | None:
        configured = parse_config("jobs:\n  xenvm:\n    volume: system/xenvm\n    snapshot: vmbackup\n"
                                  "    size: 1G\n    mountpoint: /mnt/vmbackup\n    xen:\n"
                                  f"      domains: auto\n{export_dir}", "/etc/xenlvm/config.yaml")
        return xen_export.export_directory(configured.jobs["xenvm"], "/var/lib/xenlvm")

    assert directory("") == "/var/lib/xenlvm/xenvm/xen-config"
    assert directory("      export_dir: /srv/xen-export\n") == "/srv/xen-export"
    assert directory('      export_dir: ""\n') is None
    assert directory("      export_dir: null\n") is None
