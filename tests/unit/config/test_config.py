"""Configuration: the example parses as written, and every mistake is a ConfigError that names
the file, the line and the key, before any command runs."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xenlvm.config.load import load_config, parse_config
from xenlvm.config.model import (
    AUTO,
    DEFAULT_CONFIG_PATH,
    DEFAULT_PATH,
    Config,
    Size,
    SnapshotSpec,
    Volume,
    WindowMode,
    config_path,
    parse_duration,
    parse_size,
)
from xenlvm.errors import ConfigError

PATH = "/etc/xenlvm/config.yaml"

# The example from the documentation, verbatim.
EXAMPLE = """\
jobs:
  xenvm:                        # job name
    volume: system/xenvm        # VG/LV of the volume that holds the VMs (/dev/system/xenvm also accepted)
    snapshot: vmbackup          # name of the snapshot LV
    size: 1G                    # 512M, 1G, ... or 20%ORIGIN; omit for a thin volume
    mountpoint: /mnt/vmbackup   # where sesam backs up from
    tasks: [xen_vm1]            # the sesam tasks this job serves
"""

# Line numbers of the keys in job_yaml() output.
VOLUME_LINE, SNAPSHOT_LINE, SIZE_LINE, MOUNTPOINT_LINE, TASKS_LINE = 3, 4, 5, 6, 7

_UNSET = object()


def job_yaml(volume: object = "system/xenvm", snapshot: object = "vmbackup", size: object = "1G",
             mountpoint: object = "/mnt/vmbackup", tasks: object = "[xen_vm1]", extra: str = "") -> str:
    """A one-job configuration; a value of _UNSET leaves the key out, a str value is written raw."""
    lines = ["jobs:", "  xenvm:"]
    for key, value in (("volume", volume), ("snapshot", snapshot), ("size", size),
                       ("mountpoint", mountpoint), ("tasks", tasks)):
        if value is not _UNSET:
            lines.append(f"    {key}: {value}")
    return "\n".join(lines) + "\n" + extra


def quoted(text: str) -> str:
    """text as a YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text)


def config_error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, PATH)
    return str(caught.value)


# ---------------------------------------------------------------------------------------------
# What parses


def test_example_configuration_parses_as_written():
    config = parse_config(EXAMPLE, PATH)

    assert config.path == PATH
    assert list(config.jobs) == ["xenvm"]
    job = config.jobs["xenvm"]
    assert job.name == "xenvm"
    [spec] = job.volumes
    assert spec.origin == Volume("system", "xenvm")
    assert spec.snapshot == "vmbackup"
    assert spec.snapshot_volume == Volume("system", "vmbackup")
    assert spec.size is not None and spec.size.bytes == 1 << 30
    assert job.mountpoint == "/mnt/vmbackup"
    assert spec.mountpoint == "/mnt/vmbackup"  # one volume: mounted at the job's mountpoint itself
    assert job.tasks == ("xen_vm1",)
    assert job.unmount_timeout == 300.0
    assert job.fill_warning == 80
    assert config.settings.path == DEFAULT_PATH
    assert config.settings.lock_dir == "/run/xenlvm"


def test_volume_may_be_given_as_its_dev_path():
    config = parse_config(EXAMPLE.replace("volume: system/xenvm", "volume: /dev/system/xenvm"), PATH)
    assert config.jobs["xenvm"].volumes[0].origin == Volume("system", "xenvm")
    assert str(config.jobs["xenvm"].volumes[0].origin) == "system/xenvm"


def test_job_without_size_is_a_thin_snapshot():
    job = parse_config(job_yaml(size=_UNSET), PATH).jobs["xenvm"]
    assert job.volumes[0].size is None


def test_a_single_task_may_be_written_without_a_list():
    job = parse_config(job_yaml(tasks="xen_vm1"), PATH).jobs["xenvm"]
    assert job.tasks == ("xen_vm1",)


def test_job_options_override_their_defaults():
    job = parse_config(job_yaml(extra="    unmount_timeout: 5m\n    fill_warning: 90%\n"), PATH).jobs["xenvm"]
    assert job.unmount_timeout == 300.0
    assert job.fill_warning == 90
    job = parse_config(job_yaml(extra="    unmount_timeout: 45s\n"), PATH).jobs["xenvm"]
    assert job.unmount_timeout == 45.0


def test_settings_override_the_defaults():
    text = ("settings:\n  path: /opt/lvm/sbin:/usr/sbin\n  log_file: /var/log/backup/xenlvm.log\n"
            "  lock_dir: /run/lock/xenlvm\n  lock_timeout: 30s\n  command_timeout: 5m\n") + job_yaml()
    settings_ = parse_config(text, PATH).settings
    assert settings_.path == "/opt/lvm/sbin:/usr/sbin"
    assert settings_.log_file == "/var/log/backup/xenlvm.log"
    assert settings_.lock_dir == "/run/lock/xenlvm"
    assert settings_.lock_timeout == 30.0
    assert settings_.command_timeout == 300.0


@pytest.mark.parametrize("value", ['""', "false", ""])
def test_empty_log_file_turns_the_log_file_off(value):
    config = parse_config(f"settings:\n  log_file: {value}\n" + job_yaml(), PATH)
    assert config.settings.log_file is None


