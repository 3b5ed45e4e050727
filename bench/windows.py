"""`make bench`, section 6: each VM paused only for its own disks (xen.window, issue 16 part 1).

Eight domains vd1..vd8 of the stand-in xl, each with one disk of its own: the LV system/vdiskK
(16M, ext4) as a phy: disk. A vmdisks job backs up the first N of them (N = 1, 4, 8) with
`xen.window: per-domain`, and all eight with `together` for comparison. From xenlvm's log, per
pre: each pause window (`pause window: W ms (domains vdK; B ms from xl pause returning to xl
unpause starting)`) and the lvcreate inside it, which per-domain runs in its window alone (the
K-th window holds the K-th lvcreate of the run). The issue's target: each domain's own window at
most 1.1x its own lvcreate + 20 ms, and not growing with N. As in section 2, the part xenlvm
decides is B; W also holds the stand-in xl's own start-up and exit (a Python program in the
emulated kernel, where Xen's xl is C).

`make bench` runs it after section 3 (bench/run.py); alone, in a boot of its own:
.venv/bin/python -m bench.windows [--rounds N]   (prints the table, writes nothing)
"""

from __future__ import annotations

import argparse
import statistics
import sys

from bench.common import XEN_PATH, Bench, BenchError, Row, Section, hook, logged_runs, progress, run_alone
from sandbox.world import XL

DOMAINS = 8
COUNTS = (1, 4, 8)
MOUNTPOINT = "/mnt/vmdisks"


def job_config(domains: int, window: str) -> str:
    names = ", ".join(f"vd{k}" for k in range(1, domains + 1))
    return (f"settings:\n  path: {XEN_PATH}\njobs:\n  disks:\n    mountpoint: {MOUNTPOINT}\n"
            f"    tasks: [xen_vm1]\n    vmdisks:\n      domains: [{names}]\n      size: 16M\n"
            f"    xen:\n      domains: auto\n      window: {window}\n")


def create_domains(bench: Bench) -> None:
    progress(f"6. windows: creating {DOMAINS} disk LVs of 16M and their domains")
    bench.guest.sh(
        f"mkdir -p {MOUNTPOINT}\n"
        f"for k in $(seq 1 {DOMAINS}); do\n"
        '  lvcreate -q -y -L 16M -n "vdisk$k" system >/dev/null\n'
        '  mkfs.ext4 -q "/dev/system/vdisk$k"\n'
        f'  {XL} fake-create "vd$k" --disk "/dev/system/vdisk$k,xvda" >/dev/null\n'
        "done\n")


def per_domain_windows(bench: Bench) -> Section:
    """6. Each domain's own pause window against its own lvcreate, with 1, 4 and 8 domains
    (per-domain), and the one window of together with 8."""
    create_domains(bench)
    cases = [(n, "per-domain") for n in COUNTS] + [(DOMAINS, "together")]
    order = []
    for number_ in bench.measured_rounds("6. pause windows per domain", bench.scaling_rounds):
        for domains, window in cases if number_ > 0 else [(DOMAINS, "per-domain")]:
            bench.world.write_config(job_config(domains, window))
            hook(bench.guest, "sbc_pre")
            hook(bench.guest, "sbc_post")
            if number_ > 0:
                order.append((domains, window))
    runs = logged_runs(bench.guest, ["pre", "post"] * len(order))
    own: dict[tuple[int, str], list[float]] = {case: [] for case in cases}  # each window, ms
    between: dict[tuple[int, str], list[float]] = {case: [] for case in cases}
    lvcreate: dict[tuple[int, str], list[float]] = {case: [] for case in cases}
    excess: dict[int, list[float]] = {n: [] for n in COUNTS}  # B - (1.1 x its lvcreate + 20 ms)
    for case, run in zip(order, runs[0::2]):
        domains, window = case
        created = [ms for name, ms in run.commands if name == "lvcreate"]
        expected = domains if window == "per-domain" else 1
        if len(run.windows) != expected or len(created) != domains or len(run.between) != expected:
            raise BenchError(f"sbc_pre with {domains} domains ({window}) logged {len(run.windows)} pause "
                             f"windows and {len(created)} lvcreates; expected {expected} and {domains}")
        own[case] += run.windows
        between[case] += run.between
        lvcreate[case] += created
        if window == "per-domain":
            excess[domains] += [b - (1.1 * c + 20) for b, c in zip(run.between, created)]
    bench.remember(f"sbc_pre, {DOMAINS} VM disks per-domain", [r for c, r in zip(order, runs[0::2])
                                                                if c == (DOMAINS, "per-domain")])
    section = Section("6. Each VM paused only for its own disks (vmdisks, one 16M disk LV per domain)")
    for case in cases:
        domains, window = case
        base = Row(f"{window}, {domains} domain(s): each lvcreate", lvcreate[case])
        if window == "together":
            base = Row(f"together, {domains} domains: the {domains} lvcreates of a run, summed",
                       [sum(lvcreate[case][i:i + domains]) for i in range(0, len(lvcreate[case]), domains)])
        what = "each domain's window" if window == "per-domain" else "the one window (every domain's)"
        section.rows += [base, Row(f"{window}, {domains} domain(s): {what}", own[case], baseline=base),
                         Row(f"{window}, {domains} domain(s): {what}, xl pause returning to xl unpause "
                             "starting", between[case], baseline=base)]
    medians = ", ".join(f"{n}: {statistics.median(own[(n, 'per-domain')]):.0f} ms" for n in COUNTS)
    section.notes += [
        f"Each domain's whole window (median) with 1, 4 and 8 domains: {medians}: a domain is paused "
        "for its own lvcreate only, however many other domains the job has.",
        "Target, per window, 'xl pause returning to xl unpause starting' at most 1.1x its own lvcreate + "
        "20 ms: " + "; ".join(f"{n} domain(s): {sum(e <= 0 for e in excess[n])} of {len(excess[n])} windows "
                              f"within it, worst {max(excess[n]):+.0f} ms against the limit" for n in COUNTS),
        "The whole window also holds the stand-in xl's exit and start-up (see section 2).",
    ]
    return section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.windows", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="counted rounds [3]")
    rounds = parser.parse_args(argv).rounds
    return run_alone("windows", lambda guest, world: per_domain_windows(
        Bench(guest, world, rounds=0, cpu_rounds=0, scaling_rounds=rounds)))


if __name__ == "__main__":
    sys.exit(main())
