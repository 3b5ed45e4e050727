"""The admin's tools on real LVM: install-hooks with chaining, check, status, cleanup, dry runs,
the state and metrics files."""

from __future__ import annotations

import json

import pytest

from sandbox.world import DEFAULT_CONFIG, SESAM_ARGS
from tests.system.conftest import assert_nothing_left

pytestmark = pytest.mark.system

HOOKS = "/opt/sesam/bin/sesam"
OWN_PRE = "#!/bin/sh\necho \"own pre $*\" >> /run/own-hooks.log\nexit ${OWN_PRE_STATUS:-0}\n"
OWN_POST = "#!/bin/sh\necho \"own post $*\" >> /run/own-hooks.log\nexit 0\n"


def _install_own_hooks(world, pre: str = OWN_PRE) -> None:
    world.guest.run(["rm", "-f", f"{HOOKS}/sbc_pre", f"{HOOKS}/sbc_post"], check=True)
    world.guest.write(f"{HOOKS}/sbc_pre", pre, mode="0750")
    world.guest.write(f"{HOOKS}/sbc_post", OWN_POST, mode="0750")


def _fingerprint(world) -> str:
    return world.guest.sh(f"cd {HOOKS} && ls -l --time-style=+ . | sort && sha256sum *").stdout


def test_install_hooks_keeps_and_chains_an_existing_hook_and_uninstall_restores_it(world):
    _install_own_hooks(world)
    before = _fingerprint(world)
    assert world.xenlvm("install-hooks").rc == 0
    again = world.xenlvm("install-hooks")  # idempotent
    assert again.rc == 0, again
    listing = world.guest.run(["ls", HOOKS], check=True).stdout.split()
    assert sorted(listing) == ["sbc_post", "sbc_post.local", "sbc_pre", "sbc_pre.local"]

    assert world.pre().rc == 0
    assert world.post().rc == 0
    assert world.guest.read("/run/own-hooks.log").splitlines() == [
        f"own pre {' '.join(SESAM_ARGS)}", f"own post {' '.join(SESAM_ARGS)}"]
    log = world.log()
    assert log.index("run local hook") < log.index("run: lvcreate")  # pre: yours first
    assert log.rindex("run: lvremove") < log.rindex("run local hook")  # post: xenlvm's first
    assert_nothing_left(world)

    assert world.xenlvm("install-hooks", "--uninstall").rc == 0
    assert _fingerprint(world) == before


def test_failing_own_pre_hook_stops_xenlvm_pre_with_its_exit_status(world):
    _install_own_hooks(world, pre="#!/bin/sh\necho own pre failed >&2\nexit 3\n")
    assert world.xenlvm("install-hooks").rc == 0
    pre = world.pre()
    assert pre.rc == 3, pre
    assert "your own pre hook" in pre.stderr
    assert_nothing_left(world)


def test_install_hooks_refuses_when_both_hook_and_local_exist(world):
    _install_own_hooks(world)
    world.guest.write(f"{HOOKS}/sbc_pre.local", "#!/bin/sh\nexit 0\n", mode="0755")
    before = _fingerprint(world)
    done = world.xenlvm("install-hooks")
    assert done.rc == 1, done
    assert "will not overwrite" in done.stderr
    assert _fingerprint(world) == before


def test_check_passes_on_a_ready_host(world):
    done = world.xenlvm("check")
    assert done.rc == 0, done
    assert "all checks passed" in done.stdout
    assert "OK   [xenvm] space:" in done.stdout


@pytest.mark.parametrize("provoke, expected", [
    ("chmod 0664 /etc/xenlvm/config.yaml", "FAIL config: /etc/xenlvm/config.yaml is writable by its group"),
    ("rmdir /mnt/vmbackup", "FAIL [xenvm] mountpoint: /mnt/vmbackup does not exist"),
    ("lvcreate -q -y -L 8M -n vmbackup system", "FAIL [xenvm] snapshot name: an LV system/vmbackup exists"),
    ("lvcreate -q -y -l 100%FREE -n filler system",
     "FAIL [xenvm] space: the snapshot system/vmbackup needs 64.0 MiB"),
    ("rm /opt/sesam/bin/sesam/sbc_post", "FAIL hooks: /opt/sesam/bin/sesam/sbc_post is missing"),
    ("umount /srv/xenvm && lvchange -an system/xenvm", "FAIL [xenvm] origin: system/xenvm is not active"),
    ("sed -i 's#^settings:#settings:\\n  path: /bin#' /etc/xenlvm/config.yaml",
     "FAIL tools: not found on /bin: lvs"),
])
def test_check_reports_each_problem_with_what_to_do(world, provoke, expected):
    world.guest.sh(provoke)
    done = world.xenlvm("check")
    assert done.rc == 1, done
    assert expected in done.stdout
    assert "check(s) failed" in done.stdout


def test_a_config_writable_by_others_is_refused_by_the_hooks(world):
    world.guest.run(["chmod", "0666", "/etc/xenlvm/config.yaml"], check=True)
    pre = world.pre()
    assert pre.rc == 2, pre
    assert "writable by its group or by everyone" in pre.stderr and "chmod 600" in pre.stderr
    assert_nothing_left(world)