def test_parsed_configuration_is_frozen():
    config = parse_config(EXAMPLE, PATH)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.jobs["xenvm"].volumes[0].snapshot = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.jobs["xenvm"].volumes = ()  # type: ignore[misc]
    assert isinstance(config.jobs["xenvm"].volumes, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.settings.lock_timeout = 1.0  # type: ignore[misc]


def test_jobs_keep_the_order_of_the_file():
    text = job_yaml() + ("  data:\n    volume: system/data\n    snapshot: databackup\n"
                         "    size: 20%ORIGIN\n    mountpoint: /mnt/databackup\n")
    assert list(parse_config(text, PATH).jobs) == ["xenvm", "data"]


def test_sibling_mountpoints_with_a_common_prefix_are_not_nested():
    text = job_yaml(mountpoint="/mnt/vm") + ("  data:\n    volume: system/data\n    snapshot: databackup\n"
                                             "    size: 1G\n    mountpoint: /mnt/vmbackup\n")
    config = parse_config(text, PATH)
    assert [j.mountpoint for j in config.jobs.values()] == ["/mnt/vm", "/mnt/vmbackup"]


def test_same_snapshot_name_in_two_volume_groups_is_allowed():
    text = job_yaml() + ("  data:\n    volume: data/vms\n    snapshot: vmbackup\n"
                         "    size: 1G\n    mountpoint: /mnt/databackup\n")
    config = parse_config(text, PATH)
    assert {j.volumes[0].snapshot_volume for j in config.jobs.values()} == {Volume("system", "vmbackup"),
                                                                 Volume("data", "vmbackup")}


# ---------------------------------------------------------------------------------------------
# Sizes


@pytest.mark.parametrize(("text", "expected"), [
    ("512M", 512 << 20),
    ("1G", 1 << 30),
    ("1.5G", 3 << 29),
    ("1GiB", 1 << 30),
    ("1GB", 1 << 30),
    ("1g", 1 << 30),
    ("2 T", 2 << 40),
    ("1024K", 1 << 20),
])
def test_absolute_sizes_are_binary_units(text, expected):
    size = parse_size(text)
    assert size.bytes == expected
    assert size.percent is None
    assert size.text == text


@pytest.mark.parametrize(("text", "percent", "of"), [
    ("20%ORIGIN", 20, "ORIGIN"),
    ("50%FREE", 50, "FREE"),
    ("100%VG", 100, "VG"),
    ("20%origin", 20, "ORIGIN"),
    ("1%FREE", 1, "FREE"),
])
def test_percent_sizes_name_what_they_are_a_percentage_of(text, percent, of):
    size = parse_size(text)
    assert (size.percent, size.of, size.bytes) == (percent, of, None)


@pytest.mark.parametrize("text", [
    "", "1", "1024", "G", "1X", "-1G", "1.G", ".5G", "1e3M", "512K", "0.5M", "0G",
    "0%ORIGIN", "101%FREE", "20%PVS", "20%", "%ORIGIN", "20 %ORIGIN", "1000%VG", "twenty%ORIGIN",
])
def test_invalid_sizes_are_refused_with_examples_of_valid_ones(text):
    with pytest.raises(ValueError) as caught:
        parse_size(text)
    assert repr(text) in str(caught.value)


def test_bad_size_in_the_file_names_file_line_and_key():
    message = config_error(job_yaml(size="1X"))
    assert message.startswith(f"{PATH}:{SIZE_LINE}: jobs.xenvm.size: ")
    assert "20%ORIGIN" in message  # tells how to write it


def test_size_in_bytes_asks_lvcreate_for_exactly_those_bytes():
    assert parse_size("1G").lvcreate_args() == ["--size", f"{1 << 30}b"]


def test_size_in_percent_asks_lvcreate_for_extents():
    assert parse_size("20%ORIGIN").lvcreate_args() == ["--extents", "20%ORIGIN"]
    assert parse_size("50%free").lvcreate_args() == ["--extents", "50%FREE"]


def test_size_percent_of_origin_resolves_against_origin_size():
    assert parse_size("20%ORIGIN").resolve(origin_bytes=1000 << 20, vg_free_bytes=1, vg_bytes=2) == 200 << 20


def test_size_percent_of_free_and_of_vg_resolve_against_the_volume_group():
    assert parse_size("50%FREE").resolve(origin_bytes=1, vg_free_bytes=800, vg_bytes=4000) == 400
    assert parse_size("25%VG").resolve(origin_bytes=1, vg_free_bytes=800, vg_bytes=4000) == 1000


def test_absolute_size_resolves_to_itself_whatever_the_volumes():
    assert parse_size("512M").resolve(origin_bytes=1, vg_free_bytes=2, vg_bytes=3) == 512 << 20


@pytest.mark.parametrize("text", ["1.1G", "1.3M", "0.7T"])
def test_fractional_size_is_a_whole_number_of_sectors(text):
    size = parse_size(text)
    assert size.bytes is not None and size.bytes % 512 == 0


@pytest.mark.parametrize(("text", "where"), [
    (job_yaml(size="9" * 400 + "P"), f"{SIZE_LINE}: jobs.xenvm.size:"),
    (job_yaml(extra="    unmount_timeout: 1" + "0" * 400 + "\n"), "8: jobs.xenvm.unmount_timeout:"),
])
def test_absurdly_large_number_is_refused_not_a_crash(text, where):
    assert config_error(text).startswith(f"{PATH}:{where}")


# ---------------------------------------------------------------------------------------------
# Durations


@pytest.mark.parametrize(("value", "seconds"), [
    (30, 30.0), (2.5, 2.5), ("30", 30.0), ("30s", 30.0), ("500ms", 0.5), ("5m", 300.0),
    ("1.5m", 90.0), ("1h", 3600.0), ("10 s", 10.0), ("168h", 7 * 86400.0),
])
def test_durations_become_seconds(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", [0, -1, "0s", "-5s", "5d", "abc", "", True, False, "169h", "1 hour",
                                   float("inf")])
