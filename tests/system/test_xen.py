"""Xen-consistent snapshots on real LVM, with the stand-in xl: domains are paused exactly for
lvcreate and always resumed; auto-discovery; the configuration export."""

from __future__ import annotations

import json
import re
import signal

import pytest

from sandbox.world import SESAM_ARGS, XEN_SETTINGS, XL
from tests.system.conftest import assert_nothing_left

pytestmark = pytest.mark.system

# An xl call of the stand-in (Python in the emulated kernel) can take seconds while four sandboxes
# share two cores: 20 s, so that only a hung call times out (the hang test sets 3 s).
XEN_CONFIG = XEN_SETTINGS + """\
  xenvm:
    volume: system/xenvm
    snapshot: vmbackup
    size: 64M
    mountpoint: /mnt/vmbackup
    tasks: [xen_vm1]
    unmount_timeout: 4s
    xen:
      domains: {domains}
      mode: pause
      timeout: 20s
{extra}"""


@pytest.fixture
def xen(world):
    """The manual's world with three running domains: vm1 and vm2 on the volume, vm3 elsewhere."""
    world.guest.sh(
        "mkdir -p /srv/xenvm/vm2 /var/lib/other && head -c 1048576 /dev/urandom > /srv/xenvm/vm2/disk.img\n"
        f"{XL} fake-create vm1 --disk /srv/xenvm/vm1/disk.img,xvda >/dev/null\n"
        f"{XL} fake-create vm2 --disk /srv/xenvm/vm2/disk.img,xvda"
        " --disk /srv/xenvm/vm2/data.img,xvdb >/dev/null\n"
        f"{XL} fake-create vm3 --disk /var/lib/other/disk.img,xvda >/dev/null\n"
        "printf 'name = \"vm1\"\\nmemory = 1024\\n' > /etc/xen/vm1.cfg\n"
        "printf 'name = \"vm3\"\\n' > /etc/xen/vm3.cfg\n")
    world.write_config(XEN_CONFIG.format(domains="[vm1, vm2]", extra=""))
    return world


def states(world) -> dict[str, str]:
    lines = world.guest.run([XL, "list"], check=True).stdout.splitlines()[1:]
    return {line.split()[0]: line.split()[4] for line in lines}


def assert_all_running(world) -> None:
    assert not [name for name, state in states(world).items() if "p" in state], states(world)
    assert world.guest.run(["test", "-e", "/run/xenlvm/xenvm.paused"]).rc == 1


def xl_calls(world) -> list[tuple[int, str, str]]:
    """(time ns, start|end, 'verb target') for every xl pause/unpause."""
    calls = []
    for line in world.guest.read("/run/fake-xl/calls.log").splitlines():
        fields = line.split()
        if fields[4:5] == ["xl"] and fields[5] in ("pause", "unpause"):
            calls.append((int(fields[0]), fields[2], " ".join(fields[5:7])))
    return calls


def lvcreate_times(world) -> tuple[int, int]:
    start = end = 0
    for line in world.guest.read("/run/faults/calls.log").splitlines():
        fields = line.split()
        if fields[2] == "lvcreate":
            if fields[1] == "start":
                start = int(fields[0])
            else:
                end = int(fields[0])
    return start, end


def test_domains_are_paused_exactly_while_lvcreate_runs(xen):
    pre = xen.pre()
    assert pre.rc == 0, pre
    calls = xl_calls(xen)
    pauses_done = [t for t, event, what in calls if event == "end" and what.startswith("pause ")]
    unpauses_started = [t for t, event, what in calls if event == "start" and what.startswith("unpause ")]
    assert sorted(w for _, e, w in calls if e == "start") == ["pause vm1", "pause vm2", "unpause vm1",
                                                              "unpause vm2"]
    lv_start, lv_end = lvcreate_times(xen)
    assert max(pauses_done) < lv_start < lv_end < min(unpauses_started)
    assert_all_running(xen)
    window = re.search(r"pause window: (\d+) ms \(domains vm1, vm2; (\d+) ms from xl pause returning to "
                       r"xl unpause starting\)", xen.log())
    assert window, xen.log()
    # xenlvm's own part lies inside the whole window and holds the lvcreate (both in ms)
    assert (lv_end - lv_start) // 1_000_000 <= int(window.group(2)) <= int(window.group(1))
    assert "/mnt/vmbackup" in xen.mounts()
    assert xen.post().rc == 0


def test_mount_happens_after_the_pause_window(xen):
    assert xen.pre().rc == 0
    last_unpause = max(t for t, e, w in xl_calls(xen) if w.startswith("unpause "))
    mount_start = next(int(line.split()[0]) for line in xen.guest.read("/run/faults/calls.log").splitlines()
                       if line.split()[1:3] == ["start", "mount"])
    assert mount_start > last_unpause


def test_lvcreate_failing_while_paused_leaves_domains_running(xen):
    xen.inject("lvcreate", "fail 5")
    pre = xen.pre()
    assert pre.rc == 1, pre
    assert "injected failure" in pre.stderr
    assert_all_running(xen)
    assert_nothing_left(xen)


