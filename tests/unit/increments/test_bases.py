"""The chains' bases (xenlvm/increments/bases.py): whether a disk's file is its full image or an
increment and why, what post does to keep a base and to drop the one before, and the
configuration that turns chains on."""

from __future__ import annotations

import dataclasses
import os

import pytest

from tests.unit.config.test_config import PATH, config_error
from tests.unit.fakes import Answer, FakeRunner
from xenlvm.config.load import parse_config
from xenlvm.core import ownership
from xenlvm.core.context import Context
from xenlvm.host.lvm import LogicalVolume, VolumeGroup
from xenlvm.increments import bases, record

MiB = 1 << 20
RUN1, RUN2, RUN3 = "20261206T010000_41", "20261207T010000_42", "20261208T010000_43"
SHA = bytes(range(32))
NO_LVS = '{"report": [{"lv": []}]}'  # lvs after a removal: the LV is gone


def config_text(extra: str = "      incremental: thin\n", expose: str = "image-copy") -> str:
    return ("settings:\n  state_dir: {state}\njobs:\n  disks:\n    mountpoint: /mnt/vmdisks\n    vmdisks:\n"
            f"      domains: [vm5]\n      size: 16M\n      expose: {expose}\n"
            f"      image_dir: /var/lib/xenlvm-images\n{extra}")


def chained_job(full_every: int = 7, state: str = "/var/lib/xenlvm"):
    text = config_text(f"      incremental: thin\n      full_every: {full_every}\n").format(state=state)
    return parse_config(text, PATH)


def lv(name: str, *, origin: str = "", tags: tuple[str, ...] = (), size: int = 16 * MiB, pool: str = "pool",
       attr: str = "Vwi---tz-k", active: bool = False) -> LogicalVolume:
    return LogicalVolume("system", name, attr, size, origin, pool, frozenset(tags), None, False, active,
                         None, None, "", "2026-12-06 01:00:00 +0000")


DISK = lv("vm5-disk", attr="Vwi-aotz--", active=True)


def base(run: str, depth: int = 0, *, job: str = "disks", name: str | None = None,
         **changes) -> LogicalVolume:
    tags = ("xenlvm", f"xenlvm_job_{job}", "xenlvm_vmdisk", "xenlvm_base", f"xenlvm_run_{run}",
            f"xenlvm_depth_{depth}", *((f"xenlvm_sha256_{SHA.hex()}",) if depth == 0 else ()))
    made = lv(name or f"vm5-disk.xenlvm-base.{run}", origin="vm5-disk", tags=tags)
    return dataclasses.replace(made, **changes)


def vg(*lvs: LogicalVolume) -> VolumeGroup:
    return VolumeGroup("system", 1 << 30, 4 << 30, 4 * MiB, {x.name: x for x in (DISK, *lvs)})


def plan(*lvs: LogicalVolume, full_every: int = 7, size: int = 16 * MiB) -> bases.Plan:
    job = chained_job(full_every).jobs["disks"]
    return bases.plan(job, DISK, vg(*lvs), size)


# ---------------------------------------------------------------------------------------------
# full image or increment


def test_a_disk_without_a_base_gets_its_full_image():
    chosen = plan()
    assert chosen.full and chosen.depth == 0
    assert chosen.reason == "no base: the disk's first run in a chain, or its base was removed"


def test_a_disk_with_its_base_gets_an_increment_over_it_one_deeper():
    chosen = plan(base(RUN1, 2))
    assert not chosen.full and chosen.base is not None and chosen.base.name.endswith(RUN1)
    assert chosen.depth == 3 and chosen.reason == ""


def test_of_two_bases_left_by_a_killed_post_the_newest_is_the_base():
    chosen = plan(base(RUN2, 1), base(RUN1, 0), base("20261206T010000_9", 4))
    assert chosen.base is not None and ownership.run_id_of(chosen.base) == RUN2 and chosen.depth == 2


