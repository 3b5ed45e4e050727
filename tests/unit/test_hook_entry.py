"""sbc_pre/sbc_post parse their options without click (xenlvm/hook_entry.py): whatever they
accept must mean exactly what `xenlvm pre|post` (click) makes of it, and anything else goes to
click, so that help, messages and exit codes stay the command line's."""

from __future__ import annotations

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xenlvm import app, cli
from xenlvm.errors import PartialBackup
from xenlvm.hook_entry import HookArgs, parse_hook_args, run_hook

TOKENS = ["--job", "--job=vm", "--config", "--config=/etc/x.yaml", "--dry-run", "--chain", "--chain=/h.local",
          "--", "-x", "--unknown", "--jobs", "xen_vm1", "/mnt/vmbackup", "a b", "-", "", "--dry-run=1",
          "-h", "--help", "FULL", "--job=", "=x", "-v"]


def click_parse(args: list[str]) -> HookArgs | None:
    """What the click command `xenlvm pre` makes of args; None when it stops (usage error, help)."""
    command = cli.main.commands["pre"]
    try:
        ctx = command.make_context("pre", list(args), parent=click.Context(cli.main), resilient_parsing=False)
    except (click.UsageError, click.exceptions.Exit):
        return None
    p = ctx.params
    return HookArgs(list(p["job_names"]), p["config_file"], p["dry_run"], p["chain"], list(p["sesam_args"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=8))
def test_the_hooks_read_their_arguments_exactly_as_the_command_line_does(args):
    ours = parse_hook_args(args)
    if ours is not None:  # None: handed to click, which decides
        assert ours == click_parse(args)


@pytest.mark.parametrize("args", [["--help"], ["xen_vm1", "-h"], ["--job"], ["--dry-run=yes"]])
def test_help_and_malformed_options_go_to_click(args):
    assert parse_hook_args(args) is None


def test_sesam_arguments_after_a_double_dash_are_never_options():
    parsed = parse_hook_args(["--job", "a", "--", "--job", "b", "--dry-run"])
    assert parsed == HookArgs(["a"], None, False, None, ["--job", "b", "--dry-run"])


def chained_hook(tmp_path, status: int = 0) -> str:
    """An admin's own sbc_post.local: records that it ran, and with which arguments."""
    hook = tmp_path / "sbc_post.local"
    hook.write_text(f'#!/bin/sh\necho "own post $*" >> {tmp_path}/own.log\nexit {status}\n')
    hook.chmod(0o755)
    return str(hook)


def run_post_hook(args: list[str], chain: str) -> int:
    with pytest.raises(SystemExit) as done:
        run_hook("post", args, chain=chain)
    return int(done.value.code or 0)


@pytest.mark.parametrize("config_text", [None, "jobs: [not, a, mapping]\n", "settings: {path: 3\n"])
def test_the_chained_post_hook_runs_when_the_configuration_does_not_load(tmp_path, config_text):
    config = tmp_path / "config.yaml"
    if config_text is not None:
        config.write_text(config_text)
        config.chmod(0o600)
    status = run_post_hook(["--config", str(config), "xen_vm1", "FULL"], chained_hook(tmp_path))
    assert status == 2  # xenlvm's configuration error still decides the exit status
    assert (tmp_path / "own.log").read_text() == "own post xen_vm1 FULL\n"


def job_config(tmp_path):
    """A configuration with one job (for the task xen_vm1) that logs into tmp_path."""
    config = tmp_path / "config.yaml"
    config.write_text(f"settings: {{log_file: {tmp_path}/xenlvm.log}}\njobs: {{vms: {{volume: data/vms, "
                      "snapshot: vmsnap, mountpoint: /mnt/vms, tasks: [xen_vm1]}}\n")
    config.chmod(0o600)
    return config


def test_the_chained_post_hook_runs_after_a_bug_in_xenlvm_and_xenlvms_status_wins(tmp_path, monkeypatch):
    config = job_config(tmp_path)

    def broken(*_args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(app, "run_phase", broken)
    status = run_post_hook(["--config", str(config), "xen_vm1"], chained_hook(tmp_path, status=5))
    assert status == 1
    assert (tmp_path / "own.log").read_text() == "own post xen_vm1\n"


def partial_post(tmp_path, monkeypatch, hook_status: int) -> int:
    """post as the hook runs it when xenlvm's own part ends partial (exit 3), with the
    admin's hook exiting hook_status."""
    config = job_config(tmp_path)

    def partial(*_args):
        raise PartialBackup("the backup of job vms is partial: not exposed as files: vm2/xvda")

    monkeypatch.setattr(app, "run_phase", partial)
    return run_post_hook(["--config", str(config), "xen_vm1"], chained_hook(tmp_path, status=hook_status))


def test_a_failed_own_post_hook_is_a_failure_even_when_xenlvms_backup_is_partial(tmp_path, monkeypatch):
    assert partial_post(tmp_path, monkeypatch, 4) == 1  # not 3: "incomplete but sound"
    logged = (tmp_path / "xenlvm.log").read_text()
    assert "ERROR" in logged and "your own post hook" in logged and "failed (exit 4)" in logged
    assert (tmp_path / "own.log").read_text() == "own post xen_vm1\n"


def test_a_partial_backup_with_a_good_own_post_hook_still_exits_3(tmp_path, monkeypatch):
    assert partial_post(tmp_path, monkeypatch, 0) == 3
