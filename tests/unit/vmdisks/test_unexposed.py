"""A VM disk that cannot all be exposed as files (issue 23): the job goes on, the disk's bytes
are backed up as an image where possible, the tree, status, the metrics and post's exit status
tell. (On real LVM: tests/system/test_hostile_guests.py and test_vmdisks.py.)"""

from __future__ import annotations

import dataclasses
import json
import logging
import types

import pytest

from tests.unit.vmdisks.test_vmdisks import VGS, devices, discover, disk, job, probe_runner, xl_for
from xenlvm.core.undo import UndoStack
from xenlvm.errors import EXIT_PARTIAL, CommandFailed, PartialBackup
from xenlvm.vmdisks import expose as vmdisks
from xenlvm.vmdisks import image_copy as vmdisk_copy
from xenlvm.vmdisks import target as vmdisk_target
from xenlvm.vmdisks import unexposed
from xenlvm.vmdisks.model import Exposure

__all__ = ["devices"]  # test_vmdisks.py's autouse fixture: the disks' device numbers


def target_in(tmp_path, runner_job=None):
    target = discover(runner_job or job(), xl_for({"vm2": [disk("/dev/system/vm2-disk", "xvda")]}), VGS)[0]
    target.spec = dataclasses.replace(target.spec, mountpoint=str(tmp_path / "vm2" / "xvda"))
    return target


def test_btrfs_is_never_mounted_its_disk_is_served_as_an_image_and_the_tree_says_why(tmp_path, caplog):
    runner = probe_runner("TYPE=btrfs\nUUID=0001\n", {}, "")
    target = target_in(tmp_path)
    with caplog.at_level(logging.WARNING, "xenlvm"):
        vmdisks.expose(runner, job(), target, UndoStack(), can_serve=True)
    assert not [a for a in runner.argvs if a[0] in ("losetup", "mount")]
    assert target.fallback == "image"
    assert target.not_exposed is not None and target.not_exposed.image == "vm2/xvda.img"
    note = (tmp_path / "vm2" / "xvda.NOT-EXPOSED.txt").read_text()
    assert "btrfs: on some errors it finds on disk btrfs stops dom0's kernel" in note
    assert "vm2/xvda.img" in note
    layout = json.loads((tmp_path / "vm2" / "xvda.layout.json").read_text())
    assert [(c["exposed_as"], c["reason"]) for c in layout["contents"]] == [(None, "not-mounted")]
    assert "vm2/xvda holds btrfs, which xenlvm does not mount" in caplog.text


def test_without_an_image_server_or_image_dir_the_note_says_the_bytes_are_not_backed_up(tmp_path):
    target = target_in(tmp_path)
    vmdisks.expose(probe_runner("TYPE=btrfs\n", {}, ""), job(), target, UndoStack(), can_serve=False)
    assert target.fallback is None and target.not_exposed is not None
    assert target.not_exposed.image is None
    assert "NOT in the backup" in (tmp_path / "vm2" / "xvda.NOT-EXPOSED.txt").read_text()


def test_without_an_image_server_the_disk_is_copied_into_image_dir_when_there_is_one(tmp_path, monkeypatch):
    copied = []
    monkeypatch.setattr(vmdisks, "_expose_image",
                        lambda runner, job, target, device, undo: copied.append(device))
    copying = dataclasses.replace(job(), vmdisks=dataclasses.replace(job().vmdisks, image_dir=str(tmp_path)))
    target = target_in(tmp_path)
    vmdisks.expose(probe_runner("TYPE=btrfs\n", {}, ""), copying, target, UndoStack(), can_serve=False)
    assert copied == ["/dev/mapper/system-vm2--disk.xenlvm"]
    assert target.fallback == "image-copy"
    assert target.not_exposed is not None and target.not_exposed.image == "vm2/xvda.img"


def test_a_disk_whose_table_cannot_be_read_undoes_its_own_steps_only(tmp_path, monkeypatch):
    detached = []
    monkeypatch.setattr(vmdisks, "detach_loops", lambda runner, devices: detached.append(devices))
    runner = probe_runner("PTTYPE=dos\n", {}, "").on("sfdisk", "{}").on(
        "partx", CommandFailed(["partx"], 1, "partx: failed to read partition table"))
    target = target_in(tmp_path)
    undo = UndoStack()
    undo.push("an earlier disk's step", lambda: None)
    vmdisks.expose(runner, job(), target, undo, can_serve=True)
    assert len(detached) == 1  # this disk's undo ran at once
    assert len(undo) == 1  # the job's own steps are untouched
    assert target.not_exposed is not None
    assert target.not_exposed.problems[0].startswith("the disk: partx failed")


def test_post_says_partial_with_exit_3_and_forgets_the_record(tmp_path):
    lock_dir = str(tmp_path)
    found = unexposed.NotExposed("vm2", "xvda", ("partition 2: could not mount",), "vm2/xvda.img")
    unexposed.record(lock_dir, "disks", [found], UndoStack())
    assert unexposed.read(lock_dir, "disks") == [found]
    with pytest.raises(PartialBackup) as info:
        unexposed.verdict(lock_dir, "disks", unexposed.read(lock_dir, "disks"), judge_backup=True)
    assert info.value.exit_code == EXIT_PARTIAL == 3
    assert "partial: not exposed as files: vm2/xvda: partition 2: could not mount" in str(info.value)
    assert unexposed.read(lock_dir, "disks") == []
    unexposed.verdict(lock_dir, "disks", [found], judge_backup=False)  # xenlvm cleanup: a warning


