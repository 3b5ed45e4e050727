"""sbc_pre/sbc_post parse their options without click (xenlvm/hook_entry.py): whatever they
accept must mean exactly what `xenlvm pre|post` (click) makes of it, and anything else goes to
click, so that help, messages and exit codes stay the command line's."""

from __future__ import annotations

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xenlvm import cli
from xenlvm.hook_entry import HookArgs, parse_hook_args

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
