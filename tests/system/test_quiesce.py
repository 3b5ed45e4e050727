"""Application-consistent snapshots on real LVM (xen.quiesce): each guest frozen with the real
fsfreeze just before its pause window and thawed after it, whatever fails; and what a job leaves
out (vmdisks.exclude). The stand-in guests are filesystems on loop files (guest/quiesce.sh)."""

from __future__ import annotations

import json
import signal
import time

import pytest

from sandbox.world import HOOKS, SESAM_ARGS, XL
from tests.system.conftest import TESTS, assert_nothing_left
from tests.system.test_vmdisks import VMDISK_CONFIG, assert_disks_clean, pause_windows
from tests.system.test_xen import XEN_CONFIG, assert_all_running, states, xl_calls

pytestmark = pytest.mark.system

BIN = "/opt/xen/bin"
RECORD = "/run/xenlvm/{job}.frozen"


def quiesce_block(timeout: str = "10s", indent: int = 6, extra: str = "") -> str:
    pad = " " * indent
    return (f"{pad}quiesce:\n"
            f'{pad}  freeze: [{BIN}/guest-freeze, "{{domain}}"]\n'
            f'{pad}  thaw: [{BIN}/guest-thaw, "{{domain}}"]\n'
            f"{pad}  timeout: {timeout}\n" + "".join(f"{pad}  {line}\n" for line in extra.splitlines()))


def guests(world, *names: str):
    world.guest.run([TESTS / "guest" / "quiesce.sh", *names], check=True)


@pytest.fixture
def volume(world):
    """test_xen's world (vm1 and vm2 with files on the volume: one together window, vm3 elsewhere),
    each domain with a stand-in guest, the job frozen around its window."""
    world.guest.sh(
        "mkdir -p /srv/xenvm/vm2 /var/lib/other\n"
        f"{XL} fake-create vm1 --disk /srv/xenvm/vm1/disk.img,xvda >/dev/null\n"
        f"{XL} fake-create vm2 --disk /srv/xenvm/vm2/disk.img,xvda >/dev/null\n"
        f"{XL} fake-create vm3 --disk /var/lib/other/disk.img,xvda >/dev/null\n")
    guests(world, "vm1", "vm2", "vm3")
    world.write_config(XEN_CONFIG.format(domains="auto", extra=quiesce_block()))
    yield world
    world.guest.run([TESTS / "guest" / "quiesce.sh", "--remove"], check=True)


@pytest.fixture
def disks(world):
    """test_vmdisks' world (vm2 and vm3 on LVs of their own: a window each), with stand-in guests."""
    world.guest.run([TESTS / "guest" / "vmdisks.sh"], check=True)
    guests(world, "vm2", "vm3")
    world.write_config(VMDISK_CONFIG.format(extra="") + quiesce_block())
    yield world
    world.guest.run([TESTS / "guest" / "quiesce.sh", "--remove"], check=True)


def assert_clean_but_the_guests(world) -> None:
    """test_vmdisks' check that nothing is left, once the stand-in guests' loop devices are gone."""
    assert_thawed(world, "vm2", "vm3")
    world.guest.run([TESTS / "guest" / "quiesce.sh", "--remove"], check=True)
    assert_disks_clean(world)


def frozen(world, name: str) -> bool:
    return world.guest.run([f"{BIN}/guest-frozen", name], check=True).stdout.strip() == "yes"


def assert_thawed(world, *names: str) -> None:
    assert [name for name in names if frozen(world, name)] == []


def quiesce_calls(world) -> list[tuple[int, str, str]]:
    """(time ns, start|end, 'freeze|thaw domain') of every freeze and thaw command."""
    return [(int(f[0]), f[1], f"{f[2]} {f[3]}") for f in
            (line.split() for line in world.guest.read("/run/guests/calls.log").splitlines())]