def test_sigterm_while_paused_leaves_domains_running_and_nothing_behind(xen):
    xen.inject("lvcreate", "sleep 3")
    pid = xen.guest.spawn(["/opt/sesam/bin/sesam/sbc_pre", *SESAM_ARGS], env={}, log="/run/pre.out")
    xen.wait_for("start lvcreate")
    assert "p" in states(xen)["vm1"]  # inside the pause window
    xen.guest.signal(pid, signal.SIGTERM)
    assert xen.guest.wait(pid) == 1
    assert "interrupted by SIGTERM" in xen.guest.read("/run/pre.out")
    assert_all_running(xen)
    assert_nothing_left(xen)


def test_hanging_xl_pause_is_timed_out_and_the_others_are_resumed(xen):
    xen.write_config(XEN_CONFIG.format(domains="[vm1, vm2]", extra="").replace("timeout: 20s", "timeout: 3s"))
    xen.guest.write("/run/fake-xl/inject", "hang pause vm2\n")
    pre = xen.pre()
    assert pre.rc == 1, pre
    assert "xl pause vm2 did not finish within 3 s" in pre.stderr
    assert_all_running(xen)
    assert_nothing_left(xen)


def test_unpause_failure_is_retried(xen):
    xen.guest.write("/run/fake-xl/inject", "fail unpause vm1 1\n")
    pre = xen.pre()
    assert pre.rc == 0, pre
    assert "still paused; resuming again" in pre.stderr
    assert_all_running(xen)
    assert xen.post().rc == 0


def test_domain_that_cannot_be_resumed_fails_pre_loudly_and_post_resumes_it(xen):
    xen.guest.write("/run/fake-xl/inject", "fail unpause vm1 20\n")
    pre = xen.pre()
    assert pre.rc == 1, pre
    assert "STILL PAUSED" in pre.stderr and "xl unpause vm1" in pre.stderr
    assert_nothing_left(xen)
    xen.guest.write("/run/fake-xl/inject", "")
    post = xen.post()
    assert post.rc == 0, post
    assert "resuming vm1" in post.stderr
    assert_all_running(xen)


def test_domains_left_paused_by_a_killed_pre_are_resumed_by_post(xen):
    xen.inject("lvcreate", "sleep 30")
    pid = xen.guest.spawn(["/opt/sesam/bin/sesam/sbc_pre", *SESAM_ARGS], env={})
    xen.wait_for("start lvcreate")
    xen.guest.signal(pid, signal.SIGKILL, group=True)
    xen.guest.wait(pid)
    assert "p" in states(xen)["vm1"] and "p" in states(xen)["vm2"]
    post = xen.post()
    assert post.rc == 0, post
    assert "killed while domains were paused" in post.stderr
    assert_all_running(xen)
    assert_nothing_left(xen)


def test_already_paused_domain_stays_paused(xen):
    xen.guest.run([XL, "pause", "vm2"], check=True)
    assert xen.pre().rc == 0
    assert "p" in states(xen)["vm2"] and "p" not in states(xen)["vm1"]
    assert not [w for _, _, w in xl_calls(xen) if w.endswith("vm2") and "pause" in w and w != "pause vm2"]
    assert xen.post().rc == 0


def test_auto_picks_exactly_the_domains_with_disks_on_the_volume(xen):
    xen.write_config(XEN_CONFIG.format(domains="auto", extra=""))
    pre = xen.pre()
    assert pre.rc == 0, pre
    paused = sorted(w for _, e, w in xl_calls(xen) if e == "start" and w.startswith("pause "))
    assert paused == ["pause vm1", "pause vm2"]
    assert "xen.domains auto: vm1, vm2" in pre.stdout
    assert xen.post().rc == 0


@pytest.mark.parametrize("missing, rc", [("warn", 0), ("fail", 1)])
def test_missing_domain_warns_or_fails_as_configured(xen, missing, rc):
    xen.write_config(XEN_CONFIG.format(domains="[vm1, gone]", extra=f"      missing: {missing}\n"))
    pre = xen.pre()
    assert pre.rc == rc, pre
    assert "domain 'gone' does not exist or is not running" in pre.stderr
    if rc:
        assert_nothing_left(xen)
        assert not xl_calls(xen)
    else:
        assert xen.post().rc == 0
    assert_all_running(xen)


def test_configuration_export_holds_what_xl_reported(xen):
    assert xen.pre().rc == 0
    exported = "/var/lib/xenlvm/xenvm/xen-config"
    for name in ("vm1", "vm2"):
        live = json.loads(xen.guest.run([XL, "list", "-l", name], check=True).stdout)[0]
        assert json.loads(xen.guest.read(f"{exported}/{name}.xl-list-l.json")) == live
    assert xen.guest.read(f"{exported}/vm1.cfg") == xen.guest.read("/etc/xen/vm1.cfg")
    assert xen.guest.run(["test", "-e", f"{exported}/vm3.cfg"]).rc == 1  # not a selected domain
    assert xen.post().rc == 0
