"""Hostile or broken input and faults between runs: the hooks never crash, never leave
anything behind, and always say what happened."""

from __future__ import annotations

import signal

import pytest

from tests.system.conftest import DEFAULT_CONFIG, SESAM_ARGS, assert_nothing_left

pytestmark = pytest.mark.system

HOOK = "/opt/sesam/bin/sesam/sbc_pre"


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


@pytest.mark.parametrize("tool", ["umount", "lvremove"])
def test_signal_during_post_is_reported_and_the_next_post_finishes(world, tool):
    world.write_config(DEFAULT_CONFIG, faults=True)
    assert world.pre().rc == 0
    world.inject(tool, "sleep 3")
    pid = world.guest.spawn(["/opt/sesam/bin/sesam/sbc_post", *SESAM_ARGS], env={}, log="/run/post.out")
    world.wait_for(f"start {tool} ")
    world.guest.signal(pid, signal.SIGTERM)
    assert world.guest.wait(pid) == 1
    assert "interrupted by SIGTERM" in world.guest.read("/run/post.out")
    world.inject(tool, "")
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


def test_killed_pre_followed_by_post_cleans_up(world):
    world.write_config(DEFAULT_CONFIG, faults=True)
    world.inject("mount", "sleep 30")
    pid = world.guest.spawn([HOOK, *SESAM_ARGS], env={})
    world.wait_for("start mount ")
    world.guest.signal(pid, signal.SIGKILL, group=True)
    world.guest.wait(pid)
    world.inject("mount", "")
    post = world.post()
    assert post.rc == 0, post
    assert_nothing_left(world)
