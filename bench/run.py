"""`make bench`: what xenlvm's sesam hooks cost, on real LVM in the sandbox, against plain shell.

xenlvm replaces the vendor manual's two shell lines (bench/baseline_pre.sh, baseline_post.sh)
with a Python program that checks, tags, locks, logs and pauses the Xen domains. This measures
what that care costs, so that changes to xenlvm can be judged by numbers, not by feel:

1. sbc_pre and sbc_post (called as sesam calls them: the executable, the task's arguments, an
   empty environment) against the manual's shell, in the same world (no xen section).
2. the pause window xenlvm logs (`pause window: N ms`, first `xl pause` to last `xl unpause`)
   against a bare `lvcreate -s` of the same volume: the least any pause could last.
3. how sbc_pre, sbc_post and the pause window grow with 1, 2, 4 and 8 volumes: one job with a
   'volumes:' list and one domain on each volume, all created in one pause window.
4. the hooks' CPU time and peak memory (/usr/bin/time, and getrusage inside the hook's own
   process to separate it from its LVM commands), Python's import cost (-X importtime), and a
   hook call that matches no job: the floor that start-up alone costs.
6. each VM's own pause window against its own lvcreate (xen.window; bench/windows.py).
Then expose: image without copying (bench/images.py), and increments from thin-pool metadata
against full images: their size, thin_delta's time, a chain's restore (bench/increments.py).

First, before the guest boots, bench/hostcost.py measures xenlvm's own cost on the host itself,
every command it runs a stub (its section ends results.md; `make bench-host` runs it alone).

Everything runs in ONE boot of the User-Mode Linux guest (sandbox/machine.py). Every
duration is measured inside the guest by its agent around the process (fork to exit), never as
the host's round trip. The two sides of each comparison are interleaved (A B A B ...) so that
drift hits both alike, after one warm-up round that is not counted. Results are medians with
min-max; nothing here passes or fails. The emulated kernel makes every system call slow, so
absolute numbers are far above a real Xen dom0's: the ratios and the breakdown are the point.

Run: make bench   (or .venv/bin/python -m bench.run --help). Writes bench/results.md.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import xenlvm
from bench import hostcost
from bench.common import (
    XEN_PATH,
    Bench,
    BenchError,
    Row,
    Section,
    hook,
    logged_runs,
    markdown_table,
    progress,
    timed,
)
from bench.images import image_exposure
from bench.increments import increments
from bench.windows import per_domain_windows
from sandbox.machine import REPO, Completed, Guest, SandboxError
from sandbox.world import HOOKS, SESAM_ARGS, XL, World

BENCH = Path(__file__).resolve().parent
NO_JOB_ARGS = ["other_task", "/mnt/other", "FULL", "20261129-213000", "backup-host"]
VOLUME_COUNTS = (1, 2, 4, 8)

PLAIN_CONFIG = """\
jobs:
  xenvm:
    volume: system/xenvm
    snapshot: vmbackup
    size: 64M
    mountpoint: /mnt/vmbackup
    tasks: [xen_vm1]
"""

XEN_CONFIG = f"""\
settings:
  path: {XEN_PATH}
jobs:
  xenvm:
    volume: system/xenvm
    snapshot: vmbackup
    size: 64M
    mountpoint: /mnt/vmbackup
    tasks: [xen_vm1]
    xen:
      domains: [vm1]
      mode: pause
"""

# Runs a hook inside this Python process, then reports the CPU time and peak memory of the
# process itself apart from those of the commands it ran (its children), on its last line.
OWN_USAGE = """\
import atexit, resource, runpy, sys
def report():
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    sys.stderr.write(f"\\nusage {own.ru_utime + own.ru_stime} {own.ru_maxrss} "
                     f"{kids.ru_utime + kids.ru_stime} {kids.ru_maxrss}\\n")
atexit.register(report)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)")


