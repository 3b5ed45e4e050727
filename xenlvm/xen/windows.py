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

from xenlvm.config.model import WindowMode
from xenlvm.host import mount
from xenlvm.host.fsutil import is_below
from xenlvm.host.xl import Xl
from xenlvm.xen import domains as xen

log = logging.getLogger("xenlvm")

PER_DOMAIN = WindowMode.PER_DOMAIN
TOGETHER = WindowMode.TOGETHER
# One window over the named domains (xen.paused): yields the xen.PauseTiming that measures it.
Pause = Callable[[Sequence[str]], AbstractContextManager[xen.PauseTiming]]
# The freeze around one window (xenlvm.quiesce.freeze, Quiescer.frozen): yields, per domain, whether it froze.
Freeze = Callable[[Sequence[str]], AbstractContextManager[dict[str, bool]]]


@dataclass(frozen=True)
class Snapshot:
    """One snapshot to take, as the windows need it (pre makes one of each target): its name
    (vg/lv), its origin (vg/lv) and the origin's device numbers, where the origin is mounted on
    the host, the domain whose disk it is (a VM disk found for that domain)."""

    name: str
    origin: str
    device: tuple[int, int] | None = None
    mountpoints: tuple[str, ...] = ()
    domain: str | None = None

    def __str__(self) -> str:
        return self.origin


@dataclass(frozen=True)
class Window:
    """Domains paused together, and the snapshots taken while they are paused."""

    domains: tuple[str, ...]  # none: the snapshots are taken without pausing anyone
    targets: tuple[Snapshot, ...]  # in the job's order


def plan(targets: Sequence[Snapshot], uses: Mapping[str, Collection[Snapshot]],
         mode: WindowMode) -> list[Window]:
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

    def root(target: Snapshot) -> Snapshot:
        while parent[target] != target:
            parent[target] = parent[parent[target]]
            target = parent[target]
        return target

    for name in domains:
        used = [t for t in targets if t in uses[name]]
        for target in used[1:]:
            parent[root(target)] = root(used[0])
    targets_of: dict[Snapshot, list[Snapshot]] = {}
    for target in targets:
        targets_of.setdefault(root(target), []).append(target)
    domains_of: dict[Snapshot, list[str]] = {}
    for name in domains:
        domains_of.setdefault(root(next(t for t in targets if t in uses[name])), []).append(name)
    return [Window(tuple(domains_of.get(key, ())), tuple(group)) for key, group in targets_of.items()]


def plan_xen(mode: WindowMode, domains: Sequence[xen.Domain], snapshots: Sequence[Snapshot]) -> list[Window]:
    """The windows (mode: xen.window) over the domains the job pauses, for its snapshots in
    order. A domain that was already paused is left so, and has no say in
    the windows."""
    for domain in domains:
        if domain.paused:
            log.warning("domain %s was already paused; it stays paused", domain.name)
    running = [domain for domain in domains if not domain.paused]
    planned = plan(snapshots, domain_uses(running, snapshots), mode)
    log.info("xen.window %s: %d pause window(s): %s", mode, len(planned), describe(planned))
    return planned


def run(windows: Sequence[Window], snapshot: Callable[[Snapshot], None],
        pause: Pause | None = None, freeze: Freeze | None = None) -> Iterator[tuple[tuple[str, ...], float]]:
    """Take each window's snapshots while its domains (and only they) are paused, one window
    after the other; yield each paused window's domains and how long it lasted (ms). pause(names)
    is one window that resumes its domains whatever happens in it (xen.paused); freeze(names),
    if given, freezes them before the pause and thaws them after the unpause, whatever happens
    (xenlvm.quiesce.freeze). An exception, in a window or between two, stops the sequence there."""
    for window in windows:
        if window.domains and pause is None:
            raise ValueError("a window with domains needs a pause")  # a bug, never a host's state
        unpaused = contextlib.nullcontext(xen.PauseTiming())
        paused = pause(window.domains) if window.domains and pause else unpaused
        frozen = freeze(window.domains) if window.domains and freeze else contextlib.nullcontext({})
        with frozen, paused as measured:
            for target in window.targets:
                snapshot(target)
        if measured.ms is not None:
            yield window.domains, measured.ms


def xen_pause(xl: Xl, record: xen.PauseRecord, domains: Sequence[xen.Domain]) -> Pause:
    """The pause of one window over xl, for run(): xen.paused() of the named domains."""
    by_name = {domain.name: domain for domain in domains}

    def pause(names: Sequence[str]) -> AbstractContextManager[xen.PauseTiming]:
        return xen.paused(xl, [by_name[name] for name in names], record)
    return pause


def domain_uses(domains: Sequence[xen.Domain], snapshots: Sequence[Snapshot]) -> dict[str, set[Snapshot]]:
    """Given the domains to pause and the job's snapshots, return the snapshots each domain has
    a disk on: a VM disk found for it, any disk that is a snapshot's origin (by device number,
    whatever path the domain's config uses), and a volume with a disk file of the domain below
    one of its origin's mount points."""
    by_device = {s.device: s for s in snapshots if s.device is not None}
    below = [(mountpoint, s) for s in snapshots for mountpoint in s.mountpoints]
    uses: dict[str, set[Snapshot]] = {}
    for domain in domains:
        used = {s for s in snapshots if s.domain == domain.name}
        for path in domain.disks:
            numbers = mount.device_numbers(path)
            if numbers in by_device:
                used.add(by_device[numbers])
            used |= {s for mountpoint, s in below if is_below(path, mountpoint)}
        uses[domain.name] = used
    return uses


def describe(windows: Sequence[Window]) -> str:
    """'vm2: system/vm2-disk; vm3: system/vm3-disk, system/vm3-data' for the log."""
    return "; ".join(f"{', '.join(w.domains) or 'no domain'}: {', '.join(str(t) for t in w.targets)}"
                     for w in windows)
