"""lvs JSON, parsed from output recorded on real LVM 2.03, and the LVM commands xenlvm builds
from it (checked through a fake runner that records every argv)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tests.unit.fakes import Answer, FakeRunner
from tests.unit.fakes import recorded as recorded_file
from xenlvm.config.model import Job, SnapshotSpec, Volume, parse_size
from xenlvm.core import ownership
from xenlvm.core.ownership import job_tag
from xenlvm.errors import CommandFailed, PreflightFailed, SafetyRefusal, XenlvmError
from xenlvm.host import cow, lvm, lvm_messages
from xenlvm.host.lvm import LogicalVolume, Lvm, device_path, parse_lvs_json, parse_volume_group

DATA = Path(__file__).resolve().parents[1] / "data"


def recorded(name: str) -> str:
    return (DATA / f"lvs_{name}.json").read_text(encoding="utf-8")


MESSAGES = json.loads(recorded_file("lvm_messages.json"))


def lvs_of(name: str) -> dict[str, LogicalVolume]:
    return {lv.name: lv for lv, _ in parse_lvs_json(recorded(name))}


def recorded_with(name: str, lv_name: str, **changes: str) -> str:
    """The recorded report with some fields of one row changed."""
    report = json.loads(recorded(name))
    for row in report["report"][0]["lv"]:
        if row["lv_name"] == lv_name:
            row.update(changes)
    return json.dumps(report)


SPEC = SnapshotSpec(origin=Volume("system", "xenvm"), snapshot="vmbackup", mountpoint="/mnt/vmbackup",
                    size=parse_size("1G"))
JOB = Job(name="xenvm", mountpoint="/mnt/vmbackup", volumes=(SPEC,), tasks=("xen_vm1",))


@pytest.fixture
def no_sleep(monkeypatch):
    """Retry loops run without waiting; the delays they asked for are recorded."""
    delays: list[float] = []
    monkeypatch.setattr(ownership.time, "sleep", delays.append)
    return delays


# ---------------------------------------------------------------------------------------------
# Parsing recorded lvs output


def test_mounted_snapshot_row_becomes_a_typed_record():
    snapshot = lvs_of("snapshot_mounted")["vmbackup"]
    assert snapshot == LogicalVolume(
        vg="system", name="vmbackup", attr="swi-aos---", size=67108864, origin="xenvm", pool="",
        tags=frozenset({"xenlvm", "xenlvm_job_xenvm", "xenlvm_run_20261129T213500_829"}),
        data_percent=0.02, snapshot_invalid=False, active=True, major=254, minor=3,
        dm_path="/dev/mapper/system-vmbackup", created="2026-11-29 21:35:00 +0000")
    assert str(snapshot) == "system/vmbackup"
    assert snapshot.is_snapshot
    assert not snapshot.invalid
    assert not snapshot.is_thin
    assert ownership.run_of(snapshot) == "xenlvm_run_20261129T213500_829"


def test_origin_row_has_no_fill_level_and_is_not_a_snapshot():
    origin = lvs_of("snapshot_mounted")["xenvm"]
    assert origin.attr == "owi-aos---"
    assert origin.size == 335544320
    assert origin.data_percent is None
    assert origin.tags == frozenset()
    assert not origin.is_snapshot
    assert not origin.invalid  # lv_snapshot_invalid is "unknown" for a non-snapshot
    assert ownership.run_of(origin) is None
    assert (origin.major, origin.minor) == (254, 0)


def test_overflowed_snapshot_is_invalid():
    snapshot = lvs_of("snapshot_overflowed")["vmbackup"]
    assert snapshot.attr == "swi-Ios---"
    assert snapshot.snapshot_invalid
    assert snapshot.data_percent == 100.0
    assert snapshot.invalid


def test_snapshot_marked_invalid_only_in_lv_attr_is_invalid():
    # LVM versions without lv_snapshot_invalid still show the 'I' in lv_attr.
    text = recorded_with("snapshot_overflowed", "vmbackup", lv_snapshot_invalid="")
    snapshot = {lv.name: lv for lv, _ in parse_lvs_json(text)}["vmbackup"]
    assert snapshot.invalid


def test_thin_pool_report_keeps_pool_and_classic_snapshot_apart():
    lvs = lvs_of("thin_pool_with_thick_snapshot")
    assert set(lvs) == {"pool", "xenvm", "vmbackup"}
    assert lvs["xenvm"].pool == "pool"
    assert lvs["xenvm"].data_percent == 4.14
    assert not lvs["xenvm"].is_snapshot
    assert not lvs["pool"].is_thin  # the pool holds thin volumes; it is not one
    snapshot = lvs["vmbackup"]
    assert snapshot.origin == "xenvm" and snapshot.pool == ""
    assert not snapshot.is_thin  # a classic (COW) snapshot of a thin volume
    assert ownership.owns(JOB, SPEC, snapshot)


def test_thin_volume_is_thin():
    text = recorded_with("thin_pool_with_thick_snapshot", "xenvm", lv_attr="Vwi-aotz--")
    assert {lv.name: lv for lv, _ in parse_lvs_json(text)}["xenvm"].is_thin


def test_thin_origin_with_a_classic_snapshot_is_thin():
    origin = lvs_of("thin_pool_with_thick_snapshot")["xenvm"]
    assert origin.attr == "owi-aotz--"
    assert origin.is_thin


def test_snapshot_is_owned_by_the_job_whose_tags_origin_and_name_it_carries():
    snapshot = lvs_of("snapshot_mounted")["vmbackup"]
    assert ownership.owns(JOB, SPEC, snapshot)


def test_snapshot_is_not_owned_by_another_job():
    snapshot = lvs_of("snapshot_mounted")["vmbackup"]
    other = dataclasses.replace(JOB, name="other")
    assert not ownership.owns(other, SPEC, snapshot)


@pytest.mark.parametrize("change", [
    {"snapshot": "other"},
    {"origin": Volume("system", "otherorigin")},
    {"origin": Volume("data", "xenvm")},  # same LV name, another volume group
])
def test_snapshot_is_not_owned_for_another_snapshot_name_or_volume(change):
    snapshot = lvs_of("snapshot_mounted")["vmbackup"]
    spec = dataclasses.replace(SPEC, **change)
    assert not ownership.owns(dataclasses.replace(JOB, volumes=(spec,)), spec, snapshot)


def test_snapshot_in_another_volume_group_is_not_owned():
    # Tags, origin and name all match, but the LV lives in another VG than the spec's volume.
    text = recorded_with("snapshot_mounted", "vmbackup", vg_name="data")
    snapshot = {lv.name: lv for lv, _ in parse_lvs_json(text)}["vmbackup"]
    assert snapshot.vg == "data"
    assert not ownership.owns(JOB, SPEC, snapshot)


@pytest.mark.parametrize("tags", [
    "",                                   # an admin's LV of the same name
    "xenlvm_job_xenvm",                   # lacks the owner tag
    "xenlvm,xenlvm_job_other",            # another job's snapshot
    "xenlvm,xenlvm_job_xenvm2",           # a job whose name merely starts alike
])
def test_snapshot_without_both_tags_is_not_owned(tags):
    text = recorded_with("snapshot_mounted", "vmbackup", lv_tags=tags)
    snapshot = {lv.name: lv for lv, _ in parse_lvs_json(text)}["vmbackup"]
    assert not ownership.owns(JOB, SPEC, snapshot)


def test_origin_is_never_owned():
    assert not ownership.owns(JOB, SPEC, lvs_of("snapshot_mounted")["xenvm"])


def test_snapshot_of_another_origin_with_our_tags_is_not_owned():
    text = recorded_with("snapshot_mounted", "vmbackup", origin="othervm")
    snapshot = {lv.name: lv for lv, _ in parse_lvs_json(text)}["vmbackup"]
    assert not ownership.owns(JOB, SPEC, snapshot)


def test_volume_group_carries_its_space_and_its_volumes():
    vg = parse_volume_group(recorded("snapshot_mounted"), "system")
    assert vg.name == "system"
    assert vg.free == 1740636160
    assert vg.size == 2143289344
    assert vg.extent_size == 4194304
    assert set(vg.lvs) == {"vmbackup", "xenvm"}
    assert vg.get("xenvm") is vg.lvs["xenvm"]
    assert vg.get("nosuch") is None


def test_volume_group_of_the_thin_report_has_less_free_space():
    vg = parse_volume_group(recorded("thin_pool_with_thick_snapshot"), "system")
    assert vg.free == 1333788672
    assert vg.get("pool") is not None


def test_volume_group_without_volumes_has_no_lvs():
    vg = parse_volume_group('{"report": [{"lv": []}]}', "empty")
    assert vg.name == "empty"
    assert vg.lvs == {}
    assert vg.get("xenvm") is None


@pytest.mark.parametrize("text", [
    "", "not json", "null", "[]", "{}", '{"report": []}', '{"report": [{}]}',
    '{"report": [{"vg": []}]}', "  Volume group \"system\" not found\n",
])
def test_garbage_instead_of_lvs_json_says_what_is_wrong(text):
    with pytest.raises(XenlvmError) as caught:
        parse_lvs_json(text)
    message = str(caught.value)
    assert "cannot understand the output of lvs" in message
    assert "--reportformat json" in message


@pytest.mark.parametrize("text", [
    '{"report": [{"lv": [{}]}]}',
    '{"report": [{"lv": [1]}]}',
    '{"report": [{"lv": [{"lv_name": "x", "vg_name": "system", "lv_size": "1.00g"}]}]}',
])
def test_lvs_rows_of_the_wrong_shape_say_what_is_wrong(text):
    with pytest.raises(XenlvmError, match="cannot understand the output of lvs"):
        parse_lvs_json(text)


def test_device_path_doubles_hyphens_like_device_mapper():
    assert device_path("system", "vmbackup") == "/dev/mapper/system-vmbackup"
    assert device_path("my-vg", "vm-backup") == "/dev/mapper/my--vg-vm--backup"


def test_job_tag_names_the_job():
    assert job_tag("xenvm") == "xenlvm_job_xenvm"


# ---------------------------------------------------------------------------------------------
# The commands Lvm runs


def test_volume_group_asks_lvs_for_json_in_bytes_with_explicit_fields():
    runner = FakeRunner().on("lvs", recorded("snapshot_mounted"))
    vg = Lvm(runner).volume_group("system")

    assert vg.free == 1740636160
    [call] = runner.calls
    assert call.kind == "query"
    argv = list(call.argv)
    assert argv[0] == "lvs"
    assert argv[-1] == "system"
    for option in ("--reportformat", "json", "--units", "b", "--nosuffix"):
        assert option in argv
    fields = argv[argv.index("--options") + 1].split(",")
    assert {"lv_name", "lv_attr", "lv_tags", "origin", "lv_snapshot_invalid", "vg_free"} <= set(fields)


VGS = '{"report": [{"vg": [{"vg_name":"data"}, {"vg_name":"system"}]}]}'


@pytest.mark.parametrize("release", sorted(MESSAGES["lvs_missing_vg"]))
def test_missing_volume_group_fails_preflight_naming_it(release):
    missing = Answer(stderr=MESSAGES["lvs_missing_vg"][release].format(vg="nosuch"), returncode=5)
    runner = FakeRunner().on("lvs", missing).on("vgs", VGS)
    with pytest.raises(PreflightFailed) as caught:
        Lvm(runner).volume_group("nosuch")
    assert "'nosuch'" in str(caught.value)
    assert "vgs" in str(caught.value)
    assert runner.argvs_of("vgs") == [["vgs", "--reportformat", "json", "--units", "b", "--nosuffix",
                                       "--options", "vg_name"]]


@pytest.mark.parametrize("words", ["  Volume group \"system\" not found", "  Device /dev/sdb not found.",
                                   "  injected failure"])
def test_a_failing_lvs_of_an_existing_vg_is_reported_as_it_is_whatever_it_says(words):
    # LVM's words do not decide: vgs lists the VG, so it is not "not found" (post would skip it).
    runner = FakeRunner().on("lvs", Answer(stderr=words, returncode=5)).on("vgs", VGS)
    with pytest.raises(CommandFailed) as caught:
        Lvm(runner).volume_group("system")
    assert caught.value.stderr == words.strip()


def test_when_vgs_cannot_say_the_lvs_failure_is_reported_as_it_is():
    missing = Answer(stderr='  Volume group "nosuch" not found', returncode=5)
    for vgs in (Answer(returncode=5), "{not json", '{"report": []}'):
        runner = FakeRunner().on("lvs", missing).on("vgs", vgs)
        with pytest.raises(CommandFailed):
            Lvm(runner).volume_group("nosuch")


def test_other_lvs_failure_is_reported_as_it_is():
    broken = Answer(stderr="  /dev/sdb: read failed after 0 of 4096: Input/output error", returncode=5)
    with pytest.raises(CommandFailed) as caught:
        Lvm(FakeRunner().on("lvs", broken).on("vgs", VGS)).volume_group("system")
    assert "Input/output error" in caught.value.stderr


def test_classic_snapshot_is_created_with_its_size_in_bytes_and_tags():
    runner = FakeRunner().on("lvcreate", "")
    origin = lvs_of("snapshot_mounted")["xenvm"]
    Lvm(runner).create_snapshot(origin, "vmbackup", ["xenlvm", "xenlvm_job_xenvm", "xenlvm_run_1_2"],
                                parse_size("1G").lvcreate_args())

    assert runner.changes == runner.argvs == [[
        "lvcreate", "--snapshot", "--name", "vmbackup",
        "--addtag", "xenlvm", "--addtag", "xenlvm_job_xenvm", "--addtag", "xenlvm_run_1_2",
        "--size", "1073741824b", "system/xenvm"]]


def test_snapshot_sized_by_percent_is_created_with_extents():
    runner = FakeRunner().on("lvcreate", "")
    origin = lvs_of("snapshot_mounted")["xenvm"]
    Lvm(runner).create_snapshot(origin, "vmbackup", ["xenlvm"], parse_size("20%ORIGIN").lvcreate_args())

    [argv] = runner.argvs
    assert argv[argv.index("--extents") + 1] == "20%ORIGIN"
    assert "--size" not in argv
    assert argv[-1] == "system/xenvm"


def test_thin_snapshot_is_created_without_size_and_activated():
    runner = FakeRunner().on("lvcreate", "")
    origin = lvs_of("thin_pool_with_thick_snapshot")["xenvm"]
    Lvm(runner).create_snapshot(origin, "vmbackup", ["xenlvm"], None)

    [argv] = runner.argvs
    assert argv[:4] == ["lvcreate", "--snapshot", "--name", "vmbackup"]
    assert "--ignoreactivationskip" in argv
    assert "--size" not in argv and "--extents" not in argv
    assert argv[-1] == "system/xenvm"


def test_remove_refuses_a_volume_without_xenlvm_tags_and_runs_nothing():
    text = recorded_with("snapshot_mounted", "vmbackup", lv_tags="")
    foreign = {lv.name: lv for lv, _ in parse_lvs_json(text)}["vmbackup"]
    runner = FakeRunner()

    with pytest.raises(SafetyRefusal) as caught:
        ownership.remove_one(Lvm(runner), JOB, SPEC, foreign)
    assert runner.calls == []
    assert "system/vmbackup" in str(caught.value)
    assert "tags: none" in str(caught.value)


def test_remove_refuses_the_origin_and_runs_nothing():
    runner = FakeRunner()
    with pytest.raises(SafetyRefusal):
        ownership.remove_one(Lvm(runner), JOB, SPEC, lvs_of("snapshot_mounted")["xenvm"])
    assert runner.calls == []


def test_remove_refuses_our_snapshot_once_somebody_snapshotted_it_and_runs_nothing():
    # lvremove --force of an origin removes its snapshots too, and --select only guards the LVs
    # named: a snapshot of xenlvm's snapshot (lv_attr 'o...') must stop the removal.
    ours = lvs_of("snapshot_mounted")["vmbackup"]
    assert ownership.owns(JOB, SPEC, ours)
    runner = FakeRunner()
    with pytest.raises(SafetyRefusal, match="somebody made a snapshot of it"):
        ownership.remove_one(Lvm(runner), JOB, SPEC, dataclasses.replace(ours, attr="ori-a-----"))
    failures = ownership.remove(Lvm(runner), JOB, [(SPEC, dataclasses.replace(ours, attr="Owi-a-----"))])
    assert list(failures) == ["system/vmbackup"] and isinstance(failures["system/vmbackup"], SafetyRefusal)
    assert runner.calls == []


def test_an_lvs_that_fails_after_one_lvremove_is_told_on_each_lv_and_does_not_stop_post():
    # After the combined lvremove, an inactive snapshot's removal is checked with lvs; when that
    # lvs fails, the failure is each LV's, so post goes on with the rest of its cleanup.
    first = dataclasses.replace(lvs_of("snapshot_mounted")["vmbackup"], major=None, minor=None)
    second = dataclasses.replace(first, name="vmbackup2")
    specs = [(SPEC, first), (dataclasses.replace(SPEC, snapshot="vmbackup2"), second)]
    lvs_failed = CommandFailed(("lvs",), 5, "  Couldn't find device with uuid 3f2a.\n")
    runner = FakeRunner().on("lvremove", "").on("lvs", lvs_failed, lvs_failed).on("vgs", VGS, VGS)

    failures = ownership.remove(Lvm(runner), JOB, specs)

    assert sorted(failures) == ["system/vmbackup", "system/vmbackup2"]
    assert all(isinstance(f, XenlvmError) for f in failures.values())
    assert [a[0] for a in runner.argvs if a[0] != "vgs"] == ["lvremove", "lvs", "lvs"]


def test_remove_refuses_a_tagged_snapshot_in_another_volume_group_and_runs_nothing():
    text = recorded_with("snapshot_mounted", "vmbackup", vg_name="data")
    elsewhere = {lv.name: lv for lv, _ in parse_lvs_json(text)}["vmbackup"]
    runner = FakeRunner()

    with pytest.raises(SafetyRefusal) as caught:
        ownership.remove_one(Lvm(runner), JOB, SPEC, elsewhere)
    assert runner.calls == []
    assert "data/vmbackup" in str(caught.value)


def test_each_volume_of_a_job_gets_its_own_snapshot_name_and_size():
    runner = FakeRunner().on("lvcreate", "")
    origin = lvs_of("snapshot_mounted")["xenvm"]
    second = SnapshotSpec(Volume("system", "data"), "databackup", "/mnt/vmbackup/data", parse_size("512M"))
    data = dataclasses.replace(origin, name="data")
    Lvm(runner).create_snapshot(data, second.snapshot, ["xenlvm"], second.size.lvcreate_args())

    assert runner.argvs == [["lvcreate", "--snapshot", "--name", "databackup", "--addtag", "xenlvm",
                             "--size", f"{512 << 20}b", "system/data"]]


def lvremove_says(kind: str, release: str) -> str:
    return MESSAGES[kind][release].format(vg="system", lv="vmbackup")


REMOVED = lvremove_says("lvremove_removed_stdout", "2.03.16")
IN_USE = Answer(stderr=lvremove_says("lvremove_in_use", "2.03.16"), returncode=5)
SNAPSHOT = lvs_of("snapshot_mounted")["vmbackup"]  # active: 254:3
OPEN = recorded("snapshot_mounted")  # lv_attr swi-aos---: open (mounted)
CLOSED = recorded_with("snapshot_mounted", "vmbackup", lv_attr="swi-a-s---")
GONE = json.dumps({"report": [{"lv": [json.loads(CLOSED)["report"][0]["lv"][1]]}]})


@pytest.fixture
def dm(tmp_path, monkeypatch):
    """The kernel's device-mapper devices (/sys/dev/block), empty: add one with dm('254:3', 'name')."""
    monkeypatch.setattr(lvm, "SYS_DEV_BLOCK", str(tmp_path))

    def add(numbers: str, name: str) -> None:
        (tmp_path / numbers / "dm").mkdir(parents=True)
        (tmp_path / numbers / "dm" / "name").write_text(name + "\n")
    return add


