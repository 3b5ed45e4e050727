"""Files root writes: nothing a local user plants where xenlvm writes (a symlink, a FIFO, a file
of their own) is opened, followed or kept."""

from __future__ import annotations

import logging
import os
import stat
import sys
import tempfile
import threading

import pytest

from tests.unit.xen.test_domains import job as xen_job
from xenlvm import logs
from xenlvm.admin import check, install, rebuild
from xenlvm.config.load import parse_config
from xenlvm.core import state
from xenlvm.errors import SafetyRefusal
from xenlvm.host import fsutil
from xenlvm.host.lock import JobLock
from xenlvm.host.mount import MountEntry
from xenlvm.xen import domains as xen
from xenlvm.xen import export as xen_export

OTHER_UID = 1000  # a local user; the tests run as root (make unit) or as that user's peer


def read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def planted_names(path: str) -> list[str]:
    """The temporary names a local user could guess: path.<pid>.tmp for pids around ours."""
    return [f"{path}.{pid}.tmp" for pid in range(os.getpid() - 2, os.getpid() + 3)]


def test_a_file_planted_at_the_temporary_name_neither_receives_the_text_nor_becomes_the_file(tmp_path):
    path = str(tmp_path / "state.json")
    for name in planted_names(path):
        with open(name, "w") as handle:
            handle.write("planted")
        if os.geteuid() == 0:
            os.chown(name, OTHER_UID, OTHER_UID)

    fsutil.write_atomically(path, "xenlvm's\n")

    info = os.lstat(path)
    assert stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()
    assert read(path) == "xenlvm's\n"
    assert [read(name) for name in planted_names(path)] == ["planted"] * 5
    assert sorted(os.listdir(tmp_path)) == sorted(["state.json", *map(os.path.basename, planted_names(path))])


def test_a_fifo_planted_at_the_temporary_name_does_not_hang_the_write(tmp_path):
    path = str(tmp_path / "state.json")
    for name in planted_names(path):
        os.mkfifo(name)
    done = threading.Event()

    def write() -> None:
        fsutil.write_atomically(path, "xenlvm's\n")
        done.set()

    threading.Thread(target=write, daemon=True).start()  # before the fix, open() blocked for ever
    assert done.wait(10), "write_atomically hung on a FIFO planted at its temporary name"
    assert read(path) == "xenlvm's\n"


def test_a_named_temporary_file_left_or_planted_is_removed_not_opened(tmp_path):
    path = str(tmp_path / "sbc_pre")
    tmp = path + ".xenlvm-tmp"
    os.mkfifo(tmp)
    fsutil.write_atomically(path, "#!/bin/sh\n", mode=0o755, tmp=tmp, exact_mode=True)
    assert read(path) == "#!/bin/sh\n" and stat.S_IMODE(os.stat(path).st_mode) == 0o755
    assert not os.path.lexists(tmp)


def log_to(path: str, message: str) -> None:
    logs.setup(syslog=False)
    try:
        logs.add_log_file(path)
        logging.getLogger("xenlvm").info("%s", message)
    finally:
        logs.setup(syslog=False)  # drops the handlers again


def test_the_log_file_is_not_followed_through_a_planted_symlink(tmp_path, capsys):
    victim = tmp_path / "shadow"
    victim.write_text("root:x:0:0\n")
    (tmp_path / "xenlvm.log").symlink_to(victim)

    log_to(str(tmp_path / "xenlvm.log"), "a line for the log")

    assert victim.read_text() == "root:x:0:0\n"
    assert "cannot write the log file" in capsys.readouterr().err


def test_a_fifo_at_the_log_files_place_neither_hangs_nor_is_written(tmp_path, capsys):
    fifo = tmp_path / "xenlvm.log"
    os.mkfifo(fifo)
    done = threading.Event()
    threading.Thread(target=lambda: (log_to(str(fifo), "a line"), done.set()), daemon=True).start()
    assert done.wait(10), "opening a FIFO as the log file hung"
    assert "cannot write the log file" in capsys.readouterr().err


