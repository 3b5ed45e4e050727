"""VMs on logical volumes of their own: each VM disk is snapshotted in the pause window and its
filesystems (or an image of it) exposed below the job's mountpoint; post tears all of it down.

The disks (guest/vmdisks.sh): vm2/xvda MBR with ext4, swap, XFS; vm3/xvda GPT with ext4 and a
guest LVM physical volume; vm3/xvdb a bare ext4 filesystem.
"""

from __future__ import annotations

import json
import signal

import pytest

from sandbox.world import SESAM_ARGS, XEN_SETTINGS, XL
from tests.system.conftest import TESTS
from tests.system.test_xen import lvcreate_times, states, xl_calls

pytestmark = pytest.mark.system

TREE = "/mnt/vmbackup"
VMDISK_CONFIG = XEN_SETTINGS + """\
  disks:
    mountpoint: /mnt/vmbackup
    tasks: [xen_vm1]
    unmount_timeout: 4s
    vmdisks:
      domains: [vm2, vm3]
      size: 16M
{extra}    xen:
      domains: auto
      timeout: 20s
"""
MARKERS = {  # what the backup finds, path below the tree -> content
    "vm2/xvda/p1/marker": "vm2 xvda p1",
    "vm2/xvda/p3/marker": "vm2 xvda p3",
    "vm3/xvda/p1/marker": "vm3 xvda p1",
    "vm3/xvdb/marker": "vm3 xvdb",
}


@pytest.fixture
def disks(world):
    world.guest.run([TESTS / "guest" / "vmdisks.sh"], check=True)
    world.write_config(VMDISK_CONFIG.format(extra=""))
    return world


def tree_mounts(world) -> dict[str, str]:
    """Mount point -> 'source fstype options' for the tree and everything below it."""
    table = {}
    for line in world.guest.read("/proc/mounts").splitlines():
        source, mountpoint, fstype, options = line.split()[:4]
        if mountpoint == TREE or mountpoint.startswith(TREE + "/"):
            table[mountpoint] = f"{source} {fstype} {options}"
    return table


def loop_devices(world) -> list[str]:
    return world.guest.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
                           check=True).stdout.splitlines()


def assert_disks_clean(world) -> None:
    """No snapshot, loop device, mount or tree left, and every domain running."""
    lvs = world.lvs()
    assert not [name for name in lvs if name.endswith(".xenlvm")], lvs
    assert not [name for name, row in lvs.items() if "xenlvm" in row["lv_tags"].split(",")]
    assert loop_devices(world) == []
    assert tree_mounts(world) == {}
    assert world.guest.run(["ls", "-A", TREE], check=True).stdout == ""  # the host's own directory
    states = world.guest.run([XL, "list"], check=True).stdout.splitlines()[1:]
    assert not [line for line in states if "p" in line.split()[4]], states


def test_every_filesystem_of_every_disk_is_exposed_read_only_as_of_the_snapshot(disks):
    pre = disks.pre()
    assert pre.rc == 0, pre
    mounts = tree_mounts(disks)
    assert mounts.pop(TREE).startswith("xenlvm-disks tmpfs ")
    assert sorted(mounts) == sorted(f"{TREE}/{path.rsplit('/', 1)[0]}" for path in MARKERS)
    for options in (m.split()[2].split(",") for m in mounts.values()):
        assert {"ro", "nodev", "nosuid", "noexec"} <= set(options), mounts
    assert mounts[f"{TREE}/vm2/xvda/p3"].split()[1:2] == ["xfs"]
    # The VM goes on writing: its disk changes, the backup still sees the snapshot's state.
    disks.guest.sh("loop=$(losetup -f --show -o 1048576 --sizelimit 16777216 /dev/system/vm2-disk)\n"
                   'mkdir -p /run/vm2 && mount "$loop" /run/vm2 && echo changed > /run/vm2/marker\n'
                   'umount /run/vm2 && losetup --detach "$loop" && sync')
    for path, content in MARKERS.items():
        assert disks.guest.read(f"{TREE}/{path}").strip() == content
    # Swap and the guest's LVM never became devices on the host; both were reported.
    assert disks.guest.run(["test", "-e", f"{TREE}/vm2/xvda/p2"]).rc == 1
    assert disks.guest.run(["test", "-e", f"{TREE}/vm3/xvda/p2"]).rc == 1
    assert "vm2/xvda partition 2 is swap" in pre.stdout
    assert "vm3/xvda partition 2 holds guest LVM" in pre.stderr
    assert len(loop_devices(disks)) == 3  # vm2 p1, vm2 p3, vm3 p1: nothing for swap or LVM
    pvs = disks.guest.run(["pvs", "--noheadings", "-o", "pv_name"], check=True).stdout.split()
    assert pvs == ["/dev/ubda"]
    # Each domain was paused only while its own disks were snapshotted (xen.window per-domain,
    # the default with vmdisks), one domain after the other.
    assert pause_windows(disks) == {"vm2": ["system/vm2-disk"],
                                    "vm3": ["system/vm3-disk", "system/vm3-data"]}

    post = disks.post()
    assert post.rc == 0, post
    assert_disks_clean(disks)
    assert disks.post().rc == 0  # post twice, or without pre, is harmless


