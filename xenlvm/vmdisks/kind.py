"""The VM-disk kind (a job's vmdisks: section) through its whole life: its targets found through
xl at each pre (xenlvm.vmdisks.target), the tree they are exposed in, the image server, the
record of what was not exposed, the domains' layouts; on the host, what a run may have left of
it (the snapshots by their tags and names, the tree, the image server's trace), and how post
takes that down and judges the backup."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from xenlvm.config.model import Config, Job, WindowMode
from xenlvm.core import ownership, preflight
from xenlvm.core.context import Context
from xenlvm.core.inventory import Inventory
from xenlvm.core.preflight import Finding
from xenlvm.core.undo import UndoStack
from xenlvm.errors import PreflightFailed, XenlvmError
from xenlvm.host import mount
from xenlvm.host.lvm import LogicalVolume, VolumeGroup, device_path
from xenlvm.host.mount import UNDO_UNMOUNT_TIMEOUT, MountEntry
from xenlvm.host.runner import missing_programs
from xenlvm.increments import bases, record
from xenlvm.targets.base import Artefacts, Failures, Kind, Removal, Shown, Target, collect
from xenlvm.vmdisks import chains, image_server, layout, unexposed
from xenlvm.vmdisks import expose as vmdisks
from xenlvm.vmdisks import target as vmdisk_target
from xenlvm.vmdisks import teardown as vmdisk_teardown
from xenlvm.vmdisks.target import VmDiskTarget
from xenlvm.xen import domains as xen
from xenlvm.xen import export as xen_export
from xenlvm.xen.windows import PER_DOMAIN

TYPE_CHECKING = False  # xenlvm/__init__.py says why
if TYPE_CHECKING:
    from typing import Any

log = logging.getLogger("xenlvm")

KEY = "vmdisks"  # post's failures of the VM disks, together (they are released together)


@dataclass(frozen=True)
class DiskArtefacts(Artefacts):
    """Beside its snapshots: what is mounted at the job's mountpoint (xenlvm's tree, if its
    source is xenlvm's), the image server's trace, and the chains' bases (vmdisks.incremental:
    kept from one run to the next, never torn down with the snapshots; described for status)."""

    tree: MountEntry | None = None
    server: image_server.ServerState | None = None
    bases: tuple[dict[str, Any], ...] = ()

    @property
    def anything(self) -> bool:
        return bool(self.snapshots) or self.tree is not None


class VmDiskKind(Kind):
    name = "VM disk"

    def in_job(self, job: Job) -> bool:
        return job.vmdisks is not None

    def every_vg(self, job: Job) -> bool:
        return self.in_job(job)  # a VM disk may be on any VG

    def needs_xl(self, job: Job) -> bool:
        return self.in_job(job)  # found through xl list -l

    def mounts_tree(self, job: Job) -> bool:
        return self.in_job(job)  # exposed on a tmpfs of root's alone at the job's mountpoint

    def window_mode(self, job: Job) -> WindowMode | None:
        return PER_DOMAIN if job.vmdisks is not None else None  # each VM on LVs of its own

    def excluded_domains(self, job: Job) -> tuple[str, ...]:
        return job.vmdisks.exclude if job.vmdisks is not None else ()

    # -- pre ------------------------------------------------------------------------------------
    def plan(self, ctx: Context, job: Job, host: Inventory) -> list[Target]:
        """The VM disks that xl shows (on logical volumes of their own)."""
        assert host.xl is not None
        disks = vmdisk_target.discover(job, host.xl, host.vgs)
        for item in vmdisk_target.unmatched_excludes(job, host.xl):
            log.warning("vmdisks.exclude: %r names no domain xl knows (a typo?): nothing is left out "
                        "for it", item)
        _check_disk_names(job, disks)
        for problem in (image_server.missing_program(job, ctx.config.settings.path),
                        vmdisk_target.check_image_room(job, disks)):
            if problem is not None:
                raise PreflightFailed(f"{problem}. Nothing was changed.")
        return list(disks)

    def before_snapshots(self, ctx: Context, job: Job, targets: Sequence[Target], undo: UndoStack) -> None:
        vmdisks.mount_tree(ctx.runner, job, undo)

    def after_expose(self, ctx: Context, job: Job, targets: Sequence[Target], undo: UndoStack,
                     host: Inventory, consistent: dict[str, bool]) -> None:
        """Serve the images (expose: image: every image of the job through FUSE by one process);
        then, for status and post, record what was not exposed; beside the disks, the domains'
        own layouts."""
        disks = [t for t in targets if isinstance(t, VmDiskTarget)]
        chains.expose_chains(ctx, job, disks, undo)  # vmdisks.incremental: each thin disk's one file
        vmdisk_target.serve_images(ctx, job, disks, undo)
        if ctx.dry_run:
            return
        not_exposed = [d.not_exposed for d in disks if d.not_exposed is not None]
        unexposed.record(ctx.config.settings.lock_dir, job.name, not_exposed, undo)
        ctx.report(job).not_exposed = len(not_exposed)
        assert host.xl is not None
        layout.write_domain_layouts(host.xl.records, disks,
                                    xen_export.export_directory(job, ctx.config.settings.state_dir),
                                    consistent)

    def sweep(self, ctx: Context, job: Job, host: Inventory, found: Artefacts) -> bool:
        """Tear down what an earlier run of the job exposed for its VM disks, if anything."""
        if not found.anything:
            return False
        snapshots = [lv for _, lv in found.snapshots]
        log.warning("found VM disk snapshots or their mounts left over by an earlier run (%s); "
                    "removing them first", ", ".join(map(str, snapshots)) or "no snapshot")
        image_server.stop(ctx.runner, ctx.config.settings.lock_dir, job.name)  # it holds them open
        vmdisk_teardown.release(ctx.runner, job, snapshots, UNDO_UNMOUNT_TIMEOUT)
        for spec, snapshot in found.snapshots:
            ownership.remove_one(ctx.lvm, job, spec, snapshot)
        vmdisk_teardown.finish(ctx.runner, job, UNDO_UNMOUNT_TIMEOUT)
        return True

    # -- the host -------------------------------------------------------------------------------
    def find(self, config: Config, job: Job, host: Inventory) -> DiskArtefacts:
        """The job's VM disk snapshots (by their tags and names), what is mounted at its
        mountpoint when its source is xenlvm's tree, the image server's trace."""
        snapshots = tuple((ownership.vm_disk_spec(job, lv), lv)
                          for lv in ownership.vm_disk_snapshots(job, host.vgs))
        tree = mount.mounted_at(job.mountpoint, host.mounts)
        if tree is not None and tree.source != vmdisk_teardown.tree_source(job):
            tree = None
        return DiskArtefacts(snapshots, tree, image_server.state(config.settings.lock_dir, job.name),
                             tuple(bases.describe(job, host.vgs)))

    # -- post -----------------------------------------------------------------------------------
    def stop(self, ctx: Context, job: Job, judge_backup: bool) -> None:
        """Stop the job's image server (expose: image); one that had died fails post (when it
        judges a backup), after all of post has run: the backup read nothing from it from then on."""
        if ctx.dry_run:
            return
        found = image_server.stop(ctx.runner, ctx.config.settings.lock_dir, job.name)
        problem = image_server.died_during_backup(found)
        if problem is not None and judge_backup:
            raise problem
        if problem is not None:
            log.warning("%s", problem)
        if found is not None and found.running:
            log.info("image server (pid %d) stopped; it served %s", found.pid, ", ".join(found.exports))

    def release(self, ctx: Context, job: Job, host: Inventory, found: Artefacts, failures: Failures,
                sound: bool) -> list[Removal]:
        """Unmount all that exposes the job's VM disk snapshots, so that they can be removed; with
        vmdisks.incremental and a sound backup, each chained disk's snapshot becomes its base
        instead (xenlvm.increments.bases) and is not removed."""
        mine = failures.setdefault(KEY, [])
        collect(mine, vmdisk_teardown.release, ctx.runner, job, [lv for _, lv in found.snapshots],
                job.unmount_timeout)
        if mine:
            return []
        left = bases.keep_bases(ctx, job, [lv for _, lv in found.snapshots], host.vgs, sound)
        return [Removal(KEY, spec, lv) for spec, lv in found.snapshots if lv in left]

    def removed(self, ctx: Context, job: Job, found: Artefacts, removed: Sequence[LogicalVolume],
                failures: Failures) -> None:
        """After the VM disk snapshots are removed: their images and the tree."""
        mine = failures.setdefault(KEY, [])
        if mine:
            return
        collect(mine, vmdisk_teardown.finish, ctx.runner, job, job.unmount_timeout)
        if mine:
            return
        if removed and not ctx.dry_run:
            log.info("VM disk snapshots unmounted and removed: %s", ", ".join(str(lv) for lv in removed))
        elif not found.snapshots:
            log.info("no VM disk snapshot of job %s to clean up", job.name)

    def judge(self, ctx: Context, job: Job, judge_backup: bool) -> None:
        """A sound backup that lacks some VM disks' files is partial (exit 3)."""
        if not ctx.dry_run:
            lock_dir = ctx.config.settings.lock_dir
            unexposed.verdict(lock_dir, job.name, unexposed.read(lock_dir, job.name), judge_backup)

    # -- status and check -----------------------------------------------------------------------
    def shown(self, job: Job, host: Inventory, found: Artefacts) -> list[Shown]:
        """Each VM disk snapshot and where it is really exposed: its mounts and those of its
        loop devices (expose: files), the image server's export of it (expose: image). An
        image-copy is a copy: the snapshot itself is not exposed."""
        server = found.server if isinstance(found, DiskArtefacts) else None
        return [Shown(spec, None, lv, tuple(exposed_at(lv, host.mounts, server)))
                for spec, lv in found.snapshots]

    def status(self, config: Config, job: Job, found: Artefacts) -> dict[str, Any]:
        """The image server (expose: image), if there is a trace of one (issue 16); what pre
        did not expose."""
        server = found.server if isinstance(found, DiskArtefacts) else None
        return {"image_server": image_server_status(server),
                "not_exposed": [dataclasses.asdict(item) for item in
                                unexposed.read(config.settings.lock_dir, job.name)],
                # vmdisks.incremental: the bases kept until the next run, and the last run's files
                "bases": list(found.bases) if isinstance(found, DiskArtefacts) else [],
                "chain_files": [dataclasses.asdict(e)
                                for e in record.read(config.settings.state_dir, job.name)]}

    def describe(self, report: dict[str, Any]) -> list[str]:
        lines = []
        server = report.get("image_server")
        if server is not None:
            lines.append(f"  image server (pid {server['pid'] or 'unknown'}): " + (
                f"running, serving {', '.join(server['exports'])}" if server["running"] else
                "NOT RUNNING: reads of the images fail; run post (or xenlvm cleanup) to clean up"))
        for found in report.get("not_exposed") or []:
            lines.append(f"  NOT EXPOSED as files: {unexposed.NotExposed(**found).describe()}")
        return lines + chains.describe(report)

    def host_findings(self, config: Config, job: Job) -> list[Finding]:
        chained = job.vmdisks is not None and job.vmdisks.incremental is not None
        return [layout_tools_finding(config.settings.path),
                *([incremental_tools_finding(config.settings.path)] if chained else [])]

    def check(self, config: Config, job: Job, host: Inventory,
              xl: xen.XlView | XenlvmError | None) -> tuple[list[Finding], list[Target]]:
        findings, disks = check_disks(job, xl, host.vgs, config.settings.path)
        return findings, list(disks)


