"""What the last runs did, for admins and monitoring: a small JSON state file per job
(<state_dir>/<job>/state.json, the last pre and the last post) and, when configured, one
Prometheus node_exporter textfile for all jobs. Both are written atomically."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from xenlvm.config.model import Config
from xenlvm.host.fsutil import trust_problem, write_atomically

log = logging.getLogger("xenlvm")

DOMAIN_WINDOW = "pause_window_ms:"  # a note per domain: pause_window_ms:<domain>
# a note per domain of a job with xen.quiesce: 1 its snapshot is application-consistent, 0 crash-consistent
DOMAIN_CONSISTENT = "application_consistent:"


@dataclass(frozen=True)
class RunRecord:
    phase: str  # "pre" or "post"
    ok: bool
    exit_code: int
    started: float  # Unix time
    duration: float  # seconds
    message: str = ""
    notes: dict[str, float] = field(default_factory=dict)  # RunReport.notes()


@dataclass
class RunReport:
    """What one job's pre or post measured, for its state file ("notes") and the metrics."""

    pause_window_ms: float | None = None  # pre: the longest any domain was paused
    fill_percent: float | None = None  # post: the fullest classic snapshot (100: overflowed)
    watchdog_extensions: int | None = None  # post: how often the watchdog extended a snapshot
    thin_pool_peak_percent: float | None = None  # post: the fullest a thin snapshot's pool got
    pool_guard_actions: int | None = None  # post: how often the pool guard grew a pool or dropped
    pool_guard_lost: int | None = None  # post: 1 when the pool guard crashed or was killed
    not_exposed: int | None = None  # pre, VM disks: how many disks were not all exposed as files
    domain_windows: dict[str, float] = field(default_factory=dict)  # pre: each domain's window (ms)
    consistent: dict[str, bool] = field(default_factory=dict)  # pre, xen.quiesce: each domain froze

    def add_window(self, domains: tuple[str, ...], ms: float) -> None:
        """One pause window of pre: its domains were paused for ms."""
        self.pause_window_ms = max(ms, self.pause_window_ms or 0.0)
        self.domain_windows.update(dict.fromkeys(domains, ms))

    def notes(self) -> dict[str, float]:
        """The state file's notes: pause_window_ms, pause_window_ms:<domain> for each domain,
        fill_percent, watchdog_extensions, not_exposed; only what was measured."""
        notes = {name: float(value) for name, value in asdict(self).items()
                 if value is not None and name not in ("domain_windows", "consistent")}
        notes |= {f"{DOMAIN_CONSISTENT}{name}": float(frozen) for name, frozen in self.consistent.items()}
        return notes | {f"{DOMAIN_WINDOW}{name}": ms for name, ms in self.domain_windows.items()}


def state_path(config: Config, job: str) -> str:
    return os.path.join(config.settings.state_dir, job, "state.json")


def read_state(config: Config, job: str) -> dict[str, dict]:
    """The job's last runs, {"pre": {...}, "post": {...}}; empty when none was recorded."""
    try:
        with open(state_path(config, job), encoding="utf-8") as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def record_run(config: Config, jobs: list[str], record: RunRecord, reports: Mapping[str, RunReport]) -> None:
    """Store record as each job's last run of its phase, then refresh the metrics file.
    Never fails the run: a monitoring problem is logged, not raised."""
    try:
        for job in jobs:
            state = read_state(config, job)
            notes = reports[job].notes() if job in reports else {}
            state[record.phase] = asdict(RunRecord(**{**asdict(record), "notes": notes}))
            path = state_path(config, job)
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            problem = trust_problem(os.path.dirname(path))  # xenlvm reads it back, as root
            if problem is not None:
                log.warning("the state file %s was not written: its folder must be root's alone: %s",
                            path, problem)
                continue
            write_atomically(path, json.dumps(state, indent=2) + "\n", mode=0o644)
        if config.settings.metrics_file:
            write_atomically(config.settings.metrics_file, render_metrics(config), mode=0o644, dir_mode=0o755)
    except OSError as exc:
        log.warning("could not write the state or metrics file: %s", exc)


