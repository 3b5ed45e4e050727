"""pre's files of a chained disk (xenlvm/vmdisks/chains.py): the full image written sparse
with its SHA-256, the thin device ids of the base and the new snapshot, and a full image
instead when the changes cannot be read."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from tests.unit.fakes import Answer, FakeRunner
from tests.unit.increments.test_bases import DISK, base, snapshot
from xenlvm.config.model import SnapshotSpec, Volume
from xenlvm.errors import XenlvmError
from xenlvm.increments.thin_delta import ThinDeltaFailed
from xenlvm.vmdisks import chains as expose
from xenlvm.vmdisks.model import Exposure
from xenlvm.vmdisks.target import VmDiskTarget

BLOCK = expose.SPARSE_BLOCK


def test_the_full_image_is_the_disks_bytes_written_sparse_with_their_sha256(tmp_path):
    content = bytes(3 * BLOCK) + os.urandom(BLOCK + 5) + bytes(2 * BLOCK) + b"\x01" + bytes(BLOCK - 1)
    source = tmp_path / "snapshot"
    source.write_bytes(content + b"beyond the disk's size")
    image = tmp_path / "xvda.img"
    digest = expose.write_image(str(source), str(image), len(content))
    assert image.read_bytes() == content
    assert digest == hashlib.sha256(content).digest()
    assert image.stat().st_blocks * 512 <= 4 * BLOCK  # the blocks of zeros were not written


def test_a_full_image_that_cannot_be_written_whole_leaves_no_file(tmp_path):
    source = tmp_path / "snapshot"
    source.write_bytes(os.urandom(BLOCK))
    with pytest.raises(XenlvmError, match="writing the full image of .* failed: the file ended early"):
        expose.write_image(str(source), str(tmp_path / "xvda.img"), 2 * BLOCK)
    assert not (tmp_path / "xvda.img").exists()


def lvs_ids(*rows: tuple[str, str]) -> str:
    return json.dumps({"report": [{"lv": [{"lv_name": name, "thin_id": thin_id} for name, thin_id in rows]}]})


def test_the_thin_ids_of_the_base_and_the_new_snapshot_come_from_one_lvs():
    runner = FakeRunner().on("lvs", Answer(stdout=lvs_ids(("a", "3"), ("b", "7"))))
    assert expose.thin_ids(runner, "system", ["a", "b"]) == {"a": 3, "b": 7}
    assert runner.argvs == [["lvs", "--reportformat", "json", "--options", "lv_name,thin_id", "system/a",
                             "system/b"]]
    runner.on("lvs", Answer(stdout=lvs_ids(("a", "3"))))
    with pytest.raises(ThinDeltaFailed, match="lvs does not show b in system"):
        expose.thin_ids(runner, "system", ["a", "b"])
    runner.on("lvs", Answer(stdout=lvs_ids(("a", ""), ("b", "7"))))
    with pytest.raises(ThinDeltaFailed, match="lvs printed no thin_id"):
        expose.thin_ids(runner, "system", ["a", "b"])


def test_changes_that_cannot_be_read_give_the_full_image_and_say_why(tmp_path):
    runner = FakeRunner().on("lvs", Answer(returncode=5, stderr="Volume group not found"))
    ranges, why = expose.changed_ranges(runner, base("20261206T010000_41"), snapshot("20261207T010000_42"),
                                        16 << 20, str(tmp_path))
    assert ranges is None
    assert why.startswith("the changes since its base system/vm5-disk.xenlvm-base.20261206T010000_41 cannot "
                          "be read: ")


@pytest.mark.parametrize("how", list(Exposure))
def test_only_a_chained_disks_snapshot_is_kept_as_a_base_for_the_pool_check(how):
    spec = SnapshotSpec(Volume("system", "vm5-disk"), "vm5-disk.xenlvm", "/mnt/vmdisks/vm5/xvda")
    assert VmDiskTarget(spec, DISK, "vm5", "xvda", how).kept_as_base() is (how is Exposure.CHAIN)
