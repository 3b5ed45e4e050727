"""xenlvm's own cost on the host: sbc_pre and sbc_post with every command stubbed.

What is measured, wall time from fork to exit of the hook's process, N rounds interleaved
(one round runs each row once, in the table's order), after one warm-up round:

- the interpreter's start-up alone: `python -c pass` and `python -I -S -c pass` (the floor);
- the hook's start as far as its imports, without running it: the standard library modules and
  PyYAML it needs (dataclasses, logging, yaml), the hook entry, the entry with pre's modules;
- a hook call for a task that matches no job (what every other backup of the client pays);
- sbc_pre and sbc_post of a matching job that snapshots one volume (`volume:`), and of a job
  with `vmdisks:` and `xen:` (domain vm1's two disk LVs, one ext4 and one swap, in one pause
  window; xl pause/unpause included).

The hooks run as installed hooks run them: the same interpreter and the interpreter flags that
`xenlvm install-hooks` writes on the hook's first line, the entry `run_hook(phase)`, a
nearly empty environment, and the configuration in a temporary directory (log file, lock and
state directories there too). Every command they run is a stub from bench/stubhost.py that
answers from recorded output in well under a millisecond; nothing on the host changes, and no
syslog socket is written unless the host has /dev/log. The matching calls go through
stubhost.seam(), which reads the mount table and device numbers from the stand-in host instead
of /proc/self/mountinfo and the device nodes: no real mount is made, and production code has no
switch to do this (see stubhost's docstring). What remains is xenlvm's own cost: interpreter,
imports, configuration, logging, its checks and bookkeeping, and starting the stub processes.

Run alone: .venv/bin/python -m bench.hostcost [--rounds N] [--source DIR] [--output FILE]
(--source: the xenlvm checkout to measure, e.g. another worktree for a before/after). Also run
by `make bench` (bench/run.py), into bench/results.md. Nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.stubhost import StubHost, environment, seam

REPO = Path(__file__).resolve().parent.parent
OTHER_TASK = ["other_task", "/mnt/other", "FULL", "20261129-213000", "backup-host"]
TASKS = {"xenvm": "xen_vm1", "vmdisks": "xen_vmdisks"}
# The libraries whose whole import cost the report names (each with what it imports itself).
LIBRARIES = ("dataclasses", "logging", "yaml", "json", "subprocess", "xenlvm.config.model",
             "xenlvm.hook_entry", "xenlvm.phases.pre", "xenlvm.phases.post")
# What the hook's own imports cost, as the hook starts (its flags and paths), without running it.
IMPORT_ROWS = {"hook start: stdlib and PyYAML it needs": "import dataclasses, logging, yaml",
               "hook start: xenlvm.hook_entry": "import xenlvm.hook_entry",
               "hook start: xenlvm.hook_entry + pre": "import xenlvm.hook_entry, xenlvm.phases.pre, "
                                                      "xenlvm.core.context, xenlvm.core.state"}
ROWS = ["python -c pass", "python -I -S -c pass", *IMPORT_ROWS, "sbc_pre, no matching job",
        "sbc_pre, volume job", "sbc_post, volume job", "sbc_pre, vmdisks + xen job",
        "sbc_post, vmdisks + xen job"]


def installed_hook(python: str, source: Path) -> str:
    """The text of the sbc_pre that source's install-hooks writes for python, run as `python -c`
    (sys.argv[1:] are then the hook's arguments, as when sesam runs the file)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "try:\n    from xenlvm.admin.install import hook_text\n"
            "except ImportError:\n    from xenlvm.install import hook_text\n"  # before the layout by layer
            "print(hook_text('pre', 'PYTHON', None), end='')")
    text = subprocess.run([python, "-c", code, str(source)], capture_output=True, text=True,
                          check=True).stdout
    if str(source) not in text:  # an installation's own xenlvm: here, source's, put first
        text = text.replace("\n", f"\nimport sys; sys.path.insert(0, {str(source)!r})\n", 1)
    return text


