"""A dom0 for the orchestration tests (pre, post, cleanup, status, check) without root: LVM, the
mount table and Xen as their commands show them, all through one FakeRunner.

The answers are output recorded on real hosts (tests/unit/data): lvs rows of LVM 2.03.16, xl
list and xl list -l of Xen 4.17. The commands xenlvm runs change what the next query shows:
lvcreate adds the recorded snapshot row (with the tags it was given), mount adds a line to the
mount table, lvremove removes the row when its --select guard matches, xl pause marks a domain
paused. A test makes a step fail with host.fail("lvcreate", answer) (the next call only) or
host.runner.on(...) (from now on).
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import pytest

import xenlvm.xen.domains
from tests.unit.fakes import Answer, FakeRunner, recorded
from xenlvm.config.load import parse_config
from xenlvm.config.model import Config
from xenlvm.core import ownership
from xenlvm.errors import CommandFailed
from xenlvm.host import mount

ORIGIN_MOUNT = "/srv/xenvm"  # where the origin is mounted in the fake mount table (VM disks below it)
_ROOT_LINE = "22 1 254:10 / / rw,relatime shared:1 - ext4 /dev/mapper/system-root rw"
_REMOVED = 'Logical volume "{lv}" successfully removed.\n'  # LVM 2.03.16


class FakeClock:
    """time for the modules that wait and retry: sleep() only moves monotonic() on."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")  # as time.sleep does
        self.slept.append(seconds)
        self.now += seconds

    def __getattr__(self, name: str):
        return getattr(time, name)


def _rows(name: str) -> list[dict[str, str]]:
    return json.loads(recorded(name))["report"][0]["lv"]