def lvcreates(world) -> list[tuple[int, int, str]]:
    """(start ns, end ns, origin) of every lvcreate, from the fault wrapper's log (xenlvm runs
    them one after another)."""
    found: list[tuple[int, int, str]] = []
    started: tuple[int, str] | None = None
    for line in world.fault_calls():
        fields = line.split()
        if fields[2:3] == ["lvcreate"] and fields[1] == "start":
            started = (int(fields[0]), fields[-1])
        elif fields[2:3] == ["lvcreate"] and fields[1] == "end" and started:
            found.append((started[0], int(fields[0]), started[1]))
            started = None
    return found


def pause_windows(world) -> dict[str, list[str]]:
    """Domain -> the origins snapshotted while it was paused; checked on the way: each window
    lies between the end of its xl pause and the start of its xl unpause, windows do not
    overlap, and every lvcreate lies in exactly one window."""
    calls = xl_calls(world)
    windows = {}
    for _, event, call in calls:
        verb, name = call.split()
        if verb == "pause" and event == "end":
            windows[name] = (max(t for t, e, c in calls if e == "end" and c == call),
                             min(t for t, e, c in calls if e == "start" and c == f"unpause {name}"))
    spans = sorted(windows.values())
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:])), windows  # one window after the other
    inside = {name: [origin for start, end, origin in lvcreates(world) if paused < start < end < resumed]
              for name, (paused, resumed) in windows.items()}
    every = sorted(origin for *_, origin in lvcreates(world))
    assert sorted(origin for origins in inside.values() for origin in origins) == every
    return inside


def start_pre_held_in_the_second_window(world) -> int:
    """Start pre and wait until vm3's window holds its first lvcreate (vm2's window is over)."""
    world.inject("lvcreate", "hold-match vm3-disk")
    pid = world.guest.spawn(["/opt/sesam/bin/sesam/sbc_pre", *SESAM_ARGS], env={}, log="/run/pre.out")
    world.wait_for("system/vm3-disk")
    assert {name: "p" in state for name, state in states(world).items() if name != "Domain-0"} == {
        "vm2": False, "vm3": True}
    return pid


def test_sigterm_in_the_second_window_resumes_it_and_undoes_the_first_windows_snapshot(disks):
    pid = start_pre_held_in_the_second_window(disks)
    disks.guest.signal(pid, signal.SIGTERM)
    disks.guest.write("/run/faults/lvcreate.go", "")  # lvcreate finishes, then the signal acts
    assert disks.guest.wait(pid) == 1
    assert "interrupted by SIGTERM" in disks.guest.read("/run/pre.out")
    assert_disks_clean(disks)


def test_kill_9_in_the_second_window_leaves_a_record_of_that_window_only_and_post_resumes_it(disks):
    pid = start_pre_held_in_the_second_window(disks)
    assert json.loads(disks.guest.read("/run/xenlvm/disks.paused")) == ["vm3"]
    disks.guest.signal(pid, signal.SIGKILL, group=True)
    disks.guest.wait(pid)
    disks.reset_faults()
    post = disks.post()
    assert post.rc == 0, post
    assert "resuming vm3" in post.stderr + post.stdout + disks.log()
    assert_disks_clean(disks)