def test_full_every_makes_the_run_after_the_full_image_and_n_minus_1_increments_a_full_image():
    assert plan(base(RUN1, 5), full_every=7).depth == 6
    chosen = plan(base(RUN1, 6), full_every=7)
    assert chosen.full and chosen.reason == ("vmdisks.full_every is 7: the chain has its full image and 6 "
                                             "increment(s)")
    assert plan(base(RUN1, 0), full_every=1).full  # a full image every run


def test_a_disk_resized_since_its_base_run_gets_its_full_image():
    chosen = plan(base(RUN1, 1), size=17 * MiB)
    assert chosen.full
    assert chosen.reason == (f"the disk was resized since its base run {RUN1} ({16 * MiB} bytes, "
                             f"now {17 * MiB})")


@pytest.mark.parametrize("changes", [{"pool": "otherpool"}, {"attr": "-wi-a-----", "pool": ""},
                                     {"snapshot_invalid": True}])
def test_a_base_that_cannot_be_compared_gives_the_full_image(changes):
    chosen = plan(base(RUN1, 1, **changes))
    assert chosen.full and chosen.reason.startswith("its base system/vm5-disk.xenlvm-base.") and \
        "is not usable" in chosen.reason


def test_a_base_without_its_depth_tag_gives_the_full_image():
    broken = base(RUN1, 1)
    tags = frozenset(t for t in broken.tags if not t.startswith("xenlvm_depth_"))
    broken = dataclasses.replace(broken, tags=tags)
    assert plan(broken).full and "depth unknown" in plan(broken).reason


def test_an_lv_named_like_a_base_without_the_jobs_tags_gives_the_full_image_and_is_named():
    foreign = lv(f"vm5-disk.xenlvm-base.{RUN1}", origin="vm5-disk", tags=("backup-of-admin",))
    other_job = base(RUN2, 1, job="other")
    chosen = plan(foreign, other_job)
    assert chosen.full
    assert chosen.reason == (f"no base of job disks: vm5-disk.xenlvm-base.{RUN1}, "
                             f"vm5-disk.xenlvm-base.{RUN2} is named like one but does not carry its tags "
                             "(another job's or somebody else's; left alone)")


# ---------------------------------------------------------------------------------------------
# post keeps the run's snapshot as the base


def snapshot(run: str, **changes) -> LogicalVolume:
    made = lv("vm5-disk.xenlvm", origin="vm5-disk", attr="Vwi-a-tz-k", active=True,
              tags=("xenlvm", "xenlvm_job_disks", "xenlvm_vmdisk", f"xenlvm_run_{run}"))
    return dataclasses.replace(made, **changes)


def entry(run: str, depth: int, sha: str | None = None) -> record.Exposed:
    kind = record.FULL if depth == 0 else record.INCREMENT
    return record.Exposed("vm5", "xvda", "system/vm5-disk", run, kind, f"/mnt/vmdisks/vm5/xvda.{run}.x",
                          depth, None if depth == 0 else RUN1, "", 1, sha)


def keep(tmp_path, entries, snapshots, sound=True, *, older=()):
    config = chained_job(state=str(tmp_path))
    job = config.jobs["disks"]
    record.write(str(tmp_path), "disks", RUN2, list(entries))
    runner = (FakeRunner().on("lvchange", Answer()).on("lvrename", Answer()).on("lvremove", Answer())
              .on("lvs", Answer(stdout=NO_LVS)))
    left = bases.keep_bases(Context(config, runner), job, snapshots, {"system": vg(*older)}, sound)
    return left, [list(call.argv) for call in runner.calls if call.kind == "change"]


def test_post_turns_a_recorded_snapshot_into_the_base_then_removes_the_base_before(tmp_path):
    left, argvs = keep(tmp_path, [entry(RUN2, 0, SHA.hex())], [snapshot(RUN2)], older=[base(RUN1, 3)])
    assert left == []
    assert argvs == [
        ["lvchange", "--addtag", "xenlvm_base", "--addtag", "xenlvm_depth_0", "--addtag",
         f"xenlvm_sha256_{SHA.hex()}", "system/vm5-disk.xenlvm"],
        ["lvrename", "system", "vm5-disk.xenlvm", f"vm5-disk.xenlvm-base.{RUN2}"],
        ["lvchange", "--activate", "n", f"system/vm5-disk.xenlvm-base.{RUN2}"],
        ["lvremove", "--force", "--select", "lv_tags=xenlvm_base && lv_tags=xenlvm_job_disks",
         f"system/vm5-disk.xenlvm-base.{RUN1}"]]


