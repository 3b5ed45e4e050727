"""What one xenlvm run works with: the configuration, the one runner, when it started, and
what each job's run measured for the state file and metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from xenlvm.config.model import Config, Job
from xenlvm.core.state import RunReport
from xenlvm.host.lock import JobLock
from xenlvm.host.lvm import Lvm
from xenlvm.host.runner import Runner


@dataclass
class Context:
    """What one xenlvm run works with."""

    config: Config
    runner: Runner
    started: float = field(default_factory=time.time)
    reports: dict[str, RunReport] = field(default_factory=dict)  # by job: for its state file

    def report(self, job: Job) -> RunReport:
        """What the job's run measured so far, to be added to."""
        return self.reports.setdefault(job.name, RunReport())

    @property
    def lvm(self) -> Lvm:
        return Lvm(self.runner)

    @property
    def dry_run(self) -> bool:
        return self.runner.dry_run

    def lock(self, job: Job) -> JobLock:
        settings = self.config.settings
        return JobLock(settings.lock_dir, job.name, settings.lock_timeout)
