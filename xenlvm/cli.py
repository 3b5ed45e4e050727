"""The command line: ``xenlvm pre|post|check|status|cleanup|install-hooks``, the restore commands
``restore-disk|restore-image``, and the sesam entrypoints sbc_pre/sbc_post.

Errors become exit codes in xenlvm.app, which the hooks' click-free entry (xenlvm.hook_entry)
shares: 0 success, 1 the operation failed, 2 usage or configuration error, 3 partial backup.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence

import click

from xenlvm import __version__, app, logs
from xenlvm.admin import install
from xenlvm.config.load import load_config
from xenlvm.config.model import XL_TIMEOUT, Config, Job, Settings, config_path
from xenlvm.errors import EXIT_FAILED, EXIT_OK
from xenlvm.host import interrupts
from xenlvm.sesam import select_jobs

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
    'restore-disk' and 'restore-image' put a VM disk backed up from its own LV back onto one.

    Exit status: 0 success, 1 the operation failed, 2 usage or configuration error, 3 (post)
    the backup is partial: a VM disk's files could not be exposed.
    """
    logs.setup(verbose=verbose, debug=debug)
    ctx.obj = {"config": config_path(config_file), "debug": debug}


def _load(ctx: click.Context) -> Config:
    return app.load(ctx.obj["config"])


def _finish(ctx: click.Context, work: Callable[[], int | None]) -> None:
    """Run work; turn its outcome into the exit code, with a human message on failure."""
    ctx.exit(app.finish(work, ctx.obj["debug"]))


# ---------------------------------------------------------------------------------------------
# pre and post (sesam's hooks enter through xenlvm.hook_entry, without click)


def _hook_command(phase: str, summary: str) -> click.Command:
    @click.command(phase, context_settings={"ignore_unknown_options": True}, help=f"{summary}\n\n{HOOK_HELP}")
    @click.option("--job", "job_names", multiple=True, metavar="NAME",
                  help="Run this job whatever sesam passed (repeatable).")
    @click.option("--config", "config_file", metavar="FILE",
                  help="Configuration file (overrides the one given before the command).")
    @click.option("--dry-run", is_flag=True,
                  help="Run every query for real; only print the commands that would change something.")
    @click.option("--chain", metavar="HOOK", hidden=True,
                  help="The admin's own hook that install-hooks kept (sbc_pre.local); run with it.")
    @click.argument("sesam_args", nargs=-1, type=click.UNPROCESSED)
    @click.pass_context
    def command(ctx: click.Context, job_names: tuple[str, ...], config_file: str | None, dry_run: bool,
                chain: str | None, sesam_args: tuple[str, ...]) -> None:
        if config_file:
            ctx.obj["config"] = config_file
        _finish(ctx, lambda: app.hook_work(phase, ctx.obj["config"], job_names, dry_run, chain, sesam_args))
    return command


main.add_command(_hook_command("pre", "Run the sesam pre hook: create and mount the "
                               "snapshot of each selected job. Exit 0 only when all are ready."))
main.add_command(_hook_command("post", "Run the sesam post hook: unmount and remove each "
                               "selected job's snapshot. Exit 0 only when all is cleaned up and no "
                               "snapshot became invalid (overflowed or I/O errors)."))


# ---------------------------------------------------------------------------------------------
# Admin commands


def _selected(config: Config, names: Sequence[str]) -> list[Job]:
    return select_jobs(config, (), names) if names else list(config.jobs.values())


@main.command()
@click.option("--job", "job_names", multiple=True, metavar="NAME", help="Only this job (repeatable).")
@click.option("--hooks-dir", default=install.DEFAULT_HOOK_DIR, show_default=True,
              help="Where sesam's hooks live.")
@click.option("--quiesce", "try_quiesce", is_flag=True,
              help="Also freeze and thaw each domain of a job with xen.quiesce, timed (needs root).")