class HostCost:
    def __init__(self, python: str, source: Path, root: Path) -> None:
        self.python, self.source = python, source
        self.hook = installed_hook(python, source)
        flags = self.hook.splitlines()[0].removeprefix("#!PYTHON").strip()
        self.flags = [flags] if flags else []  # as the kernel passes them: one argument
        self.host = StubHost(root)
        self.config = root / "config.yaml"
        self.config.write_text(self.host.config_text())
        self.config.chmod(0o600)
        self.env = environment(self.config)
        self.calls: dict[str, int] = {}
        self.seen: dict[str, str] = {}  # per row: its output and commands, normalized

    def argv(self, row: str) -> list[str]:
        if row == "python -c pass":
            return [self.python, "-c", "pass"]
        if row == "python -I -S -c pass":
            return [self.python, "-I", "-S", "-c", "pass"]
        if row in IMPORT_ROWS:  # the hook's lines up to its import of the entry, then these imports
            entry = self.hook.find("try:")
            entry = entry if entry >= 0 else self.hook.index("from xenlvm.hook_entry")
            return [self.python, *self.flags, "-c", self.hook[:entry] + IMPORT_ROWS[row]]
        hook = self.hook if row.startswith("sbc_pre") else self.hook.replace('run_hook("pre"',
                                                                              'run_hook("post"')
        if "no matching" in row:
            return [self.python, *self.flags, "-c", hook, *OTHER_TASK]
        job = "vmdisks" if "vmdisks" in row else "xenvm"
        return [self.python, *self.flags, "-c", seam(hook, self.host.root), TASKS[job], "/mnt/x", "FULL",
                "20261129-213000", "backup-host"]

    def run(self, row: str) -> tuple[float, float]:
        """Run row once; its wall time and the CPU time (user + system) of its process and the
        stubs it ran, in ms. A failing hook stops the bench: its output says why."""
        if row.startswith("sbc_pre, v"):
            self.host.reset("vmdisks" if "vmdisks" in row else "xenvm")
        self.host.clear_calls()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(self.argv(row), env=self.env, capture_output=True, text=True)
        elapsed = (time.perf_counter() - started) * 1000
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000
        if done.returncode != 0 or "not stubbed" in done.stderr:
            raise SystemExit(f"hostcost: {row} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
        self.calls[row] = len(self.host.calls())
        self.seen[row] = self._normalized(f"{done.stdout}{done.stderr}" + "\n".join(self.host.calls()))
        return elapsed, cpu

    def _normalized(self, text: str) -> str:
        """text without what differs from run to run: paths, pids, times, durations, run tags."""
        text = text.replace(str(self.host.root), "ROOT")
        for pattern, stands_for in ((r"xenlvm_run_\w+", "RUN"), (r"\d+(\.\d+)? m?s\b", "N s")):
            text = re.sub(pattern, stands_for, text)
        return text

    def importtime(self, row: str, runs: int = 5) -> list[tuple[float, float, str]]:
        """(own us, cumulative us, module) of each import of row, from python -X importtime: the
        median of runs calls, since one call's figures scatter with the host's load."""
        samples: dict[str, list[tuple[int, int]]] = {}
        for _ in range(runs):
            if row.startswith("sbc_pre, v"):
                self.host.reset("vmdisks" if "vmdisks" in row else "xenvm")
            argv = self.argv(row)
            done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=self.env,
                                  capture_output=True, text=True)
            for own, total, name in re.findall(r"import time:\s+(\d+) \|\s+(\d+) \| (.*)", done.stderr):
                samples.setdefault(name.strip(), []).append((int(own), int(total)))
        return [(statistics.median(o for o, _ in values), statistics.median(c for _, c in values), name)
                for name, values in samples.items()]


def measure(rounds: int, python: str = sys.executable, source: Path = REPO,
            baseline: Path | None = None) -> dict:
    """Everything the report shows, measured now; see the module's docstring. With baseline (another
    checkout, e.g. main's), its hooks run too, interleaved with source's in every round."""
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="xenlvm-hostcost-") as root:
        benches = {"now": HostCost(python, source, Path(root) / "now")}
        if baseline is not None:
            benches["baseline"] = HostCost(python, baseline, Path(root) / "baseline")
        plan = [(name, row) for row in ROWS for name in benches
                if name == "now" or row.startswith("sbc")]
        for name, row in plan:  # warm-up: page cache and .pyc files
            benches[name].run(row)
        differing = [row for row in ROWS if baseline is not None and row.startswith("sbc")
                     and benches["now"].seen[row] != benches["baseline"].seen[row]]
        times: dict[tuple[str, str], list[tuple[float, float]]] = {key: [] for key in plan}
        for _ in range(rounds):
            for name, row in plan:
                times[name, row].append(benches[name].run(row))
        now = benches["now"]
        imports = {row: now.importtime(row) for row in ("sbc_pre, no matching job", "sbc_pre, volume job",
                                                        "sbc_post, volume job")}
        return {"times": times, "calls": now.calls, "imports": imports, "flags": now.flags,
                "python": python, "source": str(source), "baseline": baseline and str(baseline),
                "baseline_flags": benches["baseline"].flags if baseline else None, "load": load,
                "differing": differing}


