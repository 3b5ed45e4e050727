"""xl, the Xen toolstack: its queries (`xl list`, `xl list -l`) parsed into plain records,
and pause/unpause of named domains, each with the caller's timeout. Which domains a job pauses,
and the pause window around its snapshots, are xenlvm.xen.domains'.

xl's own exit status is not enough: ``xl pause`` and ``xl unpause`` exit 0 even when libxl
fails (tools/xl/xl_vmcontrol.c ignores the result), so failures are read from stderr.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from xenlvm.errors import CommandFailed, XenlvmError
from xenlvm.host.runner import Runner


class XenError(XenlvmError):
    """An xl call failed, or a domain could not be paused or resumed."""


def parse_xl_list(text: str) -> dict[str, tuple[int, bool]]:
    """Given `xl list` output, return name -> (domid, paused). Names may contain spaces, so the
    five numeric/state columns are taken from the right."""
    domains = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 6:
            continue
        if not fields[-5].isdigit():
            raise XenError(f"cannot understand the output of 'xl list': no domain id in {line!r}")
        domains[" ".join(fields[:-5])] = (int(fields[-5]), "p" in fields[-2])
    return domains


def parse_xl_list_long(text: str) -> dict[str, dict]:
    """Given `xl list -l` JSON, return name -> the domain's record."""
    if text.lstrip().startswith("("):
        raise XenError("'xl list -l' printed SXP, not JSON: set output_format to json in "
                       "/etc/xen/xl.conf (output_format=\"json\", xl's default)")
    try:
        records = json.loads(text) if text.strip() else []
        named = {r["config"]["c_info"]["name"]: r for r in records}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise XenError(f"cannot understand the output of 'xl list -l' ({type(exc).__name__}: {exc})") \
            from None
    if not all(isinstance(name, str) and isinstance(record, dict) for name, record in named.items()):
        raise XenError("cannot understand the output of 'xl list -l': a domain without a name")
    for name, record in named.items():
        disks = record["config"].get("disks", [])
        if not isinstance(disks, list) or not all(
                isinstance(d, dict) and all(isinstance(d.get(key, ""), str) for key in ("pdev_path", "vdev"))
                for d in disks):
            raise XenError(f"cannot understand the output of 'xl list -l': the disks of domain {name!r} are "
                           "not in libxl's form (a list of objects with the text fields pdev_path and vdev)")
    return named


def disk_paths(record: dict) -> tuple[str, ...]:
    return tuple(d["pdev_path"] for d in record.get("config", {}).get("disks", []) if d.get("pdev_path"))


@dataclass(frozen=True)
class XlView:
    """The domains as one `xl list` (name -> (domid, paused)) and one `xl list -l` showed them."""

    states: dict[str, tuple[int, bool]]
    records: dict[str, dict]


class Xl:
    """The xl calls xenlvm makes, each with the job's timeout."""

    def __init__(self, runner: Runner, timeout: float) -> None:
        self.runner = runner
        self.timeout = timeout

    def states(self) -> dict[str, tuple[int, bool]]:
        return parse_xl_list(self.runner.query(["xl", "list"], timeout=self.timeout).stdout)

    def records(self) -> dict[str, dict]:
        return parse_xl_list_long(self.runner.query(["xl", "list", "-l"], timeout=self.timeout).stdout)

    def view(self) -> XlView:
        return XlView(self.states(), self.records())

    def control(self, verb: str, names: Sequence[str]) -> dict[str, XenlvmError]:
        """Run `xl pause|unpause NAME` for all names at once; return the failures by name.
        xl exits 0 even when libxl fails, so an error on stderr counts as a failure too."""
        outcomes = self.runner.change_all([["xl", verb, name] for name in names], timeout=self.timeout)
        failures: dict[str, XenlvmError] = {}
        for name, outcome in zip(names, outcomes):
            if isinstance(outcome, CommandFailed):
                failures[name] = outcome
            elif outcome is not None and "error" in outcome.stderr.lower():
                failures[name] = XenError(f"xl {verb} {name} reported: {outcome.stderr.strip()}")
        return failures