def test_remove_lets_lvm_check_the_job_tag_at_removal(no_sleep, dm):
    runner = FakeRunner().on("lvremove", REMOVED)
    ownership.remove_one(Lvm(runner), JOB, SPEC, SNAPSHOT)

    assert runner.changes == runner.argvs == [["lvremove", "--force", "--select", "lv_tags=xenlvm_job_xenvm",
                                               "system/vmbackup"]]


@pytest.mark.parametrize("release", sorted(MESSAGES["lvremove_removed_stdout"]))
def test_a_removal_is_judged_by_the_device_being_gone_not_by_lvremoves_words(no_sleep, dm, release):
    for said in (lvremove_says("lvremove_removed_stdout", release), "", "  Something else entirely.\n"):
        ownership.remove_one(Lvm(FakeRunner().on("lvremove", said)), JOB, SPEC, SNAPSHOT)  # 254:3 is gone


def test_remove_retries_while_the_snapshot_is_in_use(no_sleep, dm):
    runner = FakeRunner().on("lvremove", IN_USE, IN_USE, REMOVED).on("lvs", OPEN)
    ownership.remove_one(Lvm(runner), JOB, SPEC, SNAPSHOT, retry_for=60)

    assert len(runner.argvs_of("lvremove")) == 3
    assert len(runner.argvs_of("lvs")) == 2  # each failure: is it open?
    assert len(no_sleep) == 2
    assert no_sleep[1] > no_sleep[0]  # backs off


