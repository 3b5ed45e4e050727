"""No configuration value can smuggle an option or a second command into any argv xenlvm runs:
whatever the text, it either fails to load as a ConfigError or ends up as one plain argument."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.fakes import FakeRunner
from xenlvm.config.load import parse_config
from xenlvm.core import ownership
from xenlvm.core.ownership import job_tag
from xenlvm.errors import ConfigError
from xenlvm.host.lvm import LogicalVolume, Lvm
from xenlvm.host.mount import mount_snapshot

OUR_OPTIONS = {"--snapshot", "--name", "--addtag", "--size", "--extents", "--ignoreactivationskip",
               "--force", "--select", "-t", "-o"}
nasty = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["-rf", "--force", "-o", "a b", "a\nb", "..", "a;rm -rf /", "$(reboot)", "`id`",
                     "x\x00y", "/mnt/../etc", "-", "--", "vm backup", "a" * 300]),
)


def _argvs_for(text: str) -> list[list[str]] | None:
    try:
        config = parse_config(text, "config.yaml")
    except ConfigError:
        return None
    runner = FakeRunner().on("lvcreate", "").on("lvremove", 'Logical volume "x" successfully removed.\n')
    runner.on("mount", "")
    for job in config.jobs.values():
        for spec in job.volumes:
            origin = LogicalVolume(spec.origin.vg, spec.origin.lv, "owi-a-----", 1 << 30, "", "", frozenset(),
                                   None, False, True, 254, 0, "", "")
            Lvm(runner).create_snapshot(origin, spec.snapshot, ["xenlvm", job_tag(job.name)],
                                        spec.size.lvcreate_args() if spec.size is not None else None)
            mine = LogicalVolume(spec.origin.vg, spec.snapshot, "swi-a-s---", 1 << 26, spec.origin.lv, "",
                                 frozenset({"xenlvm", job_tag(job.name)}), 0.0, False, True, 254, 3, "", "")
            ownership.remove_one(Lvm(runner), job, spec, mine)
            mount_snapshot(runner, f"/dev/mapper/{spec.origin.vg}-{spec.snapshot}", "ext4", spec.mountpoint)
    return runner.argvs


def _assert_plain(argvs: list[list[str]]) -> None:
    for argv in argvs:
        for arg in argv[1:]:
            assert not arg.startswith("-") or arg in OUR_OPTIONS, argv
            assert "\n" not in arg and "\x00" not in arg and " " not in arg, argv


@settings(max_examples=400, deadline=None)
@given(job=nasty, volume_group=nasty, volume=nasty, snapshot=nasty, mountpoint=nasty, size=nasty)
def test_no_configuration_value_becomes_an_option_or_a_second_command(job, volume_group, volume, snapshot,
                                                                      mountpoint, size):
    text = json.dumps({"jobs": {job: {"volume": f"{volume_group}/{volume}", "snapshot": snapshot,
                                      "mountpoint": mountpoint, "size": size}}})
    argvs = _argvs_for(text)
    if argvs is not None:
        _assert_plain(argvs)


def test_a_valid_configuration_really_produces_the_commands_checked_above():
    argvs = _argvs_for(json.dumps({"jobs": {"j": {"volume": "system/xenvm", "snapshot": "vmbackup",
                                                  "mountpoint": "/mnt/vmbackup", "size": "1G"}}}))
    assert argvs is not None and [a[0] for a in argvs] == ["lvcreate", "lvremove", "mount"]
    _assert_plain(argvs)
