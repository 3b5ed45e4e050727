"""What one xenlvm run works with: the configuration, the one runner, when it started, and
what each job's run measured for the state file and metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from xenlvm.config import Config, Job
from xenlvm.lock import JobLock
from xenlvm.lvm import Lvm
from xenlvm.runner import Runner


@dataclass
class Context:
    """What one xenlvm run works with."""

    config: Config
    runner: Runner
    started: float = field(default_factory=time.time)
    # What each job's run measured, for the state file and metrics: pause_window_ms, fill_percent.
    notes: dict[str, dict[str, float]] = field(default_factory=dict)

    def note(self, job: Job, key: str, value: float) -> None:
        self.notes.setdefault(job.name, {})[key] = value

    @property
    def lvm(self) -> Lvm:
        return Lvm(self.runner)

    @property
    def dry_run(self) -> bool:
        return self.runner.dry_run

    def lock(self, job: Job) -> JobLock:
        settings = self.config.settings
        return JobLock(settings.lock_dir, job.name, settings.lock_timeout)
