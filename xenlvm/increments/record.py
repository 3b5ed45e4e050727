"""What pre exposed of each chained disk (vmdisks.incremental) in its last run, and why:
``<state_dir>/<job>/increments.json``. post keeps the bases from it (the depth of each file, the
full image's SHA-256); status shows it; an admin reads there why a run wrote a full image.

Format (version 1): ``{"format": "xenlvm-increments", "format_version": 1, "run": RUN,
"disks": [ENTRY, ...]}``, each entry with ``domain``, ``disk``, ``origin`` (VG/LV), ``run``,
``kind`` (``full`` or ``increment``), ``file`` (the file's path in the tree), ``depth``
(increments since the full image; 0 for the full image), ``base_run`` (an increment's base,
else null), ``reason`` (why a full image; "" for an increment), ``bytes`` (the file's size) and
``full_sha256`` (a full image's SHA-256 in hex, else null).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass

from xenlvm.host.fsutil import read_small, trust_problem, write_atomically

log = logging.getLogger("xenlvm")

FORMAT = "xenlvm-increments"
FULL, INCREMENT = "full", "increment"


@dataclass(frozen=True)
class Exposed:
    """One chained disk's file of a run."""

    domain: str
    disk: str
    origin: str  # VG/LV
    run: str
    kind: str  # FULL or INCREMENT
    file: str
    depth: int
    base_run: str | None
    reason: str
    bytes: int
    full_sha256: str | None = None

    def describe(self) -> str:
        what = (f"increment {self.depth} over run {self.base_run}" if self.kind == INCREMENT
                else f"full image ({self.reason})")
        return f"{self.domain}/{self.disk}: {what}, {self.bytes} bytes, {self.file}"


def record_path(state_dir: str, job_name: str) -> str:
    return os.path.join(state_dir, job_name, "increments.json")


def write(state_dir: str, job_name: str, run: str, entries: list[Exposed]) -> None:
    """Record the run's files; in a folder others could write, nothing (post then keeps no base)."""
    path = record_path(state_dir, job_name)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    problem = trust_problem(os.path.dirname(path))  # post acts on it, as root
    if problem is not None:
        log.warning("%s was not written, so post keeps no base and the next run writes full images: its "
                    "folder must be root's alone: %s", path, problem)
        return
    text = json.dumps({"format": FORMAT, "format_version": 1, "run": run,
                       "disks": [asdict(e) for e in entries]}, indent=2)
    write_atomically(path, text + "\n", mode=0o644)


def read(state_dir: str, job_name: str) -> list[Exposed]:
    """The last run's entries; none when there is no record or it cannot be read (then post
    keeps no base: the next run of each disk is a full image)."""
    path = record_path(state_dir, job_name)
    problem = trust_problem(os.path.dirname(path)) if os.path.exists(path) else None
    if problem is not None:
        log.warning("%s is not read: its folder must be root's alone: %s", path, problem)
        return []
    try:
        data = json.loads(read_small(path) or "{}")
        if not data:
            return []
        if data.get("format") != FORMAT or data.get("format_version") != 1:
            raise ValueError("not a version 1 record of xenlvm's increments")
        return [Exposed(**entry) for entry in data["disks"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s cannot be read (%s): no base is kept, the next run writes full images", path, exc)
        return []
