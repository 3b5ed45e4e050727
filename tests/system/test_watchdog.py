"""The snapshot watchdog on real LVM: it extends a filling classic snapshot in time, says why
when the VG has no room left, and never outlives its snapshot or its max_lifetime.

The monitor is started and stopped from a small guest-side Python call, exactly as pre and
post call xenlvm.watchdog.process.start and stop."""

from __future__ import annotations

import json

import pytest

from sandbox.world import CONFIG, DEFAULT_CONFIG
from tests.system.conftest import assert_nothing_left

pytestmark = pytest.mark.system

MiB = 1 << 20

# tests.system.conftest.DEFAULT_CONFIG, with a watchdog for the job.
WATCHDOG_CONFIG = DEFAULT_CONFIG.replace("{", "{{").replace("}", "}}") + """\
    watchdog:
      threshold: 50%
      step: 100%
      max_size: 100%ORIGIN
      interval: {interval}
      max_lifetime: {lifetime}
"""

START = f"""
from xenlvm.config.load import load_config
from xenlvm.host.lvm import Lvm
from xenlvm.host.runner import Runner
from xenlvm.watchdog.watch import Watched
from xenlvm.watchdog.process import start

config = load_config({CONFIG!r})
origin = Lvm(Runner(path=config.settings.path)).volume_group('system').get('xenvm')
print(start(config, 'xenvm', [Watched('system', 'vmbackup', origin.size)], config.jobs['xenvm'].watchdog))
"""

STOP = f"""
import dataclasses, json
from xenlvm.config.load import load_config
from xenlvm.watchdog.process import stop

summary = stop(load_config({CONFIG!r}), 'xenvm')
print(json.dumps(summary and dataclasses.asdict(summary)))
"""


def start_watchdog(world, *, interval: str = "1s", lifetime: str = "1h") -> int:
    world.write_config(WATCHDOG_CONFIG.format(interval=interval, lifetime=lifetime))
    done = world.guest.run([world.guest.python, "-c", START], timeout=60)
    assert done.rc == 0, done
    return int(done.stdout)


def stop_watchdog(world) -> dict | None:
    done = world.guest.run([world.guest.python, "-c", STOP], timeout=60)
    assert done.rc == 0, done
    return json.loads(done.stdout)


def snapshot(world) -> dict:
    out = world.guest.run(["lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o",
                           "lv_name,lv_attr,lv_size,data_percent,lv_snapshot_invalid", "system/vmbackup"],
                          check=True).stdout
    row = json.loads(out)["report"][0]["lv"][0]
    return {"size": int(row["lv_size"]), "fill": float(row["data_percent"] or 0),
            "invalid": row["lv_attr"][4] == "I" or bool(row["lv_snapshot_invalid"])}


def write_to_origin(world, mib: int, chunk_mib: int = 8, pause: float = 1.0, name: str = "fill") -> float:
    """Write mib MiB of new files (name.1, name.2, ...) to the origin in chunks, each synced, with
    a pause after each;
    return the rate in MiB/s. Paced (about 5 MiB/s) well below what the watchdog keeps up with at
    interval 1s in this emulated kernel (15 to 24 MiB/s measured), so that it passes also when
    the sandbox shares a busy machine: writing unpaced, 64 MiB can fill before the first look."""
    wait = f" sleep {pause};" if pause else ""
    done = world.guest.sh(f"for i in $(seq {mib // chunk_mib}); do dd if=/dev/zero of=/srv/xenvm/{name}.$i "
                          f"bs=1M count={chunk_mib} 2>/dev/null; sync;{wait} done", timeout=600)
    return mib / done.duration


