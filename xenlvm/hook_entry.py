"""The sesam hooks' entry (sbc_pre, sbc_post), without click.

sesam runs a hook twice for every backup, and importing click costs a quarter of a second on a
slow dom0 (measured in the sandbox, see bench/results.md): the hooks parse their few options
here. Anything unusual (--help, a missing option value) is handed to the click command line in
xenlvm.cli, so that every message and exit code is the one ``xenlvm pre|post`` gives.

The work itself, and the exit codes, are xenlvm.app's, which the command line shares.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from xenlvm import logs
from xenlvm.app import finish, hook_work
from xenlvm.config.model import config_path

_VALUE_OPTIONS = {"--job": "job_names", "--config": "config_file", "--chain": "chain"}


@dataclass
class HookArgs:
    job_names: list[str] = field(default_factory=list)
    config_file: str | None = None
    dry_run: bool = False
    chain: str | None = None
    sesam_args: list[str] = field(default_factory=list)


def parse_hook_args(args: Sequence[str]) -> HookArgs | None:
    """Parse a hook's arguments as ``xenlvm pre|post`` does: its options anywhere before '--',
    everything else is sesam's. None when click must handle them (help, a malformed option)."""
    parsed = HookArgs()
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            parsed.sesam_args += args[i + 1:]
            break
        name, has_value, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if arg in ("-h", "--help"):
            return None
        if name in _VALUE_OPTIONS:
            if not has_value:
                if i + 1 == len(args):
                    return None  # click says that it requires an argument
                i += 1
                value = args[i]
            if name == "--job":
                parsed.job_names.append(value)
            else:
                setattr(parsed, _VALUE_OPTIONS[name], value)
        elif name == "--dry-run":
            if has_value:
                return None  # click says that it takes no value
            parsed.dry_run = True
        else:
            parsed.sesam_args.append(arg)
        i += 1
    return parsed


def run_hook(phase: str, argv: Sequence[str] | None = None, chain: str | None = None) -> None:
    """Entry for the sesam hook scripts: ``sbc_pre ARGS`` behaves like ``xenlvm pre ARGS``."""
    args = list(sys.argv[1:] if argv is None else argv)
    chained = ["--chain", chain] if chain else []
    parsed = parse_hook_args([*chained, *args])
    if parsed is None:  # click's messages and exit codes: only now pay for importing it
        from xenlvm.cli import main
        main.main(args=[phase, *chained, *args], prog_name=f"sbc_{phase}")
        return
    logs.setup()
    path = config_path(parsed.config_file)
    sys.exit(finish(lambda: hook_work(phase, path, parsed.job_names, parsed.dry_run, parsed.chain,
                                      parsed.sesam_args), debug=False))