def test_invalid_durations_are_refused(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def test_nan_duration_is_refused():
    message = config_error(job_yaml(extra="    unmount_timeout: .nan\n"))
    assert f"{PATH}:8: jobs.xenvm.unmount_timeout:" in message


def test_bad_duration_in_settings_names_file_line_and_key():
    message = config_error("settings:\n  lock_timeout: soon\n" + job_yaml())
    assert message.startswith(f"{PATH}:2: settings.lock_timeout: ")
    assert "'soon'" in message


# ---------------------------------------------------------------------------------------------
# LVM names


@pytest.mark.parametrize("name", ["vmbackup", "vm.backup", "vm+1", "vm-backup", "_vmbackup", "VM_Backup2",
                                  "a" * 127])
def test_valid_lvm_names_are_accepted_as_snapshot(name):
    assert parse_config(job_yaml(snapshot=quoted(name)), PATH).jobs["xenvm"].volumes[0].snapshot == name


@pytest.mark.parametrize("name", [
    "-vmbackup",          # LVM refuses names starting with '-'
    "vm backup",
    "vm\tbackup",
    "vm\nbackup",
    ".", "..",
    "a" * 128,            # LVM names are at most 127 characters
    "vm/backup",
    "vm:backup",
    "vmbäckup",
    "",
])
def test_invalid_lvm_name_names_file_line_and_key(name):
    message = config_error(job_yaml(snapshot=quoted(name)))
    assert message.startswith(f"{PATH}:{SNAPSHOT_LINE}: jobs.xenvm.snapshot: ")
    assert "not a valid LVM snapshot name" in message


@pytest.mark.parametrize("name", ["snapshot", "pvmove", "pvmove0", "vm_tmeta", "vm_rimage_0", "x_cdata",
                                  "data_mlog"])
def test_names_lvm_reserves_are_refused(name):
    message = config_error(job_yaml(snapshot=quoted(name)))
    assert message.startswith(f"{PATH}:{SNAPSHOT_LINE}: jobs.xenvm.snapshot: ")
    assert "reserved by LVM" in message


def test_empty_snapshot_value_is_refused():
    message = config_error(job_yaml(snapshot=""))
    assert message.startswith(f"{PATH}:{SNAPSHOT_LINE}: jobs.xenvm.snapshot: ")
    assert "must not be empty" in message


@pytest.mark.parametrize("volume", ["-system/xenvm", "system/-xenvm", "sys tem/xenvm", "system/snapshot"])
def test_invalid_name_in_volume_names_file_line_and_key(volume):
    message = config_error(job_yaml(volume=quoted(volume)))
    assert message.startswith(f"{PATH}:{VOLUME_LINE}: jobs.xenvm.volume: ")


@pytest.mark.parametrize("volume", ["xenvm", "system/xenvm/extra", "/dev/system", "system//xenvm",
                                    "/dev/system/xenvm/", "/system/xenvm"])
def test_volume_must_be_vg_slash_lv(volume):
    message = config_error(job_yaml(volume=quoted(volume)))
    assert message.startswith(f"{PATH}:{VOLUME_LINE}: jobs.xenvm.volume: ")
    assert "VG/LV" in message


@pytest.mark.parametrize(("key", "value", "line"), [
    ("snapshot", "vmbackup\n", SNAPSHOT_LINE),
    ("volume", "system/xenvm\n", VOLUME_LINE),
])
def test_name_with_trailing_newline_is_refused(key, value, line):
    message = config_error(job_yaml(**{key: quoted(value)}))
    assert message.startswith(f"{PATH}:{line}: jobs.xenvm.{key}: ")


@pytest.mark.parametrize("name", ["-job", ".job", "my job", "a" * 65, "job/x", '"job\\nx"'])
def test_invalid_job_name_names_file_line_and_key(name):
    text = job_yaml().replace("  xenvm:", f"  {name}:")
    message = config_error(text)
    assert message.startswith(f"{PATH}:2: jobs.")
    assert "job name" in message


def test_snapshot_named_like_its_volume_is_refused():
    message = config_error(job_yaml(snapshot="xenvm"))
    assert message.startswith(f"{PATH}:{SNAPSHOT_LINE}: jobs.xenvm.snapshot: ")
    assert "must differ from the name of the volume system/xenvm that the job backs up" in message


# ---------------------------------------------------------------------------------------------
# Mountpoints


@pytest.mark.parametrize(("mountpoint", "why"), [
    ("mnt/vmbackup", "absolute"),
    ("./vmbackup", "absolute"),
    ("/mnt/vmbackup/", "normalized"),
    ("/mnt//vmbackup", "normalized"),
    ("//mnt/vmbackup", "normalized"),
    ("/mnt/./vmbackup", "normalized"),
    ("/mnt/../etc/vmbackup", "normalized"),
    ("/", "system directory"),
    ("/etc", "system directory"),
    ("/mnt", "system directory"),
    ("/tmp", "system directory"),
    ("/var", "system directory"),
    ("/proc/vmbackup", "system directory"),
    ("/sys/vmbackup", "system directory"),
    ("/dev/vmbackup", "system directory"),
    ("/run/vmbackup", "system directory"),
    ("/mnt/vm backup", "whitespace"),
    ("/mnt/vm\tbackup", "whitespace"),
    ("/mnt/vm\nbackup", "whitespace"),
    ("/mnt/vm\\backup", "backslash"),
    ("/mnt/" + "a" * 1100, "longer than 1024"),
])
def test_unusable_mountpoint_names_file_line_key_and_reason(mountpoint, why):
    message = config_error(job_yaml(mountpoint=quoted(mountpoint)))
    assert message.startswith(f"{PATH}:{MOUNTPOINT_LINE}: jobs.xenvm.mountpoint: ")
    assert why in message


@pytest.mark.parametrize("mountpoint", ["/usr/lib", "/etc/xen", "/boot/efi", "/lib/modules"])
def test_mountpoint_below_a_system_directory_is_refused(mountpoint):
    message = config_error(job_yaml(mountpoint=mountpoint))
    assert message.startswith(f"{PATH}:{MOUNTPOINT_LINE}: jobs.xenvm.mountpoint: ")


# ---------------------------------------------------------------------------------------------
# Structure: unknown keys, wrong types, duplicates, jobs that collide


def test_unknown_key_names_file_line_and_key():
    message = config_error(job_yaml(extra="    mountpont: /mnt/x\n"))
    assert message.startswith(f"{PATH}:8: jobs.xenvm.mountpont: unknown key")
    assert "mountpoint" in message  # lists the allowed keys


def test_unknown_settings_key_names_file_line_and_key():
    message = config_error("settings:\n  lock_timeuot: 5s\n" + job_yaml())
    assert message.startswith(f"{PATH}:2: settings.lock_timeuot: unknown key")


@pytest.mark.parametrize(("text", "expected"), [
    ("job:\n  xenvm: {}\n" + job_yaml(), f"{PATH}:1: job: unknown key"),
    ("jobs:\n", f"{PATH}:1: jobs: must not be empty"),
])
def test_top_level_key_is_named_without_a_leading_dot(text, expected):
    assert config_error(text).startswith(expected)


@pytest.mark.parametrize(("text", "where"), [
    (job_yaml(tasks="5"), f"{TASKS_LINE}: jobs.xenvm.tasks:"),
    (job_yaml(tasks="{a: b}"), f"{TASKS_LINE}: jobs.xenvm.tasks:"),
    (job_yaml(tasks="['']"), f"{TASKS_LINE}: jobs.xenvm.tasks:"),
    (job_yaml(extra="    fill_warning: 150\n"), "8: jobs.xenvm.fill_warning:"),
    (job_yaml(extra="    fill_warning: yes\n"), "8: jobs.xenvm.fill_warning:"),
    (job_yaml(extra="    unmount_timeout: true\n"), "8: jobs.xenvm.unmount_timeout:"),
    (job_yaml(mountpoint="[/mnt/vmbackup]"), f"{MOUNTPOINT_LINE}: jobs.xenvm.mountpoint:"),
    (job_yaml(volume="{vg: system, lv: xenvm}"), f"{VOLUME_LINE}: jobs.xenvm.volume:"),
    ("jobs:\n  xenvm: just text\n", "2: jobs.xenvm:"),
    ("jobs:\n  xenvm:\n    - volume: system/xenvm\n", "3: jobs.xenvm:"),
    ("jobs: [xenvm]\n", "1: jobs:"),
    ("settings: 5\n" + job_yaml(), "1: settings:"),
    ("settings:\n  path: usr/sbin\n" + job_yaml(), "2: settings.path:"),
    ("settings:\n  lock_dir: run/xenlvm\n" + job_yaml(), "2: settings.lock_dir:"),
])
def test_wrong_type_names_file_line_and_key(text, where):
    assert config_error(text).startswith(f"{PATH}:{where}")


def test_configuration_that_is_not_a_mapping_is_refused():
    assert config_error("- jobs\n").startswith(f"{PATH}:1: must be a mapping")


@pytest.mark.parametrize("tasks", ["[[xen_vm1]]", "[xen_vm1, null]", "[{xen: vm1}]"])
def test_task_names_must_be_plain_values(tasks):
    message = config_error(job_yaml(tasks=tasks))
    assert message.startswith(f"{PATH}:{TASKS_LINE}: jobs.xenvm.tasks:")


def test_key_given_twice_names_file_line_and_key():
    message = config_error(job_yaml(extra="    volume: system/other\n"))
    assert message.startswith(f"{PATH}:8: jobs.xenvm.volume: is given twice")


def test_job_given_twice_names_file_line_and_key():
    text = job_yaml() + "  xenvm:\n    volume: system/xenvm\n    snapshot: other\n    mountpoint: /mnt/x\n"
    assert config_error(text).startswith(f"{PATH}:8: jobs.xenvm: is given twice")


def test_jobs_section_given_twice_is_refused():
    assert config_error(job_yaml() + job_yaml()).startswith(f"{PATH}:8: jobs: is given twice")


def test_missing_required_key_names_the_job_and_the_key():
    message = config_error(job_yaml(mountpoint=_UNSET))
    assert message.startswith(f"{PATH}:3: jobs.xenvm: ")  # line 3: the job's first line
    assert "'mountpoint' is required" in message


SECOND_JOB = ("  data:\n    volume: system/data\n    snapshot: {snapshot}\n    size: 1G\n"
              "    mountpoint: {mountpoint}\n")


def test_two_jobs_on_one_mountpoint_are_refused():
    message = config_error(job_yaml() + SECOND_JOB.format(snapshot="databackup", mountpoint="/mnt/vmbackup"))
    assert message.startswith(f"{PATH}:2: jobs: ")
    assert "'xenvm'" in message and "'data'" in message and "/mnt/vmbackup" in message


@pytest.mark.parametrize("inner", ["/mnt/vmbackup/data", "/mnt/vmbackup/a/b"])
def test_nested_mountpoints_are_refused(inner):
    message = config_error(job_yaml() + SECOND_JOB.format(snapshot="databackup", mountpoint=inner))
    assert message.startswith(f"{PATH}:2: jobs: ")
    assert "nested" in message and inner in message


def test_same_snapshot_in_two_jobs_is_refused():
    message = config_error(job_yaml() + SECOND_JOB.format(snapshot="vmbackup", mountpoint="/mnt/databackup"))
    assert message.startswith(f"{PATH}:2: jobs: ")
    assert "system/vmbackup" in message


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing configured yet\n"])
def test_empty_file_is_refused_naming_the_file(text):
    message = config_error(text)
    assert message.startswith(f"{PATH}: ")
    assert "empty" in message and "jobs:" in message


@pytest.mark.parametrize(("text", "expected"), [
    ("jobs: {}\n", f"{PATH}:1: jobs: defines no job"),
    ("settings: {}\n", f"{PATH}:1: the key 'jobs' is required"),
])
def test_configuration_without_jobs_is_refused(text, expected):
    assert config_error(text).startswith(expected)


def test_empty_jobs_section_is_refused():
    message = config_error("jobs:\n")
    assert message.startswith(f"{PATH}:1: ")
    assert "jobs: must not be empty" in message


@pytest.mark.parametrize(("text", "line"), [
    ("jobs:\n  xenvm: [\n", 3),
    ("jobs:\n  xenvm:\n\tvolume: system/xenvm\n", 3),
    (job_yaml(snapshot="'vmbackup"), 8),
    ("jobs: {}\n---\njobs: {}\n", 2),
])
def test_yaml_syntax_error_names_file_and_line(text, line):
    assert config_error(text).startswith(f"{PATH}:{line}: YAML syntax error: ")


def test_yaml_error_without_a_line_still_names_the_file():
    assert config_error("jobs:\x00\n").startswith(f"{PATH}: YAML syntax error: ")


@pytest.mark.parametrize("value", ["!local xen_vm1", "!!int xen", "!!timestamp xen", "!!binary x",
                                   "!!python/name:os.system ''"])
def test_yaml_tag_that_cannot_be_built_is_a_config_error(value):
    message = config_error(job_yaml(tasks=value))
    assert message.startswith(f"{PATH}:{TASKS_LINE}: ")


# ---------------------------------------------------------------------------------------------
# Jobs with several volumes: a 'volumes:' list, each mounted at <mountpoint>/<name>

MULTI = """\
jobs:
  xenvm:
    mountpoint: /mnt/vmbackup
    tasks: [xen_vm1]
    volumes:
      - volume: system/xenvm
        snapshot: vmbackup
        size: 1G
      - volume: /dev/data/vms
        snapshot: vmsbackup
        size: 20%ORIGIN
        name: vms2
      - volume: system/thin
        snapshot: thinbackup
"""
# Line numbers in MULTI.
JOB_LINE, VOLUMES_LINE = 3, 5
ITEM_LINES = (6, 9, 13)  # the first line of each list item


def multi_yaml(*items: str, extra: str = "") -> str:
    """A one-job configuration with a 'volumes:' list; each item is its YAML keys, one per line,
    written without indentation. The job's first line is line 3, 'volumes:' line 5, the first
    item's first line 6."""
    lines = ["jobs:", "  xenvm:", "    mountpoint: /mnt/vmbackup", "    tasks: [xen_vm1]", "    volumes:"]
    for item in items:
        keys = item.strip("\n").split("\n")
        lines.append("      - " + keys[0])
        lines += ["        " + key for key in keys[1:]]
    return "\n".join(lines) + "\n" + extra


def test_volumes_list_gives_one_spec_per_volume_in_order():
    job = parse_config(MULTI, PATH).jobs["xenvm"]
    assert job.mountpoint == "/mnt/vmbackup"
    assert job.tasks == ("xen_vm1",)
    assert job.volumes == (
        SnapshotSpec(Volume("system", "xenvm"), "vmbackup", "/mnt/vmbackup/xenvm",
                     Size(text="1G", bytes=1 << 30)),
        SnapshotSpec(Volume("data", "vms"), "vmsbackup", "/mnt/vmbackup/vms2",
                     Size(text="20%ORIGIN", percent=20, of="ORIGIN")),
        SnapshotSpec(Volume("system", "thin"), "thinbackup", "/mnt/vmbackup/thin", None),
    )
    assert [spec.snapshot_volume for spec in job.volumes] == [
        Volume("system", "vmbackup"), Volume("data", "vmsbackup"), Volume("system", "thinbackup")]


def test_each_volume_is_mounted_below_the_mountpoint_under_its_lv_name_by_default():
    job = parse_config(multi_yaml("volume: system/xenvm\nsnapshot: vmbackup\nsize: 1G",
                                  "volume: system/data\nsnapshot: databackup\nsize: 1G"), PATH).jobs["xenvm"]
    assert [spec.mountpoint for spec in job.volumes] == ["/mnt/vmbackup/xenvm", "/mnt/vmbackup/data"]


def test_name_sets_the_directory_below_the_mountpoint():
    job = parse_config(multi_yaml("volume: system/xenvm\nsnapshot: vmbackup\nname: vms"), PATH).jobs["xenvm"]
    [spec] = job.volumes
    assert spec.mountpoint == "/mnt/vmbackup/vms"
    assert spec.origin == Volume("system", "xenvm")  # the name changes the directory only


def test_volumes_list_with_one_volume_still_mounts_it_below_the_mountpoint():
    job = parse_config(multi_yaml("volume: system/xenvm\nsnapshot: vmbackup\nsize: 1G"), PATH).jobs["xenvm"]
    assert job.volumes == (SnapshotSpec(Volume("system", "xenvm"), "vmbackup", "/mnt/vmbackup/xenvm",
                                        Size(text="1G", bytes=1 << 30)),)


def test_single_volume_form_gives_one_spec_mounted_at_the_jobs_mountpoint():
    job = parse_config(job_yaml(), PATH).jobs["xenvm"]
    assert job.volumes == (SnapshotSpec(Volume("system", "xenvm"), "vmbackup", "/mnt/vmbackup",
                                        Size(text="1G", bytes=1 << 30)),)


def test_volumes_of_the_same_lv_name_in_two_volume_groups_need_names_of_their_own():
    text = multi_yaml("volume: system/xenvm\nsnapshot: vmbackup\nname: system",
                      "volume: data/xenvm\nsnapshot: vmbackup\nname: data")
    job = parse_config(text, PATH).jobs["xenvm"]
    assert [(str(s.snapshot_volume), s.mountpoint) for s in job.volumes] == [
        ("system/vmbackup", "/mnt/vmbackup/system"), ("data/vmbackup", "/mnt/vmbackup/data")]


def test_snapshot_named_like_an_origin_of_another_volume_group_is_allowed():
    text = multi_yaml("volume: system/xenvm\nsnapshot: vmbackup", "volume: data/vms\nsnapshot: xenvm")
    job = parse_config(text, PATH).jobs["xenvm"]
    assert job.volumes[1].snapshot_volume == Volume("data", "xenvm")


def test_single_volume_and_multi_volume_jobs_live_side_by_side():
    text = MULTI + ("  data:\n    volume: system/data\n    snapshot: databackup\n    size: 1G\n"
                    "    mountpoint: /mnt/databackup\n")
    config = parse_config(text, PATH)
    assert [len(job.volumes) for job in config.jobs.values()] == [3, 1]
    assert config.jobs["data"].volumes[0].mountpoint == "/mnt/databackup"


def test_volumes_list_and_single_volume_keys_together_are_refused():
    text = MULTI + "    size: 1G\n"
    message = config_error(text)
    size_line = text.count("\n")  # the line the stray key is on
    assert message.startswith(f"{PATH}:{size_line}: jobs.xenvm.size: ")
    assert "either volume/snapshot/size or a 'volumes:' list, not both" in message
    text = MULTI.replace("    tasks: [xen_vm1]\n", "    volume: system/xenvm\n    snapshot: vmbackup\n")
    message = config_error(text)
    volume_line = text.split("\n").index("    volume: system/xenvm") + 1
    assert message.startswith(f"{PATH}:{volume_line}: jobs.xenvm.volume: ")
    assert "not both" in message


def test_job_without_any_volume_is_refused():
    message = config_error("jobs:\n  xenvm:\n    mountpoint: /mnt/vmbackup\n")
    assert message.startswith(f"{PATH}:3: jobs.xenvm: ")
    assert "the key 'volume' (or a 'volumes:' list, or 'vmdisks:') is required" in message


def test_two_volumes_mounted_under_the_same_name_are_refused():
    # Both default to their LV name, xenvm.
    message = config_error(multi_yaml("volume: system/xenvm\nsnapshot: vmbackup",
                                      "volume: data/xenvm\nsnapshot: vmbackup2"))
    assert message.startswith(f"{PATH}:8: jobs.xenvm.volumes[1].name: ")  # the second item's line
    assert "'xenvm' is used twice" in message and "<mountpoint>/<name>" in message


def test_explicit_name_that_repeats_another_volumes_name_is_refused():
    message = config_error(multi_yaml("volume: system/xenvm\nsnapshot: vmbackup",
                                      "volume: system/data\nsnapshot: databackup",
                                      "volume: system/other\nsnapshot: otherbackup\nname: data"))
    assert message.startswith(f"{PATH}:12: jobs.xenvm.volumes[2].name: ")  # the repeated name's line
    assert "'data' is used twice" in message


def test_two_volumes_with_the_same_snapshot_are_refused():
    message = config_error(multi_yaml("volume: system/xenvm\nsnapshot: vmbackup",
                                      "volume: system/data\nsnapshot: vmbackup"))
    assert message.startswith(f"{PATH}:9: jobs.xenvm.volumes[1].snapshot: ")  # the second snapshot: line
    assert "system/vmbackup is used twice in this job" in message


@pytest.mark.parametrize("items", [
    ("volume: system/xenvm\nsnapshot: vmbackup", "volume: system/data\nsnapshot: xenvm"),
    ("volume: system/xenvm\nsnapshot: data", "volume: system/data\nsnapshot: databackup"),
    ("volume: system/xenvm\nsnapshot: xenvm",),
])
def test_snapshot_named_like_one_of_the_jobs_volumes_is_refused(items):
    text = multi_yaml(*items)
    message = config_error(text)
    offender = next(i for i, item in enumerate(items)
                    if item.split("snapshot: ")[1] in ("xenvm", "data"))
    snapshot_lines = [n for n, line in enumerate(text.split("\n"), 1) if "snapshot:" in line]
    assert message.startswith(f"{PATH}:{snapshot_lines[offender]}: jobs.xenvm.volumes[{offender}].snapshot: ")
    assert "must differ from the name of the volume" in message


def test_two_jobs_sharing_a_snapshot_of_their_volumes_lists_are_refused():
    other = ("  data:\n    mountpoint: /mnt/databackup\n    volumes:\n"
             "      - volume: system/data\n        snapshot: databackup\n"
             "      - volume: data/vms\n        snapshot: vmsbackup\n")
    message = config_error(MULTI + other)
    assert message.startswith(f"{PATH}:2: jobs: ")
    assert "'xenvm'" in message and "'data'" in message and "data/vmsbackup" in message


def test_multi_volume_job_sharing_a_snapshot_with_a_single_volume_job_is_refused():
    message = config_error(MULTI + SECOND_JOB.format(snapshot="vmbackup", mountpoint="/mnt/databackup"))
    assert message.startswith(f"{PATH}:2: jobs: ")
    assert "'xenvm'" in message and "'data'" in message and "system/vmbackup" in message


def test_another_job_mounted_at_a_volume_directory_is_nested():
    message = config_error(MULTI + SECOND_JOB.format(snapshot="databackup", mountpoint="/mnt/vmbackup/xenvm"))
    assert message.startswith(f"{PATH}:2: jobs: ")
    assert "nested" in message and "/mnt/vmbackup/xenvm" in message


@pytest.mark.parametrize("volumes", ["[]", "system/xenvm", "{volume: system/xenvm, snapshot: vmbackup}"])
def test_volumes_that_are_not_a_list_of_volumes_are_refused(volumes):
    message = config_error(f"jobs:\n  xenvm:\n    mountpoint: /mnt/vmbackup\n    volumes: {volumes}\n")
    assert message.startswith(f"{PATH}:4: jobs.xenvm.volumes: ")
    assert "must be a list of volumes" in message


@pytest.mark.parametrize(("items", "where", "why"), [
    (("volume: system/xenvm",), "6: jobs.xenvm.volumes[0]:", "the key 'snapshot' is required"),
    (("snapshot: vmbackup",), "6: jobs.xenvm.volumes[0]:", "the key 'volume' is required"),
    (("volume: system/xenvm\nsnapshot:",), "7: jobs.xenvm.volumes[0].snapshot:", "must not be empty"),
    (("volume:\nsnapshot: vmbackup",), "6: jobs.xenvm.volumes[0].volume:", "must not be empty"),
    (("volume: system/xenvm\nsnapshot: vmbackup\nmountpoint: /mnt/x",),
     "8: jobs.xenvm.volumes[0].mountpoint:", "unknown key (allowed here: name, size, snapshot, volume)"),
    (("volume: system/xenvm\nsnapshot: vmbackup\nname: a\nname: b",),
     "9: jobs.xenvm.volumes[0].name:", "is given twice"),
    (("volume: system/xenvm\nsnapshot: vmbackup", "volume: system/data\nsnapshot: databackup\nsize: 1X"),
     "10: jobs.xenvm.volumes[1].size:", "20%ORIGIN"),
    (("volume: system/xenvm\nsnapshot: vmbackup", "volume: xenvm\nsnapshot: databackup"),
     "8: jobs.xenvm.volumes[1].volume:", "VG/LV"),
    (("volume: system/xenvm\nsnapshot: vm backup",),
     "7: jobs.xenvm.volumes[0].snapshot:", "not a valid LVM snapshot name"),
    (("volume: system/xenvm\nsnapshot: snapshot",), "7: jobs.xenvm.volumes[0].snapshot:", "reserved by LVM"),
    (("- system/xenvm",), "6: jobs.xenvm.volumes[0]:", "must be a mapping"),
])
def test_mistake_in_a_volume_names_file_line_and_key(items, where, why):
    message = config_error(multi_yaml(*items))
    assert message.startswith(f"{PATH}:{where} ")
    assert why in message


@pytest.mark.parametrize("name", ["a/b", "..", ".hidden", "-x", "my vms", "a" * 65, "[vms]"])
def test_unusable_directory_name_names_file_line_and_key(name):
    message = config_error(multi_yaml(f"volume: system/xenvm\nsnapshot: vmbackup\nname: {quoted(name)}"))
    assert message.startswith(f"{PATH}:8: jobs.xenvm.volumes[0].name: ")
    assert "not a directory name" in message


# ---------------------------------------------------------------------------------------------
# Reading the file


def test_load_config_reads_the_file_and_names_it_in_errors(tmp_path):
    good = tmp_path / "config.yaml"
    good.write_text(EXAMPLE, encoding="utf-8")
    assert load_config(str(good)).jobs["xenvm"].volumes[0].snapshot == "vmbackup"

    bad = tmp_path / "bad.yaml"
    bad.write_text(job_yaml(size="huge"), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(str(bad))
    assert str(caught.value).startswith(f"{bad}:{SIZE_LINE}: jobs.xenvm.size: ")


def test_missing_configuration_file_says_where_it_looked(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(str(missing))
    assert str(caught.value).startswith(f"{missing}: ")
    assert "not found" in str(caught.value) and "--config" in str(caught.value)


def test_unreadable_configuration_is_a_config_error(tmp_path):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"jobs:\n  xenvm: # sch\xf6n\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(latin1))
    assert str(caught.value).startswith(f"{latin1}: cannot read")
    with pytest.raises(ConfigError):
        load_config(str(tmp_path))  # a directory


def test_config_path_prefers_option_then_environment_then_default(monkeypatch):
    monkeypatch.delenv("XENLVM_CONFIG", raising=False)
    assert config_path(None) == DEFAULT_CONFIG_PATH
    monkeypatch.setenv("XENLVM_CONFIG", "/srv/xenlvm.yaml")
    assert config_path(None) == "/srv/xenlvm.yaml"
    assert config_path("/root/test.yaml") == "/root/test.yaml"


# ---------------------------------------------------------------------------------------------
# Whatever the text, the result is a Config or a ConfigError, never another exception.

_FRAGMENTS = [
    "jobs:", "settings:", "xenvm:", "volume:", "snapshot:", "size:", "mountpoint:", "tasks:",
    "unmount_timeout:", "fill_warning:", "path:", "log_file:", "lock_dir:", "lock_timeout:",
    "volumes:", "name:", "\n      - volume: ", "\n        snapshot: ", "system/data", "data",
    "system/xenvm", "/dev/system/xenvm", "vmbackup", "1G", "1.5G", "20%ORIGIN", "50%FREE", "0%VG",
    "/mnt/vmbackup", "/mnt/vmbackup/x", "/", "[xen_vm1]", "xen_vm1", "30s", "5m", "0", "-1", "80%",
    "\n", "\n  ", "\n    ", "\n      ", " ", "- ", "[", "]", "{", "}", ",", ":", "'", '"', "#",
    "&a ", "*a", "<<: ", "? ", "|", ">", "---\n", "...\n", "\t", "~", "null", "true", "1e3",
    ".inf", "..", "\\", "%YAML 1.1\n", "\u00e9",
]

yaml_like = st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map("".join)


def _config_or_config_error(text: str) -> None:
    try:
        result = parse_config(text, PATH)
    except ConfigError as exc:
        assert str(exc).startswith(PATH)
    else:
        assert isinstance(result, Config)
        assert result.jobs
        for job in result.jobs.values():
            assert job.volumes
            assert len({spec.snapshot_volume for spec in job.volumes}) == len(job.volumes)
            assert len({spec.mountpoint for spec in job.volumes}) == len(job.volumes)
            assert all(spec.mountpoint == job.mountpoint or spec.mountpoint.startswith(job.mountpoint + "/")
                       for spec in job.volumes)


@settings(max_examples=300, deadline=None)
@given(st.text() | yaml_like)
def test_any_text_gives_a_config_or_a_config_error(text):
    _config_or_config_error(text)


_ANY_VALUE = (st.text(max_size=20) | st.integers() | st.floats() | st.booleans()
              | st.none() | st.lists(st.text(max_size=5), max_size=3))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["volume", "snapshot", "size", "mountpoint", "tasks",
                                        "unmount_timeout", "fill_warning", "volumes"]),
                       _ANY_VALUE))
