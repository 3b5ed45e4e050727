"""debian/prerm takes out the sesam hooks on removal only when this package's xenlvm wrote
them: hooks of a virtual environment or of the zipapp belong to another installation, which
still works after the package is gone, and a foreign hook is the admin's own. The decision is
prerm's shell function `ours`, run here over hooks exactly as install-hooks writes them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from xenlvm.admin import install

REPO = Path(__file__).resolve().parents[2]
PRERM = (REPO / "debian" / "prerm").read_text()
OURS = PRERM[PRERM.index("ours() {"):PRERM.index("\n}\n", PRERM.index("ours() {")) + 3]


def _ours(path: Path) -> bool:
    done = subprocess.run(["sh", "-c", OURS + 'ours "$1"', "sh", str(path)], capture_output=True, text=True)
    assert done.stderr == ""
    return done.returncode == 0


@pytest.mark.parametrize(("python", "zipapp", "expected"), [
    ("/usr/bin/python3", None, True),  # written by /usr/sbin/xenlvm
    ("/opt/xenlvm/bin/python", None, False),  # a virtual environment
    ("/usr/bin/python3", "/usr/local/lib/xenlvm.pyz", False),  # the zipapp, run by Debian's python3
])
def test_prerm_claims_only_the_hooks_this_package_wrote(tmp_path, monkeypatch, python, zipapp, expected):
    monkeypatch.setattr(install, "_zipapp", lambda: zipapp)
    hook = tmp_path / "sbc_pre"
    hook.write_text(install.hook_text("pre", python, None))
    assert _ours(hook) is expected


def test_prerm_leaves_a_foreign_hook_and_a_missing_one_alone(tmp_path):
    foreign = tmp_path / "sbc_pre"
    foreign.write_text("#!/usr/bin/python3\nprint('my own pre hook')\n")
    assert not _ours(foreign)
    assert not _ours(tmp_path / "sbc_post")


def test_prerm_claims_the_hooks_an_earlier_version_of_this_package_wrote(tmp_path):
    hook = tmp_path / "sbc_pre"  # as xenlvm 0.1.0 wrote them: no interpreter flags, no paths
    hook.write_text('#!/usr/bin/python3\n"""SEP sesam pre hook, written by \'xenlvm install-hooks\' '
                    '(xenlvm-hook).\n"""\nfrom xenlvm.hook_entry import run_hook\n\n'
                    'run_hook("pre", chain=None)\n')
    assert _ours(hook)
