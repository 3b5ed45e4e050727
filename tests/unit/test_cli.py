"""The command line: what an admin and sesam see, and the exit codes they get.

Only paths that never reach real LVM run here. Where a dry run needs lvs, the configured PATH
holds a fake lvs that prints lvs output recorded on real LVM, and fake changing tools that
record any call (a dry run must make none).
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from xenlvm import __version__, app, hook_entry
from xenlvm.admin import install
from xenlvm.cli import main
from xenlvm.host import interrupts

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def restore_logging():
    """cli sets up the 'xenlvm' logger on CliRunner's streams; put it back as it was."""
    logger = logging.getLogger("xenlvm")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    raise_exceptions = logging.raiseExceptions
    yield
    for handler in logger.handlers:
        if handler not in handlers:
            handler.close()
    logger.handlers[:] = handlers
    logger.propagate = propagate
    logger.setLevel(level)
    logging.raiseExceptions = raise_exceptions


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A private PATH of fake tools, a lock dir, a log file and a real mountpoint directory."""
    root = Path(os.path.realpath(tmp_path))
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (root / "vmbackup").mkdir()
    calls = root / "calls"
    calls.touch()
    for tool in ("lvcreate", "lvremove", "lvchange", "mount", "umount"):
        write_tool(bin_dir / tool, f'echo "{tool} $*" >> {calls}\nexit 1\n')
    write_tool(bin_dir / "blkid", "echo ext4\n")
    # Signal handlers would stay installed in the test process after the hook returns.
    monkeypatch.setattr(interrupts, "install", lambda: None)
    return root


def write_tool(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def fake_lvs(host: Path, recording: str) -> None:
    write_tool(host / "bin" / "lvs", f'echo "lvs $*" >> {host / "calls"}\n/bin/cat {DATA / recording}\n')


def write_config(host: Path, job_extra: str = "") -> str:
    path = host / "config.yaml"
    path.write_text(f"""\
settings:
  path: {host / 'bin'}
  log_file: {host / 'xenlvm.log'}
  lock_dir: {host / 'locks'}
  lock_timeout: 2s
  command_timeout: 10s
jobs:
  xenvm:
    volume: system/xenvm
    snapshot: vmbackup
    size: 1G
    mountpoint: {host / 'vmbackup'}
    tasks: [xen_vm1]
{job_extra}""")
    return str(path)


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# ---------------------------------------------------------------------------------------------
# Configuration problems: exit 2, file and line in the message


def test_bad_config_exits_2_naming_file_line_and_key(host):
    config = write_config(host, job_extra="    mountpont: /mnt/x\n")
    result = invoke("--config", config, "pre", "xen_vm1")
    assert result.exit_code == 2
    assert f"{config}:14: jobs.xenvm.mountpont: unknown key" in result.output
    assert "mountpont" in result.stderr  # errors go to stderr, which sesam keeps


def test_missing_config_exits_2_and_says_so(host):
    result = invoke("--config", str(host / "nope.yaml"), "post", "xen_vm1")
    assert result.exit_code == 2
    assert "configuration file not found" in result.output


def test_traceback_only_with_debug(host):
    config = write_config(host, job_extra="    size: 2G\n")
    assert "Traceback" not in invoke("--config", config, "pre", "xen_vm1").output
    result = invoke("--debug", "--config", config, "pre", "xen_vm1")
    assert result.exit_code == 2
    assert "Traceback" in result.output
    assert "is given twice" in result.output


def test_config_option_may_follow_the_command(host):
    config = write_config(host, job_extra="    volume: system/other\n")
    result = invoke("pre", "--config", config, "xen_vm1")
    assert result.exit_code == 2
    assert f"{config}:14:" in result.output


# ---------------------------------------------------------------------------------------------
# Which jobs run


@pytest.mark.parametrize("command", ["pre", "post"])
def test_arguments_of_another_task_do_nothing_and_exit_0(host, command):
    result = invoke("--config", write_config(host), command, "other_task", "FULL", "/srv/data")
    assert result.exit_code == 0
    assert "nothing to do" in result.output
    assert (host / "calls").read_text() == ""
    assert "nothing to do" in (host / "xenlvm.log").read_text()


def test_hook_arguments_that_look_like_options_are_sesam_arguments(host):
    result = invoke("--config", write_config(host), "pre", "-j", "--level", "FULL", "other_task")
    assert result.exit_code == 0
    assert "nothing to do" in result.output


def test_unknown_job_exits_2_listing_the_configured_jobs(host):
    result = invoke("--config", write_config(host), "pre", "--job", "nosuch")
    assert result.exit_code == 2
    assert "no job named 'nosuch'" in result.output
    assert "configured jobs: xenvm" in result.output


@pytest.mark.parametrize("args", [["--job", "xenvm"], ["xen_vm1"], ["{host}/vmbackup/"]])
def test_selected_job_refuses_to_run_without_root(host, monkeypatch, args):
    monkeypatch.setattr(app.os, "geteuid", lambda: 1000)
    args = [a.replace("{host}", str(host)) for a in args]
    result = invoke("--config", write_config(host), "pre", *args)
    assert result.exit_code == 2
    assert "must run as root" in result.output
    assert "--dry-run" in result.output
    assert (host / "calls").read_text() == ""


# ---------------------------------------------------------------------------------------------
# Dry run against recorded lvs output (no real LVM; the fake tools record any change)


def test_pre_dry_run_shows_the_changes_and_makes_none(host):
    fake_lvs(host, "lvs_snapshot_mounted.json")  # a leftover snapshot of a crashed run
    result = invoke("--config", write_config(host), "pre", "--dry-run", "--job", "xenvm")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    would = [line.split("would run: ", 1)[1] for line in lines if "would run: " in line]
    assert len(would) == 3
    assert would[0] == "lvremove --force --select lv_tags=xenlvm_job_xenvm system/vmbackup"
    assert would[1].startswith("lvcreate --snapshot --name vmbackup "
                               "--addtag xenlvm --addtag xenlvm_job_xenvm --addtag xenlvm_run_")
    assert would[1].endswith(" --size 1073741824b system/xenvm")
    assert would[2] == f"mount -t ext4 -o ro,nodev,nosuid,noexec /dev/mapper/system-vmbackup {host}/vmbackup"
    assert "dry run, nothing changed" in result.output
    calls = (host / "calls").read_text().splitlines()
    assert calls and all(call.startswith("lvs ") for call in calls)


MULTI_JOB = """\
  xenvm:
    mountpoint: {mountpoint}
    tasks: [xen_vm1]
    volumes:
      - volume: system/xenvm
        snapshot: vmbackup
        size: {size}
      - volume: system/data
        snapshot: databackup
        size: {size}