def write_then_wait_for_extension(world, mib: int, size_mib: int) -> None:
    """Write mib MiB at once, less than the snapshot holds but past the watchdog's threshold, and
    wait until the watchdog has extended the snapshot to size_mib MiB (it looks every second)."""
    write_to_origin(world, mib, pause=0)
    done = world.guest.run(["/bin/sh", "-c", 'i=0; while [ "$i" -lt 60 ]; do '
                            'size=$(lvs --noheadings --units b --nosuffix -o lv_size system/vmbackup) && '
                            '[ "$size" -ge "$1" ] && exit 0; sleep 0.5; i=$((i + 1)); done; exit 1',
                            "sh", str(size_mib * MiB)], timeout=90)
    assert done.rc == 0, f"the watchdog did not extend the snapshot to {size_mib} MiB: {snapshot(world)}"


ALIVE = 'grep -q "^State:[[:space:]]*[^Z]" "/proc/$1/status" 2>/dev/null'  # a zombie has exited


def running(world, pid: int) -> bool:
    return world.guest.run(["/bin/sh", "-c", ALIVE, "sh", str(pid)]).rc == 0


def wait_until_gone(world, pid: int, timeout: float) -> bool:
    done = world.guest.run(["/bin/sh", "-c", f'i=0; while [ "$i" -lt "$2" ]; do {ALIVE} || exit 0; '
                            'sleep 0.2; i=$((i + 1)); done; exit 1', "sh", str(pid), str(int(timeout * 5))],
                           timeout=timeout + 30)
    return done.rc == 0


def test_watchdog_extends_a_filling_snapshot_so_it_stays_valid(world):
    assert world.pre().rc == 0
    pid = start_watchdog(world)
    assert running(world, pid)

    rate = write_to_origin(world, 128)  # twice the 64 MiB snapshot: it must grow at least twice
    summary = stop_watchdog(world)  # first: it may still extend while we look
    assert not running(world, pid)
    state = snapshot(world)
    print(f"wrote 128 MiB at {rate:.1f} MiB/s; the snapshot is {state['size'] // MiB} MiB, "
          f"{state['fill']:.1f}% full")
    assert not state["invalid"], state
    assert state["size"] > 128 * MiB

    assert summary is not None
    sizes = [(e["from"], e["to"]) for e in summary["extensions"]]
    assert sizes[0] == (64 * MiB, 128 * MiB)
    assert all(to > before for before, to in sizes) and sizes[-1][1] == state["size"]
    assert all(e["fill"] >= 50 and e["lv"] == "system/vmbackup" for e in summary["extensions"])
    assert summary["max_fill"]["system/vmbackup"] >= 50
    # The snapshot may reach max_size (100% of the 320 MiB origin) at the end; it must not overflow.
    assert not [p for p in summary["problems"] if "max_size" not in p], summary["problems"]
    assert "extended the snapshot system/vmbackup from 64.0 MiB to 128.0 MiB" in world.log()

    assert world.post().rc == 0
    assert_nothing_left(world)
    assert stop_watchdog(world) is None  # stop is idempotent


def test_watchdog_says_why_when_the_vg_has_no_room_to_extend(world):
    assert world.pre().rc == 0
    world.guest.sh("free=$(vgs --noheadings -o vg_free_count system | tr -d ' '); "
                   "lvcreate -q -y -l $((free - 2)) -n filler system >/dev/null")  # 8 MiB stay free
    pid = start_watchdog(world)

    write_then_wait_for_extension(world, 40, 72)  # all the VG had left
    write_to_origin(world, 40, pause=0, name="more")  # 80 MiB into 72
    assert snapshot(world)["invalid"]
    assert wait_until_gone(world, pid, timeout=30)  # nothing left to watch

    summary = stop_watchdog(world)
    assert [(e["from"], e["to"]) for e in summary["extensions"]] == [(64 * MiB, 72 * MiB)]
    assert summary["max_fill"] == {"system/vmbackup": 100.0}
    problems = summary["problems"]
    assert problems[0].startswith("system/vmbackup could only be extended to 72.0 MiB instead of 128.0 MiB: "
                                  "VG system has no more free space"), problems
    assert problems[-1].startswith("system/vmbackup overflowed at 72.0 MiB and became invalid"), problems
    assert world.post().rc == 1  # the backup of this run cannot be trusted
    assert_nothing_left(world)


