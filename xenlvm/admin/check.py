"""``xenlvm check``: pre's preflight and more, without changing anything. One finding per
line with ok/warn/fail and what to do."""

from __future__ import annotations

import os
import sys

from xenlvm.admin import install
from xenlvm.config.load import permission_problem
from xenlvm.config.model import Config, Job
from xenlvm.core import ownership, preflight
from xenlvm.core.inventory import read_tolerant, read_xl
from xenlvm.core.preflight import Finding
from xenlvm.errors import XenlvmError
from xenlvm.host import mounts as mounts_mod
from xenlvm.host.fsutil import closed_to_others
from xenlvm.host.lvm import LogicalVolume, VolumeGroup, vg_not_found_message
from xenlvm.host.runner import Runner, which
from xenlvm.host.xl import XlView
from xenlvm.quiesce import check as quiesce_check
from xenlvm.thinpool import space as thinpool
from xenlvm.vmdisks import image_server
from xenlvm.vmdisks import target as vmdisk_target
from xenlvm.xen import domains as xen

# The programs pre and post run, which check must find on settings.path: for every job (lvm2:
# the snapshots and the watchdog's lvextend; util-linux: mounts, filesystem probes, loop devices
# and partition tables), and for a job with VM disks the tools that record each disk's layout
# (layout.json: sfdisk from util-linux, dumpe2fs from e2fsprogs, xfs_info from xfsprogs).
HOST_TOOLS = ("lvs", "lvcreate", "lvremove", "lvextend", "vgs",
              "mount", "umount", "blkid", "losetup", "partx")
VMDISK_TOOLS = ("sfdisk", "dumpe2fs", "xfs_info")


def check_host(config: Config, hook_dir: str) -> list[Finding]:
    findings = []
    problem = permission_problem(config.path, os.stat(config.path))
    findings.append(Finding("fail", "config", problem) if problem else
                    Finding("ok", "config", f"{config.path} is valid, owned by root, writable only by root"))
    if os.geteuid() != 0:
        findings.append(Finding("warn", "root", "not running as root: some checks may be incomplete, and "
                                "pre/post must run as root"))
    jobs = config.jobs.values()
    tools = [*HOST_TOOLS, *(["xl"] if any(j.xen or j.vmdisks for j in jobs) else [])]
    missing = [t for t in tools if which(t, config.settings.path) is None]
    findings.append(Finding("fail", "tools", f"not found on {config.settings.path}: {', '.join(missing)}; "
                            "install them (lvm2, util-linux, xen-utils) or set settings.path")
                    if missing else Finding("ok", "tools", f"found {', '.join(tools)}"))
    if any(j.vmdisks for j in jobs):
        findings.append(_layout_tools(config.settings.path))
    findings += check_hooks(hook_dir)
    return findings


def _layout_tools(path: str) -> Finding:
    """What pre reads a VM disk's layout with (layout.json): without one, the backup still runs, but
    restore-disk cannot rebuild the disks it would describe, so a warning, not a failure."""
    missing = [t for t in VMDISK_TOOLS if which(t, path) is None]
    if not missing:
        return Finding("ok", "layout tools", f"found {', '.join(VMDISK_TOOLS)}")
    return Finding("warn", "layout tools", f"not found on {path}: {', '.join(missing)}; pre still backs up "
                   "the VM disks, but their layout.json lacks what these tools read, so restore-disk cannot "
                   "rebuild such a disk: install fdisk, e2fsprogs, xfsprogs (as the guests need)")


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
    try:  # the host through the inventory: one lvs, the mount table; xl once, below
        host = read_tolerant(runner, job)
    except XenlvmError as exc:
        return [Finding("fail", "origin", str(exc))]
    if host.missing_vgs:
        return [Finding("fail", "origin", vg_not_found_message(vg)) for vg in host.missing_vgs]
    vgs, mounts = host.vgs, host.mounts
    findings = [preflight.check_mountpoint(job.mountpoint, mounts, _own_snapshot_at(job, vgs))]
    findings += preflight.check_job_volumes(job, vgs)
    findings += _check_reach(job)
    findings += thinpool.check_thin_pools(job, job.volumes, vgs)
    for spec in job.volumes:
        if spec.mountpoint != job.mountpoint and os.path.lexists(spec.mountpoint):
            own = vgs[spec.origin.vg].get(spec.snapshot)
            findings.append(preflight.check_mountpoint(spec.mountpoint, mounts, own))
    origins = [vgs[s.origin.vg].lvs[s.origin.lv] for s in job.volumes if vgs[s.origin.vg].get(s.origin.lv)]
    xl: XlView | XenlvmError | None = None
    try:
        xl = read_xl(runner, job)
    except XenlvmError as exc:  # said by each check that needs xl
        xl = exc
    disk_domains: list[str] = []
    if job.vmdisks is not None:
        vmdisk_findings, disk_domains = _check_vmdisks(job, xl, vgs, config.settings.path)
        findings += vmdisk_findings
    if job.xen is not None:
        try:
            if isinstance(xl, XenlvmError):
                raise xl
            assert xl is not None
            paths = [e.mountpoint for origin in origins for e in mounts_mod.mounts_of(origin, mounts)]
            domains = xen.select_domains(job, xl, paths, disk_domains)
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


def _check_reach(job: Job) -> list[Finding]:
    """Whether dom0's other users can reach the job's volume snapshots. (VM disks are exposed on
    a tmpfs of root's alone; a volume's snapshot is mounted where the admin said.)"""
    if not job.volumes or job.vmdisks is not None:
        return []
    several = job.volumes[0].mountpoint != job.mountpoint  # then mounted at <mountpoint>/<name>
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


def _check_vmdisks(job: Job, xl: XlView | XenlvmError | None, every: dict[str, VolumeGroup],
                   path: str) -> tuple[list[Finding], list[str]]:
    """Which VM disks pre would snapshot now, whether image_dir has room for them (image-copy)
    and the image server is installed (image); and their domains."""
    try:
        if isinstance(xl, XenlvmError):
            raise xl
        assert xl is not None
        disks = vmdisk_target.discover(job, xl, every)
    except XenlvmError as exc:
        return [Finding("fail", "vmdisks", str(exc))], []
    findings = [Finding("ok" if disks else "fail", "vmdisks", "VM disks to snapshot: " + (", ".join(
        f"{d.domain}/{d.disk} ({d})" for d in disks) or "none found"))]
    findings += preflight.check_job_volumes(job, every, [d.spec for d in disks])
    findings += thinpool.check_thin_pools(job, [d.spec for d in disks], every)
    findings += [Finding("warn", "vmdisks", f"vmdisks.exclude: {item!r} names no domain xl knows (a typo?): "
                         "nothing is left out for it") for item in vmdisk_target.unmatched_excludes(job, xl)]
    room = vmdisk_target.check_image_room(job, disks)
    if room is not None:
        findings.append(Finding("fail", "vmdisks", room))
    missing = image_server.missing_program(job, path)
    if missing is not None:
        findings.append(Finding("fail", "vmdisks", missing))
    return findings, [d.domain for d in disks]


def _own_snapshot_at(job: Job, vgs: dict[str, VolumeGroup]) -> LogicalVolume | None:
    """The job's snapshot mounted directly at the job's mountpoint (single-volume jobs), if any:
    a mount there is then expected, not a problem."""
    if len(job.volumes) != 1 or job.vmdisks is not None:
        return None
    spec = job.volumes[0]
    snapshot = vgs[spec.origin.vg].get(spec.snapshot)
    return snapshot if snapshot is not None and ownership.owns(job, spec, snapshot) else None
