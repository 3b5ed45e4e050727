"""The pause windows of a job: which domains are paused while which snapshots are taken, and the
windows one after another.

``xen.window: together`` pauses every selected domain once, for all of the job's snapshots: all
VMs are captured at one instant (crash-consistent across VMs), and each VM is frozen for every
lvcreate of the job. ``per-domain`` pauses each domain only while the snapshots of its own disks
are taken (crash-consistent per VM). A volume that several domains use (the manual's layout: all
VMs as files on one LV) is one snapshot, one instant, so those domains share a window: the
windows are the connected parts of the graph domain - volume, found with a union-find.

The windows never overlap: each is one xen.paused() (its pause record, its resume whatever
fails, its measurement), and the next starts only once the previous one has resumed its
domains. A failure in a window stops the sequence there; pre's undo removes the snapshots that
were taken.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from xenlvm.config.model import AUTO, Job, WindowMode
from xenlvm.host import mounts as mounts_mod
from xenlvm.host.fsutil import is_below
from xenlvm.targets.base import Target
from xenlvm.xen import domains as xen

log = logging.getLogger("xenlvm")

PER_DOMAIN = WindowMode.PER_DOMAIN
TOGETHER = WindowMode.TOGETHER
# One window over the named domains (xen.paused): yields the xen.Window that measures it.
Pause = Callable[[Sequence[str]], AbstractContextManager[xen.Window]]
# The freeze around one window (xenlvm.quiesce.freeze, Quiescer.frozen): yields, per domain, whether it froze.
Freeze = Callable[[Sequence[str]], AbstractContextManager[dict[str, bool]]]


@dataclass(frozen=True)
class Window:
    """Domains paused together, and the snapshots taken while they are paused."""

    domains: tuple[str, ...]  # none: the snapshots are taken without pausing anyone
    targets: tuple[Target, ...]  # in the job's order


def mode_of(job: Job) -> WindowMode:
    """The job's xen.window: as configured; else per-domain for a job with vmdisks (each VM on
    LVs of its own), together for a job of volumes only (today's one window for the job)."""
    if job.xen is not None and job.xen.window is not AUTO:
        return job.xen.window
    return PER_DOMAIN if job.vmdisks is not None else TOGETHER


def plan(targets: Sequence[Target], uses: Mapping[str, Collection[Target]], mode: WindowMode) -> list[Window]:
    """Given the job's targets in order, the targets each domain to pause has a disk on, and the
    mode, return the windows in the order of their first target.

    together: one window, every domain, every target. per-domain: domains that share a target,
    directly or through other domains, form one window with all their targets; targets no
    domain uses are taken without a pause. A domain that uses none of the targets (xenlvm cannot
    tell which volume it is on) is paused for all of them: one window, as with together."""
    domains = tuple(uses)
    if mode == TOGETHER:
        return [Window(domains, tuple(targets))]
    unplaced = [name for name in domains if not any(t in uses[name] for t in targets)]
    if unplaced:
        log.warning("xen.window per-domain: no disk of %s is on one of the job's volumes as far as "
                    "xenlvm can tell, so all domains are paused together for all snapshots",
                    ", ".join(unplaced))
        return [Window(domains, tuple(targets))]
    parent = {target: target for target in targets}

    def root(target: Target) -> Target:
        while parent[target] != target:
            parent[target] = parent[parent[target]]
            target = parent[target]
        return target

    for name in domains:
        used = [t for t in targets if t in uses[name]]
        for target in used[1:]:
            parent[root(target)] = root(used[0])
    targets_of: dict[Target, list[Target]] = {}
    for target in targets:
        targets_of.setdefault(root(target), []).append(target)
    domains_of: dict[Target, list[str]] = {}
    for name in domains:
        domains_of.setdefault(root(next(t for t in targets if t in uses[name])), []).append(name)
    return [Window(tuple(domains_of.get(key, ())), tuple(group)) for key, group in targets_of.items()]


def plan_xen(job: Job, domains: Sequence[xen.Domain], targets: Sequence[Target],
             mounts: Sequence[mounts_mod.MountEntry]) -> list[Window]:
    """The job's windows over the domains it pauses. A domain that was already paused is left so,
    and has no say in the windows."""
    for domain in domains:
        if domain.paused:
            log.warning("domain %s was already paused; it stays paused", domain.name)
    running = [domain for domain in domains if not domain.paused]
    mode = mode_of(job)
    planned = plan(targets, domain_uses(running, targets, mounts), mode)
    log.info("xen.window %s: %d pause window(s): %s", mode, len(planned), describe(planned))
    return planned


def run(windows: Sequence[Window], snapshot: Callable[[Target], None],
        pause: Pause | None = None, freeze: Freeze | None = None) -> Iterator[tuple[tuple[str, ...], float]]:
    """Take each window's snapshots while its domains (and only they) are paused, one window
    after the other; yield each paused window's domains and how long it lasted (ms). pause(names)
    is one window that resumes its domains whatever happens in it (xen.paused); freeze(names),
    if given, freezes them before the pause and thaws them after the unpause, whatever happens
    (xenlvm.quiesce.freeze). An exception, in a window or between two, stops the sequence there."""
    for window in windows:
        if window.domains and pause is None:
            raise ValueError("a window with domains needs a pause")  # a bug, never a host's state
        paused = pause(window.domains) if window.domains and pause else contextlib.nullcontext(xen.Window())
        frozen = freeze(window.domains) if window.domains and freeze else contextlib.nullcontext({})
        with frozen, paused as measured:
            for target in window.targets:
                snapshot(target)
        if measured.ms is not None:
            yield window.domains, measured.ms


def xen_pause(xl: xen.Xl, record: xen.PauseRecord, domains: Sequence[xen.Domain]) -> Pause:
    """The pause of one window over xl, for run(): xen.paused() of the named domains."""
    by_name = {domain.name: domain for domain in domains}

    def pause(names: Sequence[str]) -> AbstractContextManager[xen.Window]:
        return xen.paused(xl, [by_name[name] for name in names], record)
    return pause


def domain_uses(domains: Sequence[xen.Domain], targets: Sequence[Target],
                mounts: Sequence[mounts_mod.MountEntry]) -> dict[str, set[Target]]:
    """Given the domains to pause and the job's targets, return the targets each domain has a
    disk on: a VM disk found for it, any disk that is a target's origin (by device number,
    whatever path the domain's config uses), and a volume with a disk file of the domain below
    one of its origin's mount points."""
    by_device = {(t.origin.major, t.origin.minor): t for t in targets if t.origin.major is not None}
    below = [(mountpoint, t) for t in targets for mountpoint in t.origin_mountpoints(mounts)]
    uses: dict[str, set[Target]] = {}
    for domain in domains:
        used = {t for t in targets if t.domain == domain.name}
        for path in domain.disks:
            numbers = mounts_mod.device_numbers(path)
            if numbers in by_device:
                used.add(by_device[numbers])
            used |= {t for mountpoint, t in below if is_below(path, mountpoint)}
        uses[domain.name] = used
    return uses


def describe(windows: Sequence[Window]) -> str:
    """'vm2: system/vm2-disk; vm3: system/vm3-disk, system/vm3-data' for the log."""
    return "; ".join(f"{', '.join(w.domains) or 'no domain'}: {', '.join(str(t) for t in w.targets)}"
                     for w in windows)