def test_together_pauses_both_domains_for_all_three_disks(disks):
    together = VMDISK_CONFIG.format(extra="").replace("timeout: 20s", "timeout: 20s\n      window: together")
    disks.write_config(together)
    assert disks.pre().rc == 0
    calls = xl_calls(disks)
    paused = max(t for t, phase, call in calls if phase == "end" and call.startswith("pause"))
    resumed = min(t for t, phase, call in calls if phase == "start" and call.startswith("unpause"))
    first, last = lvcreate_times(disks)
    assert {call for _, _, call in calls} == {"pause vm2", "pause vm3", "unpause vm2", "unpause vm3"}
    assert paused < first and last < resumed
    assert len(lvcreates(disks)) == 3
    assert disks.post().rc == 0


def test_a_partition_the_kernel_will_not_mount_leaves_every_other_disk_exposed_and_post_says_partial(disks):
    # One guest's filesystem must not cost every VM its backup (issue 23): the others are
    # exposed, that disk is served as its raw image, the tree says why, post exits 3.
    # mount calls: 1 the tree, 2 vm2 p1, 3 vm2 p3, 4 vm3 p1 (the third partition)
    disks.inject("mount", "fail-call 4 32")
    pre = disks.pre()
    assert pre.rc == 0, pre
    assert "not exposed as files: vm3/xvda: partition 1: could not mount the snapshot /dev/loop" in pre.stderr
    mounts = tree_mounts(disks)
    assert sorted(mounts) == [TREE, f"{TREE}/vm2/xvda/p1", f"{TREE}/vm2/xvda/p3", f"{TREE}/vm3/xvda.img",
                              f"{TREE}/vm3/xvdb"]
    assert mounts[f"{TREE}/vm3/xvda.img"].split()[1] == "fuse"
    for path, content in MARKERS.items():
        if not path.startswith("vm3/xvda/"):
            assert disks.guest.read(f"{TREE}/{path}").strip() == content
    same = disks.guest.run(["cmp", "/dev/system/vm3-disk", f"{TREE}/vm3/xvda.img"])
    assert same.rc == 0, same
    note = disks.guest.read(f"{TREE}/vm3/xvda.NOT-EXPOSED.txt")
    assert "partition 1: could not mount" in note and "injected failure" in note
    assert len(loop_devices(disks)) == 2  # vm2 p1 and p3: the refused one's was detached
    disks.reset_faults()
    post = disks.post()
    assert post.rc == 3, post
    assert "the backup of job disks is partial: not exposed as files: vm3/xvda" in post.stderr
    assert_disks_clean(disks)
    assert disks.post().rc == 0  # told once: a second post has nothing left to say


def kill_pre_while_exposing(world) -> None:
    """Start pre and kill -9 it (and its commands) once vm2 p1 is mounted and the loop device of
    vm2 p3 exists, as the mount of vm2 p3 starts."""
    world.reset_faults()
    world.inject("mount", "hold-match vm2/xvda/p3")
    pid = world.guest.spawn(["/opt/sesam/bin/sesam/sbc_pre", *SESAM_ARGS], env={}, log="/run/killed-pre.out")
    try:
        world.wait_for("vm2/xvda/p3")
    except Exception:
        print(world.guest.read("/run/killed-pre.out"), world.fault_calls(), world.log()[-3000:])
        raise
    world.guest.signal(pid, signal.SIGKILL, group=True)
    world.guest.wait(pid)
    assert len(loop_devices(world)) == 2 and f"{TREE}/vm2/xvda/p1" in tree_mounts(world)
    world.reset_faults()


def test_a_killed_pre_is_cleaned_up_by_post_and_recovered_by_the_next_pre(disks):
    disks.write_config(VMDISK_CONFIG.format(extra="").replace("[vm2, vm3]", "[vm2]"))  # one disk will do
    kill_pre_while_exposing(disks)
    post = disks.post()
    assert post.rc == 0, post
    assert_disks_clean(disks)

    kill_pre_while_exposing(disks)
    pre = disks.pre()
    assert pre.rc == 0, pre
    assert "left over by an earlier run" in pre.stderr
    assert len(loop_devices(disks)) == 2
    for path, content in MARKERS.items():
        if path.startswith("vm2/"):
            assert disks.guest.read(f"{TREE}/{path}").strip() == content
    assert disks.post().rc == 0
    assert_disks_clean(disks)