def _status(world) -> dict:
    """The status of the one volume of the default job, with the job's last runs."""
    done = world.xenlvm("status", "--json")
    assert done.rc == 0, done
    [report] = json.loads(done.stdout)
    [volume] = report["volumes"]
    return {**volume, "job": report["job"], "last_runs": report["last_runs"]}


def test_status_json_follows_a_whole_cycle(world):
    report = _status(world)
    assert report["job"] == "xenvm" and report["present"] is False

    assert world.pre().rc == 0
    report = _status(world)
    assert report["present"] and report["owned_by_xenlvm"] and report["valid"]
    assert report["mounted_at"] == ["/mnt/vmbackup"]
    assert report["created_by_run"].startswith("xenlvm_run_")
    assert report["stale"] is False and 0 <= report["age_seconds"] < 120
    assert report["last_runs"]["pre"]["ok"] is True

    world.guest.sh("head -c 83886080 /dev/urandom > /srv/xenvm/vm1/big; sync")
    report = _status(world)
    assert (report["valid"], report["invalid_cause"]) == (False, "overflow")
    assert "OVERFLOWED (invalid)" in world.xenlvm("status").stdout
    assert world.post().rc == 1
    report = _status(world)
    assert report["present"] is False
    assert report["last_runs"]["post"]["ok"] is False and report["last_runs"]["post"]["exit_code"] == 1
    assert "overflowed" in report["last_runs"]["post"]["message"]

    human = world.xenlvm("status")
    assert "no snapshot (nothing to clean up)" in human.stdout and "last post:" in human.stdout


def test_status_marks_an_old_snapshot_stale(world):
    world.write_config(DEFAULT_CONFIG.replace("lock_timeout: 5s", "lock_timeout: 5s\n  stale_after: 1s"))
    assert world.pre().rc == 0
    world.guest.run(["sleep", "2"])
    assert _status(world)["stale"] is True
    assert "STALE" in world.xenlvm("status").stdout


def test_cleanup_removes_only_tagged_leftovers(world):
    assert world.pre().rc == 0
    world.guest.run(["lvcreate", "-q", "-y", "-L", "8M", "-n", "other", "system"], check=True)
    done = world.xenlvm("cleanup")
    assert done.rc == 0, done
    assert set(world.lvs()) == {"xenvm", "other"}
    assert "/mnt/vmbackup" not in world.mounts()


def test_post_dry_run_changes_nothing_and_prints_the_commands(world):
    assert world.pre().rc == 0
    before = (_without_fill(world.lvs()), world.mounts())
    dry = world.hook("sbc_post", "--dry-run", *SESAM_ARGS)
    assert dry.rc == 0, dry
    assert "would run: umount /mnt/vmbackup" in dry.stderr
    assert "would run: lvremove --force --select lv_tags=xenlvm_job_xenvm system/vmbackup" in dry.stderr
    assert (_without_fill(world.lvs()), world.mounts()) == before


def _without_fill(lvs: dict) -> dict:
    """The LVs without data_percent: the kernel's own writes to the origin move the snapshot's
    fill at any time; the dry run must change everything else not at all."""
    return {name: {k: v for k, v in row.items() if k != "data_percent"} for name, row in lvs.items()}


def test_state_file_and_metrics_textfile_after_each_run(world):
    metrics = "lock_timeout: 5s\n  metrics_file: /var/lib/node_exporter/xenlvm.prom"
    world.write_config(DEFAULT_CONFIG.replace("lock_timeout: 5s", metrics))
    assert world.pre().rc == 0
    world.guest.sh("head -c 16777216 /dev/urandom > /srv/xenvm/vm1/new; sync")
    assert world.post().rc == 0
    metrics = world.guest.read("/var/lib/node_exporter/xenlvm.prom")
    assert 'xenlvm_last_run_success{job="xenvm",phase="pre"} 1' in metrics
    assert 'xenlvm_last_run_success{job="xenvm",phase="post"} 1' in metrics
    assert "# TYPE xenlvm_last_run_duration_seconds gauge" in metrics
    fill = next(line for line in metrics.splitlines() if line.startswith("xenlvm_snapshot_fill_ratio"))
    assert 0.2 < float(fill.split()[-1]) < 0.9  # 16M written into a 64M snapshot
    state = json.loads(world.guest.read("/var/lib/xenlvm/xenvm/state.json"))
    assert state["pre"]["ok"] and state["post"]["ok"]


def test_status_reports_an_inactive_snapshot_instead_of_crashing(world):
    # As after a reboot that does not activate the origin: lvs gives the snapshot no fill.
    assert world.pre().rc == 0
    world.guest.sh("umount /mnt/vmbackup && umount /srv/xenvm && lvchange -an system/xenvm")
    assert world.lvs()["vmbackup"]["data_percent"] == ""
    report = _status(world)
    assert report["present"] and report["owned_by_xenlvm"] and report["active"] is False
    assert report["fill_percent"] is None and report["valid"] is None and report["mounted_at"] == []
    human = world.xenlvm("status")
    assert human.rc == 0, human
    assert "fill unknown, INACTIVE (activate it with 'lvchange -ay'" in human.stdout
    assert "valid or not: unknown while inactive" in human.stdout
    assert "Traceback" not in human.stderr
