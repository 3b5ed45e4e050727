"""The one door through which xenlvm runs external programs.

Every call is an argv list (never a shell string), runs with a fixed PATH and a clean
environment, has a timeout, and is logged with its exact argv, exit status and duration.
Each call is marked as a query or a change: in a dry run, queries still run for real and
changes are only logged, so the dry run shows exactly what would happen.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xenlvm.errors import CommandFailed
from xenlvm.host import DEFAULT_PATH, interrupts

log = logging.getLogger("xenlvm.command")

# The timeout of a command that reads or writes a whole disk (an image copy, a restore, a
# discard of the target): hours on a large one, but not forever.
COPY_TIMEOUT = 24 * 3600.0


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration: float


def quote(argv: Sequence[str]) -> str:
    """Given an argv, return it as one line an admin can paste into a shell."""
    return " ".join(shlex.quote(arg) for arg in argv)


def clean_environment(path: str) -> dict[str, str]:
    """The environment every command gets: C locale, our PATH, no inherited LVM/DM settings."""
    return {
        "PATH": path,
        "LC_ALL": "C",
        "LANG": "C",
        # lvm warns about every inherited file descriptor; we pass none on purpose.
        "LVM_SUPPRESS_FD_WARNINGS": "1",
    }


class Runner:
    """Runs commands for xenlvm; see the module docstring for the rules it keeps."""

    def __init__(self, *, path: str = DEFAULT_PATH, timeout: float = 120.0, dry_run: bool = False,
                 quiet_queries: bool = False) -> None:
        self.env = clean_environment(path)
        self.timeout = timeout
        self.dry_run = dry_run
        # A poller (the watchdog) logs its queries at debug level only: not 2 lines every 2 s.
        self.query_level = logging.DEBUG if quiet_queries else logging.INFO
        self.count = 0

    def query(self, argv: Sequence[str], *, timeout: float | None = None,
              ok_codes: Sequence[int] = (0,)) -> Result:
        """Run a command that changes nothing; it runs even in a dry run."""
        return self._run(argv, timeout, ok_codes, self.query_level)

    def change(self, argv: Sequence[str], *, timeout: float | None = None,
               ok_codes: Sequence[int] = (0,), input: str | None = None,
               own_group: bool = False, started: Callable[[int], None] | None = None) -> Result | None:
        """Run a command that changes the system; in a dry run, only log it and return None.
        input, if given, is the command's standard input (sfdisk's script), logged with it.
        own_group: the command runs in a process group of its own, all of which is killed when
        it times out (an admin's script and the ssh it started: xenlvm.quiesce.freeze); started, if
        given, is called with the group's id as soon as it runs (to record it: xenlvm.quiesce.freeze).

        A signal that arrives while it runs is held back until it has finished, so xenlvm
        always knows whether the change happened and can undo it.
        """
        if self.dry_run:
            log.warning("dry run, would run: %s%s", quote(argv), _with_input(input))
            return None
        with interrupts.deferred():
            return self._run(argv, timeout, ok_codes, logging.INFO, input, own_group, started)

    def change_all(self, argvs: Sequence[Sequence[str]], *,
                   timeout: float | None = None) -> list[Result | CommandFailed | None]:
        """Run several changing commands at the same time and wait for all of them; return each
        one's Result, or its CommandFailed (nothing is raised), or None in a dry run. Used where
        waiting costs: pausing K domains takes one xl call's time, not K."""
        def attempt(argv: Sequence[str]) -> Result | CommandFailed | None:
            try:
                return self.change(argv, timeout=timeout) if self.dry_run else \
                    self._run(argv, timeout, (0,), logging.INFO)
            except CommandFailed as exc:
                return exc

        if self.dry_run or len(argvs) <= 1:
            with interrupts.deferred():
                return [attempt(argv) for argv in argvs]
        from concurrent.futures import ThreadPoolExecutor  # only here: most runs never need its import

        with interrupts.deferred(), ThreadPoolExecutor(max_workers=min(len(argvs), 16)) as pool:
            return list(pool.map(attempt, argvs))

    def _run(self, argv: Sequence[str], timeout: float | None, ok_codes: Sequence[int], level: int,
             input: str | None = None, own_group: bool = False,
             started: Callable[[int], None] | None = None) -> Result:
        argv = tuple(argv)
        limit = timeout if timeout is not None else self.timeout
        self.count += 1
        log.log(level, "run: %s%s", quote(argv), _with_input(input))
        start = time.monotonic()
        stdin: dict = {"stdin": subprocess.DEVNULL} if input is None else {"input": input}
        try:
            if own_group:
                proc = _run_in_own_group(argv, self.env, limit, started)
            else:
                proc = subprocess.run(argv, env=self.env, **stdin, capture_output=True,
                                      timeout=limit, check=False, text=True, errors="replace")
        except FileNotFoundError:
            log.error("not found: %s (PATH=%s)", argv[0], self.env["PATH"])
            raise CommandFailed(argv, None, "", not_found=True) from None
        except OSError as exc:  # found but not executable, bad interpreter, ...
            log.error("cannot run %s: %s", argv[0], exc.strerror)
            raise CommandFailed(argv, None, f"cannot execute: {exc.strerror}") from None
        except subprocess.TimeoutExpired as exc:
            log.error("timed out after %.1f s: %s", limit, quote(argv))
            stderr = exc.stderr or ""
            if isinstance(stderr, bytes):
                stderr = stderr.decode(errors="replace")
            raise CommandFailed(argv, None, stderr, timed_out=True, timeout=limit) from None
        duration = time.monotonic() - start
        result = Result(argv, proc.returncode, proc.stdout, proc.stderr, duration)
        stderr_line = " ".join(proc.stderr.split())
        failed = proc.returncode not in ok_codes
        log.log(logging.INFO if failed else level, "exit %d after %.3f s: %s%s", proc.returncode, duration,
                argv[0], f" (stderr: {stderr_line[:2000]})" if stderr_line else "")
        if failed:
            raise CommandFailed(argv, proc.returncode, proc.stderr)
        return result


def _run_in_own_group(argv: Sequence[str], env: dict[str, str], limit: float,
                      started: Callable[[int], None] | None = None) -> subprocess.CompletedProcess:
    """subprocess.run in a new session; on timeout its whole process group is killed (SIGKILL),
    so nothing it started goes on behind xenlvm's back; what it wrote on stderr so far is kept.
    A command that exits in time may leave a process of its own behind on purpose (a database
    client holding a lock until the thaw): it must close its standard output and error, or
    xenlvm waits for it until the timeout."""
    with subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, start_new_session=True, text=True,
                          errors="replace") as proc:
        if started is not None:
            started(proc.pid)
        try:
            stdout, stderr = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise subprocess.TimeoutExpired(argv, limit, stderr=exc.stderr) from None
        return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def _with_input(text: str | None) -> str:
    return "" if text is None else " <<'EOF'\n" + text + ("" if text.endswith("\n") else "\n") + "EOF"


def missing_programs(programs: Sequence[str], path: str) -> list[str]:
    """Those of programs that are not on the given PATH, in their order."""
    return [program for program in programs if which(program, path) is None]


def which(program: str, path: str) -> str | None:
    """Return the full path of program on the given PATH, or None."""
    for directory in path.split(os.pathsep):
        candidate = os.path.join(directory, program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None