def test_watchdog_exits_by_itself_after_max_lifetime(world):
    assert world.pre().rc == 0
    pid = start_watchdog(world, lifetime="3s")
    assert wait_until_gone(world, pid, timeout=20)

    summary = stop_watchdog(world)
    assert summary["problems"] == [
        "the watchdog stopped after max_lifetime (3 s) while the backup still ran: system/vmbackup no "
        "longer extended"]
    assert world.post().rc == 0


def test_watchdog_exits_by_itself_when_its_snapshot_is_removed(world):
    assert world.pre().rc == 0
    pid = start_watchdog(world)
    # Behind xenlvm's back: post itself stops the watchdog before it removes the snapshot.
    world.guest.sh("umount /mnt/vmbackup && lvremove -q -f system/vmbackup >/dev/null")
    assert wait_until_gone(world, pid, timeout=20)

    summary = stop_watchdog(world)
    assert summary["problems"] == ["system/vmbackup was removed while the watchdog watched it"]
    assert world.post().rc == 0
    assert_nothing_left(world)


def watchdog_pid(world) -> int | None:
    done = world.guest.run(["cat", "/run/xenlvm/xenvm.watchdog.pid"])
    return int(done.stdout) if done.rc == 0 else None


def test_pre_starts_the_watchdog_and_post_stops_it_and_reports_the_extensions(world):
    world.write_config(WATCHDOG_CONFIG.format(interval="1s", lifetime="1h"))
    pre = world.pre()
    assert pre.rc == 0, pre
    pid = watchdog_pid(world)
    assert pid is not None and running(world, pid)
    assert "snapshot watchdog started" in pre.stdout

    write_then_wait_for_extension(world, 40, 128)
    write_to_origin(world, 40, pause=0, name="more")  # 80 MiB into what was a 64 MiB snapshot
    post = world.post()
    assert post.rc == 0, post
    assert "the watchdog extended system/vmbackup from 64.0 MiB to 128.0 MiB" in post.stderr
    assert "the watchdog saw system/vmbackup at most" in post.stdout
    assert not running(world, pid)  # post never leaves it behind
    assert watchdog_pid(world) is None
    assert_nothing_left(world)
    state = json.loads(world.guest.read("/var/lib/xenlvm/xenvm/state.json"))
    assert state["post"]["notes"]["watchdog_extensions"] >= 1


def test_post_fails_and_says_why_when_the_vg_is_too_small_to_extend(world):
    world.write_config(WATCHDOG_CONFIG.format(interval="1s", lifetime="1h"))
    world.guest.sh("free=$(vgs --noheadings -o vg_free_count system | tr -d ' '); "
                   "lvcreate -q -y -l $((free - 18)) -n filler system >/dev/null")  # 72 MiB stay free
    assert world.pre().rc == 0  # the 64 MiB snapshot fits; 8 MiB remain to grow
    write_then_wait_for_extension(world, 40, 72)
    write_to_origin(world, 40, pause=0, name="more")  # 80 MiB into 72
    post = world.post()
    assert post.rc == 1, post
    assert "overflowed" in post.stderr and "cannot be trusted" in post.stderr
    assert "watchdog: system/vmbackup could only be extended to 72.0 MiB" in post.stderr
    assert_nothing_left(world)


def test_thin_snapshots_get_no_watchdog(world):
    world.build(layout="thin", config=WATCHDOG_CONFIG.format(interval="1s", lifetime="1h")
                .replace("    size: 64M\n", ""))
    pre = world.pre()
    assert pre.rc == 0, pre
    assert watchdog_pid(world) is None
    assert "watchdog" not in pre.output
    assert world.post().rc == 0