@pytest.mark.parametrize(("kind", "release"), [(kind, release) for kind in (
    "lvremove_in_use", "lvremove_mounted", "lvremove_held_by_a_device") for release in MESSAGES[kind]])
def test_every_releases_in_use_words_are_retried_even_when_lvs_no_longer_sees_it_open(no_sleep, dm, kind,
                                                                                       release):
    # whatever held it let go between lvremove and lvs: the words of any release still count
    failed = Answer(stderr=lvremove_says(kind, release), returncode=5)
    runner = FakeRunner().on("lvremove", failed, REMOVED).on("lvs", CLOSED)
    ownership.remove_one(Lvm(runner), JOB, SPEC, SNAPSHOT, retry_for=60)
    assert len(runner.argvs_of("lvremove")) == 2


def test_an_open_snapshot_is_retried_whatever_lvremove_said(no_sleep, dm):
    runner = FakeRunner().on("lvremove", Answer(stderr="  Unheard-of wording.", returncode=5), REMOVED)
    ownership.remove_one(Lvm(runner.on("lvs", OPEN)), JOB, SPEC, SNAPSHOT, retry_for=60)
    assert len(runner.argvs_of("lvremove")) == 2


def test_remove_gives_up_when_still_in_use_after_retry_time(no_sleep, dm):
    runner = FakeRunner().on("lvremove", IN_USE, REMOVED).on("lvs", OPEN)
    with pytest.raises(CommandFailed) as caught:
        ownership.remove_one(Lvm(runner), JOB, SPEC, SNAPSHOT, retry_for=0)
    assert "in use" in caught.value.stderr
    assert len(runner.argvs_of("lvremove")) == 1