def baseline(guest: Guest, name: str) -> float:
    return timed(guest, ["/bin/sh", BENCH / f"baseline_{name}.sh"], env={})


def last_line(done: Completed, prefix: str = "") -> list[str]:
    """The words of the last line of stderr that starts with prefix (where /usr/bin/time and
    OWN_USAGE report)."""
    lines = [line for line in done.stderr.splitlines() if line.startswith(prefix) and line.strip()]
    if done.rc != 0 or not lines:
        raise BenchError(f"a measured command failed:\n{done}")
    return lines[-1].split()


def usage_of(guest: Guest, argv: list, env: dict | None = None) -> dict[str, float]:
    """Run argv under /usr/bin/time in the guest: wall and CPU in ms, peak memory in MiB (for a
    hook: the largest of itself and the commands it ran)."""
    done = guest.run(["/usr/bin/time", "-f", "%e %U %S %M", *argv], env={} if env is None else env)
    wall, user, system, rss_kib = map(float, last_line(done))
    return {"wall": wall * 1000, "cpu": (user + system) * 1000, "rss": rss_kib / 1024}


def own_usage_of(guest: Guest, hook_name: str) -> dict[str, float]:
    """CPU (ms) and peak memory (MiB) of the hook's own process, and of its child commands."""
    done = guest.run([guest.python, "-c", OWN_USAGE, f"{HOOKS}/{hook_name}", *SESAM_ARGS], env={})
    own_cpu, own_rss, kids_cpu, kids_rss = map(float, last_line(done, "usage ")[1:])
    return {"cpu": own_cpu * 1000, "rss": own_rss / 1024, "kids_cpu": kids_cpu * 1000,
            "kids_rss": kids_rss / 1024}


# ---------------------------------------------------------------------------------------------
# The measurements