class FakeHost:
    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, release: str = "4.17") -> None:
        self.root = root
        self.runner = FakeRunner()
        self.lvs_rows: list[dict[str, str]] = _rows("lvs_no_snapshot.json")  # system/xenvm, 254:0
        self._snapshot_row = _rows("lvs_snapshot_mounted.json")[0]  # system/vmbackup as LVM showed it
        self.mount_lines = [_ROOT_LINE, f"40 22 254:0 / {ORIGIN_MOUNT} rw,relatime shared:28 - ext4 "
                                        "/dev/mapper/system-xenvm rw"]
        self.mountinfo = root / "mountinfo"
        self._write_mountinfo()
        monkeypatch.setattr(mount, "MOUNTINFO", str(self.mountinfo))
        monkeypatch.setattr(mount, "device_numbers", self.device_numbers)
        self.clock = FakeClock()
        for module in (ownership, mount, xenlvm.xen.domains):  # retries wait on this clock: no real waiting
            monkeypatch.setattr(module, "time", self.clock)
        self.xl_text = recorded(f"xl_list_xen-{release}.txt")
        self.xl_records = recorded(f"xl_list_l_xen-{release}.json")
        self.paused = {line.split()[0] for line in self.xl_text.splitlines()[1:] if "p" in line.split()[-2]}
        self._failures: dict[str, list[object]] = {}
        self.unremovable: dict[str, str] = {}  # "vg/lv" -> what lvremove says when it fails to remove it
        answer = self._answer
        for command in ("lvs", "vgs", "lvcreate", "lvremove", "mount", "umount", "blkid", "xl"):
            self.runner.on(command, answer)
        for path in ("run", "state", "mnt/vmbackup"):
            (root / path).mkdir(parents=True, exist_ok=True)

    # --- configuration -------------------------------------------------------------------

    def config(self, jobs: str = "", *, settings: str = "") -> Config:
        """A configuration with the host's directories; jobs default to one job 'xenvm' on
        system/xenvm mounted at <root>/mnt/vmbackup."""
        jobs = jobs or self.job_text()
        text = (f"settings:\n  lock_dir: {self.root / 'run'}\n  state_dir: {self.root / 'state'}\n"
                f"  log_file: null\n  lock_timeout: 1s\n{settings}jobs:\n{jobs}")
        path = self.root / "config.yaml"
        path.write_text(text)
        os.chmod(path, 0o600)
        return parse_config(text, str(path))

    def job_text(self, name: str = "xenvm", extra: str = "", mountpoint: str | None = None) -> str:
        mountpoint = mountpoint or str(self.root / "mnt" / "vmbackup")
        return (f"  {name}:\n    volume: system/xenvm\n    snapshot: vmbackup\n    size: 64M\n"
                f"    mountpoint: {mountpoint}\n    tasks: [xen_vm1]\n    unmount_timeout: 1s\n{extra}")

    # --- what the test arranges and looks at ---------------------------------------------

    def fail(self, command: str, *answers: object) -> None:
        """The next calls of command (e.g. "lvcreate", "xl pause") get these answers, in turn;
        an answer "run" does the real work first, then fails (as a command killed after it); a
        function of the argv answers as it likes (host.do(argv) does the real work)."""
        self._failures.setdefault(command, []).extend(answers)

    def add_snapshot(self, name: str = "vmbackup", job: str = "xenvm", mountpoint: str | None = None,
                     **changes: str) -> None:
        """A snapshot of system/xenvm as pre leaves it (xenlvm's tags for job), mounted at
        mountpoint (default <root>/mnt/vmbackup) when its lv_attr says open."""
        minor = str(max(int(r["lv_kernel_minor"]) for r in self.lvs_rows) + 1)
        row = {**copy.deepcopy(self._snapshot_row), "lv_name": name, "lv_kernel_minor": minor,
               "lv_dm_path": f"/dev/mapper/system-{name}",
               "lv_tags": f"xenlvm,xenlvm_job_{job},xenlvm_run_20261129T213500_829", **changes}
        self.lvs_rows.insert(0, row)
        if row["lv_attr"][5:6] == "o":
            self._mount_line(row["lv_dm_path"], mountpoint or str(self.root / "mnt" / "vmbackup"), "ext4",
                             "ro,nodev,nosuid,noexec")

    @property
    def lv_names(self) -> set[str]:
        return {row["lv_name"] for row in self.lvs_rows}

    @property
    def ours(self) -> list[str]:
        """The LVs that carry xenlvm's tag."""
        return [row["lv_name"] for row in self.lvs_rows if "xenlvm" in row["lv_tags"].split(",")]

    @property
    def mountpoints(self) -> list[str]:
        return [line.split(" ")[4] for line in self.mount_lines]

    def device_numbers(self, path: str) -> tuple[int, int] | None:
        for row in self.lvs_rows:
            if path in (row["lv_dm_path"], f"/dev/{row['vg_name']}/{row['lv_name']}") \
                    and row["lv_kernel_major"] != "-1":
                return int(row["lv_kernel_major"]), int(row["lv_kernel_minor"])
        return None

    def xl_list(self) -> str:
        """The recorded `xl list`, with the paused flag as the fake's domains are now."""
        lines = self.xl_text.splitlines()
        out = [lines[0]]
        for line in lines[1:]:
            name, domid, mem, vcpus, state, seconds = line.split()
            state = state[:2] + ("p" if name in self.paused else "-") + state[3:]
            out.append(f"{name:<40} {int(domid):5d} {int(mem):5d} {int(vcpus):5d}     {state}  "
                       f"{float(seconds):8.1f}")
        return "\n".join(out) + "\n"

    # --- the commands --------------------------------------------------------------------

    def _answer(self, argv: tuple[str, ...]) -> object:
        for command in sorted(self._failures, key=len, reverse=True):
            if " ".join(argv).startswith(command) and self._failures[command]:
                answer = self._failures[command].pop(0)
                if callable(answer):
                    return answer(argv)
                if answer != "run":
                    return answer
                self.do(argv)
                return CommandFailed(argv, 5, f"{argv[0]}: failed after doing its work")
        return self.do(argv)

    def do(self, argv: tuple[str, ...]) -> object:
        tool = argv[0]
        if tool == "lvs":  # the VGs named after the --options value; every VG without one
            named = argv[argv.index("--options") + 2:]
            rows = [r for r in self.lvs_rows if not named or r["vg_name"] in named]
            report = json.dumps({"report": [{"lv": rows}]})
            missing = [vg for vg in named if vg not in {r["vg_name"] for r in self.lvs_rows}]
            if missing:
                said = [f'  Volume group "{vg}" not found\n  Cannot process volume group {vg}\n'
                        for vg in missing]
                return Answer(stdout=report, stderr="".join(said), returncode=5)
            return report
        if tool == "vgs":
            return recorded("vgs_names.json")
        if tool == "lvcreate":
            return self._lvcreate(argv)
        if tool == "lvremove":
            return self._lvremove(argv)
        if tool == "mount":
            self._mount_line(argv[-2], argv[-1], argv[argv.index("-t") + 1], argv[argv.index("-o") + 1])
            self._set_open(argv[-2], True)
            return ""
        if tool == "umount":
            line = next(line for line in reversed(self.mount_lines) if line.split(" ")[4] == argv[-1])
            self.mount_lines.remove(line)
            self._write_mountinfo()
            self._set_open(line.split(" - ")[1].split(" ")[1], False)
            return ""
        if tool == "blkid":
            return "ext4\n"
        if argv[:3] == ("xl", "list", "-l"):
            return self.xl_records
        if argv[:2] == ("xl", "list"):
            return self.xl_list()
        if argv[:2] == ("xl", "pause"):
            self.paused.add(argv[2])
            return ""
        if argv[:2] == ("xl", "unpause"):
            self.paused.discard(argv[2])
            return ""
        raise AssertionError(f"the fake host does not know {list(argv)}")

    def _lvcreate(self, argv: tuple[str, ...]) -> str:
        vg, origin = argv[-1].split("/")
        name = argv[argv.index("--name") + 1]
        tags = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--addtag"]
        minor = str(max(int(r["lv_kernel_minor"]) for r in self.lvs_rows) + 1)
        row = {**copy.deepcopy(self._snapshot_row), "lv_name": name, "vg_name": vg, "origin": origin,
               "lv_attr": "swi-a-s---", "lv_tags": ",".join(tags), "lv_kernel_minor": minor,
               "lv_dm_path": f"/dev/mapper/{vg}-{name}"}
        self.lvs_rows.insert(0, row)
        return f'  Logical volume "{name}" created.\n'

    def _lvremove(self, argv: tuple[str, ...]) -> object:
        """Each LV named after the --select guard, as LVM does: the others are still removed when
        one fails, and the exit status is 5 if any failed."""
        tag = argv[argv.index("--select") + 1].split("=", 1)[1]
        said, errors = [], []
        for named in argv[argv.index("--select") + 2:]:
            vg, name = named.split("/")
            row = next((r for r in self.lvs_rows if (r["vg_name"], r["lv_name"]) == (vg, name)), None)
            if row is None:
                errors.append(f"  Failed to find logical volume \"{vg}/{name}\"\n")
            elif tag not in row["lv_tags"].split(","):
                continue  # the guard matched nothing: LVM 2.03.16 exits 0 and says nothing
            elif named in self.unremovable:
                errors.append(self.unremovable[named])
            elif row["lv_attr"][5:6] == "o":
                errors.append(f"  Logical volume {vg}/{name} contains a filesystem in use.\n")
            else:
                self.lvs_rows.remove(row)
                said.append(_REMOVED.format(lv=name))
        if errors:
            return Answer(stdout="".join(said), stderr="".join(errors), returncode=5)
        return "".join(said)

    def _mount_line(self, device: str, mountpoint: str, fstype: str, options: str) -> None:
        numbers = self.device_numbers(device) or (0, 99)
        number = 60 + len(self.mount_lines)
        self.mount_lines.append(f"{number} 22 {numbers[0]}:{numbers[1]} / {mountpoint} {options} "
                                f"shared:{number} - {fstype} {device} {options}")
        self._write_mountinfo()

    def _set_open(self, device: str, is_open: bool) -> None:
        for row in self.lvs_rows:
            if row["lv_dm_path"] == device:
                attr = row["lv_attr"]
                row["lv_attr"] = attr[:5] + ("o" if is_open else "-") + attr[6:]

    def _write_mountinfo(self) -> None:
        self.mountinfo.write_text("\n".join(self.mount_lines) + "\n")
