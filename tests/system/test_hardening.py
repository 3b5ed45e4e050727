"""Hostile or broken input and faults between runs: the hooks never crash, never leave
anything behind, and always say what happened."""

from __future__ import annotations

import signal

import pytest

from sandbox.world import DEFAULT_CONFIG, POST_STEPS, PRE_STEPS
from tests.system.conftest import assert_lock_free, assert_nothing_left

pytestmark = pytest.mark.system


@pytest.mark.parametrize("args", [
    "",                                                    # no arguments at all
    '"" "" ""',                                            # empty ones
    '$(seq 1 3000)',                                       # very many
    '"$(head -c 100000 /dev/zero | tr "\\0" x)"',          # very long
    '"$(printf "\\377\\376task\\n")" "$(printf "a\\tb")"',  # not UTF-8, control characters
    "--unknown-option -x -- --job",                        # things that look like options
])
def test_sesam_arguments_of_any_shape_never_crash_the_hooks(world, args):
    for hook in ("sbc_pre", "sbc_post"):
        done = world.guest.run(["/bin/sh", "-c", f'exec /opt/sesam/bin/sesam/{hook} {args}'], env={})
        assert "Traceback" not in done.output, done
        assert done.rc == 0, done
        assert "nothing to do" in done.stdout
    assert_nothing_left(world)


def test_a_dangling_option_is_a_usage_error_not_a_crash(world):
    done = world.hook("sbc_pre", "xen_vm1", "--job")
    assert done.rc == 2, done
    assert "requires an argument" in done.stderr and "Traceback" not in done.output
    assert_nothing_left(world)


def test_stale_lock_file_of_a_dead_process_does_not_block(world):
    world.guest.write("/run/xenlvm/xenvm.lock", "999999\n", mode="0600")
    pre = world.pre()
    assert pre.rc == 0, pre
    assert "locked by another run" not in pre.output
    assert world.post().rc == 0


def test_snapshot_removed_behind_xenlvms_back_is_reported_and_post_succeeds(world):
    assert world.pre().rc == 0
    world.guest.sh("umount /mnt/vmbackup && lvremove -q -f system/vmbackup")
    post = world.post()
    assert post.rc == 0, post
    assert "nothing to clean up: system/vmbackup does not exist" in post.stdout
    assert_nothing_left(world)


def test_mountpoint_replaced_by_a_symlink_between_runs_is_refused(world):
    assert world.pre().rc == 0 and world.post().rc == 0
    world.guest.sh("rmdir /mnt/vmbackup && mkdir -p /srv/elsewhere && ln -s /srv/elsewhere /mnt/vmbackup")
    pre = world.pre()
    assert pre.rc == 1, pre
    assert "symbolic link" in pre.stderr
    assert "vmbackup" not in world.lvs()


# What a post stopped while each of its commands runs leaves: (snapshot there, snapshot mounted).
# The running command finishes (a query is cut short), the next ones do not run.
LEFT_BY_STOPPED_POST = {"lvs": (True, True), "umount": (True, False), "lvremove": (False, False)}


def _snapshot_state(world) -> tuple[bool, bool]:
    return "vmbackup" in world.lvs(), "/mnt/vmbackup" in world.mounts()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_post_is_reported_and_the_next_post_finishes(world, signum):
    """post is interrupted at each of its commands in turn, each run taking up where the last
    one stopped; every interrupted run exits 1 and says why; the last post finishes the cleanup."""
    world.write_config(DEFAULT_CONFIG, faults=True)
    assert world.pre().rc == 0
    for step in POST_STEPS:
        output = world.interrupt_at("sbc_post", step, signum)
        assert f"interrupted by {signal.Signals(signum).name}" in output, (step, output)
        assert _snapshot_state(world) == LEFT_BY_STOPPED_POST[step], step
        assert_lock_free(world)
    world.reset_faults()
    post = world.post()
    assert post.rc == 0, post
    assert_nothing_left(world)


@pytest.mark.parametrize("tool", ["lvs", "umount", "lvremove"])
def test_post_fails_clearly_when_a_command_fails_and_a_retry_cleans_up(world, tool):
    world.write_config(DEFAULT_CONFIG, faults=True)
    assert world.pre().rc == 0
    world.inject(tool, "fail 5")
    post = world.post()
    assert post.rc == 1, post
    assert "injected failure" in post.stderr
    world.inject(tool, "")
    assert world.post().rc == 0
    assert_nothing_left(world)


def _kill_at(world, hook: str, step: str) -> int:
    """Start hook, kill it with -9 while step runs and let the command it started finish, as after
    a crash of the hook alone (the commands are its children, not killed with it). Returns its pid."""
    pid = world.start_held(hook, step)
    world.guest.signal(pid, signal.SIGKILL)
    assert world.guest.wait(pid) == -signal.SIGKILL
    world.release(step)
    world.wait_for(f"end {step} ")
    world.reset_faults()
    return pid


# What a pre killed while each of its commands runs leaves, once that command has finished:
# (snapshot there, snapshot mounted).
LEFT_BY_KILLED_PRE = {"lvs": (False, False), "blkid": (False, False), "lvcreate": (True, False),
                      "mount": (True, True)}


def test_killed_pre_followed_by_post_cleans_up(world):
    """pre killed with -9 at each of its commands in turn, each time followed by post."""
    world.write_config(DEFAULT_CONFIG, faults=True)
    for step in PRE_STEPS:
        if step == "blkid":  # pre runs it only for an origin that is not mounted
            world.guest.run(["umount", "/srv/xenvm"], check=True)
        _kill_at(world, "sbc_pre", step)
        assert _snapshot_state(world) == LEFT_BY_KILLED_PRE[step], step
        post = world.post()
        assert post.rc == 0, (step, post)
        assert_nothing_left(world)
        assert_lock_free(world)


def test_killed_pre_is_recovered_by_the_next_pre(world):
    """pre killed with -9 at each of its commands in turn, each run starting from what the last
    one left: to reach its step, a pre must first remove the snapshot a killed one left (else
    its lvcreate fails). The last pre replaces what is left with one fresh snapshot."""
    world.write_config(DEFAULT_CONFIG, faults=True)
    world.guest.run(["umount", "/srv/xenvm"], check=True)  # so that pre runs blkid too
    killed = []
    for step in PRE_STEPS:
        killed.append(_kill_at(world, "sbc_pre", step))
        assert _snapshot_state(world) == LEFT_BY_KILLED_PRE[step], step
    pre = world.pre()
    assert pre.rc == 0, pre
    assert "left over by an earlier run" in pre.stderr
    ours = {name: row for name, row in world.lvs().items() if "xenlvm" in row["lv_tags"].split(",")}
    assert list(ours) == ["vmbackup"], ours
    assert not [t for t in ours["vmbackup"]["lv_tags"].split(",") for pid in killed if t.endswith(f"_{pid}")]
    assert "/mnt/vmbackup" in world.mounts()
    assert world.post().rc == 0
    assert_nothing_left(world)
    assert_lock_free(world)


def test_post_killed_at_any_step_is_finished_by_the_next_post(world):
    """post is killed with -9 at each of its commands in turn, each run taking up where the last
    one stopped; the last post finishes the cleanup."""
    world.write_config(DEFAULT_CONFIG, faults=True)
    assert world.pre().rc == 0
    for step in POST_STEPS:
        _kill_at(world, "sbc_post", step)
        assert _snapshot_state(world) == LEFT_BY_STOPPED_POST[step], step
        assert_lock_free(world)
    post = world.post()
    assert post.rc == 0, post
    assert_nothing_left(world)