def test_remove_does_not_retry_other_failures(no_sleep, dm):
    failure = Answer(stderr="  Failed to update pool system/pool.", returncode=5)
    runner = FakeRunner().on("lvremove", failure, REMOVED).on("lvs", CLOSED)
    with pytest.raises(CommandFailed):
        ownership.remove_one(Lvm(runner), JOB, SPEC, SNAPSHOT, retry_for=60)
    assert len(runner.argvs_of("lvremove")) == 1
    assert no_sleep == []


def test_a_failed_remove_of_a_snapshot_that_is_gone_is_not_retried(no_sleep, dm):
    runner = FakeRunner().on("lvremove", IN_USE, REMOVED).on("lvs", GONE)
    with pytest.raises(CommandFailed):
        ownership.remove_one(Lvm(runner), JOB, SPEC, SNAPSHOT, retry_for=60)
    assert len(runner.argvs_of("lvremove")) == 1


def test_remove_refuses_when_lvm_selected_nothing_to_remove(no_sleep, dm):
    # The --select guard matched nothing: the LV lost its tags between lvs and lvremove. LVM
    # 2.03.16 then exits 0 and prints nothing; the snapshot's device is still there.
    dm("254:3", "system-vmbackup")
    said = MESSAGES["lvremove_select_matched_nothing_stdout"]["2.03.16"]
    runner = FakeRunner().on("lvremove", said)
    with pytest.raises(SafetyRefusal) as caught:
        ownership.remove_one(Lvm(runner), JOB, SPEC, SNAPSHOT)
    assert "left untouched" in str(caught.value)
    assert runner.argvs_of("lvs") == []  # the kernel told; no lvs


