"""The quiesce guard: a small process that thaws the guests a run froze once they have been
frozen longer than xen.quiesce.max_frozen, even when that run is gone (killed with -9) or hangs
(an lvcreate that does not return). A frozen guest looks running while every write in it hangs.

pre starts it before the job's first freeze (``guarding``) and stops it after the last thaw,
through a pidfd once its command line proves it is this job's guard. The guard in turn acts
only on a freeze record (xenlvm.quiesce.FreezeRecord) written by the run that started it: the
record names that run. When the time is up it resumes the domains the job's pause record names,
then runs the thaw command of each recorded domain, and clears the record if all thawed.
Its pid file: <lock_dir>/<job>.quiesce-guard.pid.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence

from xenlvm import logs
from xenlvm.config.model import Config
from xenlvm.core.monitor import StopRequest, is_monitor
from xenlvm.errors import EXIT_USAGE, XenlvmError
from xenlvm.host.fsutil import remove_if_present, write_atomically
from xenlvm.host.processes import read_pid, terminate_proven
from xenlvm.host.runner import Runner, quote
from xenlvm.host.xl import Xl
from xenlvm.quiesce.freeze import Quiescer
from xenlvm.quiesce.record import Frozen, boot_clock, kill_freeze, note_guard_acted, thaw_lock
from xenlvm.xen import domains as xen

log = logging.getLogger("xenlvm")

MODULE = "xenlvm.quiesce.guard"
START_TIMEOUT = 30.0  # a Python start on a loaded dom0 can be slow; the guard announces itself
LIFETIME = 86400.0  # the guard exits by itself after a day, whatever happened
LOOK_EVERY = 1.0  # seconds between two looks at the record while nothing is due


def pid_path(lock_dir: str, job_name: str) -> str:
    return os.path.join(lock_dir, f"{job_name}.quiesce-guard.pid")


def is_guard(pid: int, job_name: str) -> bool:
    """True when pid is a running quiesce guard of this job, as its command line shows."""
    return is_monitor(pid, MODULE, job_name)


@contextlib.contextmanager
def guarding(config: Config, job_name: str, run: str, quiescer: Quiescer | None) -> Iterator[None]:
    """The guard around the with-block (pre's pause windows); nothing without a quiescer or in a
    dry run. It is stopped afterwards, unless a thaw failed: then it stays, to try again when
    max_frozen is up."""
    if quiescer is None or quiescer.runner.dry_run:
        yield
        return
    start(config, job_name, run)
    try:
        yield
    finally:
        if _still_frozen(quiescer):
            log.error("the quiesce guard stays, to thaw what is still frozen when "
                      "xen.quiesce.max_frozen is up")
        else:
            stop(config, job_name)


def _still_frozen(quiescer: Quiescer) -> bool:
    """Whether the record still names domains (an unreadable one counts: the guard stays)."""
    try:
        return quiescer.record.read() is not None
    except XenlvmError:
        return True


def start(config: Config, job_name: str, run: str, *, python: str = sys.executable) -> int:
    """Start the job's guard for the run, detached (its own session, no inherited descriptors),
    and return its pid once it runs; a guard of an earlier run is stopped first. Raise
    XenlvmError when it does not come up: then nothing is frozen."""
    path = pid_path(config.settings.lock_dir, job_name)
    if stop(config, job_name):
        log.warning("a quiesce guard of an earlier run of job %s was still there; stopped it", job_name)
    parent = os.pidfd_open(os.getpid())  # the guard gets it open: pre's death shows at once, proven
    argv = [python, "-m", MODULE, "--config", config.path, "--job", job_name, "--run", run,
            "--parent-fd", str(parent)]
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {"PATH": config.settings.path, "LC_ALL": "C", "LANG": "C", "PYTHONPATH": package_parent}
    log.info("starting the quiesce guard: %s", quote(argv))
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, close_fds=True, pass_fds=(parent,),
                                start_new_session=True, cwd="/", env=env)
    finally:
        os.close(parent)
    deadline = time.monotonic() + START_TIMEOUT
    while read_pid(path) != proc.pid:
        status = proc.poll()
        if status is not None or time.monotonic() > deadline:
            if status is None:
                proc.kill()
                status = proc.wait()
            raise XenlvmError(f"the quiesce guard did not start (exit status {status}), so no guest is "
                              f"frozen; see the log file, or run it by hand to see why: {quote(argv)}")
        time.sleep(0.05)
    return proc.pid


def stop(config: Config, job_name: str, timeout: float = 10.0) -> bool:
    """Stop the job's guard, if one runs (never a process its pid file names that is not it);
    return whether one was stopped."""
    path = pid_path(config.settings.lock_dir, job_name)
    pid = read_pid(path)
    stopped = pid is not None and terminate_proven(pid, lambda checked: is_guard(checked, job_name),
                                                   f"the quiesce guard of job {job_name}", timeout)
    remove_if_present(path)
    return stopped


def watch(quiescer: Quiescer, act: Callable[[Frozen], None], parent_alive: Callable[[], bool],
          stop_request: StopRequest, clock: Callable[[], float] = boot_clock) -> None:
    """Until stopped: once the run's record is past its deadline (pre sets one per window), act
    on it, once per record, and go on watching the run's later windows. Return when the run is
    gone and nothing of it is left to act on, or after LIFETIME."""
    end = clock() + LIFETIME
    acted: Frozen | None = None
    while not stop_request.requested and clock() < end:
        left = quiescer.record.read()
        if left is None or left.run != quiescer.run or left == acted:  # nothing (new) of our run
            if not parent_alive():
                return
            stop_request.wait(LOOK_EVERY)
            continue
        if clock() >= left.deadline:
            act(left)
            acted = left
            continue
        stop_request.wait(min(LOOK_EVERY, left.deadline - clock()))


def thaw_overdue(quiescer: Quiescer, xl: Xl, pause_record: xen.PauseRecord, left: Frozen) -> None:
    """Under the job's thaw lock, if the record is still left: note that the guard acts (pre
    then says the window is crash-consistent only), resume the job's paused domains, then thaw
    the recorded ones; clear the record if all thawed."""
    with thaw_lock(quiescer.record):
        if quiescer.record.read() != left:
            return  # pre went on meanwhile (a later deadline) or thawed them
        note_guard_acted(quiescer.record, left)
        _resume_and_thaw(quiescer, xl, pause_record, left)


def _resume_and_thaw(quiescer: Quiescer, xl: Xl, pause_record: xen.PauseRecord, left: Frozen) -> None:
    log.error("domain(s) %s still frozen %.0f s after their freeze (past the deadline of their window, "
              "xen.quiesce.max_frozen): the quiesce guard resumes and thaws them; the run that froze them "
              "is gone or hangs", ", ".join(left.domains), boot_clock() - left.since)
    kill_freeze(left)  # first: a freeze that hangs could still freeze its guest after the thaw
    try:
        xen.resume_leftovers(xl, pause_record)
    except XenlvmError as exc:
        log.error("the quiesce guard could not resume the paused domains: %s", exc)
    failed = quiescer.thaw_all(left.domains)
    if failed:
        log.error("the quiesce guard could not thaw %s: they may be STILL FROZEN; run their thaw command "
                  "by hand", ", ".join(failed))
    else:
        quiescer.record.clear()


def parent_alive(pidfd: int) -> Callable[[], bool]:
    """Whether the process that started the guard still runs: its pidfd, which it opened on
    itself and passed on (no reused pid, no gap while the guard starts), becomes readable when
    it ends."""
    import select  # only the guard needs it

    return lambda: not select.select([pidfd], [], [], 0)[0]


def main(argv: Sequence[str] | None = None) -> int:
    """The guard, as start runs it: python -m xenlvm.quiesce.guard --config --job --run --parent-fd."""
    import argparse  # here: the hooks import this module's caller, and never need argparse

    from xenlvm.config.load import load_config

    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description="xenlvm's quiesce guard")
    for option in ("--config", "--job", "--run", "--parent-fd"):
        parser.add_argument(option, required=True)
    args = parser.parse_args(argv)
    stop_request = StopRequest()
    logs.setup(syslog=True)
    logs.set_job(args.job)
    try:
        config = load_config(args.config)
        if config.settings.log_file:
            logs.add_log_file(config.settings.log_file, logging.INFO)
        job = config.jobs[args.job]
    except (XenlvmError, KeyError) as exc:
        log.error("the quiesce guard cannot start: %s", exc)
        return EXIT_USAGE
    try:
        os.fstat(int(args.parent_fd))
    except (ValueError, OSError) as exc:
        log.error("the quiesce guard cannot start: --parent-fd %s is not the pidfd of pre: %s",
                  args.parent_fd, exc)
        return EXIT_USAGE
    runner = Runner(path=config.settings.path, timeout=config.settings.command_timeout)
    quiescer = Quiescer(runner, job, config.settings.lock_dir, args.run)
    path = pid_path(config.settings.lock_dir, args.job)
    write_atomically(path, f"{os.getpid()}\n", dir_mode=0o700)
    try:
        watch(quiescer, lambda left: thaw_overdue(quiescer, Xl(runner, job.xl_timeout), xen.PauseRecord(
            config.settings.lock_dir, job.name), left), parent_alive(int(args.parent_fd)), stop_request)
    except Exception as exc:  # said in the log: the guests are then guarded by the next run only
        log.exception("the quiesce guard failed: %s", exc)
        return 1
    finally:
        if read_pid(path) == os.getpid():
            os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