@dataclass
class Measurements(Bench):
    """Sections 1 to 5 (section 6 and the rest are in modules of their own)."""

    pre_row: Row | None = None  # sbc_pre without xen (section 1), the baseline of pre with xen
    import_profile: str = ""


    def against_the_manual(self) -> Section:
        """1. sbc_pre/sbc_post against the manual's shell, no xen section, interleaved."""
        self.world.write_config(PLAIN_CONFIG)
        pre, post, sh_pre, sh_post = [], [], [], []
        for _ in self.measured_rounds("1. hooks against the manual's shell", self.rounds):
            pre.append(hook(self.guest, "sbc_pre"))
            post.append(hook(self.guest, "sbc_post"))
            sh_pre.append(baseline(self.guest, "pre"))
            sh_post.append(baseline(self.guest, "post"))
        pre, post, sh_pre, sh_post = pre[1:], post[1:], sh_pre[1:], sh_post[1:]  # drop the warm-up
        runs = logged_runs(self.guest, ["pre", "post"] * self.rounds)
        pre_runs, post_runs = runs[0::2], runs[1::2]
        self.remember("sbc_pre", pre_runs)
        self.remember("sbc_post", post_runs)
        base_pre = Row("baseline_pre.sh", sh_pre)
        base_post = Row("baseline_post.sh", sh_post)
        base_both = Row("baseline pre + post", [a + b for a, b in zip(sh_pre, sh_post)])
        self.pre_row = Row("sbc_pre", pre, baseline=base_pre)
        section = Section("1. sbc_pre and sbc_post against the manual's shell (no xen section)", [
            base_pre, self.pre_row,
            Row("sbc_pre: time in its external commands", [r.command_ms for r in pre_runs],
                baseline=base_pre),
            Row("sbc_pre: time outside them (Python)", [t - r.command_ms for t, r in zip(pre, pre_runs)]),
            base_post, Row("sbc_post", post, baseline=base_post),
            Row("sbc_post: time in its external commands", [r.command_ms for r in post_runs],
                baseline=base_post),
            Row("sbc_post: time outside them (Python)", [t - r.command_ms for t, r in zip(post, post_runs)]),
            base_both, Row("sbc_pre + sbc_post", [a + b for a, b in zip(pre, post)], baseline=base_both),
        ])
        section.notes.append("'time in its external commands' adds up the durations xenlvm logs for "
                             "each command it runs ('exit 0 after N s'); the rest is the Python "
                             "process: interpreter start-up, imports, configuration, logging, checks.")
        return section

    def cpu_and_memory(self) -> Section:
        """4. CPU and peak memory; import cost; the floor of a run that matches no job."""
        self.world.write_config(PLAIN_CONFIG)
        python = self.guest.python
        samples: dict[str, list[dict[str, float]]] = {}
        for number_ in self.measured_rounds("4. CPU and memory", self.cpu_rounds):
            measured = {
                "start": usage_of(self.guest, [python, "-c", "pass"]),
                "import": usage_of(self.guest, [python, "-c", "import xenlvm.cli"]),
                "noop": usage_of(self.guest, [f"{HOOKS}/sbc_pre", *NO_JOB_ARGS]),
                "pre": usage_of(self.guest, [f"{HOOKS}/sbc_pre", *SESAM_ARGS]),
                "post": usage_of(self.guest, [f"{HOOKS}/sbc_post", *SESAM_ARGS]),
                "own pre": own_usage_of(self.guest, "sbc_pre"),
                "own post": own_usage_of(self.guest, "sbc_post"),
                "true": {"wall": timed(self.guest, ["/bin/true"])},
                "xl python": {"wall": timed(self.guest, [self.guest.python, "-S", "-c", "pass"])},
                "xl list": {"wall": timed(self.guest, [XL, "list"])},
                "lvs": {"wall": timed(self.guest, ["lvs", "system"])},
            }
            if number_ > 0:
                for key, value in measured.items():
                    samples.setdefault(key, []).append(value)

        def row(key: str, metric: str, label: str, unit: str = "ms", base: Row | None = None) -> Row:
            return Row(label, [s[metric] for s in samples[key]], unit, base)

        start_wall = row("start", "wall", "python -c pass: wall")
        start_cpu = row("start", "cpu", "python -c pass: CPU")
        start_rss = row("start", "rss", "python -c pass: peak RSS", "MiB")
        noop_cpu = row("noop", "cpu", "sbc_pre, no job matches: CPU", base=start_cpu)
        noop_rss = row("noop", "rss", "sbc_pre, no job matches: peak RSS", "MiB", start_rss)
        true = row("true", "wall", "/bin/true (spawning a process at all)")
        system_python = row("xl python", "wall", "python -S -c pass (the stand-in xl's interpreter "
                            "start)")
        section = Section("4. CPU time and peak memory; the pure-Python floor", [
            start_wall, start_cpu, start_rss,
            row("import", "wall", "python -c 'import xenlvm.cli': wall", base=start_wall),
            row("import", "cpu", "python -c 'import xenlvm.cli': CPU", base=start_cpu),
            row("import", "rss", "python -c 'import xenlvm.cli': peak RSS", "MiB", start_rss),
            row("noop", "wall", "sbc_pre, no job matches: wall", base=start_wall), noop_cpu, noop_rss,
            row("pre", "wall", "sbc_pre: wall"),
            row("pre", "cpu", "sbc_pre: CPU, with its commands", base=noop_cpu),
            row("pre", "rss", "sbc_pre: peak RSS, with its commands", "MiB", noop_rss),
            row("own pre", "cpu", "sbc_pre: CPU of its own process", base=noop_cpu),
            row("own pre", "kids_cpu", "sbc_pre: CPU of its commands"),
            row("own pre", "rss", "sbc_pre: peak RSS of its own process", "MiB", noop_rss),
            row("own pre", "kids_rss", "sbc_pre: peak RSS of its largest command", "MiB"),
            row("post", "wall", "sbc_post: wall"),
            row("post", "cpu", "sbc_post: CPU, with its commands", base=noop_cpu),
            row("post", "rss", "sbc_post: peak RSS, with its commands", "MiB", noop_rss),
            row("own post", "cpu", "sbc_post: CPU of its own process", base=noop_cpu),
            row("own post", "kids_cpu", "sbc_post: CPU of its commands"),
            row("own post", "rss", "sbc_post: peak RSS of its own process", "MiB", noop_rss),
            row("own post", "kids_rss", "sbc_post: peak RSS of its largest command", "MiB"),
            true, system_python,
            row("xl list", "wall", "xl list (stand-in), run directly", base=system_python),
            row("lvs", "wall", "lvs system, run directly", base=true),
        ])
        section.notes += [
            "Wall, CPU (user + system) and peak RSS come from `/usr/bin/time -f '%e %U %S %M'` in the "
            "guest; for a hook, CPU includes the LVM commands it waits for and peak RSS is the largest "
            "of the hook and those commands. 'Own process' and 'its commands' come from "
            "getrusage(RUSAGE_SELF) and getrusage(RUSAGE_CHILDREN) in the hook's own process (the "
            "hook run in-process by a short runpy wrapper, OWN_USAGE in bench/run.py).",
            "User-Mode Linux runs the guest's processes under ptrace and charges nearly all their time "
            "as user time, so CPU here is close to wall time and says little about user versus system.",
        ]
        self.import_profile = import_profile(self.guest)
        return section

    def pause_window(self) -> Section:
        """2. The pause window against a bare lvcreate, interleaved."""
        self.world.write_config(XEN_CONFIG)
        self.guest.run([XL, "fake-create", "vm1", "--disk", "/srv/xenvm/vm1/disk.img,xvda"], check=True)
        pre, post, bare, bare_remove = [], [], [], []
        for _ in self.measured_rounds("2. pause window against a bare lvcreate", self.rounds):
            pre.append(hook(self.guest, "sbc_pre"))
            post.append(hook(self.guest, "sbc_post"))
            bare.append(timed(self.guest, ["lvcreate", "-L64M", "-s", "-n", "vmbackup", "system/xenvm"]))
            bare_remove.append(timed(self.guest, ["lvremove", "-f", "system/vmbackup"]))
        pre, post, bare, bare_remove = pre[1:], post[1:], bare[1:], bare_remove[1:]
        runs = logged_runs(self.guest, ["pre", "post"] * self.rounds)
        pre_runs = runs[0::2]
        if any(len(r.windows) != 1 for r in pre_runs):
            raise BenchError("every sbc_pre with mode: pause should log exactly one pause window")
        self.remember("sbc_pre with xen pause", pre_runs)
        self.remember("sbc_post with the xen section", runs[1::2])
        bare_row = Row("bare lvcreate -L64M -s", bare)
        in_window = [ms for r in pre_runs for name, ms in r.commands if name == "lvcreate"]
        section = Section("2. The pause window against a bare lvcreate (xen: domains [vm1], mode: pause)", [
            bare_row,
            Row("pause window (xenlvm's log)", [r.windows[0] for r in pre_runs], baseline=bare_row),
            Row("lvcreate inside the window (xenlvm's log)", in_window, baseline=bare_row),
            Row("from xl pause returning to xl unpause starting (xenlvm's log)",
                [ms for r in pre_runs for ms in r.between], baseline=bare_row),
            Row("bare lvremove -f", bare_remove),
            Row("sbc_pre with xen pause", pre, baseline=self.pre_row),
            Row("sbc_post with the xen section", post),
        ])
        section.notes.append("The window runs from the first `xl pause` to the last `xl unpause` "
                             "(xenlvm/xen/domains.py) and so includes both xl processes; the stand-in xl "
                             "is a Python script whose interpreter start-up alone takes hundreds of ms in "
                             "the emulated kernel, where Xen's xl is a C program. 'from xl pause returning "
                             "to xl unpause starting' is the part xenlvm itself decides (the issue's "
                             "target: at most 1.1x the bare lvcreate + 20 ms). Its lvcreate carries "
                             "three --addtag options. The "
                             "baseline of 'sbc_pre with xen pause' is sbc_pre without a xen section, "
                             "from section 1.")
        return section

    def growth(self) -> Section:
        """3. One job with N volumes and N domains: one pause window around N lvcreates."""
        progress("3. growth with volumes: creating 8 volumes of 32M and their domains")
        self.guest.sh(
            'for k in 1 2 3 4 5 6 7 8; do\n'
            '  lvcreate -q -y -L 32M -n "vol$k" system >/dev/null\n'
            '  mkfs.ext4 -q "/dev/system/vol$k"\n'
            '  mkdir -p "/srv/vol$k" /mnt/backup\n'
            '  mount "/dev/system/vol$k" "/srv/vol$k"\n'
            '  head -c 1048576 /dev/urandom > "/srv/vol$k/disk.img"\n'
            f'  {XL} fake-create "dom$k" --disk "/srv/vol$k/disk.img,xvda" >/dev/null\n'
            'done\n')
        pre: dict[int, list[float]] = {n: [] for n in VOLUME_COUNTS}
        post: dict[int, list[float]] = {n: [] for n in VOLUME_COUNTS}
        order = []  # the volume count of each counted pre/post pair, in the order run
        for number_ in self.measured_rounds("3. growth with volumes", self.scaling_rounds):
            for volumes in VOLUME_COUNTS if number_ > 0 else (1,):
                self.world.write_config(scaling_config(volumes))
                pre_ms, post_ms = hook(self.guest, "sbc_pre"), hook(self.guest, "sbc_post")
                if number_ > 0:
                    pre[volumes].append(pre_ms)
                    post[volumes].append(post_ms)
                    order.append(volumes)
        runs = logged_runs(self.guest, ["pre", "post"] * len(order))
        windows: dict[int, list[list[float]]] = {n: [] for n in VOLUME_COUNTS}
        for volumes, run in zip(order, runs[0::2]):
            if len(run.windows) != 1:
                raise BenchError(f"sbc_pre with {volumes} volumes logged {len(run.windows)} pause windows")
            windows[volumes].append(run.windows)
        # The last pair of runs had the most volumes: its commands are the ones listed.
        self.remember(f"sbc_pre, {VOLUME_COUNTS[-1]} volumes", runs[0::2])
        self.remember(f"sbc_post, {VOLUME_COUNTS[-1]} volumes", runs[1::2])
        section = Section("3. Growth with the number of volumes (one job, a 'volumes:' list of N, "
                          "N domains paused together)")
        first: dict[str, Row] = {}
        for volumes in VOLUME_COUNTS:
            rows = {
                "pre": Row(f"sbc_pre, {volumes} volume(s)", pre[volumes]),
                "post": Row(f"sbc_post, {volumes} volume(s)", post[volumes]),
                "window": Row(f"the pause window, {volumes} volume(s)",
                              [ms for run in windows[volumes] for ms in run]),
            }
            for key, row in rows.items():
                row.baseline = first.get(key)  # each kind of row against its 1-volume row
                first.setdefault(key, row)
            section.rows += rows.values()
        section.notes += [
            "One job with a 'volumes:' list: its N snapshots are created in ONE pause window (all N "
            "domains paused at once, N lvcreates one after another, all resumed at once), so all "
            "volumes are captured at one instant. The window grows with N only by the lvcreates.",
            "Each volume is a 32M ext4 LV mounted at /srv/volK with one domain domK on it; the job "
            "snapshots it as volKbackup (32M), mounted at /mnt/backup/volK.",
        ]
        return section

    def command_costs(self) -> Section:
        rows = [Row(name, values) for name, values in sorted(self.commands.items())]
        section = Section("5. What one command costs inside xenlvm (every command it logged above)", rows)
        section.notes.append("The commands each kind of hook run ran, in order:")
        section.notes += [f"{kind}: {describe_sequence(names)}" for kind, names in self.sequences.items()]
        return section