@click.pass_context
def check(ctx: click.Context, job_names: tuple[str, ...], hooks_dir: str, try_quiesce: bool) -> None:
    """Check everything pre needs, and more, without changing anything.

    Configuration (valid, owned by root, not writable by others), tools, hooks, and per job:
    origin present and active, VG not missing a PV, VG free space against the snapshot size,
    mountpoint usable, Xen domains, the freeze and thaw commands (existing, owned by root, not
    writable by others), leftovers (domains left paused or frozen). With --quiesce, each
    domain is frozen and thawed once (the only change check makes). Exit 0 when nothing
    failed, else 1.
    """
    from xenlvm.admin.check import check_host, check_job

    def work() -> int:
        config = load_config(ctx.obj["config"], strict=False)  # check reports permissions itself
        if try_quiesce:
            app.require_root("check --quiesce")
            interrupts.install()  # a signal while a guest is frozen: thawed first
        runner = app.make_runner(config)
        findings = [("", f) for f in check_host(config, hooks_dir)]
        for job in _selected(config, job_names):
            findings += [(job.name, f) for f in check_job(config, runner, job, try_quiesce)]
        for job_name, finding in findings:
            where = f"[{job_name}] " if job_name else ""
            click.echo(f"{finding.level.upper():4} {where}{finding.check}: {finding.message}")
        failed = sum(f.level == "fail" for _, f in findings)
        click.echo(f"{failed} check(s) failed" if failed else "all checks passed")
        return EXIT_FAILED if failed else EXIT_OK
    _finish(ctx, work)


@main.command()
@click.option("--job", "job_names", multiple=True, metavar="NAME", help="Only this job (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per job, in a list).")
@click.pass_context
def status(ctx: click.Context, job_names: tuple[str, ...], as_json: bool) -> None:
    """Show per job: snapshot present or not, fill, valid or invalid and why (overflowed or I/O
    errors), where it is mounted, its age and the run that created it, whether it is stale,
    paused domains, guests left frozen, last runs (with each domain's consistency), the chain
    bases and last files of chained VM disks (vmdisks.incremental), problems such as a volume
    group missing a PV."""
    from xenlvm.admin.status import describe, job_status

    def work() -> None:
        config = load_config(ctx.obj["config"])
        runner = app.make_runner(config)
        reports = [job_status(config, runner, job) for job in _selected(config, job_names)]
        if as_json:
            click.echo(json.dumps(reports, indent=2))
        else:
            for report in reports:
                click.echo("\n".join(describe(report)))
    _finish(ctx, work)


@main.command()
@click.option("--job", "job_names", multiple=True, metavar="NAME", help="Only this job (repeatable).")
@click.option("--dry-run", is_flag=True, help="Only print what would be removed.")
@click.option("--bases", "drop_bases", is_flag=True,
              help="Also drop the jobs' chain bases (vmdisks.incremental): the next run writes full images.")
@click.pass_context
def cleanup(ctx: click.Context, job_names: tuple[str, ...], dry_run: bool, drop_bases: bool) -> None:
    """Remove xenlvm's leftovers: unmount and remove the jobs' snapshots (only those carrying
    xenlvm's tags), resume domains a killed run left paused and thaw those it left frozen.
    Like post, without judging the backup (so no snapshot becomes a chain's base). With --bases,
    also every base a job keeps for its chains."""

    def work() -> None:
        config = _load(ctx)
        if not dry_run:
            app.require_root("cleanup")
        interrupts.install()
        from xenlvm.core.context import Context
        from xenlvm.phases.post import run_post

        run = Context(config, app.make_runner(config, dry_run))
        run_post(run, _selected(config, job_names), judge_backup=False)
        if drop_bases:
            from xenlvm.increments.bases import drop_all
            for job in _selected(config, job_names):
                with run.lock(job):
                    drop_all(run, job)
    _finish(ctx, work)


@main.command("install-hooks")
@click.option("--dir", "directory", default=install.DEFAULT_HOOK_DIR, show_default=True,
              help="sesam's hook directory.")