def _median(values: list[tuple[float, float]], which: int) -> float:
    return statistics.median(v[which] for v in values)


def report_section(result: dict) -> str:
    """The measured figures as a markdown section."""
    times = result["times"]
    floor = _median(times["now", "python -c pass"], 0)
    lines = ["## xenlvm's own cost on the host (bench/hostcost.py: every command stubbed)", "",
             f"Python: `{result['python']}`; xenlvm from `{result['source']}`, its hooks run with flags "
             f"`{' '.join(result['flags']) or '(none)'}`; load average before the run "
             f"{' '.join(f'{x:.2f}' for x in result['load'])} on {os.cpu_count()} CPUs."]
    if result["baseline"]:
        differing = ", ".join(result["differing"])
        lines += ["", f"Before: xenlvm from `{result['baseline']}` (hook flags "
                  f"`{' '.join(result['baseline_flags']) or '(none)'}`), run in the same rounds, "
                  "interleaved with the above. Output, exit status and commands (times, pids and "
                  "paths aside): " + (f"DIFFERENT from before in {differing}." if differing
                                      else "the same as before in every row.")]
    lines += ["", "| measurement | wall, median | min–max | n | × `python -c pass` | CPU, median "
              "| before: wall | before: CPU | stub commands run |",
              "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for row in ROWS:
        values = times["now", row]
        walls = [wall for wall, _ in values]
        before = times.get(("baseline", row))
        was = f"{_median(before, 0):.0f} ms | {_median(before, 1):.0f} ms" if before else " | "
        calls = result["calls"].get(row, "") if row.startswith("sbc") else ""
        lines.append(f"| {row} | {statistics.median(walls):.0f} ms | {min(walls):.0f}–{max(walls):.0f} "
                     f"| {len(walls)} | {statistics.median(walls) / floor:.2f}× "
                     f"| {_median(values, 1):.0f} ms | {was} | {calls} |")
    lines += ["", "CPU: user and system time of the hook's process and of the stubs it ran "
              "(getrusage of the children): less disturbed than wall time by other work on the host."]
    if not os.path.exists("/dev/log"):
        lines += ["", "This host has no /dev/log: the hooks write no syslog here, and do not import "
                  "logging.handlers (with socket and pickle), which a dom0 with a syslog pays for."]
    lines += ["", "Every call runs the text of the hook install-hooks writes (`python FLAGS -c TEXT`); "
              "matching calls with bench/stubhost.py's seam() in it (the mount table and device "
              "numbers of a stand-in host; no real mount). In the vmdisks job, the layout files "
              "miss the disk size (the snapshot's device node does not exist: one logged error "
              "each)."]
    for row, entries in result["imports"].items():
        total = sum(own for own, _, _ in entries)
        lines += ["", f"Imports of {row} (`-X importtime`, median of 5 calls): {len(entries)} modules, "
                  f"{total / 1000:.1f} ms in all. With their own imports: "
                  + ", ".join(f"{name} {cumulative / 1000:.1f} ms" for _, cumulative, name in entries
                              if name in LIBRARIES) + ". The most expensive by own time:",
                  "", "| module | own | with its imports |", "|---|--:|--:|"]
        for own, cumulative, name in sorted(entries, reverse=True)[:12]:
            lines.append(f"| {name.strip()} | {own / 1000:.1f} ms | {cumulative / 1000:.1f} ms |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    return (f"{platform.node()}: Linux {platform.release()}, {os.cpu_count()} CPUs, {model}; "
            f"Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostcost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21, help="measured rounds [21]")
    parser.add_argument("--source", type=Path, default=REPO, help="the xenlvm checkout to measure [this one]")
    parser.add_argument("--baseline", type=Path, help="another checkout to measure in the same rounds "
                        "(the before of a change), e.g. a worktree of main")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results-host.md",
                        help="[bench/results-host.md]")
    args = parser.parse_args(argv)
    result = measure(args.rounds, source=args.source.resolve(),
                     baseline=args.baseline and args.baseline.resolve())
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(["python -m bench.hostcost", *(sys.argv[1:] if argv is None else argv)])
    text = (f"# xenlvm's own cost on the host\n\nGenerated by `{command}` on {stamp}.\n\n"
            f"- {machine()}\n\n{report_section(result)}")
    args.output.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