def test_any_job_values_give_a_config_or_a_config_error(values):
    # JSON is YAML: this reaches the value parsers with every type YAML can produce.
    _config_or_config_error(json.dumps({"jobs": {"xenvm": values}}))


_NAMES = st.sampled_from(["system/xenvm", "system/data", "data/xenvm", "xenvm", "data", "vmbackup", "1G",
                          "20%ORIGIN", "", "a/b"])
# Mostly well-formed items (so that some lists parse), and items with any keys and values.
_VOLUME_ITEM = st.fixed_dictionaries(
    {"volume": st.sampled_from(["system/xenvm", "system/data", "data/xenvm", "data/vms"]),
     "snapshot": st.sampled_from(["vmbackup", "databackup", "xenvm", "data"])},
    optional={"size": st.sampled_from(["1G", "20%ORIGIN", "1X"]), "name": _NAMES},
) | st.dictionaries(st.sampled_from(["volume", "snapshot", "size", "name", "mountpoint"]),
                    _NAMES | _ANY_VALUE)


@settings(max_examples=200, deadline=None)
@given(st.lists(_VOLUME_ITEM, min_size=1, max_size=4) | st.lists(_VOLUME_ITEM | _ANY_VALUE, max_size=4),
       st.dictionaries(st.sampled_from(["volume", "snapshot", "size"]), _ANY_VALUE, max_size=1))