@click.option("--uninstall", is_flag=True, help="Remove xenlvm's hooks and restore the ones they replaced.")
@click.pass_context
def install_hooks(ctx: click.Context, directory: str, uninstall: bool) -> None:
    """Write sbc_pre and sbc_post into sesam's directory, bound to this installation.

    An existing hook that is not xenlvm's is kept as sbc_pre.local / sbc_post.local and
    called by xenlvm's: pre runs yours first (if it fails, xenlvm's pre does not run and its
    exit status is returned); post runs xenlvm's first, then yours, and fails if either did.
    Running it again changes nothing; --uninstall restores the directory as it was.
    """
    def work() -> None:
        done = install.uninstall_hooks(directory) if uninstall else install.install_hooks(directory)
        for line in done:
            log.info("%s", line)
    _finish(ctx, work)


# ---------------------------------------------------------------------------------------------
# Restoring VM disks (see README, "Restoring a VM")

_TARGET = click.option("--to", "target", required=True, metavar="VG/LV",
                       help="The logical volume to overwrite (it must exist and be large enough).")
_DRY_RUN = click.option("--dry-run", is_flag=True, help="Run every check; only print the commands.")
_YES = click.option("--yes", is_flag=True, help="Overwrite the target (without it, nothing is changed).")


@main.command("restore-disk")
@click.option("--from", "source", required=True, metavar="DIR",
              help="The restored <domain>/<disk> folder (with its layout.json, or <disk>.layout.json "
                   "beside it for a disk without a partition table).")
@_TARGET
@_DRY_RUN
@_YES
@click.pass_context
def restore_disk(ctx: click.Context, source: str, target: str, dry_run: bool, yes: bool) -> None:
    """Rebuild a VM disk on an LV from a restored <domain>/<disk> folder.

    Recreates the partition table exactly as recorded in layout.json (label id, partition
    UUIDs), makes each filesystem with its recorded type, UUID and label and copies its files
    back (owners, modes, times, ACLs, xattrs, hard links, sparse files), recreates swap with its
    UUID. Guest LVM and other partitions xenlvm did not expose are named, not touched.

    Refuses unless the target exists and is at least the recorded size, no domain has it as a
    disk (xl list -l), it is not mounted, mapped, open or snapshotted, and --yes is given.
    """
    from xenlvm.admin.rebuild import restore_disk as rebuild

    _restore(ctx, "restore-disk", rebuild, source, target, dry_run, yes)


@main.command("restore-image")
@click.argument("image", metavar="FILE")
@_TARGET
@_DRY_RUN
@_YES
@click.pass_context
def restore_image(ctx: click.Context, image: str, target: str, dry_run: bool, yes: bool) -> None:
    """Copy a VM disk image (expose: image) back onto an LV, then prove it by SHA-256.

    Makes the same checks as restore-disk. A thin target is discarded first and only the
    image's data blocks are written (it stays thin); the copy is synced before it is compared.
    FILE may be an increment (<disk>.<run>.incr): the disk is then rebuilt as of that run from
    its chain in FILE's folder (the full image <disk>.<run>.img and the increments after it),
    every checksum and the chain's order verified before anything is written; --dry-run lists
    the chain. A chain with a gap is refused, naming the missing run.
    """
    from xenlvm.admin.restore import restore_image as copy_image

    _restore(ctx, "restore-image", copy_image, image, target, dry_run, yes)


def _restore(ctx: click.Context, name: str, run: Callable[..., list[str]], source: str, target: str,
             dry_run: bool, yes: bool) -> None:
    """Load the configuration (for PATH and lock_dir; the defaults where there is none), refuse
    without root unless it is a dry run, run, print the report."""
    def work() -> None:
        path = ctx.obj["config"]
        config = _load(ctx) if os.path.exists(path) else Config(path, Settings())
        if not dry_run:
            app.require_root(name)
        interrupts.install()
        for line in run(app.make_runner(config, dry_run), source, target, yes=yes, xl_timeout=XL_TIMEOUT,
                        lock_dir=config.settings.lock_dir):
            click.echo(line)
    _finish(ctx, work)
