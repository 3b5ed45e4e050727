"""``xenlvm status``: what xenlvm has on the host now, per job. Queries only."""

from __future__ import annotations

import datetime
import time
from typing import Any

from xenlvm.config.model import AUTO, Config, Job
from xenlvm.core import ownership, preflight, state
from xenlvm.core.inventory import Inventory, read_tolerant
from xenlvm.errors import XenlvmError
from xenlvm.host import cow, mount
from xenlvm.host.lvm import vg_not_found_message
from xenlvm.host.runner import Runner
from xenlvm.host.xl import Xl
from xenlvm.phases import kinds
from xenlvm.quiesce import freeze as quiesce
from xenlvm.targets.base import Kind, Shown
from xenlvm.xen import domains as xen


def lv_age(created: str, now: float) -> float | None:
    """Seconds since lvs' lv_time ('2026-11-29 21:35:00 +0000'), or None if unknown."""
    try:
        stamp = datetime.datetime.strptime(created, "%Y-%m-%d %H:%M:%S %z")
    except ValueError:
        return None
    return max(0.0, now - stamp.timestamp())


def job_status(config: Config, runner: Runner, job: Job, now: float | None = None) -> dict[str, Any]:
    """Given a job, return its snapshots (what each kind of target finds of it on the host, and
    where each is really exposed), domains and last runs as plain data."""
    now = time.time() if now is None else now
    report: dict[str, Any] = {"job": job.name, "mountpoint": job.mountpoint, "problems": []}
    try:  # the host through the inventory: one lvs (all VGs for VM disks), the mount table
        host = read_tolerant(runner, kinds.scope(job))
    except XenlvmError as exc:
        report["problems"].append(str(exc))
        host = Inventory({}, mount.read_mounts())
    report["problems"] += [vg_not_found_message(vg) for vg in host.missing_vgs]
    found = {kind: kind.find(config, job, host) for kind in kinds.of(job)}
    report["problems"] += [f.message for f in preflight.check_volume_groups(
        kinds.vgs_in_play(job, found.values()), host.vgs)]
    report["volumes"] = [_volume_status(config, job, kind, shown, now)
                         for kind, artefacts in found.items() for shown in kind.shown(job, host, artefacts)]
    for kind, artefacts in found.items():
        report.update(kind.status(config, job, artefacts))
    if job.xen is not None:
        report["domains"] = _domains(config, runner, job, report["problems"])
        report["domains"]["left_frozen_by_a_killed_run"] = _left_frozen(config, job, report["problems"])
    report["last_runs"] = state.read_state(config, job.name)
    return report


def _volume_status(config: Config, job: Job, kind: Kind, shown: Shown, now: float) -> dict[str, Any]:
    spec, snapshot = shown.spec, shown.snapshot
    report: dict[str, Any] = {"kind": kind.name, "volume": str(spec.origin),
                              "snapshot": str(spec.snapshot_volume),
                              "mountpoint": shown.mountpoint, "present": False}
    if snapshot is None:
        return report
    age = lv_age(snapshot.created, now)
    report.update({
        "present": True,
        "owned_by_xenlvm": ownership.owns(job, spec, snapshot),
        "thin": snapshot.is_thin,
        "active": snapshot.active,
        "size_bytes": snapshot.size,
        "fill_percent": None if snapshot.is_thin else snapshot.data_percent,
        # an inactive classic snapshot: LVM cannot tell ("unknown") until it is activated
        "valid": None if not snapshot.active and not snapshot.is_thin else not snapshot.invalid,
        # lvs shows both alike; the copy-on-write device's header tells them apart
        "invalid_cause": cow.invalid_cause(snapshot) if snapshot.invalid else None,
        "mounted_at": list(shown.exposed_at),
        "created": snapshot.created,
        "age_seconds": None if age is None else round(age),
        "created_by_run": ownership.run_of(snapshot),
        "stale": age is not None and age > config.settings.stale_after,
    })
    return report


def _domains(config: Config, runner: Runner, job: Job, problems: list[str]) -> dict[str, Any]:
    assert job.xen is not None
    try:
        left = xen.PauseRecord(config.settings.lock_dir, job.name).read()
    except XenlvmError as exc:
        problems.append(str(exc))
        left = []
    try:
        states = Xl(runner, job.xl_timeout).states()
    except XenlvmError as exc:
        return {"error": str(exc), "left_paused_by_a_killed_run": left}
    names = list(states) if job.xen.domains is AUTO else list(job.xen.domains)
    return {"paused": sorted(n for n in names if n in states and states[n][1] and n != "Domain-0"),
            "missing": sorted(n for n in names if n not in states),
            "left_paused_by_a_killed_run": left}


def _left_frozen(config: Config, job: Job, problems: list[str]) -> list[str]:
    try:
        left = quiesce.FreezeRecord(config.settings.lock_dir, job.name).read()
    except XenlvmError as exc:
        problems.append(str(exc))
        return []
    return list(left.domains) if left is not None else []