def test_another_device_with_the_old_numbers_is_not_the_snapshot(no_sleep, dm):
    dm("254:3", "system-other")
    ownership.remove_one(Lvm(FakeRunner().on("lvremove", "")), JOB, SPEC, SNAPSHOT)


@pytest.mark.parametrize(("after", "refused"), [("lvs_snapshot_inactive.json", True),
                                                ("lvs_no_snapshot.json", False)])
def test_an_inactive_snapshot_is_looked_up_with_lvs_after_removal(no_sleep, dm, after, refused):
    inactive = {lv.name: lv for lv, _ in parse_lvs_json(recorded_file("lvs_snapshot_inactive.json"))}
    runner = FakeRunner().on("lvremove", "").on("lvs", recorded_file(after))
    if refused:
        with pytest.raises(SafetyRefusal):
            ownership.remove_one(Lvm(runner), JOB, SPEC, inactive["vmbackup"])
    else:
        ownership.remove_one(Lvm(runner), JOB, SPEC, inactive["vmbackup"])
    assert len(runner.argvs_of("lvs")) == 1


def test_remove_in_a_dry_run_only_announces_the_command(no_sleep):
    runner = FakeRunner(dry_run=True)
    ownership.remove_one(Lvm(runner), JOB, SPEC, SNAPSHOT)
    assert [call.kind for call in runner.calls] == ["would change"]