def layout_tools_finding(path: str) -> Finding:
    """What pre reads a disk's layout with (layout.json): without one the backup still runs, but
    restore-disk cannot rebuild a disk it would describe, so a warning, not a failure."""
    return preflight.tools_finding(
        "layout tools", layout.TOOLS, missing_programs(layout.TOOLS, path), path, "warn",
        "pre still backs up the VM disks, but their layout.json lacks what these tools read, so restore-disk "
        "cannot rebuild such a disk: install fdisk, e2fsprogs, xfsprogs (as the guests need)")


def incremental_tools_finding(path: str) -> Finding:
    """What vmdisks.incremental reads the changes with and keeps the bases with (chains.TOOLS):
    without one pre still backs up every disk, each chained disk's file its full image at every
    run, so a warning, not a failure."""
    return preflight.tools_finding(
        "incremental tools", chains.TOOLS, missing_programs(chains.TOOLS, path), path, "warn",
        "pre still backs up the VM disks, but vmdisks.incremental writes each chained disk's full image at "
        "every run (thin_delta and dmsetup read what changed since its base; lvchange and lvrename keep its "
        "snapshot as the next run's base): install thin-provisioning-tools, dmsetup and lvm2")


def image_server_status(server: image_server.ServerState | None) -> dict[str, Any] | None:
    if server is None:
        return None
    return {"pid": server.pid or None, "running": server.running, "exports": list(server.exports)}


