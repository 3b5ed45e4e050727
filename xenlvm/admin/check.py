"""``xenlvm check``: pre's preflight and more, without changing anything. One finding per
line with ok/warn/fail and what to do."""

from __future__ import annotations

import os
import sys

from xenlvm.admin import install
from xenlvm.config.load import permission_problem
from xenlvm.config.model import Config, Job, SnapshotSpec
from xenlvm.core.inventory import Inventory, read_tolerant, read_xl
from xenlvm.core.preflight import Finding, tools_finding
from xenlvm.errors import XenlvmError
from xenlvm.host.fsutil import closed_to_others
from xenlvm.host.lvm import LogicalVolume, vg_not_found_message
from xenlvm.host.runner import Runner, missing_programs
from xenlvm.host.xl import XlView
from xenlvm.phases import kinds
from xenlvm.quiesce import check as quiesce_check
from xenlvm.targets.base import Target
from xenlvm.xen import domains as xen

# The programs pre and post run, which check must find on settings.path for every job (lvm2:
# the snapshots and the watchdog's lvextend; util-linux: mounts, filesystem probes, loop devices
# and partition tables); a kind adds its own (Kind.host_findings).
HOST_TOOLS = ("lvs", "lvcreate", "lvremove", "lvextend", "vgs",
              "mount", "umount", "blkid", "losetup", "partx")


def check_host(config: Config, hook_dir: str) -> list[Finding]:
    findings = []
    problem = permission_problem(config.path, os.stat(config.path))
    findings.append(Finding("fail", "config", problem) if problem else
                    Finding("ok", "config", f"{config.path} is valid, owned by root, writable only by root"))
    if os.geteuid() != 0:
        findings.append(Finding("warn", "root", "not running as root: some checks may be incomplete, and "
                                "pre/post must run as root"))
    jobs = config.jobs.values()
    tools = [*HOST_TOOLS, *(["xl"] if any(kinds.scope(j).xl for j in jobs) else [])]
    path = config.settings.path
    findings.append(tools_finding("tools", tools, missing_programs(tools, path), path, "fail",
                                  "install them (lvm2, util-linux, xen-utils) or set settings.path"))
    for finding in (f for job in jobs for kind in kinds.of(job) for f in kind.host_findings(config, job)):
        if finding not in findings:  # once for the host, however many jobs have the kind
            findings.append(finding)
    findings += check_hooks(hook_dir)
    return findings


def check_hooks(hook_dir: str) -> list[Finding]:
    findings = []
    for phase in install.HOOKS:
        state = install.inspect_hook(hook_dir, phase)
        if not state.exists:
            findings.append(Finding("fail", "hooks", f"{state.path} is missing: run 'xenlvm install-hooks'"))
        elif not state.ours:
            findings.append(Finding("fail", "hooks", f"{state.path} is not xenlvm's: "
                                    "run 'xenlvm install-hooks' "
                                    "(it keeps the existing hook and calls it)"))
        elif os.path.realpath(state.interpreter or "") != os.path.realpath(sys.executable):
            findings.append(Finding("warn", "hooks", f"{state.path} runs {state.interpreter}, not this "
                                    f"installation ({sys.executable}): run 'xenlvm install-hooks' again"))
        else:
            chained = f", chaining {state.local}" if state.local else ""
            findings.append(Finding("ok", "hooks",
                                    f"{state.path} is xenlvm's, bound to this installation{chained}"))
    findings += [Finding("fail", "hooks", f"the hooks run code from a path others can change: {problem}")
                 for problem in install.trust_problems(sys.executable)]
    return findings


