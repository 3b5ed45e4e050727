"""The one stand-in for xenlvm.host.runner.Runner in the unit tests: the host's answers scripted by
argv, every call logged, a dry run and change_all as the real runner has them.

    runner = FakeRunner()
    runner.on("lvs", recorded("lvs_snapshot_mounted.json"))         # every lvs gets this
    runner.on("lvremove", IN_USE, REMOVED)                           # one answer per call, the last repeats
    runner.on("xl pause", Answer(stderr="libxl: error: ..."))        # exit 0 with an error on stderr
    runner.on("umount", Timeout())                                   # killed after its timeout
    runner.argvs_of("lvremove")                                      # what was run, in order
    runner.inputs_of("sfdisk")                                       # what each sfdisk got on stdin

An answer is stdout text (exit 0), an Answer (stdout, stderr, exit status), a CommandFailed
or a Timeout (raised as the runner raises them), or a function of the argv that returns one of
these. A command nobody scripted fails the test.
The answers come from output recorded on real hosts (tests/unit/data): see recorded().
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from xenlvm.errors import CommandFailed
from xenlvm.host.runner import Result

DATA = Path(__file__).parent / "data"


def recorded(name: str) -> str:
    """The text of a file of output recorded on a real host (tests/unit/data/<name>)."""
    return (DATA / name).read_text(encoding="utf-8")


def lvs_with(name: str, changes: dict[str, dict[str, str]] | None = None, *,
             drop: Sequence[str] = (), rows: Sequence[dict[str, str]] = ()) -> str:
    """A recorded lvs report with some fields of some rows changed ({lv_name: {field: value}}),
    some LVs dropped, and extra rows appended."""
    report = json.loads(recorded(name))
    kept = []
    for row in report["report"][0]["lv"]:
        if row["lv_name"] in drop:
            continue
        row.update((changes or {}).get(row["lv_name"], {}))
        kept.append(row)
    report["report"][0]["lv"] = kept + [dict(row) for row in rows]
    return json.dumps(report)


@dataclass(frozen=True)
class Answer:
    """What a command prints and its exit status."""

    stdout: str = ""
    stderr: str = ""
    returncode: int = 0


@dataclass(frozen=True)
class Timeout:
    """The command did not finish within its timeout and was killed."""

    stderr: str = ""


Reply = Union[str, Answer, Timeout, CommandFailed, None]
Scripted = Union[Reply, Callable[[tuple[str, ...]], Reply]]


@dataclass(frozen=True)
class Call:
    kind: str  # "query", "change", or "would change" (announced in a dry run, not run)
    argv: tuple[str, ...]
    timeout: float | None
    input: str | None = None  # the text given to the command's standard input (change(input=...))


class FakeRunner:
    """Runner's interface (query, change, change_all, dry_run, count) over scripted answers."""

    def __init__(self, *, dry_run: bool = False, timeout: float = 120.0) -> None:
        self.dry_run = dry_run
        self.timeout = timeout
        self.calls: list[Call] = []
        self.own_group: list[tuple[str, ...]] = []  # the changes run in a process group of their own
        self.count = 0
        self._scripts: list[tuple[tuple[str, ...], list[Scripted]]] = []

    def on(self, command: str, *answers: Scripted) -> FakeRunner:
        """Argvs that start with the words of command ("lvs", "xl pause") get the answers in
        turn, the last one again and again. The longest matching command wins; on() again with
        the same command replaces its answers."""
        assert answers, "on() needs at least one answer"
        prefix = tuple(command.split())
        self._scripts = [(p, a) for p, a in self._scripts if p != prefix]
        self._scripts.append((prefix, list(answers)))
        return self

    # --- the Runner interface ------------------------------------------------------------

    def query(self, argv: Sequence[str], *, timeout: float | None = None,
              ok_codes: Sequence[int] = (0,)) -> Result:
        result = self._run("query", argv, timeout, ok_codes)
        assert result is not None
        return result

    def change(self, argv: Sequence[str], *, timeout: float | None = None,
               ok_codes: Sequence[int] = (0,), input: str | None = None,
               own_group: bool = False, started: Callable[[int], None] | None = None) -> Result | None:
        if own_group:
            self.own_group.append(tuple(argv))
        if self.dry_run:  # as Runner: announced with its input, not run, None
            self.calls.append(Call("would change", tuple(argv), timeout, input))
            return None
        return self._run("change", argv, timeout, ok_codes, input)

    def change_all(self, argvs: Sequence[Sequence[str]], *,
                   timeout: float | None = None) -> list[Result | CommandFailed | None]:
        outcomes: list[Result | CommandFailed | None] = []
        for argv in argvs:
            try:
                outcomes.append(self.change(argv, timeout=timeout))
            except CommandFailed as exc:
                outcomes.append(exc)
        return outcomes

    # --- what the test looks at ----------------------------------------------------------

    @property
    def argvs(self) -> list[list[str]]:
        """Every argv run (or, in a dry run, announced), in order."""
        return [list(call.argv) for call in self.calls]

    def argvs_of(self, *prefix: str) -> list[list[str]]:
        return [list(c.argv) for c in self.calls if c.argv[:len(prefix)] == prefix]

    def inputs_of(self, *prefix: str) -> list[str | None]:
        """What each argv that starts with prefix got on its standard input (None: nothing)."""
        return [c.input for c in self.calls if c.argv[:len(prefix)] == prefix]

    @property
    def changes(self) -> list[list[str]]:
        """The argvs that changed (or in a dry run, would have changed) something."""
        return [list(c.argv) for c in self.calls if c.kind != "query"]

    # --- inside --------------------------------------------------------------------------

    def _reply(self, argv: tuple[str, ...]) -> Reply:
        matching = [(p, a) for p, a in self._scripts if argv[:len(p)] == p]
        if not matching:
            raise AssertionError(f"the test did not script an answer for {list(argv)}")
        _, answers = max(matching, key=lambda item: len(item[0]))
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return answer(argv) if callable(answer) else answer

    def _run(self, kind: str, argv: Sequence[str], timeout: float | None,
             ok_codes: Sequence[int], input: str | None = None) -> Result | None:
        argv = tuple(argv)
        self.count += 1
        self.calls.append(Call(kind, argv, timeout, input))
        reply = self._reply(argv)
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, Timeout):
            limit = timeout if timeout is not None else self.timeout
            raise CommandFailed(argv, None, reply.stderr, timed_out=True, timeout=limit)
        if reply is None:
            return None
        answer = reply if isinstance(reply, Answer) else Answer(stdout=str(reply))
        if answer.returncode not in ok_codes:
            raise CommandFailed(argv, answer.returncode, answer.stderr)
        return Result(argv, answer.returncode, answer.stdout, answer.stderr, 0.01)