def assert_frozen_around_each_pause(world, names: list[str]) -> None:
    """For each domain: its freeze ended before its pause began, its thaw began after its unpause
    ended; and the record is gone."""
    xl, mine = xl_calls(world), quiesce_calls(world)
    for name in names:
        def at(calls, event, what, pick):
            return pick(t for t, e, w in calls if e == event and w == what)
        assert at(mine, "end", f"freeze {name}", max) < at(xl, "start", f"pause {name}", min), name
        assert at(xl, "end", f"unpause {name}", max) < at(mine, "start", f"thaw {name}", min), name
    assert world.guest.run(["test", "-e", RECORD.format(job=job_of(world))]).rc == 1


def job_of(world) -> str:
    return "disks" if "  disks:" in world.guest.read("/etc/xenlvm/config.yaml") else "xenvm"


def last_notes(world) -> dict[str, float]:
    return json.loads(world.guest.read(f"/var/lib/xenlvm/{job_of(world)}/state.json"))["pre"]["notes"]


def test_a_together_window_freezes_each_domain_before_the_pause_and_thaws_after_the_unpause(volume):
    pre = volume.pre()
    assert pre.rc == 0, pre
    assert_frozen_around_each_pause(volume, ["vm1", "vm2"])
    freezes = [w for _, e, w in quiesce_calls(volume) if e == "start"]
    assert sorted(freezes) == ["freeze vm1", "freeze vm2", "thaw vm1", "thaw vm2"]  # vm3: not on the volume
    assert_thawed(volume, "vm1", "vm2")
    notes = last_notes(volume)
    assert notes["application_consistent:vm1"] == notes["application_consistent:vm2"] == 1.0
    assert "application-consistent: vm1, vm2" in volume.xenlvm("status").stdout
    assert volume.post().rc == 0


def test_per_domain_windows_freeze_each_domain_only_around_its_own_window(disks):
    pre = disks.pre()
    assert pre.rc == 0, pre
    assert pause_windows(disks) == {"vm2": ["system/vm2-disk"], "vm3": ["system/vm3-disk", "system/vm3-data"]}
    assert_frozen_around_each_pause(disks, ["vm2", "vm3"])
    mine = quiesce_calls(disks)
    thaw_vm2 = min(t for t, e, w in mine if w == "thaw vm2" and e == "end")
    assert thaw_vm2 < min(t for t, e, w in mine if w == "freeze vm3")  # one window after the other
    for name in ("vm2", "vm3"):
        layout = json.loads(disks.guest.read(f"/mnt/vmbackup/{name}/layout.json"))
        assert layout["consistency"] == "application-consistent"
    assert disks.post().rc == 0
    assert_clean_but_the_guests(disks)


def test_a_freeze_that_hangs_is_killed_with_its_child_and_the_guest_thawed(volume):
    volume.write_config(XEN_CONFIG.format(domains="auto", extra=quiesce_block("4s")))
    volume.guest.write("/run/guests/inject-freeze-vm2", "hang")
    pre = volume.pre()
    assert pre.rc == 0, pre  # on_failure crash-consistent: paused only
    assert "did not finish within 4 s" in pre.stderr and "only crash-consistent" in pre.stderr
    hung = volume.guest.read("/run/guests/hang.pid").strip()
    assert volume.guest.run(["test", "-e", f"/proc/{hung}"]).rc == 1, "the freeze's child outlived it"
    mine = [w for _, e, w in quiesce_calls(volume) if e == "start"]
    assert mine.index("thaw vm2") < mine.index("freeze vm2") + 2  # thawed at once, before the pause
    assert_thawed(volume, "vm1", "vm2")
    notes = last_notes(volume)
    assert (notes["application_consistent:vm1"], notes["application_consistent:vm2"]) == (1.0, 0.0)
    assert "crash-consistent only: vm2" in volume.xenlvm("status").stdout
    assert volume.post().rc == 0