def test_expose_image_copy_gives_each_disk_as_a_read_only_copied_image_file(disks):
    disks.guest.sh("mkdir -p /var/tmp/images")
    copy = "      expose: image-copy\n      image_dir: /var/tmp/images\n"
    disks.write_config(VMDISK_CONFIG.format(extra=copy))
    checksums = disks.guest.sh("sha256sum /dev/system/vm2-disk /dev/system/vm3-disk /dev/system/vm3-data"
                               " | cut -d' ' -f1").stdout.split()
    pre = disks.pre()
    assert pre.rc == 0, pre
    images = [f"{TREE}/vm2/xvda.img", f"{TREE}/vm3/xvda.img", f"{TREE}/vm3/xvdb.img"]
    disks.guest.sh("echo changed | dd of=/dev/system/vm2-disk bs=512 seek=4000 conv=notrunc 2>/dev/null")
    found = disks.guest.run(["sha256sum", *images], check=True).stdout.split()[::2]
    assert found == checksums
    for image in images:
        assert disks.guest.run(["test", "-f", image, "-a", "!", "-L", image]).rc == 0
        assert disks.guest.sh(f"echo x >> {image}", check=False).rc != 0  # read-only
    assert loop_devices(disks) == []
    post = disks.post()
    assert post.rc == 0, post
    assert_disks_clean(disks)
    assert disks.guest.run(["ls", "-A", "/var/tmp/images"], check=True).stdout == ""


def test_a_domain_that_is_not_running_is_reported_and_the_others_backed_up(disks):
    disks.guest.run([XL, "fake-destroy", "vm3"], check=True)
    check = disks.xenlvm("check")
    assert "OK   [disks] vmdisks: VM disks to snapshot: vm2/xvda (system/vm2-disk)" in check.stdout, check
    pre = disks.pre()
    assert pre.rc == 0, pre
    assert "domain 'vm3' does not exist or is not running" in pre.stderr
    assert sorted(tree_mounts(disks)) == [TREE, f"{TREE}/vm2/xvda/p1", f"{TREE}/vm2/xvda/p3"]
    status = disks.xenlvm("status")
    # where the disk really is exposed: its filesystems' mounts, through its loop devices (issue
    # 24: status said every VM disk snapshot was mounted at the job's mountpoint)
    assert "system/vm2-disk -> system/vm2-disk.xenlvm (VM disk): snapshot present, xenlvm's" \
        in status.stdout, status
    assert f"    exposed at: {TREE}/vm2/xvda/p1, {TREE}/vm2/xvda/p3\n" in status.stdout, status
    assert disks.post().rc == 0
    assert_disks_clean(disks)


def test_a_job_with_a_volume_and_vm_disks_exposes_both_and_post_asks_lvs_once(disks):
    volume = ("    volumes:\n      - volume: system/xenvm\n        snapshot: vmbackup\n        size: 64M\n"
              "        name: files\n")
    disks.write_config(VMDISK_CONFIG.format(extra="").replace("    vmdisks:\n", volume + "    vmdisks:\n", 1))
    pre = disks.pre()
    assert pre.rc == 0, pre
    assert disks.guest.read(f"{TREE}/files/vm1/vm1.cfg").startswith('name = "vm1"')
    assert disks.guest.read(f"{TREE}/vm3/xvdb/marker").strip() == MARKERS["vm3/xvdb/marker"]

    disks.reset_faults()  # from here on, the calls log is post's
    post = disks.post()
    assert post.rc == 0, post
    queries = [call for call in disks.fault_calls() if " start lvs " in call]
    assert len(queries) == 1, queries  # one lvs of all VGs serves the volume and the VM disks
    assert "vmbackup" not in disks.lvs()
    assert_disks_clean(disks)