def test_the_in_use_table_matches_its_own_entries_and_nothing_else():
    for _releases, template in lvm_messages.IN_USE_MESSAGES:
        assert lvm_messages.says_in_use("  " + template.format(vg="my-vg", lv="vm.disk") + "\n")
    assert not lvm_messages.says_in_use("  Failed to update pool system/pool.")
    assert not lvm_messages.says_in_use("  Volume group \"system\" not found")


@pytest.mark.parametrize(("vg_attr", "partial"), [
    ("wz-pn-", True),   # as lvs printed it in the guest while one of the VG's PVs failed (LVM 2.03.16)
    ("wz--n-", False),  # the same VG once the PV was back
    (None, False),      # a report without the field
])
def test_a_volume_group_missing_a_pv_is_partial(vg_attr, partial):
    report = json.loads(recorded("snapshot_mounted"))
    for row in report["report"][0]["lv"]:
        row.pop("vg_attr", None)
        if vg_attr is not None:
            row["vg_attr"] = vg_attr
    text = json.dumps(report)
    assert parse_volume_group(text, "system").partial is partial
    assert lvm.parse_volume_groups(text)["system"].partial is partial


# dm-snapshot's persistent header: magic "SnAp", then the valid flag (drivers/md/dm-snap-persistent.c)
@pytest.mark.parametrize(("header", "cause"), [
    (b"SnAp" + (1).to_bytes(4, "little") + bytes(4088), "io_errors"),  # the kernel could not mark it
    (b"SnAp" + (0).to_bytes(4, "little") + bytes(4088), "overflow"),   # marked invalid: it filled up
    (b"SnAp\x01\x00", "unknown"),                                      # short read
    (bytes(4096), "unknown"),                                          # not a snapshot header
])
def test_the_copy_on_write_header_tells_why_a_snapshot_became_invalid(header, cause):
    assert cow.cause_from_cow_header(header) == cause


def test_the_cause_is_unknown_when_the_copy_on_write_device_cannot_be_opened(tmp_path):
    snapshot = dataclasses.replace(lvs_of("snapshot_overflowed")["vmbackup"], dm_path=str(tmp_path / "gone"))
    assert cow.invalid_cause(snapshot) == "unknown"
    assert not cow.invalidated_by_io_errors(snapshot)
