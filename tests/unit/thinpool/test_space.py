"""Thin pools: the thin_pool: settings, a pool's data and metadata fill as lvs reports them
(recorded on real dm-thin in the sandbox: a 64 MiB pool at 95% with a job's thin snapshot),
pre's refusal and estimate, and the pool guard's decision."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tests.unit.config.test_config import PATH, config_error, job_yaml
from tests.unit.fakes import Answer, FakeRunner
from tests.unit.host.test_lvm import recorded, recorded_with
from xenlvm.config.load import parse_config
from xenlvm.config.model import SnapshotSpec, ThinPoolSettings, Volume, parse_size
from xenlvm.host.lvm import LogicalVolume, Lvm, parse_volume_group
from xenlvm.thinpool.space import Action, check_thin_pools, decide

MiB = 1 << 20


def thin_job(extra: str = ""):
    text = job_yaml(volume="system/tvm", snapshot="tvmbackup", size="null", extra=extra)
    return parse_config(text, PATH).jobs["xenvm"]


def pool_vg(**changes: str):
    """The recorded VG: pool system/tpool (64 MiB, 4 MiB metadata) at 95.31%, its thin volume
    tvm and the job's thin snapshot tvmbackup; 1972 MiB free in the VG."""
    name = "thin_pool_95_percent"
    text = recorded_with(name, "tpool", **changes) if changes else recorded(name)
    return parse_volume_group(text, "system")


SPEC = SnapshotSpec(Volume("system", "tvm"), "tvmbackup", "/mnt/vmbackup")


def test_lvs_reports_a_thin_pools_data_and_metadata_fill_and_its_metadata_size():
    vg = pool_vg()
    pool = vg.lvs["tpool"]
    assert pool.is_thin_pool and not pool.is_thin
    assert (pool.size, pool.data_percent, pool.metadata_percent, pool.metadata_size) == \
        (64 * MiB, 95.31, 11.33, 4 * MiB)
    assert vg.lvs["tvmbackup"].pool == "tpool" and vg.lvs["tvmbackup"].metadata_percent is None
    assert vg.free == 1972 * MiB


def test_thin_pool_settings_default_for_every_job_without_the_section():
    job = thin_job()
    assert job.thin_pool == ThinPoolSettings(refuse_above=80, protect_at=90, extend=True, interval=2.0)


def test_thin_pool_settings_are_read_and_checked_together():
    job = thin_job("    thin_pool:\n      refuse_above: 70%\n      protect_at: 85%\n      extend: false\n"
                   "      interval: 500ms\n      expected_growth: 10%ORIGIN\n")
    assert job.thin_pool == ThinPoolSettings(70, 85, False, 0.5, parse_size("10%ORIGIN"))
    assert "protect_at (80%) must be above refuse_above (80%)" in config_error(
        job_yaml(extra="    thin_pool:\n      protect_at: 80%\n"))
    assert f"{PATH}:9: jobs.xenvm.thin_pool: protect_at must be below 100%" in config_error(
        job_yaml(extra="    thin_pool:\n      protect_at: 100%\n"))
    assert "jobs.xenvm.thin_pool.extend: 'yes please' is not true or false" in config_error(
        job_yaml(extra="    thin_pool:\n      extend: yes please\n"))


def test_pre_refuses_a_pool_at_95_percent_naming_it_how_full_and_what_to_do():
    [finding] = check_thin_pools(thin_job(), [SPEC], {"system": pool_vg()})
    assert finding.level == "fail"
    assert finding.message.startswith("thin pool system/tpool is 95.3% full (data; data 95.3%, metadata "
                                      "11.3%), at or above refuse_above 80% of job 'xenvm'")
    assert "'lvextend -L +SIZE system/tpool'" in finding.message


