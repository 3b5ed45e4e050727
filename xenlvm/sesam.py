"""sesam's calling convention: which jobs an sbc_pre/sbc_post invocation is for.

sesam passes the task's details as positional arguments in an order that is not documented
publicly, so nothing here depends on positions: a job runs when one of its ``tasks``, its
``mountpoint`` or one of its volumes' mount directories appears among the arguments. No match
is a logged no-op, so backups of other tasks on the same client are never disturbed.
"""

from __future__ import annotations

from collections.abc import Sequence

from xenlvm.config.model import Config, Job
from xenlvm.errors import UsageError


def describe_arguments(args: Sequence[str]) -> str:
    """The arguments as one log-safe line (repr keeps non-UTF-8 bytes and newlines visible)."""
    shown = [ascii(a) if len(a) <= 256 else ascii(a[:256]) + "..." for a in args[:64]]
    if len(args) > 64:
        shown.append(f"... and {len(args) - 64} more")
    return " ".join(shown) or "(none)"


def select_jobs(config: Config, args: Sequence[str], job_names: Sequence[str] = ()) -> list[Job]:
    """Given sesam's arguments (or explicit job names), return the jobs to run, in config order."""
    if job_names:
        unknown = [n for n in job_names if n not in config.jobs]
        if unknown:
            raise UsageError(f"no job named {', '.join(map(repr, unknown))} in {config.path}; "
                             f"configured jobs: {', '.join(config.jobs) or 'none'}")
        return [job for name, job in config.jobs.items() if name in job_names]
    given = {arg.rstrip("/") or arg for arg in args}
    return [job for job in config.jobs.values()
            if given.intersection(job.tasks) or job.mountpoint in given
            or given.intersection(spec.mountpoint for spec in job.volumes)]