def check_job(config: Config, runner: Runner, job: Job, try_quiesce: bool = False) -> list[Finding]:
    """What pre would find for the job; try_quiesce: also freeze and thaw each of its domains."""
    scope = kinds.scope(job)
    try:  # the host through the inventory: one lvs, the mount table; xl once, below
        host = read_tolerant(runner, scope)
    except XenlvmError as exc:
        return [Finding("fail", "origin", str(exc))]
    if host.missing_vgs:
        return [Finding("fail", "origin", vg_not_found_message(vg)) for vg in host.missing_vgs]
    xl: XlView | XenlvmError | None = None
    try:
        xl = read_xl(runner, job, scope)
    except XenlvmError as exc:  # said by each check that needs xl
        xl = exc
    kind_findings: list[Finding] = []
    planned: list[Target] = []
    for kind in kinds.of(job):
        found, targets = kind.check(config, job, host, xl)
        kind_findings += found
        planned += targets
    specs = [t.spec for t in planned]  # every kind's targets together, as pre checks them

    def own(path: str) -> LogicalVolume | None:  # a snapshot pre's sweep would find mounted at path
        return next((lv for kind in kinds.of(job) if (lv := kind.snapshot_at(job, host, path))), None)

    findings = kinds.check_targets(job, specs, host.vgs, host.mounts, own,
                                  {t.spec for t in planned if t.kept_as_base()})
    findings += _check_reach(job, specs) + kind_findings
    if job.xen is not None:
        findings += _check_xen(config, runner, job, host, xl, planned, try_quiesce)
    return findings


def _check_xen(config: Config, runner: Runner, job: Job, host: Inventory, xl: xen.XlView | XenlvmError | None,
               targets: list[Target], try_quiesce: bool) -> list[Finding]:
    """The domains pre would pause, freezing them (try_quiesce), what a killed run left."""
    assert job.xen is not None
    findings = []
    try:
        if isinstance(xl, XenlvmError):
            raise xl
        assert xl is not None
        paths = [path for t in targets for path in t.origin_mountpoints(host.mounts)]
        disk_domains = [d for d in (t.domain_of() for t in targets) if d]
        domains = xen.select_domains(job, xl, paths, disk_domains, kinds.excluded_domains(job))
        findings.append(Finding("ok", "xen", f"domains to {job.xen.mode}: "
                                f"{', '.join(d.name for d in domains) or 'none'}"))
    except XenlvmError as exc:
        findings.append(Finding("fail", "xen", str(exc)))
        domains = []
    findings += quiesce_check.check_commands(job) + quiesce_check.check_leftover(config, job)
    if try_quiesce:
        running = [d.name for d in domains if not d.paused]
        findings += quiesce_check.try_freeze(config, runner, job, running)
    try:
        left = xen.PauseRecord(config.settings.lock_dir, job.name).read()
    except XenlvmError as exc:
        findings.append(Finding("fail", "xen", str(exc)))
        left = []
    if left:
        findings.append(Finding("fail", "xen", f"a killed run may have left {', '.join(left)} paused: "
                                "run 'xenlvm cleanup'"))
    return findings


def _check_reach(job: Job, specs: list[SnapshotSpec]) -> list[Finding]:
    """Whether dom0's other users can reach the job's snapshots where they are mounted: at the
    job's mountpoint or below it (unless a kind mounts a tree of root's alone there first, as
    the VM disks' kind does)."""
    if not specs or kinds.mounts_tree(job):
        return []
    several = specs[0].mountpoint != job.mountpoint  # then mounted at <mountpoint>/<name>
    way = job.mountpoint if several else os.path.dirname(job.mountpoint)
    if not os.path.isdir(way) or closed_to_others(way):  # missing: the mountpoint's check says so
        return []
    fix = (f"chmod 700 {job.mountpoint}" if several else "mount it below a folder of root's alone, e.g. "
           f"'mkdir -m 700 /mnt/xenlvm' and mountpoint: /mnt/xenlvm/{os.path.basename(job.mountpoint)} "
           "(and the sesam task's source with it)")
    return [Finding("warn", "mountpoint", f"dom0's other users can reach the snapshot at {job.mountpoint}: "
                    "no folder on the way is closed to them. They read the VMs' files there as on the "
                    "volume itself, and a shell of theirs inside keeps post from unmounting it. To close "
                    f"it: {fix}")]
