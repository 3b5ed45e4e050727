"""The vendor manual's world inside a sandbox guest: VG system, the VM volume system/xenvm
mounted at /srv/xenvm, xenlvm's hooks installed where sesam keeps them (guest/world.sh), the
stand-in xl and the fault wrappers; and the ways the system tests, ``make demo`` and ``make
bench`` look at it and act on it.
"""

from __future__ import annotations

import json
import textwrap

from sandbox.machine import GUEST_FILES, Completed, Guest

HOOKS = "/opt/sesam/bin/sesam"
CONFIG = "/etc/xenlvm/config.yaml"
# sesam's argument order is not documented; these are shaped like a sesam task's details.
SESAM_ARGS = ["xen_vm1", "/mnt/vmbackup", "FULL", "20261129-213000", "backup-host"]

FAULT_PATH = "/run/faults/bin:/usr/sbin:/usr/bin:/sbin:/bin"
XL = "/opt/xen/bin/xl"  # the stand-in xl (see guest/xl), found first on XEN_SETTINGS' path
# The head of a configuration whose jobs use the stand-in xl and the fault wrappers.
XEN_SETTINGS = f"""\
settings:
  path: /opt/xen/bin:{FAULT_PATH}
  lock_timeout: 5s
jobs:
"""
# The commands pre and post run, in order: the steps at which they can fail or be stopped.
# pre runs blkid only when the origin is not mounted (otherwise the mount table names the type).
PRE_STEPS = ("lvs", "blkid", "lvcreate", "mount")
POST_STEPS = ("lvs", "umount", "lvremove")

DEFAULT_CONFIG = """\
settings:
  lock_timeout: 5s
jobs:
  xenvm:
    volume: system/xenvm
    snapshot: vmbackup
    size: 64M
    mountpoint: /mnt/vmbackup
    tasks: [xen_vm1]
    unmount_timeout: 4s
"""


class World:
    """The manual's world inside the guest, and the ways a test looks at it and acts on it."""

    def __init__(self, guest: Guest) -> None:
        self.guest = guest

    def build(self, fstype: str = "ext4", layout: str = "thick", config: str | None = DEFAULT_CONFIG) -> None:
        self.guest.reap()
        self.guest.run([GUEST_FILES / "world.sh", fstype, layout, self.guest.python], check=True)
        if config is not None:
            self.write_config(config)

    def write_config(self, text: str, *, faults: bool = False) -> None:
        text = textwrap.dedent(text)
        if faults:
            text = text.replace("settings:\n", f"settings:\n  path: {FAULT_PATH}\n", 1)
        self.guest.write(CONFIG, text, mode="0600")

    def inject(self, tool: str, rule: str) -> None:
        """Make xenlvm's next calls of tool misbehave (see guest/fault); switches the config to
        the fault-injecting PATH."""
        self.guest.write(f"/run/faults/{tool}", rule + "\n")

    def wait_for(self, text: str, path: str = "/run/faults/calls.log", timeout: float = 60) -> None:
        """Wait until the guest file path contains text (e.g. a tool started by xenlvm)."""
        # Only shell builtins read the file: a grep per look would cost the guest a process
        # start every tenth of a second while it waits.
        self.guest.run(["/bin/sh", "-c", 'i=0; while [ "$i" -lt "$3" ]; do if [ -f "$2" ]; then '
                        'while IFS= read -r line; do case $line in *"$1"*) exit 0;; esac; done < "$2"; '
                        'fi; sleep 0.1; i=$((i + 1)); done; exit 1', "sh", text, path,
                        str(int(timeout * 10))], check=True)

    def release(self, tool: str) -> None:
        """Let the calls of tool held by the fault rule 'hold' go on."""
        self.guest.run(["touch", f"/run/faults/{tool}.go"], check=True)

    def reset_faults(self, *, hold: str = "") -> None:
        """No fault rule, no released hold, an empty call log (between the steps of one test);
        with hold=TOOL, the rule 'hold' on TOOL."""
        self.guest.run(["/bin/sh", "-ec", 'cd /run/faults; rm -f -- lvs lvcreate lvremove lvchange mount '
                        'umount blkid thin_delta *.go *.count; : > calls.log; '
                        '[ -z "$1" ] || echo hold > "$1"',
                        "sh", hold], check=True)

    def start_held(self, hook: str, tool: str, *args: str, log: str | None = None) -> int:
        """Start hook (sbc_pre or sbc_post) as sesam does, with every fault rule cleared except
        'hold' on tool; return its pid once it has started tool and is held there (see release)."""
        self.reset_faults(hold=tool)
        pid = self.guest.spawn([f"{HOOKS}/{hook}", *(args or SESAM_ARGS)], env={}, log=log)
        self.wait_for(f"start {tool} ")
        return pid

    def interrupt_at(self, hook: str, step: str, signum: int) -> str:
        """Run hook (sbc_pre or sbc_post), send it signum while its command step runs, let that
        command finish; check that the hook exited 1 and return its output."""
        pid = self.start_held(hook, step, log="/run/interrupted.out")
        self.guest.signal(pid, signum)
        self.release(step)
        assert self.guest.wait(pid) == 1, step
        return self.guest.read("/run/interrupted.out")

    def fault_calls(self) -> list[str]:
        done = self.guest.run(["cat", "/run/faults/calls.log"])
        return done.stdout.splitlines()

    def hook(self, name: str, *args: str, env: dict | None = None, timeout: float = 120) -> Completed:
        """Call a hook as sesam does: the executable with the task's arguments, no environment."""
        return self.guest.run([f"{HOOKS}/{name}", *args], env={} if env is None else env, timeout=timeout)

    def pre(self, *args: str) -> Completed:
        return self.hook("sbc_pre", *(args or SESAM_ARGS))

    def post(self, *args: str) -> Completed:
        return self.hook("sbc_post", *(args or SESAM_ARGS))

    def xenlvm(self, *args: str) -> Completed:
        return self.guest.run([self.guest.python, "-m", "xenlvm", *args])

    def lvs(self) -> dict[str, dict]:
        """Every LV in VG system, by name, with the fields the tests look at."""
        out = self.guest.run(["lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o",
                              "lv_name,lv_attr,lv_tags,origin,data_percent,lv_snapshot_invalid", "system"],
                             check=True).stdout
        return {row["lv_name"]: row for row in json.loads(out)["report"][0]["lv"]}

    def mounts(self) -> dict[str, str]:
        """Mount point -> options, for everything mounted below /mnt and /srv."""
        table = {}
        for line in self.guest.read("/proc/mounts").splitlines():
            _dev, mountpoint, _fstype, options = line.split()[:4]
            if mountpoint.startswith(("/mnt/", "/srv/")):
                table[mountpoint] = options
        return table

    def log(self) -> str:
        done = self.guest.run(["cat", "/var/log/xenlvm.log"])
        return done.stdout
