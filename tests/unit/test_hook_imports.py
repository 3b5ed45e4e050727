"""What a hook call imports, and that the hook install-hooks writes runs. sesam runs sbc_pre
and sbc_post for every backup of the client, most of them for other tasks, and each import is
paid at every call (bench/hostcost.py measures what each costs): a call imports what it needs,
no more. These check module names, not time."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from xenlvm.admin import install

REPO = Path(__file__).resolve().parents[2]
# At exit, write the names of the imported modules into the file named by the first argument.
LIST_MODULES = """\
import atexit, sys
atexit.register(lambda: open(sys.argv[1], "w").write("\\n".join(sorted(sys.modules))))
"""
# The hook entry as the installed hooks run it.
HOOK = LIST_MODULES + "from xenlvm.hook_entry import run_hook\nrun_hook(sys.argv[2], sys.argv[3:])\n"

# One thin-volume job for another task; its files in the test's own directory.
CONFIG = ("settings: {{log_file: {tmp}/xenlvm.log, lock_dir: {tmp}/lock, state_dir: {tmp}/state}}\n"
          "jobs: {{vms: {{volume: data/vms, snapshot: vmsnap, mountpoint: /mnt/vms, "
          "tasks: [nightly_vms]}}}}\n")

# Needed only for --help and malformed options (click), a chained hook (install: subprocess),
# a matching job (pre, post and what they use), concurrent xl calls, or nowhere on this path
# (typing: annotations only; argparse and shutil: the watchdog's command line, Xen config copies).
NOT_FOR_ANOTHER_TASK = {
    "click", "xenlvm.cli", "xenlvm.admin.install", "subprocess", "xenlvm.phases.pre", "xenlvm.phases.post",
    "xenlvm.host.runner", "xenlvm.host.lvm", "xenlvm.host.mount", "xenlvm.core.state", "xenlvm.core.context",
    "json", "concurrent.futures", "typing", "argparse", "shutil",
}
NOT_FOR_A_MATCHING_JOB = {"click", "xenlvm.cli", "xenlvm.admin.install", "concurrent.futures", "typing",
                          "argparse", "shutil"}


def imported_by(tmp_path: Path, code: str, *args: str) -> set[str]:
    listing = tmp_path / "modules"
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(tmp=tmp_path))
    config.chmod(0o600)
    done = subprocess.run([sys.executable, "-c", code, str(listing), *args], cwd=REPO,
                          env={"XENLVM_CONFIG": str(config), "PATH": "/nonexistent"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return set(listing.read_text().split())


def test_a_call_for_another_task_imports_neither_click_nor_what_only_a_matching_job_needs(tmp_path):
    modules = imported_by(tmp_path, HOOK, "pre", "other_task", "/mnt/other", "FULL")

    assert {"xenlvm.hook_entry", "xenlvm.config.load", "yaml"} <= modules  # it did read the config
    assert "no job is configured" in (tmp_path / "xenlvm.log").read_text()
    assert modules & NOT_FOR_ANOTHER_TASK == set()


def test_the_modules_of_a_matching_pre_and_post_import_no_more_than_they_use(tmp_path):
    modules = imported_by(tmp_path,
                          LIST_MODULES + "import xenlvm.hook_entry, xenlvm.phases.pre, xenlvm.phases.post\n")

    assert {"xenlvm.phases.pre", "xenlvm.phases.post", "xenlvm.host.runner", "subprocess"} <= modules
    assert modules & NOT_FOR_A_MATCHING_JOB == set()


def test_help_still_comes_from_click(tmp_path):
    listing = tmp_path / "modules"
    done = subprocess.run([sys.executable, "-c", HOOK, str(listing), "pre", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 0 and "Usage: sbc_pre" in done.stdout
    assert "click" in listing.read_text().split()


def run_installed_hook(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    """Run text as sesam runs an installed hook: the file itself, its first line's interpreter."""
    hook = tmp_path / "sbc_pre"
    hook.write_text(text)
    hook.chmod(0o755)
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(tmp=tmp_path))
    config.chmod(0o600)
    return subprocess.run([str(hook), "other_task", "/mnt/other", "FULL"], env={"XENLVM_CONFIG": str(config)},
                          capture_output=True, text=True, timeout=60)


def test_the_hook_install_hooks_writes_runs_with_its_interpreter_flags(tmp_path):
    text = install.hook_text("pre", sys.executable, None)
    assert text.startswith(f"#!{sys.executable} -IS\n")

    done = run_installed_hook(tmp_path, text)
    assert done.returncode == 0, done.stderr
    assert "no job is configured" in (tmp_path / "xenlvm.log").read_text()


def test_a_hook_whose_libraries_moved_finds_them_where_site_looks(tmp_path):
    text = install.hook_text("pre", sys.executable, None)
    moved = re.sub(r"^sys\.path \+= .*$", "sys.path += ['/nonexistent']", text, flags=re.M)
    assert moved != text

    done = run_installed_hook(tmp_path, moved)
    assert done.returncode == 0, done.stderr
    assert "no job is configured" in (tmp_path / "xenlvm.log").read_text()