def test_any_volumes_list_gives_a_config_or_a_config_error(volumes, single):
    job = {"mountpoint": "/mnt/vmbackup", "volumes": volumes, **single}
    _config_or_config_error(json.dumps({"jobs": {"xenvm": job}}))


def test_size_dataclass_keeps_the_text_the_admin_wrote():
    assert parse_size(" 1G ") == Size(text="1G", bytes=1 << 30)


def test_what_xenlvm_decides_reads_as_auto_and_a_window_as_its_mode():
    """domains: auto, and xen.window and xen.export_dir left out, are AUTO: xenlvm finds or derives
    them (xenlvm.xen.windows, xenlvm.xen.export). export_dir "" or null is None: no export."""
    def xen(lines: str):
        return parse_config(job_yaml(extra="    xen:\n" + lines), PATH).jobs["xenvm"].xen

    left_out = xen("      domains: auto\n")
    assert left_out.domains is AUTO and left_out.window is AUTO and left_out.export_dir is AUTO
    given = xen("      domains: [vm1]\n      window: together\n      export_dir: /srv/xen-export\n")
    assert given.domains == ("vm1",) and given.window is WindowMode.TOGETHER
    assert given.export_dir == "/srv/xen-export"
    assert xen("      domains: [vm1]\n      window: per-domain\n").window is WindowMode.PER_DOMAIN
    for disabled in ('""', "null"):
        assert xen(f"      domains: [vm1]\n      export_dir: {disabled}\n").export_dir is None
    with pytest.raises(ConfigError) as caught:
        xen("      domains: [vm1]\n      window: auto\n")
    assert "xen.window: 'auto' is not one of: per-domain, together" in str(caught.value)