def test_a_freeze_that_fails_with_abort_undoes_everything(volume):
    volume.write_config(XEN_CONFIG.format(domains="auto", extra=quiesce_block(extra="on_failure: abort")))
    volume.guest.write("/run/guests/inject-freeze-vm2", "fail")
    pre = volume.pre()
    assert pre.rc == 1, pre
    assert "could not freeze domain vm2" in pre.stderr and "'abort'" in pre.stderr
    assert not [w for _, e, w in xl_calls(volume) if w.startswith("pause")]  # never paused
    assert sorted(w for _, e, w in quiesce_calls(volume) if e == "start" and w.startswith("thaw")) == [
        "thaw vm1", "thaw vm2"]
    assert_thawed(volume, "vm1", "vm2")
    assert_all_running(volume)
    assert_nothing_left(volume)


def test_a_failing_lvcreate_thaws_every_guest(volume):
    volume.inject("lvcreate", "fail 5")
    pre = volume.pre()
    assert pre.rc == 1, pre
    assert_frozen_around_each_pause(volume, ["vm1", "vm2"])
    assert_thawed(volume, "vm1", "vm2")
    assert_all_running(volume)
    assert_nothing_left(volume)


def start_pre_held_at_lvcreate(world) -> int:
    pid = world.start_held("sbc_pre", "lvcreate", log="/run/pre.out")
    assert frozen(world, "vm1") and frozen(world, "vm2")
    return pid


def test_sigterm_while_frozen_thaws_and_leaves_nothing(volume):
    pid = start_pre_held_at_lvcreate(volume)
    volume.guest.signal(pid, signal.SIGTERM)
    volume.release("lvcreate")
    assert volume.guest.wait(pid) == 1
    assert "interrupted by SIGTERM" in volume.guest.read("/run/pre.out")
    assert_frozen_around_each_pause(volume, ["vm1", "vm2"])
    assert_thawed(volume, "vm1", "vm2")
    assert_all_running(volume)
    assert_nothing_left(volume)
    assert volume.guest.run(["test", "-e", "/run/xenlvm/xenvm.quiesce-guard.pid"]).rc == 1  # stopped


def test_kill_9_while_frozen_is_reported_and_the_next_post_thaws(volume):
    pid = start_pre_held_at_lvcreate(volume)
    volume.guest.signal(pid, signal.SIGKILL, group=True)
    volume.guest.wait(pid)
    assert frozen(volume, "vm1") and frozen(volume, "vm2")
    assert json.loads(volume.guest.read(RECORD.format(job="xenvm")))["domains"] == ["vm1", "vm2"]
    assert "LEFT FROZEN by a killed run: vm1, vm2" in volume.xenlvm("status").stdout
    assert "left vm1, vm2 FROZEN" in volume.xenlvm("check").stdout
    tried = volume.xenlvm("check", "--quiesce").stdout  # refuses: it would lose the record of vm1, vm2
    assert "no freeze tried" in tried and "run 'xenlvm cleanup' first" in tried, tried
    assert json.loads(volume.guest.read(RECORD.format(job="xenvm")))["domains"] == ["vm1", "vm2"]
    assert frozen(volume, "vm1") and frozen(volume, "vm2")
    volume.reset_faults()
    post = volume.post()
    assert post.rc == 0, post
    assert "killed while guests were frozen" in post.stderr
    assert_thawed(volume, "vm1", "vm2")
    assert_all_running(volume)
    assert_nothing_left(volume)


def test_a_freeze_left_hanging_by_a_pre_killed_with_9_is_killed_before_the_next_run_thaws(volume):
    volume.write_config(XEN_CONFIG.format(domains="auto", extra=quiesce_block("60s")))
    volume.reset_faults()
    volume.guest.write("/run/guests/inject-freeze-vm2", "hang")
    pid = volume.guest.spawn([f"{HOOKS}/sbc_pre", *SESAM_ARGS], env={}, log="/run/pre.out")
    volume.wait_for("", "/run/guests/hang.pid")
    hanging = volume.guest.read("/run/guests/hang.pid").strip()
    record = json.loads(volume.guest.read(RECORD.format(job="xenvm")))
    assert record["domains"] == ["vm1", "vm2"] and record["freezing"], record
    volume.guest.signal(pid, signal.SIGKILL, group=True)
    volume.guest.wait(pid)
    assert volume.guest.run(["kill", "-0", hanging]).rc == 0  # its own session: it outlives pre
    volume.guest.run(["rm", "/run/guests/inject-freeze-vm2"], check=True)
    post = volume.post()
    assert post.rc == 0, post
    assert "the freeze command of an earlier run still runs" in post.stderr, post
    volume.guest.sh(f"i=0; while kill -0 {hanging} 2>/dev/null; do i=$((i+1)); [ $i -lt 50 ]; sleep 0.1; "
                    "done")  # gone within 5 s (reaped by init), or this fails
    assert_thawed(volume, "vm1", "vm2")
    assert_all_running(volume)
    assert_nothing_left(volume)