def test_pre_writes_each_disks_layout_and_each_domains_on_the_tmpfs(disks):
    table = json.loads(disks.guest.run(["sfdisk", "--json", "/dev/system/vm2-disk"], check=True).stdout)
    pre = disks.pre()
    assert pre.rc == 0, pre
    vm2 = json.loads(disks.guest.read(f"{TREE}/vm2/xvda/layout.json"))
    assert (vm2["format"], vm2["format_version"], vm2["domain"], vm2["disk"], vm2["origin"], vm2["size"]) == \
        ("xenlvm-disk-layout", 1, "vm2", "xvda", "system/vm2-disk", 64 << 20)
    assert vm2["table"]["label"] == "dos" and vm2["table"]["id"] == table["partitiontable"]["id"]
    assert [(p["number"], p["start"], p["size"], p["type"]) for p in vm2["table"]["partitions"]] == \
        [(1, 2048, 32768, "83"), (2, 34816, 8192, "82"), (3, 43008, 88064, "83")]
    ext4, swap, xfs = vm2["contents"]
    assert (ext4["type"], ext4["exposed_as"]) == ("ext4", "p1")
    assert ext4["mount_options"] == "ro,nodev,nosuid,noexec,errors=continue"
    assert (xfs["type"], xfs["exposed_as"]) == ("xfs", "p3")
    assert xfs["mount_options"] == "ro,nodev,nosuid,noexec,nouuid"
    assert (swap["type"], swap["exposed_as"], swap["reason"]) == ("swap", None, "swap") and swap["uuid"]
    probed = disks.guest.run(["blkid", "--probe", "--output", "value", "--match-tag", "UUID", "--offset",
                              str(2048 * 512), "--size", str(16 << 20), "/dev/system/vm2-disk"], check=True)
    assert ext4["uuid"] == probed.stdout.strip()
    vm3 = json.loads(disks.guest.read(f"{TREE}/vm3/xvda/layout.json"))
    assert vm3["table"]["label"] == "gpt" and all(p["uuid"] for p in vm3["table"]["partitions"])
    assert vm3["contents"][1]["reason"] == "guest-lvm" and vm3["contents"][1]["type"] == "LVM2_member"
    bare = json.loads(disks.guest.read(f"{TREE}/vm3/xvdb.layout.json"))
    assert bare["table"] is None and bare["contents"][0]["exposed_as"] == "."
    assert disks.guest.run(["test", "-e", f"{TREE}/vm3/xvdb/layout.json"]).rc == 1  # its own root: untouched
    domain = json.loads(disks.guest.read(f"{TREE}/vm3/layout.json"))
    assert domain["disks"] == {"xvda": "xvda/layout.json", "xvdb": "xvdb.layout.json"}
    assert domain["xl_list_l"]["config"]["c_info"]["name"] == "vm3"
    assert domain["exported_config"] == "/var/lib/xenlvm/disks/xen-config/vm3.xl-list-l.json"
    # On xenlvm's tmpfs: the mount that holds each layout file is the tree itself.
    found = disks.guest.run(["findmnt", "--noheadings", "--output", "TARGET", "--target",
                             f"{TREE}/vm2/xvda/layout.json"], check=True).stdout.strip()
    assert found == TREE
    assert disks.post().rc == 0
    assert_disks_clean(disks)


def test_a_disk_snapshot_renamed_out_of_xenlvms_naming_survives_pre_and_post(disks):
    # What an admin keeps of an earlier run: xenlvm's snapshot of vm2's disk, renamed
    # (lvrename keeps the tags). xenlvm proves a snapshot its own by name as well as tags.
    tags = ["xenlvm", "xenlvm_job_disks", "xenlvm_vmdisk", "xenlvm_run_20261206T010000_42"]
    disks.guest.run(["lvcreate", "-q", "-s", "-L", "16M", "-n", "vm2-disk.xenlvm",
                     *(f"--addtag={tag}" for tag in tags), "system/vm2-disk"], check=True)
    disks.guest.run(["lvrename", "-q", "system", "vm2-disk.xenlvm", "vm2-disk.keep-for-forensics"],
                    check=True)
    pre = disks.pre()
    assert pre.rc == 0, pre
    assert "left over by an earlier run" not in pre.stderr
    assert disks.guest.read(f"{TREE}/vm2/xvda/p1/marker").strip() == MARKERS["vm2/xvda/p1/marker"]
    status = disks.xenlvm("status", "--json")
    snapshots = [v["snapshot"] for job in json.loads(status.stdout) for v in job["volumes"]]
    assert "system/vm2-disk.xenlvm" in snapshots and "system/vm2-disk.keep-for-forensics" not in snapshots
    post = disks.post()
    assert post.rc == 0, post
    kept = disks.lvs()["vm2-disk.keep-for-forensics"]
    assert kept["origin"] == "vm2-disk" and set(tags) <= set(kept["lv_tags"].split(","))
    disks.guest.run(["lvremove", "-q", "-y", "system/vm2-disk.keep-for-forensics"], check=True)
    assert_disks_clean(disks)