def test_a_log_file_of_another_user_is_not_written(tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    path = tmp_path / "xenlvm.log"
    path.write_text("")
    os.chown(path, OTHER_UID, OTHER_UID)
    log_to(str(path), "a line")
    assert path.read_text() == ""
    assert "not a regular file owned by xenlvm's user" in capsys.readouterr().err


def test_the_log_file_gets_every_line(tmp_path):
    path = tmp_path / "log" / "xenlvm.log"
    log_to(str(path), "a line for the log")
    assert "a line for the log" in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


# ---------------------------------------------------------------------------------------------
# What root relies on: owned by root, writable by nobody else, all the way up


def test_a_path_is_trusted_only_when_it_and_every_directory_above_are_roots_alone(tmp_path):
    (tmp_path / "lib" / "xenlvm").mkdir(parents=True)
    python = tmp_path / "bin" / "python3"
    python.parent.mkdir()
    python.write_text("")
    assert fsutil.trust_problem(str(python)) is None
    assert fsutil.trust_problem("/tmp") is not None  # sticky, but writable by everyone itself

    python.chmod(0o757)
    assert "is writable by everyone (mode 757)" in fsutil.trust_problem(str(python))
    python.chmod(0o755)
    (tmp_path / "bin").chmod(0o775)  # a directory above, writable by its group: python can be replaced
    assert f"{tmp_path / 'bin'} is writable by its group (mode 775)" in fsutil.trust_problem(str(python))
    assert "Fix: chmod go-w" in fsutil.trust_problem(str(python))
    (tmp_path / "bin").chmod(0o1777)  # sticky, like /tmp: nobody else can replace root's file there
    assert fsutil.trust_problem(str(python)) is None
    (tmp_path / "bin").chmod(0o755)

    (tmp_path / "link").symlink_to(tmp_path / "lib")  # followed: where it leads is checked
    (tmp_path / "lib").chmod(0o777)
    through_link = str(tmp_path / "link" / "xenlvm")
    assert f"{tmp_path / 'lib'} is writable by everyone" in fsutil.trust_problem(through_link)
    (tmp_path / "lib").chmod(0o755)
    assert fsutil.trust_problem(through_link) is None


def test_a_path_owned_by_another_user_is_not_trusted(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    os.chown(tmp_path / "venv", OTHER_UID, OTHER_UID)
    problem = fsutil.trust_problem(str(tmp_path / "venv" / "bin"))
    venv = tmp_path / "venv"
    assert problem == (f"{venv} is owned by uid {OTHER_UID}, not root, so that user could change it "
                       f"or what it holds. Fix: chown root:root {venv}")


def test_install_hooks_refuses_an_interpreter_or_library_others_can_change_and_writes_nothing(
        tmp_path, monkeypatch):
    hooks = tmp_path / "sesam"
    hooks.mkdir()
    python = tmp_path / "python3"
    python.symlink_to(sys.executable)
    python_dir = tmp_path
    python_dir.chmod(0o777)
    with pytest.raises(SafetyRefusal, match=f"{tmp_path} is writable by everyone .*Nothing was changed"):
        install.install_hooks(str(hooks), str(python))
    python_dir.chmod(0o755)

    library = tmp_path / "site-packages"
    library.mkdir(mode=0o775)
    library.chmod(0o775)
    monkeypatch.setattr(install, "_library_dirs", lambda archive: [str(library)])
    with pytest.raises(SafetyRefusal, match=f"{library} is writable by its group"):
        install.install_hooks(str(hooks), sys.executable)
    assert list(hooks.iterdir()) == []

    library.chmod(0o755)
    install.install_hooks(str(hooks), sys.executable)
    assert sorted(p.name for p in hooks.iterdir()) == ["sbc_post", "sbc_pre"]
    assert [f.level for f in check.check_hooks(str(hooks))] == ["ok", "ok"]
    library.chmod(0o757)
    assert ("fail", "hooks") in [(f.level, f.check) for f in check.check_hooks(str(hooks))]


# ---------------------------------------------------------------------------------------------
# The folders of xenlvm's own state: root's alone, or not used


def test_a_lock_dir_others_can_write_to_is_refused(tmp_path):
    lock_dir = tmp_path / "run"
    lock_dir.mkdir()
    lock_dir.chmod(0o777)  # anyone could plant a record of paused domains, or a pid file
    refused = f"settings.lock_dir {lock_dir} must be root's alone: .*writable by everyone"
    with pytest.raises(SafetyRefusal, match=refused), JobLock(str(lock_dir), "xenvm", 0.0):
        pass
    assert list(lock_dir.iterdir()) == []
    lock_dir.chmod(0o755)
    with JobLock(str(lock_dir), "xenvm", 0.0):
        assert (lock_dir / "xenvm.lock").exists()


def test_a_state_file_is_not_written_into_a_folder_others_can_write_to(tmp_path, caplog):
    config = parse_config(f"settings: {{state_dir: {tmp_path / 'state'}}}\n"
                          "jobs: {xenvm: {volume: system/xenvm, snapshot: vmbackup, size: 1G, "
                          "mountpoint: /mnt/vmbackup}}\n", "config.yaml")
    (tmp_path / "state" / "xenvm").mkdir(parents=True)
    (tmp_path / "state" / "xenvm").chmod(0o777)
    state.record_run(config, ["xenvm"], state.RunRecord("pre", True, 0, 1.0, 2.0), {})
    assert list((tmp_path / "state" / "xenvm").iterdir()) == []
    assert "was not written: its folder must be root's alone" in caplog.text
    (tmp_path / "state" / "xenvm").chmod(0o755)
    state.record_run(config, ["xenvm"], state.RunRecord("pre", True, 0, 1.0, 2.0), {})
    assert state.read_state(config, "xenvm")["pre"]["ok"] is True


def test_the_xen_configuration_is_not_exported_into_a_folder_others_can_write_to(tmp_path):
    etc = tmp_path / "etc-xen"
    etc.mkdir()
    (etc / "vm1.cfg").write_text('name = "vm1"\n')
    out = tmp_path / "export"
    out.mkdir()
    out.chmod(0o1777)  # somebody's link named vm1.cfg there would have root's copy write through it
    domains = [xen.Domain("vm1", 1, False, (), {"domid": 1})]
    refused = f"xen.export_dir of job 'xenvm' \\({out}\\) must be root's alone"
    with pytest.raises(SafetyRefusal, match=refused):
        xen_export.export_configuration(xen_job(), domains, str(out), str(etc))
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# restore-disk's source: a restored guest folder whose setuid files and devices work on dom0


def mount(path: str, *options: str) -> MountEntry:
    return MountEntry(8, 1, path, ("rw", *options), "ext4", "/dev/sda1")


def test_restore_disk_warns_when_the_restored_folder_lets_guest_setuid_files_and_devices_work():
    folder = tempfile.mkdtemp(dir="/tmp")  # /tmp lets everyone through (pytest's own folders do not)
    try:
        os.chmod(folder, 0o755)
        warning = rebuild.restored_folder_warning(folder, [mount("/"), mount("/tmp")])
        assert warning is not None and f"the restored folder {folder} lies on /tmp, mounted without nosuid " \
            "and nodev, and other users can get to it" in warning
        assert "mkdir -m 700" in warning
        warning = rebuild.restored_folder_warning(folder, [mount("/"), mount("/tmp", "nosuid")])
        assert warning is not None and "mounted without nodev," in warning
        assert rebuild.restored_folder_warning(folder, [mount("/"), mount("/tmp", "nosuid", "nodev")]) is None
        os.chmod(folder, 0o700)  # root's alone: nobody else gets to the files
        assert rebuild.restored_folder_warning(folder, [mount("/"), mount("/tmp")]) is None
    finally:
        os.rmdir(folder)
