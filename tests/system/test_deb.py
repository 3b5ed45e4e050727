"""The Debian package, proven in the sandbox: `make deb` builds it; a guest of its own, with
/usr and /var made private (guest/private-root.sh: this machine's real /usr is never written),
installs it with dpkg, upgrades it, uses it for a whole sesam cycle with Debian's python3, click
and PyYAML, and purges it. The admin's own hooks are kept and chained, and given back on purge.

That guest's work directory, and so its mailbox, lies under /var/tmp, as for a checkout there:
init.sh's tmpfs over /var/tmp and private-root.sh's overlay over /var both cover it, and each
must give it back (it is made for this test and removed after it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from sandbox.machine import REPO, Guest
from sandbox.world import DEFAULT_CONFIG, SESAM_ARGS, World
from tests.system.conftest import assert_nothing_left

pytestmark = pytest.mark.system

HOOKS = "/opt/sesam/bin/sesam"
OWN_PRE = "#!/bin/sh\necho \"own pre $*\" >> /run/own-hooks.log\n"
OWN_POST = "#!/bin/sh\necho \"own post $*\" >> /run/own-hooks.log\n"
METRICS = "/var/lib/node_exporter/textfile/xenlvm.prom"
# The package's files that purge must take away (the doc directory holds the rest).
PACKAGE_FILES = ("/usr/sbin/xenlvm", "/usr/lib/python3/dist-packages/xenlvm",
                 "/usr/share/man/man8/xenlvm.8.gz", "/usr/share/bash-completion/completions/xenlvm",
                 "/usr/share/doc/xenlvm")
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
       "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}


def _version() -> str:
    namespace: dict = {}
    exec((REPO / "xenlvm" / "__init__.py").read_text(), namespace)
    return namespace["__version__"]


@pytest.fixture(scope="module")
def package() -> str:
    """The .deb of this checkout: `make deb` (dpkg-buildpackage and lintian; nothing to do when
    it is up to date, as after `make test`'s own `make deb`)."""
    done = subprocess.run(["make", "-s", "deb"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, f"make deb failed:\n{done.stdout}{done.stderr}"
    deb = REPO / "dist" / f"xenlvm_{_version()}_all.deb"
    assert deb.is_file(), deb
    return str(deb)


@pytest.fixture(scope="module")
def packaged(package):
    """A world in a guest of its own whose /usr and /var are private overlays, with the admin's
    own sesam hooks in place and no xenlvm hooks; its work directory under /var/tmp."""
    work_in = Path(tempfile.mkdtemp(prefix="xenlvm-test-", dir="/var/tmp"))
    machine = Guest("deb", work_in=work_in)
    try:
        machine.boot()
        world = World(machine)
        world.build(config=None)
        machine.run(["rm", "-f", f"{HOOKS}/sbc_pre", f"{HOOKS}/sbc_post"], check=True)
        machine.write(f"{HOOKS}/sbc_pre", OWN_PRE, mode="0750")
        machine.write(f"{HOOKS}/sbc_post", OWN_POST, mode="0750")
        # Told to keep nothing, private-root.sh refuses to overlay the /var that holds the
        # mailbox, before it changes anything (its answer arrives, and the guest goes on).
        refused = machine.make_private(keep=[])
        assert refused.rc == 1 and f"/var holds the sandbox's mailbox ({machine.work}/mailbox)" \
            in refused.stderr and "nothing changed" in refused.stderr, refused
        private = machine.make_private()
        assert private.rc == 0, private
        # man-db's dpkg trigger rebuilds the index of every man page on this machine: minutes in
        # the emulated kernel. Without this flag file it skips that, as man-db documents; man
        # finds the page by its path all the same.
        machine.run(["rm", "-f", "/var/lib/man-db/auto-update"], check=True)
        yield world
    finally:
        machine.halt()
        shutil.rmtree(work_in, ignore_errors=True)


def _run(world: World, *argv: str, check: bool = True):
    return world.guest.run(list(argv), env=ENV, check=check)


def _existing(world: World, *paths: str) -> list[str]:
    """Those of paths that exist in the guest (one guest command for all)."""
    done = world.guest.run(["/bin/sh", "-c", 'for p; do [ ! -e "$p" ] || echo "$p"; done', "sh", *paths],
                           check=True)
    return done.stdout.split()


def _complete(world: World, line: str) -> list[str]:
    """What bash completes for the last word of line, with the package's completion."""
    script = ('. /usr/share/bash-completion/completions/xenlvm; read -ra COMP_WORDS <<< "$1"; '
              '[ "${1% }" = "$1" ] || COMP_WORDS+=(""); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); '
              '_xenlvm; printf "%s\\n" "${COMPREPLY[@]}"')
    return _run(world, "bash", "-c", script, "bash", line).stdout.split()


def test_the_package_installs_backs_up_through_sesams_hooks_and_purges_cleanly(packaged, package):
    world = packaged
    own_hooks = world.guest.sh(f"cd {HOOKS} && sha256sum sbc_pre sbc_post").stdout

    # Install: dpkg resolves the dependencies against Debian's packages (python3-click, ...).
    # --path-include: a Docker-style dpkg.cfg.d that drops /usr/share/doc and man pages must
    # not hide the files this test checks.
    installed = _run(world, "dpkg", "--path-include=/usr/share/*", "-i", package, check=False)
    assert installed.rc == 0, installed
    assert "xenlvm install-hooks" in installed.stdout  # postinst: what to do next
    assert _run(world, "ls", HOOKS).stdout.split() == ["sbc_post", "sbc_pre"]  # no hooks of its own
    assert _existing(world, "/etc/xenlvm/config.yaml", *PACKAGE_FILES,
                     "/usr/share/doc/xenlvm/examples/config.example.yaml",
                     "/usr/share/doc/xenlvm/examples/xenlvm-alerts.yml") == [
        *PACKAGE_FILES, "/usr/share/doc/xenlvm/examples/config.example.yaml",
        "/usr/share/doc/xenlvm/examples/xenlvm-alerts.yml"]  # and no active configuration
    # Debian's python3 with Debian's click and PyYAML, nothing from PyPI (xenlvm itself runs
    # as /usr/sbin/xenlvm below).
    modules = _run(world, "/usr/bin/python3", "-c", "import click, yaml, xenlvm; "
                   "print(xenlvm.__version__, click.__file__, yaml.__file__, xenlvm.__file__)").stdout.split()
    assert modules[0] == _version()
    assert all(path.startswith("/usr/lib/python3/dist-packages/") for path in modules[1:]), modules
    # man finds the page (lintian, in make deb, has checked that it renders without a warning)
    assert _run(world, "man", "-w", "xenlvm").stdout.strip() == "/usr/share/man/man8/xenlvm.8.gz"
    assert _complete(world, "xenlvm ins") == ["install-hooks"]
    assert _complete(world, "xenlvm pre --d") == ["--dry-run"]

    # The administrator's steps from README.Debian: configuration, then the hooks.
    world.guest.write("/etc/xenlvm/config.yaml", DEFAULT_CONFIG.replace(
        "settings:\n", f"settings:\n  metrics_file: {METRICS}\n", 1), mode="0600")
    world.guest.run(["mkdir", "-p", "/var/lib/node_exporter/textfile"], check=True)
    hooks = _run(world, "xenlvm", "install-hooks", check=False)  # /usr/sbin/xenlvm
    assert hooks.rc == 0, hooks
    assert _run(world, "ls", HOOKS).stdout.split() == ["sbc_post", "sbc_post.local", "sbc_pre",
                                                        "sbc_pre.local"]
    for hook in ("sbc_pre", "sbc_post"):  # bound to Debian's python3 and its packages, not to a venv
        text = world.guest.read(f"{HOOKS}/{hook}")
        assert text.splitlines()[0] == "#!/usr/bin/python3 -IS"
        assert "\nsys.path += ['/usr/lib/python3/dist-packages']\n" in text

    # An upgrade (here: the same version again) keeps the hooks, which then run the new code,
    # and no longer asks for install-hooks.
    hooks_before = world.guest.sh(f"cd {HOOKS} && sha256sum *").stdout
    upgraded = _run(world, "dpkg", "--path-include=/usr/share/*", "-i", package, check=False)
    assert upgraded.rc == 0, upgraded
    assert "install-hooks" not in upgraded.stdout
    assert world.guest.sh(f"cd {HOOKS} && sha256sum *").stdout == hooks_before

    # sesam's cycle: pre, a tar backup of the mounted snapshot while the VM writes, post.
    before = world.guest.run(["sha256sum", "/srv/xenvm/vm1/disk.img"], check=True).stdout.split()[0]
    pre = world.pre()
    assert pre.rc == 0, pre
    world.guest.sh("head -c 1048576 /dev/urandom | dd of=/srv/xenvm/vm1/disk.img conv=notrunc 2>/dev/null;"
                   " sync")
    world.guest.sh("tar -C /mnt/vmbackup -cf /tmp/backup.tar vm1 && mkdir -p /tmp/restore && "
                   "tar -C /tmp/restore -xf /tmp/backup.tar")
    restored = world.guest.run(["sha256sum", "/tmp/restore/vm1/disk.img"], check=True).stdout.split()[0]
    assert restored == before  # the backup holds the disk as of the snapshot
    post = world.post()
    assert post.rc == 0, post
    assert_nothing_left(world)
    assert world.guest.read("/run/own-hooks.log").splitlines() == [
        f"own pre {' '.join(SESAM_ARGS)}", f"own post {' '.join(SESAM_ARGS)}"]
    metrics = world.guest.read(METRICS)
    assert 'xenlvm_last_run_success{job="xenvm",phase="post"} 1' in metrics, metrics

    # Purge: xenlvm's hooks go and the admin's come back; nothing of the package is left.
    purged = _run(world, "dpkg", "--purge", "xenlvm", check=False)
    assert purged.rc == 0, purged
    assert world.guest.sh(f"cd {HOOKS} && sha256sum sbc_pre sbc_post").stdout == own_hooks
    assert _run(world, "ls", HOOKS).stdout.split() == ["sbc_post", "sbc_pre"]
    left = _existing(world, *PACKAGE_FILES, "/var/lib/xenlvm", "/var/log/xenlvm.log",
                     "/etc/xenlvm/config.yaml")
    assert left == ["/etc/xenlvm/config.yaml"]  # only the administrator's own file stays
    status = _run(world, "dpkg-query", "-W", "-f=${db:Status-Status}", "xenlvm", check=False)
    assert status.stdout in ("not-installed", ""), status
    assert "vmbackup" not in world.lvs()

    # Whatever the guest did, this machine has no xenlvm package and no file of it.
    host = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", "xenlvm"], capture_output=True,
                          text=True)
    assert host.stdout in ("not-installed", ""), host
    assert [path for path in PACKAGE_FILES if os.path.lexists(path)] == []