def _check_disk_names(job: Job, disks: Sequence[VmDiskTarget]) -> None:
    if not job.volumes and not disks:
        raise PreflightFailed(f"job {job.name!r} found no VM disk on a logical volume to back up "
                              "(see the warnings above). Nothing was changed.")
    clash = {d.domain for d in disks} & {os.path.basename(v.mountpoint) for v in job.volumes}
    if clash:
        raise PreflightFailed(f"domain {min(clash)!r} has the name of one of the job's volumes, and "
                              "both would be exposed there: rename the volume ('name:'). "
                              "Nothing was changed.")


def exposed_at(snapshot: LogicalVolume, mounts: Sequence[MountEntry],
               server: image_server.ServerState | None) -> list[str]:
    """Where the snapshot is exposed now: mounted itself or through its loop devices, or served."""
    if snapshot.major is None or snapshot.minor is None:
        return []
    own = (snapshot.major, snapshot.minor)
    devices = {own, *vmdisk_teardown.loops_of([own]).values()}
    places = [e.mountpoint for e in mounts if (e.major, e.minor) in devices]
    if server is not None:
        device = device_path(snapshot.vg, snapshot.name)
        places += [target for target, served in zip(server.exports, server.devices) if served == device]
    return places


def check_disks(job: Job, xl: xen.XlView | XenlvmError | None, every: dict[str, VolumeGroup],
                path: str) -> tuple[list[Finding], list[VmDiskTarget]]:
    """Which VM disks pre would snapshot now, whether image_dir has room for them (image-copy)
    and the image server is installed (image); and those disks."""
    try:
        if isinstance(xl, XenlvmError):
            raise xl
        assert xl is not None
        disks = vmdisk_target.discover(job, xl, every)
    except XenlvmError as exc:
        return [Finding("fail", "vmdisks", str(exc))], []
    findings = [Finding("ok" if disks else "fail", "vmdisks", "VM disks to snapshot: " + (", ".join(
        f"{d.domain}/{d.disk} ({d})" for d in disks) or "none found"))]
    findings += [Finding("warn", "vmdisks", f"vmdisks.exclude: {item!r} names no domain xl knows (a typo?): "
                         "nothing is left out for it") for item in vmdisk_target.unmatched_excludes(job, xl)]
    room = vmdisk_target.check_image_room(job, disks)
    if room is not None:
        findings.append(Finding("fail", "vmdisks", room))
    missing = image_server.missing_program(job, path)
    if missing is not None:
        findings.append(Finding("fail", "vmdisks", missing))
    return findings, disks