def test_pre_refuses_a_pool_whose_metadata_is_nearly_full_and_says_how_to_grow_it():
    [finding] = check_thin_pools(thin_job(), [SPEC], {"system": pool_vg(data_percent="10.00",
                                                                        metadata_percent="85.00")})
    assert finding.level == "fail" and "85.0% full (metadata;" in finding.message
    assert "'lvextend --poolmetadatasize +SIZE system/tpool'" in finding.message


def test_pre_warns_when_the_pool_could_not_absorb_what_the_backup_may_need():
    vg = pool_vg(data_percent="50.00", vg_free="0")
    [finding] = check_thin_pools(thin_job(), [SPEC], {"system": vg})
    assert finding.level == "warn"
    assert ("system/tvmbackup may take up to 256.0 MiB from thin pool system/tpool if the VMs overwrite "
            "that much during the backup, but it has 32.0 MiB free plus 0 B free in VG system"
            ) in finding.message
    # With room in the VG for the guard to grow the pool, or a smaller estimate: fine.
    roomy = {"system": pool_vg(data_percent="50.00")}
    assert [f.level for f in check_thin_pools(thin_job(), [SPEC], roomy)] == ["ok"]
    small = thin_job("    thin_pool:\n      expected_growth: 10%ORIGIN\n")
    assert [f.level for f in check_thin_pools(small, [SPEC], {"system": vg})] == ["ok"]


def test_classic_snapshots_and_thick_origins_are_no_pool_matter():
    classic = dataclasses.replace(SPEC, size=parse_size("64M"))
    assert check_thin_pools(thin_job(), [classic], {"system": pool_vg()}) == []


SETTINGS = ThinPoolSettings()


def test_the_guard_does_nothing_below_protect_at():
    vg = pool_vg(data_percent="89.99")
    assert decide(vg.lvs["tpool"], vg, SETTINGS) == []


def lvextend(pool: LogicalVolume, action: Action) -> list[str]:
    """The lvextend the guard runs for action (xenlvm.thinpool.guard: Lvm.extend_pool)."""
    runner = FakeRunner().on("lvextend", Answer())
    Lvm(runner).extend_pool(pool, action.new_size, metadata=action.kind == "extend-metadata")
    return runner.argvs[0]


def test_the_guard_extends_the_pool_data_from_the_vgs_free_space_back_under_refuse_above():
    vg = pool_vg()
    [action] = decide(vg.lvs["tpool"], vg, SETTINGS)
    assert (action.kind, action.old_size) == ("extend-data", 64 * MiB)
    assert action.new_size * 80 // 100 >= 64 * MiB * 0.9531 and action.new_size % (4 * MiB) == 0
    assert lvextend(vg.lvs["tpool"], action) == ["lvextend", "--size", f"{action.new_size}b", "system/tpool"]


def test_the_guard_extends_the_metadata_with_poolmetadatasize():
    vg = pool_vg(data_percent="10.00", metadata_percent="92.00")
    [action] = decide(vg.lvs["tpool"], vg, SETTINGS)
    assert action.kind == "extend-metadata" and action.new_size > 4 * MiB
    assert lvextend(vg.lvs["tpool"], action) == ["lvextend", "--poolmetadatasize", f"{action.new_size}b",
                                                 "system/tpool"]


def test_the_guard_grows_by_less_when_the_vg_has_only_enough_to_get_under_refuse_above():
    vg = pool_vg(vg_free=str(16 * MiB))
    [action] = decide(vg.lvs["tpool"], vg, SETTINGS)
    assert action.kind == "extend-data" and action.new_size == 80 * MiB  # 61 MiB used: 76%


def test_the_guard_drops_the_snapshots_when_the_vg_has_no_room_or_extend_is_off():
    vg = pool_vg(vg_free=str(4 * MiB))
    [action] = decide(vg.lvs["tpool"], vg, SETTINGS)
    assert action.kind == "drop"
    assert action.reason == ("its data is 95.3% full and growing its data from 64.0 MiB to 80.0 MiB needs "
                             "16.0 MiB, and VG system has 4.0 MiB free")
    [off] = decide(pool_vg().lvs["tpool"], pool_vg(), dataclasses.replace(SETTINGS, extend=False))
    assert off.kind == "drop" and off.reason == "its data is 95.3% full and thin_pool: extend is false"