def describe_sequence(names: list[str]) -> str:
    """'lvs, lvcreate, mount (3 commands)'; a long list is summarized by count."""
    if len(names) <= 12:
        return f"{', '.join(names)} ({len(names)} commands)"
    counts = {name: names.count(name) for name in dict.fromkeys(names)}
    return f"{len(names)} commands: " + ", ".join(f"{name} ×{n}" for name, n in counts.items())


def scaling_config(volumes: int) -> str:
    """One job with N volumes (mounted at /mnt/backup/volK) and N domains, one on each volume."""
    items = "".join(f"      - {{volume: system/vol{k}, snapshot: vol{k}backup, size: 32M}}\n"
                    for k in range(1, volumes + 1))
    domains = ", ".join(f"dom{k}" for k in range(1, volumes + 1))
    return (f"settings:\n  path: {XEN_PATH}\njobs:\n  vols:\n    mountpoint: /mnt/backup\n"
            f"    tasks: [xen_vm1]\n    volumes:\n{items}    xen:\n      domains: [{domains}]\n"
            "      mode: pause\n")


def import_profile(guest: Guest, top: int = 15, levels: int = 3) -> str:
    """The largest entries of `python -X importtime -c 'import xenlvm.cli'` (second of two runs),
    at the top levels of nesting, as a markdown table."""
    argv = [guest.python, "-X", "importtime", "-c", "import xenlvm.cli"]
    guest.run(argv, env={})
    entries = []
    for line in guest.run(argv, env={}).stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if match:
            own, cumulative, indent, name = match.groups()
            entries.append((int(cumulative) / 1000, int(own) / 1000, len(indent) // 2, name))
    total = sum(cumulative for cumulative, _, depth, _ in entries if depth == 0)
    lines = [f"All imports at interpreter start and of xenlvm.cli: {total:.0f} ms in all (one run, "
             f"after a warm-up run). The largest, at the top {levels} levels of nesting (a module is "
             "counted under the first module that imported it; level 1 is imported by a level-0 "
             "module, and so on):", "",
             "| module | level | cumulative | self |", "|---|--:|--:|--:|"]
    shallow = sorted((e for e in entries if e[2] < levels), reverse=True)[:top]
    lines += [f"| {name} | {depth} | {cumulative:.0f} ms | {own:.0f} ms |"
              for cumulative, own, depth, name in shallow]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The machine, the report


def machine(guest: Guest) -> list[str]:
    model = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    guest_kernel = guest.run(["uname", "-r"]).stdout.strip()
    guest_cpus = guest.run(["nproc"]).stdout.strip()
    lvm = guest.run(["lvm", "version"]).stdout.splitlines()
    return [f"host: Linux {platform.release()}, {os.cpu_count()} CPUs, {model}",
            f"guest: User-Mode Linux {guest_kernel}, {guest_cpus} CPU, {guest.memory} memory, "
            f"{lvm[0].strip() if lvm else 'LVM version unknown'}",
            f"Python {platform.python_version()} ({guest.python}); the stand-in xl runs it with -S"]


def code_measured(before: str, after: str) -> str:
    """Which code was measured: a fingerprint of it, taken before and after the run."""
    line = (f"xenlvm {xenlvm.__version__}, source fingerprint {before} (sha256 of xenlvm/**/*.py, "
            "sbc_pre and sbc_post)")
    if after != before:
        line += (f"; WARNING: the source changed during the run (now {after}), so some rounds may "
                 "have measured different code")
    return line


def source_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted(REPO.glob("xenlvm/**/*.py")) + [REPO / "sbc_pre", REPO / "sbc_post"]:
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def report(sections: list[Section], about: list[str], imports: str, took: float, argv: list[str]) -> str:
    command = ("`make bench` (that is, `.venv/bin/python -m bench.run`)" if not argv
               else f"`.venv/bin/python -m bench.run {' '.join(argv)}`")
    parts = [
        "# xenlvm benchmark: the sesam hooks on real LVM in the sandbox", "",
        f"Generated by {command} on {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; "
        f"the whole run took {took / 60:.1f} min. Reproduce with {command} on a Debian machine, as root.",
        "", *[f"- {line}" for line in about], "",
        "What is measured and how: see the docstring of bench/run.py. In short: one boot of the "
        "sandbox; each duration measured inside the guest around the process; the two sides of a "
        "comparison interleaved, after one warm-up round; median and min–max of the rounds; ratio "
        "and difference of the medians against the row named as baseline. The emulated kernel makes "
        "every process start and system call slow: absolute numbers are far above a real dom0's.",
    ]
    for section in sections:
        parts += ["", f"## {section.title}", "", markdown_table(section.rows)]
        if section.notes:
            parts += [""] + [f"- {note}" if not note.endswith(":") else note for note in section.notes]
    parts += ["", "## Import time of `xenlvm.cli`", "", imports, ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds of sections 1 and 2 [15]")
    parser.add_argument("--cpu-rounds", type=int, default=5, help="rounds of section 4 [5]")
    parser.add_argument("--scaling-rounds", type=int, default=3, help="rounds of section 3 [3]")
    parser.add_argument("--host-rounds", type=int, default=21, help="rounds of bench/hostcost.py [21]")
    parser.add_argument("--host-baseline", type=Path, help="another checkout of xenlvm for bench/hostcost.py "
                        "to measure in the same rounds (before and after)")
    parser.add_argument("--output", type=Path, default=BENCH / "results.md", help="[bench/results.md]")
    args = parser.parse_args(argv)
    started = time.monotonic()
    fingerprint = source_fingerprint()
    progress("xenlvm's own cost on the host, every command stubbed (bench/hostcost.py)")
    host_cost = hostcost.report_section(hostcost.measure(  # before the guest loads the host
        args.host_rounds, baseline=args.host_baseline and args.host_baseline.resolve()))
    guest = Guest("bench")
    progress("booting the sandbox")
    try:
        guest.boot()
    except SandboxError as exc:
        print(f"make bench: {exc}", file=sys.stderr)
        return 1
    try:
        world = World(guest)
        world.build(config=None)
        bench = Measurements(guest, world, args.rounds, args.cpu_rounds, args.scaling_rounds)
        about = machine(guest)
        # Section 4 runs second, in the plain world; section 3 last, as it adds volumes.
        manual = bench.against_the_manual()
        cpu = bench.cpu_and_memory()
        window = bench.pause_window()
        growth = bench.growth()
        per_domain = per_domain_windows(bench)  # section 6
        images = image_exposure(guest, world)  # expose: image without copying (issue 16)
        chain = increments(guest, world)  # thin_delta and increment files (issue 27)
        sections = [manual, window, growth, cpu, bench.command_costs(), per_domain, images, chain]
    finally:
        guest.halt()
    about.append(code_measured(fingerprint, source_fingerprint()))
    about.append(f"host load: {bench.rounds_beside_others} of {bench.rounds_run} rounds began while "
                 "another sandbox ran on this host" + (
                     " (competing for its CPUs: that slows both sides of a comparison alike, "
                     "but widens the spread and raises absolute times)"
                     if bench.rounds_beside_others else ""))
    text = report(sections, about, bench.import_profile, time.monotonic() - started,
                  sys.argv[1:] if argv is None else argv) + "\n" + host_cost
    args.output.write_text(text, encoding="utf-8")
    print(text)
    progress(f"written to {args.output} after {(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