"""


def write_multi_config(host: Path, size: str) -> str:
    """A configuration whose job xenvm has two volumes in the VG system."""
    path = Path(write_config(host))
    text = path.read_text()
    text = text[:text.index("  xenvm:\n")] + MULTI_JOB.format(mountpoint=host / "vmbackup", size=size)
    path.write_text(text)
    return str(path)


def fake_lvs_with_data_volume(host: Path) -> None:
    """lvs of the recorded VG (origin xenvm, 1.6 GiB free, no snapshot) plus a second origin, data."""
    report = json.loads((DATA / "lvs_snapshot_mounted.json").read_text())
    rows = report["report"][0]["lv"]
    origin = next(row for row in rows if row["lv_name"] == "xenvm")
    data = {**origin, "lv_name": "data", "lv_attr": "-wi-a-----", "lv_kernel_minor": "5",
            "lv_dm_path": "/dev/mapper/system-data"}
    report["report"][0]["lv"] = [{**origin, "lv_attr": "-wi-a-----"}, data]
    (host / "lvs.json").write_text(json.dumps(report))
    write_tool(host / "bin" / "lvs", f'echo "lvs $*" >> {host / "calls"}\n/bin/cat {host / "lvs.json"}\n')


def test_pre_dry_run_of_a_job_with_two_volumes_snapshots_both_and_mounts_each_below(host):
    fake_lvs_with_data_volume(host)
    result = invoke("--config", write_multi_config(host, "512M"), "pre", "--dry-run", "--job", "xenvm")

    assert result.exit_code == 0, result.output
    would = [line.split("would run: ", 1)[1] for line in result.output.splitlines() if "would run: " in line]
    assert len(would) == 4
    tags = "--addtag xenlvm --addtag xenlvm_job_xenvm --addtag xenlvm_run_"
    assert would[0].startswith(f"lvcreate --snapshot --name vmbackup {tags}")
    assert would[0].endswith(f" --size {512 << 20}b system/xenvm")
    assert would[1].startswith(f"lvcreate --snapshot --name databackup {tags}")
    assert would[1].endswith(f" --size {512 << 20}b system/data")
    assert would[2] == ("mount -t ext4 -o ro,nodev,nosuid,noexec /dev/mapper/system-vmbackup "
                        f"{host}/vmbackup/xenvm")
    assert would[3] == ("mount -t ext4 -o ro,nodev,nosuid,noexec /dev/mapper/system-databackup "
                        f"{host}/vmbackup/data")
    calls = (host / "calls").read_text().splitlines()
    assert calls and all(call.startswith("lvs ") for call in calls)
    assert not (host / "vmbackup" / "xenvm").exists()  # a dry run creates no directory either


def test_pre_refuses_two_snapshots_that_fit_the_volume_group_only_one_at_a_time(host):
    fake_lvs_with_data_volume(host)  # 1.6 GiB free: one 1G snapshot fits, two do not
    result = invoke("--config", write_multi_config(host, "1G"), "pre", "--dry-run", "--job", "xenvm")

    assert result.exit_code == 1
    assert "after 1.0 GiB for the job's other snapshots" in result.output
    assert "Nothing was changed" in result.output
    assert "would run: " not in result.output
    calls = (host / "calls").read_text().splitlines()
    assert all(call.startswith("lvs ") for call in calls)


def test_missing_volume_group_exits_1_with_advice(host):
    write_tool(host / "bin" / "lvs", "echo '  Volume group \"system\" not found' >&2\n"
                                     "echo '  Cannot process volume group system' >&2\nexit 5\n")
    # vgs, not lvs' words, tells that the VG does not exist
    write_tool(host / "bin" / "vgs", """echo '{"report": [{"vg": [{"vg_name":"data"}]}]}'\n""")
    result = invoke("--config", write_config(host), "pre", "--dry-run", "--job", "xenvm")
    assert result.exit_code == 1
    assert "volume group 'system' not found" in result.output


def test_unexpected_error_exits_1_and_asks_for_a_report(host, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(app, "select_jobs", broken)
    result = invoke("--config", write_config(host), "post", "xen_vm1")
    assert result.exit_code == 1
    assert "a bug in xenlvm" in result.output
    assert "RuntimeError: boom" in result.output


# ---------------------------------------------------------------------------------------------
# Entry points


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert __version__ in result.output


def test_sbc_entrypoint_behaves_like_the_command(host, capsys):
    with pytest.raises(SystemExit) as caught:
        hook_entry.run_hook("post", ["--config", write_config(host), "other_task"])
    assert caught.value.code == 0
    assert "nothing to do" in capsys.readouterr().out


def test_sbc_entrypoint_reports_usage_errors_with_exit_2(host, capsys):
    with pytest.raises(SystemExit) as caught:
        hook_entry.run_hook("pre", ["--config", write_config(host), "--job", "nosuch"])
    assert caught.value.code == 2
    assert "no job named 'nosuch'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# A file the host does not let xenlvm write: exit 1 with the path and the reason, no traceback


def test_install_hooks_that_cannot_write_a_hook_names_the_file_and_the_reason(tmp_path):
    (tmp_path / "sbc_pre.xenlvm-tmp").mkdir()  # where the new hook is written first: open() fails
    result = invoke("install-hooks", "--dir", str(tmp_path))
    assert result.exit_code == 1
    assert f"cannot install the hook file {tmp_path}/sbc_pre.xenlvm-tmp: Is a directory" in result.stderr
    assert "Traceback" not in result.output and "a bug" not in result.output


def test_install_hooks_without_permission_says_it_must_run_as_root(tmp_path, monkeypatch):
    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", path)
    monkeypatch.setattr(install.os, "open", denied)  # what a non-root user gets in /opt/sesam
    result = invoke("install-hooks", "--dir", str(tmp_path))
    assert result.exit_code == 1
    assert f"{tmp_path}/sbc_pre.xenlvm-tmp: Permission denied" in result.stderr
    assert "install-hooks must run as root" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_uninstall_that_cannot_remove_a_hook_names_it(tmp_path, monkeypatch):
    install.install_hooks(str(tmp_path))

    def read_only(path):
        raise OSError(errno.EROFS, "Read-only file system", path)
    monkeypatch.setattr(install.os, "unlink", read_only)
    result = invoke("install-hooks", "--uninstall", "--dir", str(tmp_path))
    assert result.exit_code == 1
    said = f"cannot remove or restore the hook file {tmp_path}/sbc_pre: Read-only file system"
    assert said in result.stderr


def test_an_os_error_that_reaches_the_top_is_a_host_condition_not_a_bug(caplog):
    def work():
        raise OSError(errno.ENOSPC, "No space left on device", "/var/lib/xenlvm/xenvm/state.json")
    with caplog.at_level(logging.ERROR, "xenlvm"):
        assert app.finish(work, debug=False) == 1
    assert "cannot use /var/lib/xenlvm/xenvm/state.json: No space left on device" in caplog.text
    assert "a bug" not in caplog.text and "Traceback" not in caplog.text
