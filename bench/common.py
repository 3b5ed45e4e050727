"""What every part of `make bench` shares: the rows and sections it reports, calling the hooks
as sesam does and reading xenlvm's log, the rounds of a section, and running one section on its
own (python -m bench.<name>). bench/run.py and the sections in their own modules (windows.py,
images.py, increments.py) import this; it imports none of them.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.machine import Guest, SandboxError
from sandbox.world import HOOKS, SESAM_ARGS, World

LOG = "/var/log/xenlvm.log"
XEN_PATH = "/opt/xen/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # the stand-in xl first

LOG_LINE = re.compile(r"^\S+ \S+ xenlvm\[(\d+)\] \w+ (?:job [^ :]+: )?(.*)$")
EXIT_LINE = re.compile(r"^exit -?\d+ after ([\d.]+) s: ")
WINDOW_LINE = re.compile(r"^pause window: (\d+) ms \(domains [^;)]*(?:; (\d+) ms from xl pause returning)?")


class BenchError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# What is reported: rows of samples, grouped in sections


@dataclass
class Row:
    """One measurement: its samples, and optionally the row it is compared with."""

    label: str
    values: list[float]
    unit: str = "ms"
    baseline: Row | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.values)


@dataclass
class Section:
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def number(value: float, unit: str) -> str:
    return f"{value:.1f}" if unit == "MiB" or abs(value) < 10 else f"{value:.0f}"


def markdown_table(rows: list[Row]) -> str:
    lines = ["| measurement | median | min–max | n | baseline | ratio of medians | difference |",
             "|---|--:|--:|--:|---|--:|--:|"]
    for row in rows:
        cells = [row.label, f"{number(row.median, row.unit)} {row.unit}",
                 f"{number(min(row.values), row.unit)}–{number(max(row.values), row.unit)}",
                 str(len(row.values))]
        base = row.baseline
        if base is None:
            cells += ["", "", ""]
        else:
            ratio = f"{row.median / base.median:.2f}×" if base.median else "–"
            difference = row.median - base.median
            sign = "+" if difference >= 0 else "-"
            cells += [base.label, ratio, f"{sign}{number(abs(difference), row.unit)} {row.unit}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Running things in the guest and reading what xenlvm logged


def timed(guest: Guest, argv: list, env: dict | None = None) -> float:
    """Run argv in the guest; return its wall time in ms as the guest measured it."""
    done = guest.run(argv, env=env)
    if done.rc != 0:
        raise BenchError(f"a measured command failed, so its timing means nothing:\n{done}")
    return done.duration * 1000


def hook(guest: Guest, name: str, args: list[str] = SESAM_ARGS) -> float:
    """Call a hook exactly as sesam does: the executable, the task's arguments, no environment."""
    return timed(guest, [f"{HOOKS}/{name}", *args], env={})


@dataclass
class Invocation:
    """One hook run as its lines in xenlvm's log show it."""

    phase: str = ""
    commands: list[tuple[str, float]] = field(default_factory=list)  # (command, ms) in order
    windows: list[float] = field(default_factory=list)  # pause windows, ms
    between: list[float] = field(default_factory=list)  # from xl pause returning to xl unpause starting

    @property
    def command_ms(self) -> float:
        return sum(ms for _, ms in self.commands)


def command_name(argv: list[str]) -> str:
    """'lvcreate', 'mount', or for xl its subcommand: 'xl pause', 'xl list -l'."""
    if argv[0] != "xl":
        return argv[0]
    return " ".join(argv[:3]) if argv[2:3] == ["-l"] else " ".join(argv[:2])


