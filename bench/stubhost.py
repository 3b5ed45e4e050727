"""A stand-in host for bench/hostcost.py: every command the hooks run answers instantly from
recorded output, and nothing outside one temporary directory is touched.

The directory holds:

- bin/: one shell script (stub) under the name of every command the hooks run (lvs, vgs,
  lvcreate, lvremove, mount, umount, blkid, dumpe2fs, xl, ...). The job's `settings.path` is
  this directory alone, so any command without a stub fails ("not stubbed") instead of reaching
  the host. A stub appends its argv to calls.log and prints recorded output (tests/unit/data).
- lvs.json: what `lvs` prints now. lvcreate switches it to the job's recorded state with its
  snapshots (lvs-after.json), lvremove back (lvs-before.json).
- mountinfo: the kernel's mount table as the hooks see it. The stub `mount` appends a line with
  the device numbers of what it mounts, `umount` removes the line again.
- devices: the device numbers of the block device paths the hooks stat (path major minor).

The hooks prove a mount by the device numbers in /proc/self/mountinfo against a stat of the
snapshot's device. Neither can be faked without a real mount, and the bench makes none, so
hostcost runs each matching hook through seam(): the installed hook's own text with three
lines before its run_hook(...) that point xenlvm.host.mount at this directory's mountinfo and
devices. The seam lives only here: production code has no switch for it.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "tests" / "unit" / "data"

# The commands the stub answers, and how (dash: a few hundred microseconds a call).
STUB = r"""#!/bin/sh
# bench/stubhost.py: answers from recorded output; changes nothing outside HOST
HOST=@HOST@
PATH=/usr/bin:/bin
name=${0##*/}
printf '%s %s\n' "$name" "$*" >> "$HOST/calls.log"
case "$name" in
  lvs) cat "$HOST/lvs.json" ;;
  vgs) cat "$HOST/vgs.json" ;;
  lvcreate) cp "$HOST/lvs-after.json" "$HOST/lvs.json"; echo '  Logical volume created.' ;;
  lvremove) cp "$HOST/lvs-before.json" "$HOST/lvs.json"; echo '  Logical volume removed.' ;;
  mount)
    fstype=none options=rw
    while [ $# -gt 2 ]; do
      case "$1" in -t) fstype=$2; shift ;; -o) options=$2; shift ;; esac
      shift
    done
    numbers=$(awk -v d="$1" '$1 == d { print $2 ":" $3 }' "$HOST/devices")
    echo "99 1 ${numbers:-0:99} / $2 $options - $fstype $1 $options" >> "$HOST/mountinfo" ;;
  umount)
    awk -v m="$1" '{ line[NR] = $0; if ($5 == m) last = NR }
      END { for (i = 1; i <= NR; i++) if (i != last) print line[i] }' \
      "$HOST/mountinfo" > "$HOST/mountinfo.new"
    mv "$HOST/mountinfo.new" "$HOST/mountinfo" ;;
  blkid)
    case "$*" in
      *swap*) type=swap ;;
      *) type=ext4 ;;
    esac
    case "$*" in
      *export*) printf 'UUID=8c2b3d51-5b6a-4f0e-9d1c-3a7e0f7c2a10\nTYPE=%s\n' "$type" ;;
      *) echo "$type" ;;
    esac ;;
  dumpe2fs) cat "$HOST/dumpe2fs.txt" ;;
  xl)
    case "$1 $2" in
      "list -l") cat "$HOST/xl-list-l.json" ;;
      "list "*) cat "$HOST/xl-list.txt" ;;
      "pause "*|"unpause "*) ;;
      *) echo "xl $*: not stubbed" >&2; exit 127 ;;
    esac ;;
  *) echo "$name: not stubbed" >&2; exit 127 ;;
esac
"""
COMMANDS = ("lvs", "vgs", "lvcreate", "lvremove", "mount", "umount", "blkid", "dumpe2fs", "xl")

DUMPE2FS = """\
Filesystem volume name:   <none>
Filesystem features:      has_journal ext_attr resize_inode dir_index filetype needs_recovery extent 64bit \
flex_bg sparse_super large_file huge_file dir_nlink extra_isize metadata_csum
Block size:               4096
Inode size:\t          256
"""

# Put into an installed hook's text just before its run_hook(...) line (see seam).
_SEAM = """\
try:  # bench/stubhost.py: the stand-in host's mount table and devices
    from xenlvm.host import mount
except ImportError:  # a xenlvm before its layout by layer (make bench's BENCH_BASELINE)
    from xenlvm import mounts as mount
mount.MOUNTINFO = {mountinfo!r}
with open({devices!r}) as handle:
    table = {{path: (int(major), int(minor)) for path, major, minor in map(str.split, handle)}}