_METRICS = (
    ("xenlvm_last_run_success", "1 if the job's last pre/post succeeded, else 0"),
    ("xenlvm_last_run_exit_code", "exit status of the job's last pre/post"),
    ("xenlvm_last_run_timestamp_seconds", "when the job's last pre/post started (Unix time)"),
    ("xenlvm_last_run_duration_seconds", "how long the job's last pre/post took"),
    ("xenlvm_pause_window_seconds", "the longest any Xen domain was paused in the last pre"),
    ("xenlvm_domain_pause_window_seconds", "how long each Xen domain was paused in the last pre"),
    ("xenlvm_domain_application_consistent",
     "1 if the domain was frozen for its snapshot in the last pre (application-consistent), 0 if not"),
    ("xenlvm_snapshot_fill_ratio",
     "how full the snapshot was when the last post removed it (1 = overflowed)"),
    ("xenlvm_thin_pool_peak_fill_ratio",
     "the fullest (data or metadata) a thin snapshot's pool got during the last backup"),
    ("xenlvm_pool_guard_actions", "how often the pool guard grew a pool or dropped snapshots (last post)"),
    ("xenlvm_pool_guard_lost", "1 if the pool guard crashed or was killed during the last backup, else 0"),
    ("xenlvm_disks_not_exposed",
     "VM disks whose filesystems the last pre could not all expose as files (expose: files)"),
)
# Notes that become a metric of the job: (note, metric, scale).
_JOB_NOTES = (("thin_pool_peak_percent", "xenlvm_thin_pool_peak_fill_ratio", 0.01),
              ("pool_guard_actions", "xenlvm_pool_guard_actions", 1),
              ("pool_guard_lost", "xenlvm_pool_guard_lost", 1))


def _label_value(text: str) -> str:
    """text as a Prometheus label value: backslash, quote and newline escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _per_domain(job: str, notes: dict, prefix: str, form: str) -> list[str]:
    """The samples of the notes prefix<domain>, labelled with job and domain."""
    return [f'{{job="{job}",domain="{_label_value(key[len(prefix):])}"}} {form.format(value)}'
            for key, value in sorted(notes.items())
            if key.startswith(prefix) and isinstance(value, (int, float))]


def render_metrics(config: Config) -> str:
    """The node_exporter textfile for every job, from the state files."""
    samples: dict[str, list[str]] = {name: [] for name, _ in _METRICS}
    for job in config.jobs:
        for phase, run in sorted(read_state(config, job).items()):
            labels = f'job="{job}",phase="{phase}"'
            samples["xenlvm_last_run_success"].append(f"{{{labels}}} {int(bool(run.get('ok')))}")
            samples["xenlvm_last_run_exit_code"].append(f"{{{labels}}} {run.get('exit_code', -1)}")
            samples["xenlvm_last_run_timestamp_seconds"].append(f"{{{labels}}} {run.get('started', 0):.3f}")
            samples["xenlvm_last_run_duration_seconds"].append(f"{{{labels}}} {run.get('duration', 0):.3f}")
            notes = run.get("notes") or {}
            job_label = f'{{job="{job}"}}'
            if "pause_window_ms" in notes:
                window = notes["pause_window_ms"] / 1000
                samples["xenlvm_pause_window_seconds"].append(f"{job_label} {window:.3f}")
            for key, ms in sorted(notes.items()):
                if key.startswith(DOMAIN_WINDOW) and isinstance(ms, (int, float)):
                    labels = f'job="{job}",domain="{_label_value(key[len(DOMAIN_WINDOW):])}"'
                    samples["xenlvm_domain_pause_window_seconds"].append(f"{{{labels}}} {ms / 1000:.3f}")
            samples["xenlvm_domain_application_consistent"] += _per_domain(job, notes, DOMAIN_CONSISTENT,
                                                                          "{:.0f}")
            if "not_exposed" in notes:
                samples["xenlvm_disks_not_exposed"].append(f"{job_label} {int(notes['not_exposed'])}")
            if "fill_percent" in notes:
                samples["xenlvm_snapshot_fill_ratio"].append(f"{job_label} {notes['fill_percent'] / 100:.4f}")
            for note, metric, scale in _JOB_NOTES:
                if note in notes:
                    samples[metric].append(f"{job_label} {notes[note] * scale:.4g}")
    lines = []
    for name, text in _METRICS:
        if samples[name]:
            lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"] + [name + s for s in samples[name]]
    return "\n".join(lines) + "\n"
