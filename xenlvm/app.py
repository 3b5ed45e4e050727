"""The application layer, without click: what the command line (xenlvm.cli) and the sesam
hooks' entry (xenlvm.hook_entry) share. Loading the configuration, making the runner, the pre
and post work with the admin's chained hook around it, and errors into exit codes: 0 success,
1 the operation failed, 2 usage or configuration error, 3 post: a partial backup. Nothing here
imports click.

sesam runs the hooks for every backup of the client, most of them for other tasks: what only a
matching job, a chained hook or one phase needs is imported where it is needed (see
bench/hostcost.py for what each import costs).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence

from xenlvm import logs
from xenlvm.config.load import load_config
from xenlvm.config.model import Config
from xenlvm.errors import EXIT_FAILED, EXIT_OK, PartialBackup, UsageError, XenlvmError, host_file_error
from xenlvm.sesam import describe_arguments, select_jobs

TYPE_CHECKING = False  # the runner's import is paid only by a run that makes one
if TYPE_CHECKING:
    from xenlvm.host.runner import Runner

log = logging.getLogger("xenlvm")


def finish(work: Callable[[], int | None], debug: bool) -> int:
    """Run work; return its exit code, with a human message on failure."""
    try:
        return work() or EXIT_OK
    except XenlvmError as exc:
        log.error("%s", exc, exc_info=debug)
        return exc.exit_code
    except OSError as exc:  # a file the host does not let xenlvm read or write: no bug
        log.error("%s", host_file_error(exc), exc_info=debug)
        return EXIT_FAILED
    except Exception as exc:  # a bug: still say something useful and fail the run
        log.error("unexpected error (a bug in xenlvm, please report it): %s: %s",
                  type(exc).__name__, exc, exc_info=True)
        return EXIT_FAILED


def load(path: str) -> Config:
    config = load_config(path)
    if config.settings.log_file:
        logs.add_log_file(config.settings.log_file)
    return config


def make_runner(config: Config, dry_run: bool = False) -> Runner:
    from xenlvm.host.runner import Runner

    return Runner(path=config.settings.path, timeout=config.settings.command_timeout, dry_run=dry_run)


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise UsageError(f"{what} changes LVM volumes and mounts and must run as root "
                         "(use --dry-run to see what it would do)")


def hook_work(phase: str, path: str, job_names: Sequence[str], dry_run: bool, chain: str | None,
              sesam_args: Sequence[str]) -> int:
    """pre or post as sesam's hook runs it, with the admin's own chained hook around it. The
    chained post hook runs whatever happens to xenlvm's part, a configuration that does not load
    included: what the admin's pre hook stopped (a database, ...) must be started again."""
    if not (chain and phase == "post" and not dry_run):
        return _xenlvm_part(phase, path, job_names, dry_run, chain, sesam_args)
    try:
        _xenlvm_part(phase, path, job_names, dry_run, None, sesam_args)
    except PartialBackup:  # exit 3 says "incomplete but sound": not when the admin's hook failed
        if _local_post(chain, sesam_args) != 0:
            return EXIT_FAILED
        raise
    except BaseException:  # xenlvm's own failure is raised after the hook ran, and wins
        _local_post(chain, sesam_args)
        raise
    return _local_post(chain, sesam_args)


def _local_post(chain: str, sesam_args: Sequence[str]) -> int:
    """Run the admin's own post hook; its failure is an error of the run."""
    local = _run_local_hook(chain, sesam_args)
    if local != 0:
        log.error("your own post hook %s failed (exit %d)", chain, local)
    return local


def _xenlvm_part(phase: str, path: str, job_names: Sequence[str], dry_run: bool, pre_chain: str | None,
                 sesam_args: Sequence[str]) -> int:
    """Load the configuration, run the admin's chained pre hook (pre_chain) and xenlvm's phase."""
    config = load(path)  # first, so that the log file gets everything below
    log.info("%s called with arguments: %s", phase, describe_arguments(sesam_args))
    if pre_chain and phase == "pre" and not dry_run:
        local = _run_local_hook(pre_chain, sesam_args)
        if local != 0:
            log.error("your own pre hook %s failed (exit %d); xenlvm's pre does not run", pre_chain, local)
            return local
    run_phase(config, phase, job_names, dry_run, sesam_args)
    return EXIT_OK


def _run_local_hook(chain: str, sesam_args: Sequence[str]) -> int:
    from xenlvm.admin.install import run_local_hook  # and subprocess: only for a chained hook

    return run_local_hook(chain, sesam_args)


def run_phase(config: Config, phase: str, job_names: Sequence[str], dry_run: bool,
              sesam_args: Sequence[str]) -> None:
    jobs = select_jobs(config, sesam_args, job_names)
    if not jobs:
        log.info("no job is configured for these arguments; nothing to do")
        return
    if not dry_run:
        require_root(phase)
    # only now, and only the phase's: a call for another task never pays for these imports
    from xenlvm.core import state
    from xenlvm.core.context import Context
    from xenlvm.host import interrupts

    if phase == "pre":
        from xenlvm.phases.pre import run_pre as run
    else:
        from xenlvm.phases.post import run_post as run
    interrupts.install()
    context = Context(config, make_runner(config, dry_run))
    started, clock = time.time(), time.monotonic()
    names = [j.name for j in jobs]
    try:
        run(context, jobs)
    except BaseException as exc:
        if not dry_run:
            record = state.RunRecord(phase, False, getattr(exc, "exit_code", EXIT_FAILED), started,
                                     time.monotonic() - clock, str(exc))
            state.record_run(config, names, record, context.reports)
        raise
    if not dry_run:
        state.record_run(config, names, state.RunRecord(phase, True, EXIT_OK, started,
                                                        time.monotonic() - clock), context.reports)
    log.info("%s finished%s: %s", phase, " (dry run, nothing changed)" if dry_run else "", ", ".join(names))