def read_log(guest: Guest) -> list[Invocation]:
    """Every hook run logged since the log was last removed, in order (one pid per run)."""
    runs: dict[str, Invocation] = {}
    pending = ""
    for line in guest.run(["cat", LOG]).stdout.splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        run = runs.setdefault(match.group(1), Invocation())
        message = match.group(2)
        if " called with arguments: " in message:
            run.phase = message.split()[0]
        elif message.startswith("run: "):
            pending = command_name(message[len("run: "):].split())
        elif exited := EXIT_LINE.match(message):
            run.commands.append((pending, float(exited.group(1)) * 1000))
        elif window := WINDOW_LINE.match(message):
            run.windows.append(float(window.group(1)))
            if window.group(2):
                run.between.append(float(window.group(2)))
    return list(runs.values())


def logged_runs(guest: Guest, phases: list[str]) -> list[Invocation]:
    """The logged hook runs, checked against the calls the bench made (pre, post, ...)."""
    runs = read_log(guest)
    if [r.phase for r in runs] != phases:
        raise BenchError(f"expected the log to show the runs {phases}, found {[r.phase for r in runs]}")
    return runs


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_alone(name: str, measure: Callable[[Guest, World], Section]) -> int:
    """One section of the bench on its own (python -m bench.<name>): boot the sandbox, measure,
    halt, print the section. 1 if the sandbox cannot start."""
    started = time.monotonic()
    guest = Guest(f"bench-{name}")
    progress("booting the sandbox")
    try:  # halt() is safe whatever boot() got to
        guest.boot()
        world = World(guest)
        world.build(config=None)
        section = measure(guest, world)
    except SandboxError as exc:
        print(f"bench.{name}: {exc}", file=sys.stderr)
        return 1
    finally:
        guest.halt()
    print(f"## {section.title}\n\n{markdown_table(section.rows)}\n")
    print("\n".join(f"- {note}" for note in section.notes))
    print(f"\n({(time.monotonic() - started) / 60:.1f} min)")
    return 0


def section_main(name: str, doc: str, measure: Callable[[Guest, World, int], Section],
                 argv: list[str] | None, rounds_help: str = "measured rounds [3]") -> int:
    """The command line of a section run on its own: python -m bench.<name> [--rounds N]."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=doc.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help=rounds_help)
    rounds = parser.parse_args(argv).rounds
    return run_alone(name, lambda guest, world: measure(guest, world, rounds))


@dataclass
class Bench:
    """One boot's measuring: its guest and world, the rounds of each kind of section, the commands
    xenlvm logged, and how many rounds ran beside another sandbox."""

    guest: Guest
    world: World
    rounds: int
    cpu_rounds: int
    scaling_rounds: int
    commands: dict[str, list[float]] = field(default_factory=dict)  # every logged command, ms
    sequences: dict[str, list[str]] = field(default_factory=dict)  # what each kind of run ran
    rounds_run: int = 0
    rounds_beside_others: int = 0  # rounds that began while another sandbox ran on this host

    def measured_rounds(self, title: str, count: int):
        """Yield 0, a warm-up round whose samples the caller drops, then 1 to count; xenlvm's log
        starts afresh with round 1, so it holds exactly the counted runs."""
        for number_ in range(count + 1):
            progress(f"{title}: round {number_}/{count}" + (" (warm-up)" if number_ == 0 else ""))
            self.rounds_run += 1
            self.rounds_beside_others += bool(other_sandboxes(self.guest))
            if number_ == 1:
                self.guest.run(["rm", "-f", LOG], check=True)
            yield number_

    def remember(self, kind: str, runs: list[Invocation]) -> None:
        for run in runs:
            for name, ms in run.commands:
                self.commands.setdefault(name, []).append(ms)
        self.sequences[kind] = [name for name, _ in runs[-1].commands]


def other_sandboxes(guest: Guest) -> set[str]:
    """The disk images of other User-Mode Linux guests running on this host now: they compete
    for the same CPUs and make every timing slower and noisier."""
    disks = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv[0].endswith("linux.uml"):
            disks.update(a for a in argv if a.startswith("ubd0=") and a != f"ubd0={guest.disk}")
    return disks