def describe(report: dict[str, Any]) -> list[str]:
    """The report as lines for a person."""
    lines = [f"job {report['job']} (mounted at {report['mountpoint']}):"]
    for volume in report["volumes"]:
        lines += _describe_volume(volume)
    for kind in kinds.KINDS:
        lines += kind.describe(report)
    domains = report.get("domains")
    if domains is not None:
        if "error" in domains:
            lines.append(f"  domains: cannot ask xl: {domains['error']}")
        else:
            lines.append(f"  domains paused: {', '.join(domains['paused']) or 'none'}"
                         + (f"; not running: {', '.join(domains['missing'])}" if domains["missing"] else ""))
        if domains["left_paused_by_a_killed_run"]:
            lines.append(f"  LEFT PAUSED by a killed run: {', '.join(domains['left_paused_by_a_killed_run'])}"
                         " - run xenlvm cleanup")
        if domains.get("left_frozen_by_a_killed_run"):
            lines.append(f"  LEFT FROZEN by a killed run: {', '.join(domains['left_frozen_by_a_killed_run'])}"
                         " - run xenlvm cleanup now (every write in them hangs)")
    for phase in ("pre", "post"):
        run = report["last_runs"].get(phase)
        if run:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run["started"]))
            result = "ok" if run["ok"] else f"FAILED (exit {run['exit_code']}): {run['message']}"
            extended = int((run.get("notes") or {}).get("watchdog_extensions") or 0)
            if extended:
                result += f"; the watchdog extended its snapshots {extended} time(s)"
            lines.append(f"  last {phase}: {when}, {run['duration']:.1f} s, {result}{_pauses(run)}")
            lines += _consistency(run)
    lines += [f"  problem: {p}" for p in report["problems"]]
    return lines


def _pauses(run: dict[str, Any]) -> str:
    """', domains paused at most 120 ms (vm2 120 ms, vm3 95 ms)' from a run's notes, or ''."""
    notes = run.get("notes") or {}
    if not isinstance(notes, dict) or not isinstance(notes.get("pause_window_ms"), (int, float)):
        return ""
    each = ", ".join(f"{key[len(state.DOMAIN_WINDOW):]} {ms:.0f} ms" for key, ms in sorted(notes.items())
                     if key.startswith(state.DOMAIN_WINDOW) and isinstance(ms, (int, float)))
    return f", domains paused at most {notes['pause_window_ms']:.0f} ms" + (f" ({each})" if each else "")


def _consistency(run: dict[str, Any]) -> list[str]:
    """'    application-consistent: vm1; crash-consistent only: vm2' from a run's notes (xen.quiesce)."""
    notes = run.get("notes") or {}
    if not isinstance(notes, dict):
        return []
    frozen = {key[len(state.DOMAIN_CONSISTENT):]: value for key, value in sorted(notes.items())
              if key.startswith(state.DOMAIN_CONSISTENT)}
    if not frozen:
        return []
    consistent = [name for name, value in frozen.items() if value]
    only_crash = [name for name, value in frozen.items() if not value]
    return [f"    application-consistent: {', '.join(consistent) or 'none'}"
            + (f"; crash-consistent only: {', '.join(only_crash)}" if only_crash else "")]


def _describe_volume(volume: dict[str, Any]) -> list[str]:
    where = f"at {volume['mountpoint']}" if volume.get("mountpoint") else f"({volume.get('kind', 'VM disk')})"
    head = f"  {volume['volume']} -> {volume['snapshot']} {where}"
    if not volume["present"]:
        return [f"{head}: no snapshot (nothing to clean up)"]
    owner = "xenlvm's" if volume["owned_by_xenlvm"] else "NOT xenlvm's (no xenlvm tags)"
    if volume["thin"]:
        fill = "thin"
    elif volume["fill_percent"] is None:  # lvs knows the fill of an active snapshot only
        fill = "fill unknown"
    else:
        fill = f"{volume['fill_percent']:.1f}% full"
    if not volume.get("active", True):
        fill += ", INACTIVE (activate it with 'lvchange -ay', or run xenlvm cleanup)"
    if volume["valid"] is None:
        validity = "valid or not: unknown while inactive"
    elif volume["valid"]:
        validity = "valid"
    elif volume["invalid_cause"] == "io_errors":
        validity = "INVALID (I/O errors on its copy-on-write device)"
    elif volume["invalid_cause"] == "overflow":
        validity = "OVERFLOWED (invalid)"
    else:
        validity = "INVALID (overflowed or I/O errors: its copy-on-write header cannot be read)"
    age = volume["age_seconds"]
    stale = " - STALE: run xenlvm cleanup" if volume["stale"] else ""
    created = volume["created"] or "at an unknown time"
    return [f"{head}: snapshot present, {owner}, {fill}, {validity}",
            f"    created {created} ({'?' if age is None else f'{age // 60} min ago'}) by "
            f"{volume['created_by_run'] or 'unknown run'}{stale}",
            f"    {'mounted' if volume.get('mountpoint') else 'exposed'} at: "
            f"{', '.join(volume['mounted_at']) or 'not mounted'}"]
