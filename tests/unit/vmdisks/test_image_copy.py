"""expose: image-copy: root copies whole VM disks into image_dir. Nothing a local user can do
there (a folder or link made first, a directory everyone can write to) lets root's copy write
through their link or lets them read a disk; pre checks image_dir before any change."""

from __future__ import annotations

import os

import pytest

from tests.unit.phases.test_hooks import context
from tests.unit.vmdisks.test_vmdisks import VGS, job
from xenlvm.config.model import Job
from xenlvm.errors import PreflightFailed, SafetyRefusal
from xenlvm.phases import pre
from xenlvm.vmdisks import image_copy as vmdisk_copy
from xenlvm.vmdisks import target as vmdisk_target
from xenlvm.vmdisks import teardown as vmdisk_teardown

OTHER_UID = 1000


def copy_job(image_dir) -> Job:
    base = job(expose="image-copy")
    assert base.vmdisks is not None
    return Job(name=base.name, mountpoint=base.mountpoint, volumes=(),
               vmdisks=type(base.vmdisks)(**{**base.vmdisks.__dict__, "image_dir": str(image_dir)}))


def targets(copy: Job) -> list[vmdisk_target.VmDiskTarget]:
    origin = VGS["system"].lvs["vm2-disk"]
    spec = vmdisk_target.SnapshotSpec(vmdisk_target.Volume("system", "vm2-disk"), "vm2-disk.xenlvm",
                                      f"{copy.mountpoint}/vm2/xvda", None)
    return [vmdisk_target.VmDiskTarget(spec, origin, "vm2", "xvda", "image-copy")]


def test_an_image_dir_others_can_write_to_is_refused_with_the_fix(tmp_path):
    images = tmp_path / "images"
    images.mkdir(mode=0o755)
    copy = copy_job(images)
    assert vmdisk_target.check_image_room(copy, targets(copy)) is None
    images.chmod(0o1777)  # like /var/tmp itself: anyone may make xenlvm-<job> there first
    problem = vmdisk_target.check_image_room(copy, targets(copy))
    assert problem is not None
    assert f"vmdisks.image_dir {images} must be root's alone" in problem
    assert f"Fix: chmod go-w {images}" in problem


def test_an_image_dir_without_room_for_the_disks_is_refused(tmp_path, monkeypatch):
    copy = copy_job(tmp_path)
    monkeypatch.setattr(vmdisk_target.os, "statvfs", lambda path: os.statvfs_result((4096, 4096, 0, 0, 1,
                                                                                     0, 0, 0, 0, 255)))
    problem = vmdisk_target.check_image_room(copy, targets(copy))
    assert problem is not None
    assert "has 0 MiB free but the images of 1 disk(s) may need up to 64 MiB" in problem


def test_pre_checks_image_dir_before_any_change(host, monkeypatch):
    images = host.root / "images"
    images.mkdir(mode=0o777)
    images.chmod(0o777)
    jobs = (f"  disks:\n    mountpoint: {host.root / 'mnt' / 'vmbackup'}\n    tasks: [xen_vm1]\n"
            "    vmdisks:\n      domains: auto\n      size: 16M\n      expose: image-copy\n"
            f"      image_dir: {images}\n")
    ctx, config = context(host, jobs)
    copy = config.jobs["disks"]
    monkeypatch.setattr(vmdisk_target, "discover", lambda job, xl, vgs: targets(copy))
    with pytest.raises(PreflightFailed, match=f"vmdisks.image_dir {images} must be root's alone.*Nothing was "
                                              "changed"):
        pre.run_pre(ctx, list(config.jobs.values()))
    assert host.runner.changes == []


# ---------------------------------------------------------------------------------------------
# the staging folder <image_dir>/xenlvm-<job>


def test_the_staging_folder_is_made_root_only(tmp_path):
    copy = copy_job(tmp_path)
    staging = vmdisk_copy.private_staging(copy)
    assert staging == str(tmp_path / "xenlvm-disks")
    info = os.lstat(staging)
    assert (info.st_uid, info.st_mode & 0o777) == (os.geteuid(), 0o700)
    assert vmdisk_copy.private_staging(copy) == staging  # a killed run's, proven the same way


@pytest.mark.parametrize("plant", ["symlink", "open folder", "other user"])
def test_a_staging_folder_somebody_else_made_is_refused_and_nothing_written_through_it(tmp_path, plant):
    if plant == "other user" and os.geteuid() != 0:
        pytest.skip("only root can give a folder to another user")
    victim = tmp_path / "victim"
    victim.mkdir()
    staging = tmp_path / "xenlvm-disks"
    if plant == "symlink":
        staging.symlink_to(victim)  # cp would write the VM's disk into whatever it points to
    else:
        staging.mkdir(mode=0o700)
        staging.chmod(0o777 if plant == "open folder" else 0o700)  # the user reads the copy
        if plant == "other user":
            os.chown(staging, OTHER_UID, OTHER_UID)
    with pytest.raises(SafetyRefusal, match=f"{staging} is not xenlvm's private image folder"):
        vmdisk_copy.private_staging(copy_job(tmp_path))
    assert list(victim.iterdir()) == []


def test_post_deletes_only_the_image_files_it_wrote_in_its_own_private_folder(tmp_path):
    staging = tmp_path / "xenlvm-disks"
    staging.mkdir(mode=0o700)
    (staging / "vm2.xvda.img").write_bytes(b"\0" * 10)
    vmdisk_teardown._remove_images(str(staging))
    assert not staging.exists()

    victim = tmp_path / "victim"  # somebody's link to a folder with .img files: never emptied
    victim.mkdir(mode=0o700)
    (victim / "their.img").write_text("theirs")
    staging.symlink_to(victim)
    vmdisk_teardown._remove_images(str(staging))
    assert (victim / "their.img").read_text() == "theirs"
    staging.unlink()

    staging.mkdir(mode=0o755)  # not the folder xenlvm makes: left alone
    staging.chmod(0o755)
    (staging / "their.img").write_text("theirs")
    vmdisk_teardown._remove_images(str(staging))
    assert (staging / "their.img").read_text() == "theirs"


def test_with_expose_files_an_image_dir_for_fallback_copies_is_checked_too(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    images.chmod(0o1777)  # others may plant a link for root's fallback copy
    files = copy_job(images)
    files = Job(name=files.name, mountpoint=files.mountpoint, volumes=(),
                vmdisks=type(files.vmdisks)(**{**files.vmdisks.__dict__, "expose": "files"}))
    problem = vmdisk_target.check_image_room(files, targets(files))
    assert problem is not None and f"vmdisks.image_dir {images} must be root's alone" in problem