def test_an_increments_base_records_its_depth_and_no_sha256(tmp_path):
    _, argvs = keep(tmp_path, [entry(RUN2, 2)], [snapshot(RUN2)])
    assert argvs[0] == ["lvchange", "--addtag", "xenlvm_base", "--addtag", "xenlvm_depth_2",
                        "system/vm5-disk.xenlvm"]


@pytest.mark.parametrize("why", ["not sound", "another run", "not recorded", "classic"])
def test_post_keeps_no_base_of_an_unsound_backup_nor_of_a_snapshot_its_pre_did_not_record(tmp_path, why):
    mine = snapshot(RUN3 if why == "another run" else RUN2)
    if why == "classic":
        mine = dataclasses.replace(mine, attr="swi-a-s---", pool="")
    entries = [] if why == "not recorded" else [entry(RUN2, 1)]
    left, argvs = keep(tmp_path, entries, [mine], sound=why != "not sound", older=[base(RUN1, 0)])
    assert left == [mine] and argvs == []  # removed as any snapshot; the base before stays


def test_a_snapshot_that_cannot_be_renamed_is_removed_and_the_base_before_stays(tmp_path):
    config = chained_job(state=str(tmp_path))
    record.write(str(tmp_path), "disks", RUN2, [entry(RUN2, 1)])
    runner = FakeRunner().on("lvchange", Answer()).on("lvrename", Answer(returncode=5, stderr="too long"))
    mine = snapshot(RUN2)
    left = bases.keep_bases(Context(config, runner), config.jobs["disks"], [mine], {"system": vg(base(RUN1))},
                            True)
    assert left == [mine] and not runner.argvs_of("lvremove")


# ---------------------------------------------------------------------------------------------
# the configuration


def test_incremental_needs_expose_image_copy():
    for expose in ("files", "image"):
        message = config_error(config_text(expose=expose).format(state="/var/lib/xenlvm"))
        assert f"incremental: thin needs expose: image-copy (not {expose})" in message


@pytest.mark.parametrize("value", ["0", "-1", "true", "1.5", "seven", "1001"])
def test_full_every_is_a_whole_number_of_runs(value):
    message = config_error(config_text(f"      incremental: thin\n      full_every: {value}\n")
                           .format(state="/var/lib/xenlvm"))
    assert "full_every" in message and "is not a whole number from 1 to 1000" in message


def test_incremental_is_thin_or_null_and_full_every_defaults_to_7():
    settings = parse_config(config_text().format(state="/s"), PATH).jobs["disks"].vmdisks
    assert settings is not None and (settings.incremental, settings.full_every) == ("thin", 7)
    off = parse_config(config_text("      incremental: null\n").format(state="/s"), PATH).jobs["disks"]
    off = off.vmdisks
    assert off is not None and off.incremental is None
    assert "is not one of: thin" in config_error(config_text("      incremental: yes\n").format(state="/s"))


def test_the_record_is_neither_written_nor_read_in_a_folder_others_can_write(tmp_path, caplog):
    record.write(str(tmp_path), "disks", RUN2, [entry(RUN2, 1)])
    assert record.read(str(tmp_path), "disks") == [entry(RUN2, 1)]
    os.chmod(tmp_path / "disks", 0o777)
    assert record.read(str(tmp_path), "disks") == []
    (tmp_path / "disks" / "increments.json").unlink()
    record.write(str(tmp_path), "disks", RUN2, [entry(RUN2, 1)])
    assert not (tmp_path / "disks" / "increments.json").exists()
    assert "its folder must be root's alone" in caplog.text
