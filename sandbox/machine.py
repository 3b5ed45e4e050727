"""One sandbox guest: a User-Mode Linux kernel with real LVM, driven from this machine.

The guest's root is this machine's filesystem, with everything writable hidden behind tmpfs
or overlays (guest/init.sh; what is hidden and what stays in view: guest_paths.py); it talks
to us through a mailbox directory inside our own work directory. Before anything else the
guest proves that its processes keep their vector registers (uml/vregcheck.c); on hosts that
need it UML runs with the XSTATE shim (uml_host.py).
Used by the system tests, ``make demo`` and ``make bench``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sandbox import guest_paths, uml_host
from sandbox.uml_host import SandboxError

__all__ = ["Completed", "Guest", "SandboxError", "REPO", "GUEST_FILES", "GUEST_PATH"]

REPO = Path(__file__).resolve().parents[1]
GUEST_FILES = Path(__file__).resolve().parent / "guest"  # what runs in the guest
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LINUX = uml_host.LINUX


@dataclass(frozen=True)
class Completed:
    argv: list
    rc: int | None
    stdout: str
    stderr: str
    duration: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __str__(self) -> str:
        return (f"$ {' '.join(map(str, self.argv))}\nexit {self.rc} after {self.duration:.2f}s\n"
                f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}")


def work_root() -> Path:
    return REPO / ".work"


class Guest:
    """One booted guest. Not thread-safe: one request at a time."""

    def __init__(self, name: str, *, disk_size: int = 2 << 30, memory: str = "768M",
                 shim: str | None = None, shim_uml_bytes: int | None = None, vregcheck_args: str = "",
                 init: Path | None = None, work_in: Path | None = None) -> None:
        """shim: auto, on or off (default: $XENLVM_UML_SHIM, else auto). shim_uml_bytes: the shim
        uses only that much of UML's FP buffer, as on a host with a longer XSAVE area (default:
        $XENLVM_UML_SHIM_UML_BYTES, else all of it). work_in: the directory the guest's work
        directory is made in (default: .work/ of the checkout). For the sandbox's own tests:
        vregcheck_args (--must-fail) and init (another PID 1)."""
        self.work = Path(os.path.realpath(work_in or work_root())) / f"{name}-{os.getpid()}"
        shutil.rmtree(self.work, ignore_errors=True)
        (self.work / "mailbox").mkdir(parents=True)
        self.disk = self.work / "disk.img"
        with open(self.disk, "wb") as handle:
            handle.truncate(disk_size)
        self.memory = memory
        self.proc: subprocess.Popen | None = None
        self._next = 0
        self.python = sys.executable
        self.shim_mode = shim  # None: $XENLVM_UML_SHIM, read by boot (which reports a bad value)
        self.shim_uml_bytes = int(os.environ.get("XENLVM_UML_SHIM_UML_BYTES") or 0) \
            if shim_uml_bytes is None else shim_uml_bytes
        self.vregcheck_args = vregcheck_args
        self.init = init or GUEST_FILES / "init.sh"
        self.tools: uml_host.Tools | None = None
        self.shim = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def shim_stats(self) -> dict[str, int]:
        """What the XSTATE shim did in this guest so far ({} when it was not loaded)."""
        return uml_host.read_shim_stats(self.work / "shim-stats")

    def boot(self, timeout: float = 90.0) -> None:
        self.shim_mode = self.shim_mode or uml_host.shim_mode()
        uml_host.preflight()
        self.tools = uml_host.build_tools(work_root())
        self.shim = uml_host.use_shim(self.shim_mode, self.tools.cpu)
        keep = guest_paths.boot_binds(self._in_view())
        argv = [LINUX, f"mem={self.memory}", "root=/dev/root", "rootfstype=hostfs", "rootflags=/", "rw",
                f"ubd0={self.disk}", f"init={self.init}", "con=null",
                "con0=fd:0,fd:1", f"XENLVM_WORK={self.work}", f"XENLVM_GUEST_FILES={GUEST_FILES}",
                f"XENLVM_PYTHON={self.python}", f"XENLVM_HIDE={':'.join(guest_paths.HIDDEN)}",
                f"XENLVM_OVERLAY={':'.join(guest_paths.OVERLAID)}", f"XENLVM_KEEP={':'.join(keep)}",
                f"XENLVM_VREGCHECK={self.tools.vregcheck}"]
        if self.vregcheck_args:
            argv.append(f"XENLVM_VREGCHECK_ARGS={self.vregcheck_args}")
        env = {name: value for name, value in os.environ.items() if not name.startswith("XENLVM_UML_SHIM")}
        if self.shim:
            env.update(LD_PRELOAD=str(self.tools.shim), XENLVM_UML_SHIM_STATS=str(self.work / "shim-stats"))
            if self.shim_uml_bytes:
                env["XENLVM_UML_SHIM_UML_BYTES"] = str(self.shim_uml_bytes)
        self.console = open(self.work / "console.log", "wb")  # noqa: SIM115 (closed in halt)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.console,
                                     stderr=subprocess.STDOUT, start_new_session=True, env=env)
        deadline = time.monotonic() + timeout
        while not (self.work / "guest-ready").exists():
            if (self.work / "guest-unsound").exists():
                self.kill()
                raise SandboxError(self._explain("its processes lose vector registers"))
            self._check_alive()
            if time.monotonic() > deadline:
                self.kill()
                raise SandboxError(self._explain(f"the guest did not come up within {timeout:.0f} s"))
            time.sleep(0.05)

    def _in_view(self) -> list[str]:
        """What the guest must see as this machine's: the checkout, the virtual environment, the
        Python installation and the work directory (the guest's scripts split lists at ':' and
        blanks, and the kernel's command line at blanks)."""
        paths = [os.path.realpath(path) for path in (REPO, sys.base_prefix, sys.prefix, self.work)]
        for path in paths:
            if ":" in path or any(char.isspace() for char in path):
                raise SandboxError(f"the sandbox cannot keep {path} in view: its guest cannot take a "
                                   "path with ':' or a blank. Move the checkout (or the Python "
                                   "installation) to a path without them.")
        return paths

    def make_private(self, *, keep: list[str] | None = None) -> Completed:
        """Overlay guest_paths.PRIVATE (/usr, /var) in the guest (guest/private-root.sh), so that
        what is installed there stays in the guest; the work directory is bound back if they
        cover it. keep: what to bind back instead (for the script's own refusal)."""
        keep = guest_paths.private_binds(str(self.work)) if keep is None else keep
        env = {"PATH": GUEST_PATH, "HOME": "/root", "LC_ALL": "C",
               "XENLVM_PRIVATE": ":".join(guest_paths.PRIVATE), "XENLVM_KEEP": ":".join(keep)}
        return self.run([GUEST_FILES / "private-root.sh"], env=env)

    def _explain(self, what: str) -> str:
        self.console.flush()
        return uml_host.explain(self.work, self.tools.cpu if self.tools else None, self.shim_mode or "auto",
                                self.shim, what)

    def halt(self) -> None:
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                self._request({"op": "halt"}, timeout=30)
                self.proc.wait(timeout=30)
        except (SandboxError, subprocess.TimeoutExpired):
            self.kill()
        finally:
            self.proc = None
            self.console.close()
            self.disk.unlink(missing_ok=True)  # 2 GiB sparse; the logs stay in the work directory

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()

    def _check_alive(self) -> None:
        if self.proc is None:
            raise SandboxError(f"the guest in {self.work} is not running (it was halted)")
        if self.proc.poll() is not None:
            raise SandboxError(self._explain(f"the guest stopped (linux.uml exited with "
                                             f"{self.proc.returncode})"))

    # -- requests ----------------------------------------------------------------------------

    def _request(self, request: dict, timeout: float) -> dict:
        number = self._next
        self._next += 1
        mailbox = self.work / "mailbox"
        tmp = mailbox / f".req-{number}.tmp"
        tmp.write_text(json.dumps(request))
        tmp.rename(mailbox / f"req-{number}.json")
        answer = mailbox / f"resp-{number}.json"
        deadline = time.monotonic() + timeout + 30
        while not answer.exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise SandboxError(f"the guest did not answer {request} within {timeout + 30:.0f}s")
            time.sleep(0.005)
        payload = json.loads(answer.read_text())
        answer.unlink()
        if "error" in payload:
            raise SandboxError(f"the guest agent failed on {request}: {payload['error']}")
        return payload

    def run(self, argv: list, *, env: dict | None = None, input: str | None = None,
            timeout: float = 300, check: bool = False) -> Completed:
        """Run argv in the guest and wait for it. env=None gives a plain root environment."""
        argv = [str(a) for a in argv]
        env = {"PATH": GUEST_PATH, "HOME": "/root", "LC_ALL": "C"} if env is None else env
        payload = self._request({"op": "run", "argv": argv, "env": env, "input": input,
                                 "timeout": timeout}, timeout)
        done = Completed(argv, payload["rc"], payload["stdout"], payload["stderr"], payload["duration"])
        if check and done.rc != 0:
            raise SandboxError(f"guest command failed:\n{done}")
        return done

    def sh(self, script: str, *, check: bool = True, timeout: float = 300) -> Completed:
        """Run a shell snippet in the guest (test scaffolding only; xenlvm itself never uses a shell)."""
        return self.run(["/bin/sh", "-ec", script], check=check, timeout=timeout)

    def spawn(self, argv: list, *, env: dict | None = None, log: str | None = None,
              cwd: str | None = None) -> int:
        """Start argv in the guest without waiting; output goes to the guest file log."""
        env = {"PATH": GUEST_PATH, "HOME": "/root", "LC_ALL": "C"} if env is None else env
        return self._request({"op": "spawn", "argv": [str(a) for a in argv], "env": env,
                              "log": log, "cwd": cwd}, 30)["pid"]

    def wait(self, pid: int, timeout: float = 300) -> int | None:
        return self._request({"op": "wait", "pid": pid, "timeout": timeout}, timeout)["rc"]

    def signal(self, pid: int, signum: int, *, group: bool = False) -> bool:
        """Send signum to a spawned process (group=True: to its whole process group)."""
        return self._request({"op": "signal", "pid": pid, "sig": signum, "group": group}, 30)["ok"]

    def reap(self) -> None:
        """Kill every process spawned so far (between tests)."""
        self._request({"op": "reap"}, 60)

    def read(self, path: str) -> str:
        return self.run(["cat", path], check=True).stdout

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        self.run(["/bin/sh", "-ec", 'mkdir -p "$(dirname "$1")"; cat > "$1"; chmod "$2" "$1"', "sh",
                  path, mode], input=text, check=True)