mount.device_numbers = table.get
"""


def seam(hook: str, root: Path) -> str:
    """Given the text of a hook as install-hooks writes it, the same hook reading the mount
    table and device numbers of the stand-in host at root (the import of xenlvm.host.mount, which a
    matching run makes anyway, moves to just after the hook entry's)."""
    last = hook.rindex("run_hook(")
    return hook[:last] + _SEAM.format(mountinfo=str(root / "mountinfo"), devices=str(root / "devices")) \
        + hook[last:]


BASE_MOUNTS = """\
21 1 254:10 / / rw,relatime - ext4 /dev/mapper/system-root rw
30 21 254:0 / /srv/xenvm rw,relatime - ext4 /dev/mapper/system-xenvm rw
"""


def _recorded(name: str) -> list[dict]:
    return json.loads((DATA / name).read_text())["report"][0]["lv"]


def _lv(template: dict, **fields: str) -> dict:
    row = copy.deepcopy(template)
    row.update(fields)
    return row


def _report(rows: list[dict]) -> str:
    return json.dumps({"report": [{"lv": rows}]}, indent=2)


class StubHost:
    """The stand-in host in directory root, for the jobs of CONFIG (see config_text)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "bin").mkdir(parents=True)
        (root / "lock").mkdir()
        (root / "state").mkdir()
        for name in ("mnt-volume", "mnt-vmdisks"):
            (root / name).mkdir()
        stub = root / "bin" / "stub"
        stub.write_text(STUB.replace("@HOST@", str(root)))
        stub.chmod(0o755)
        for command in COMMANDS:
            (root / "bin" / command).symlink_to("stub")
        shutil.copy(DATA / "vgs_names.json", root / "vgs.json")
        shutil.copy(DATA / "xl_list_xen-4.17.txt", root / "xl-list.txt")
        shutil.copy(DATA / "xl_list_l_xen-4.17.json", root / "xl-list-l.json")
        (root / "dumpe2fs.txt").write_text(DUMPE2FS)
        (root / "calls.log").write_text("")
        self.states = self._lvm_states()
        (root / "devices").write_text("".join(
            f"{row['lv_dm_path']} {row['lv_kernel_major']} {row['lv_kernel_minor']}\n"
            for state in self.states.values() for row in json.loads(state[1])["report"][0]["lv"]
        ) + "/dev/system/vm1-disk 254 1\n/dev/mapper/system-vm1--swap 254 2\n")

    def _lvm_states(self) -> dict[str, tuple[str, str]]:
        """lvs before and after pre, per job: the recorded VG with xenvm, plus vm1's two disk LVs."""
        origin_before = _recorded("lvs_no_snapshot.json")[0]
        snapshot, origin_after = _recorded("lvs_snapshot_mounted.json")
        disks = [_lv(origin_before, lv_name=name, lv_size="268435456", lv_kernel_minor=minor,
                     lv_dm_path=f"/dev/mapper/system-{name.replace('-', '--')}")
                 for name, minor in (("vm1-disk", "1"), ("vm1-swap", "2"))]
        disk_snapshots = [_lv(snapshot, lv_name=f"{d['lv_name']}.xenlvm", origin=d["lv_name"],
                              lv_tags="xenlvm,xenlvm_job_vmdisks,xenlvm_vmdisk,xenlvm_run_20261129T213500_829",
                              lv_kernel_minor=minor, lv_dm_path=f"{d['lv_dm_path']}.xenlvm")
                          for d, minor in zip(disks, ("4", "5"))]
        disks_after = [_lv(d, lv_attr="o" + d["lv_attr"][1:]) for d in disks]
        before = _report([origin_before, *disks])
        return {"xenvm": (before, _report([snapshot, origin_after, *disks])),
                "vmdisks": (before, _report([origin_before, *disks_after, *disk_snapshots]))}

    def config_text(self) -> str:
        root = self.root
        return f"""\
settings:
  path: {root}/bin
  log_file: {root}/xenlvm.log
  lock_dir: {root}/lock
  state_dir: {root}/state
jobs:
  xenvm:
    volume: system/xenvm
    snapshot: vmbackup
    size: 64M
    mountpoint: {root}/mnt-volume
    tasks: [xen_vm1]
  vmdisks:
    mountpoint: {root}/mnt-vmdisks
    tasks: [xen_vmdisks]
    vmdisks:
      domains: [vm1]
      size: 20%ORIGIN
      expose: files
    xen:
      domains: auto
      mode: pause
"""

    def reset(self, job: str) -> None:
        """The host before pre of job: its origins, no snapshot, nothing of xenlvm mounted."""
        before, after = self.states[job]
        (self.root / "lvs-before.json").write_text(before)
        (self.root / "lvs-after.json").write_text(after)
        (self.root / "lvs.json").write_text(before)
        (self.root / "mountinfo").write_text(BASE_MOUNTS)
        for name in ("mnt-volume", "mnt-vmdisks"):  # what the tmpfs held is gone with it
            shutil.rmtree(self.root / name)
            (self.root / name).mkdir()

    def calls(self) -> list[str]:
        return (self.root / "calls.log").read_text().splitlines()

    def clear_calls(self) -> None:
        (self.root / "calls.log").write_text("")


def environment(config: Path) -> dict[str, str]:
    """The hook's environment: as sesam starts it, nearly empty; the configuration named."""
    return {"XENLVM_CONFIG": str(config), "LANG": os.environ.get("LANG", "C")}
