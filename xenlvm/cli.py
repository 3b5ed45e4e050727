"""The command line: ``xenlvm pre|post ...``, and the sesam entrypoints sbc_pre/sbc_post.

This is the one place where errors become exit codes: 0 success, 1 the operation failed,
2 usage or configuration error.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Callable

import click

from xenlvm import __version__, hooks, interrupts, logs
from xenlvm.config import Config, config_path, load_config
from xenlvm.errors import EXIT_FAILED, EXIT_OK, UsageError, XenlvmError
from xenlvm.runner import Runner
from xenlvm.sesam import describe_arguments, select_jobs

log = logging.getLogger("xenlvm")

HOOK_HELP = """SESAM_ARGS are the arguments sesam passes to its hooks. A job runs when one of its
'tasks' or its 'mountpoint' is among them; with --job it runs regardless. When no job
matches, nothing is done and the exit status is 0."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", metavar="FILE", envvar="XENLVM_CONFIG",
              help="Configuration file [default: $XENLVM_CONFIG or /etc/xenlvm/config.yaml].")
@click.option("-v", "--verbose", is_flag=True, help="Also print every command run.")
@click.option("--debug", is_flag=True, help="Print everything, with a traceback on errors.")
@click.version_option(__version__, prog_name="xenlvm")
@click.pass_context
def main(ctx: click.Context, config_file: str | None, verbose: bool, debug: bool) -> None:
    """Consistent LVM snapshots of a Xen host's VM volume for SEP sesam backups.

    sesam runs 'sbc_pre' before a backup (create and mount the snapshot) and 'sbc_post'
    after it (unmount and remove it); both call 'xenlvm pre' and 'xenlvm post'.

    Exit status: 0 success, 1 the operation failed, 2 usage or configuration error.
    """
    logs.setup(verbose=verbose, debug=debug)
    ctx.obj = {"config": config_path(config_file), "debug": debug}


def _hook_command(phase: str, run: Callable[[hooks.Context, list], None]) -> click.Command:
    @click.command(phase, context_settings={"ignore_unknown_options": True}, help=(
        f"Run the sesam {phase} hook: " + ("create and mount the snapshot of each selected job."
                                           if phase == "pre" else
                                           "unmount and remove each selected job's snapshot.")
        + "\n\n" + HOOK_HELP))
    @click.option("--job", "job_names", multiple=True, metavar="NAME",
                  help="Run this job whatever sesam passed (repeatable).")
    @click.option("--config", "config_file", metavar="FILE",
                  help="Configuration file (overrides the one given before the command).")
    @click.option("--dry-run", is_flag=True,
                  help="Run every query for real; only print the commands that would change something.")
    @click.argument("sesam_args", nargs=-1, type=click.UNPROCESSED)
    @click.pass_context
    def command(ctx: click.Context, job_names: tuple[str, ...], config_file: str | None,
                dry_run: bool, sesam_args: tuple[str, ...]) -> None:
        if config_file:
            ctx.obj["config"] = config_file
        def work() -> None:
            config = _load(ctx)  # first, so that the log file gets everything below
            log.info("%s called with arguments: %s", phase, describe_arguments(sesam_args))
            jobs = select_jobs(config, sesam_args, job_names)
            if not jobs:
                log.info("no job is configured for these arguments; nothing to do")
                return
            if not dry_run and os.geteuid() != 0:
                raise UsageError(f"{phase} changes LVM volumes and mounts and must run as root "
                                 "(use --dry-run to see what it would do)")
            runner = Runner(path=config.settings.path, timeout=config.settings.command_timeout,
                            dry_run=dry_run)
            interrupts.install()
            run(hooks.Context(config, runner), jobs)
            log.info("%s finished%s: %s", phase, " (dry run, nothing changed)" if dry_run else "",
                     ", ".join(j.name for j in jobs))
        ctx.exit(_exit_code(work, ctx.obj["debug"]))
    return command


def _load(ctx: click.Context) -> Config:
    config = load_config(ctx.obj["config"])
    if config.settings.log_file:
        logs.add_log_file(config.settings.log_file)
    return config


def _exit_code(work: Callable[[], None], debug: bool) -> int:
    """Run work; turn its outcome into the exit code, with a human message on failure."""
    try:
        work()
    except XenlvmError as exc:
        log.error("%s", exc, exc_info=debug)
        return exc.exit_code
    except Exception as exc:  # a bug: still say something useful and fail the run
        log.error("unexpected error (a bug in xenlvm, please report it): %s: %s",
                  type(exc).__name__, exc, exc_info=True)
        return EXIT_FAILED
    return EXIT_OK


main.add_command(_hook_command("pre", hooks.run_pre))
main.add_command(_hook_command("post", hooks.run_post))


def run_hook(phase: str, argv: Sequence[str] | None = None) -> None:
    """Entry for the sesam hook scripts: ``sbc_pre ARGS`` behaves like ``xenlvm pre ARGS``."""
    args = list(sys.argv[1:] if argv is None else argv)
    main.main(args=[phase, *args], prog_name=f"sbc_{phase}")