@pytest.mark.parametrize("free_mib", [0, 4])
def test_a_metadata_extension_needs_room_for_the_spare_too(free_mib):
    vg = pool_vg(data_percent="10.00", metadata_percent="95.00", vg_free=str(free_mib * MiB))
    assert [a.kind for a in decide(vg.lvs["tpool"], vg, SETTINGS)] == ["drop"]


def test_the_recorded_report_is_what_lvm_printed():
    rows = json.loads(recorded("thin_pool_95_percent"))["report"][0]["lv"]
    assert [r["lv_name"] for r in rows] == ["tpool", "tvm", "tvmbackup"]


def test_a_fill_before_a_growth_is_rescaled_to_the_pools_size_now():
    from xenlvm.thinpool.space import PoolFill, lead, rescaled

    before = rescaled(PoolFill(90.0, 10.0), (100, 8), (120, 8))
    assert before == PoolFill(75.0, 10.0)
    assert lead(before, PoolFill(88.0, 10.0), 2.0, 2.0) == PoolFill(pytest.approx(13.0), 0.0)


def chained_disks_job(extra: str = ""):
    text = ("jobs:\n  disks:\n    mountpoint: /mnt/vmdisks\n    vmdisks:\n      domains: [vm]\n"
            "      size: 16M\n      expose: image-copy\n      image_dir: /srv/images\n"
            "      incremental: thin\n" + extra)
    return parse_config(text, PATH).jobs["disks"]


DISK_SPEC = SnapshotSpec(Volume("system", "tvm"), "tvm.xenlvm", "/mnt/vmdisks/vm/xvda")


def test_a_chained_disks_snapshot_counts_at_its_origins_size_being_kept_until_the_next_run():
    vg = pool_vg(data_percent="50.00", vg_free="0")
    growth = "    thin_pool:\n      expected_growth: 10%ORIGIN\n"
    plain = parse_config("jobs:\n  disks:\n    mountpoint: /mnt/vmdisks\n    vmdisks:\n      domains: [vm]\n"
                         "      size: 16M\n" + growth, PATH).jobs["disks"]
    assert [f.level for f in check_thin_pools(plain, [DISK_SPEC], {"system": vg})] == ["ok"]
    chained = chained_disks_job(growth)
    assert [f.level for f in check_thin_pools(chained, [DISK_SPEC], {"system": vg})] == ["ok"]  # not kept
    [finding] = check_thin_pools(chained, [DISK_SPEC], {"system": vg}, kept={DISK_SPEC})
    assert finding.level == "warn"
    assert finding.message.startswith("the snapshot(s) system/tvm.xenlvm (kept as a base until the next run) "
                                      "may take up to 256.0 MiB from thin pool system/tpool")


def test_a_refused_pool_names_the_jobs_bases_in_it_and_how_to_drop_them():
    vg = pool_vg()
    held = dataclasses.replace(vg.lvs["tvmbackup"], name="tvm.xenlvm-base.20261206T010000_4",
                               tags=frozenset({"xenlvm", "xenlvm_job_disks", "xenlvm_base"}))
    vg.lvs[held.name] = held
    [finding] = check_thin_pools(chained_disks_job(), [DISK_SPEC], {"system": vg})
    assert finding.level == "fail"
    assert finding.message.endswith(
        "The job's chain bases system/tvm.xenlvm-base.20261206T010000_4 hold every block their disks were "
        "overwritten in since their run: 'xenlvm cleanup --job disks --bases' drops them (the next run then "
        "writes full images)")
    assert "chain bases" not in check_thin_pools(thin_job(), [SPEC], {"system": pool_vg()})[0].message