def test_the_guard_thaws_and_resumes_the_guests_of_a_killed_pre_once_max_frozen_is_up(volume):
    volume.write_config(XEN_CONFIG.format(domains="auto", extra=quiesce_block("4s", extra="max_frozen: 10s")))
    pid = start_pre_held_at_lvcreate(volume)
    volume.guest.signal(pid, signal.SIGKILL, group=True)
    volume.guest.wait(pid)
    killed_at = time.monotonic()
    volume.wait_for("end thaw vm2", "/run/guests/calls.log", timeout=60)
    assert time.monotonic() - killed_at < 40
    assert_thawed(volume, "vm1", "vm2")
    assert_all_running(volume)
    assert volume.guest.run(["test", "-e", RECORD.format(job="xenvm")]).rc == 1
    assert "still frozen" in volume.log() and "the quiesce guard resumes and thaws them" in volume.log()
    volume.reset_faults()
    assert volume.post().rc == 0
    assert_nothing_left(volume)


def test_a_thaw_that_fails_fails_pre_stays_recorded_and_post_thaws_it(volume):
    volume.guest.write("/run/guests/inject-thaw-vm1", "fail")
    pre = volume.pre()
    assert pre.rc == 1, pre
    assert "could not thaw domain(s) vm1" in pre.stderr and "STILL FROZEN" in pre.stderr
    assert frozen(volume, "vm1") and not frozen(volume, "vm2")
    assert_all_running(volume)
    assert_nothing_left(volume)  # pre failed: its snapshot is undone
    assert json.loads(volume.guest.read(RECORD.format(job="xenvm")))["domains"] == ["vm1"]
    volume.guest.run(["rm", "/run/guests/inject-thaw-vm1"], check=True)
    post = volume.post()
    assert post.rc == 0, post
    assert_thawed(volume, "vm1")
    assert volume.guest.run(["test", "-e", RECORD.format(job="xenvm")]).rc == 1


def test_excluded_domains_and_disks_are_neither_snapshotted_paused_nor_frozen(disks):
    config = VMDISK_CONFIG.format(extra="      exclude: [vm2, vm3/xvdb]\n").replace("domains: [vm2, vm3]",
                                                                                 "domains: auto")
    disks.write_config(config + quiesce_block())
    pre = disks.pre()
    assert pre.rc == 0, pre
    lvs = disks.lvs()
    assert "vm3-disk.xenlvm" in lvs and "vm2-disk.xenlvm" not in lvs and "vm3-data.xenlvm" not in lvs
    assert sorted(w for _, e, w in xl_calls(disks) if e == "start") == ["pause vm3", "unpause vm3"]
    assert sorted(w for _, e, w in quiesce_calls(disks) if e == "start") == ["freeze vm3", "thaw vm3"]
    assert disks.post().rc == 0
    assert_clean_but_the_guests(disks)


def test_check_quiesce_freezes_and_thaws_each_domain_timed(volume):
    done = volume.xenlvm("check", "--quiesce")
    assert "OK   [xenvm] quiesce: freeze and thaw commands" in done.stdout, done
    for name in ("vm1", "vm2"):
        assert f"OK   [xenvm] quiesce: {name}: froze in " in done.stdout, done
    assert sorted(w for _, e, w in quiesce_calls(volume) if e == "start") == [
        "freeze vm1", "freeze vm2", "thaw vm1", "thaw vm2"]
    assert_thawed(volume, "vm1", "vm2")
    assert "p" not in states(volume)["vm1"]  # check never pauses