def test_a_run_with_everything_exposed_removes_an_earlier_record(tmp_path):
    unexposed.record(str(tmp_path), "disks", [unexposed.NotExposed("vm2", "xvda", ("x",), None)], UndoStack())
    unexposed.record(str(tmp_path), "disks", [], UndoStack())
    assert not (tmp_path / "disks.not-exposed.json").exists()


def test_an_unreadable_record_is_told_and_makes_the_backup_partial(tmp_path, caplog):
    (tmp_path / "disks.not-exposed.json").write_text("{not json")
    with caplog.at_level(logging.ERROR, "xenlvm"):
        found = unexposed.read(str(tmp_path), "disks")
    assert "cannot be read" in caplog.text
    assert len(found) == 1 and "what pre did not expose cannot be read" in found[0].problems[0]
    with pytest.raises(PartialBackup, match="cannot be read"):  # post exits 3, not 0
        unexposed.verdict(str(tmp_path), "disks", found, judge_backup=True)


def copying_job(image_dir):
    return dataclasses.replace(job(), vmdisks=dataclasses.replace(job().vmdisks, image_dir=str(image_dir)))


def assert_not_in_backup(target, tmp_path, why):
    assert target.fallback is None and target.not_exposed is not None and target.not_exposed.image is None
    assert any(why in problem for problem in target.not_exposed.problems)
    note = (tmp_path / "vm2" / "xvda.NOT-EXPOSED.txt").read_text()
    assert "NOT in the backup" in note and why in note


def test_a_fallback_copy_that_fails_fails_its_disk_alone_and_is_undone(tmp_path, monkeypatch):
    monkeypatch.setattr(vmdisk_copy, "staging_problem", lambda stat: None)
    images = tmp_path / "images"
    images.mkdir()
    runner = probe_runner("TYPE=btrfs\n", {}, "").on(
        "cp", CommandFailed(["cp"], 1, "cp: error writing 'x.img': No space left on device"))
    target = target_in(tmp_path)
    undo = UndoStack()
    vmdisks.expose(runner, copying_job(images), target, undo, can_serve=False)
    assert_not_in_backup(target, tmp_path, "No space left on device")
    assert not list((images / "xenlvm-disks").iterdir())  # the partial image is removed at once
    assert len(undo) == 1  # only the disk's own loop-device step: nothing of the copy is left to undo


def test_a_refused_staging_folder_fails_the_fallback_of_its_disk_alone(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "xenlvm-disks").symlink_to(tmp_path)  # planted: root's cp must not write through it
    target = target_in(tmp_path)
    vmdisks.expose(probe_runner("TYPE=btrfs\n", {}, ""), copying_job(images), target, UndoStack(),
                   can_serve=False)
    assert_not_in_backup(target, tmp_path, "is not xenlvm's private image folder")


def test_an_image_server_that_does_not_start_fails_the_fallback_disks_alone(tmp_path):
    target = target_in(tmp_path)
    runner = probe_runner("TYPE=btrfs\n", {}, "").on(
        "qemu-storage-daemon", CommandFailed(["qemu-storage-daemon"], 1, "fuse: device not found"))
    undo = UndoStack()
    vmdisks.expose(runner, job(), target, undo, can_serve=True)
    assert target.fallback == "image"
    settings = types.SimpleNamespace(lock_dir=str(tmp_path / "lock"))
    ctx = types.SimpleNamespace(runner=runner, config=types.SimpleNamespace(settings=settings))
    vmdisk_target.serve_images(ctx, job(), [target], undo)
    assert_not_in_backup(target, tmp_path, "the image server did not start")
    assert target.not_exposed.problems[0].startswith("btrfs:")
    assert not (tmp_path / "vm2" / "xvda.img").exists()  # no empty image left in the tree
    assert not (tmp_path / "lock" / "disks.images.json").exists()
    expose_image = dataclasses.replace(job(), vmdisks=dataclasses.replace(job().vmdisks, expose="image"))
    target.how = Exposure.IMAGE
    with pytest.raises(CommandFailed):  # expose: image: the server is the backup, its failure fails pre
        vmdisk_target.serve_images(ctx, expose_image, [target], UndoStack())


def test_a_fallback_copy_is_not_made_when_image_dir_has_no_room_for_the_whole_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(vmdisk_copy, "free_bytes", lambda directory: 63 << 20)  # the disk is 64 MiB
    runner = probe_runner("TYPE=btrfs\n", {}, "")  # a cp would fail the test: none scripted
    target = target_in(tmp_path)
    vmdisks.expose(runner, copying_job(tmp_path), target, UndoStack(), can_serve=False)
    assert not runner.changes
    assert_not_in_backup(target, tmp_path, "has 63 MiB free, its image may need 64 MiB")
