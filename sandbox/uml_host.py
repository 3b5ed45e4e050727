"""What the sandbox needs from this host, and what to say when it cannot start.

Debian's User-Mode Linux 6.1 panics at boot on hosts whose CPU has AVX-512 or AMX, and on
AVX-512 hosts its guest signal handlers leak vector registers into the code they interrupt
(see uml/xstate_shim.c and ../shared/real-kernel-testing.md). Here:

- the sandbox's C helpers are built with the host's C compiler, once per source version
  (``.work/uml-tools/<hash>``): the XSTATE shim that UML is run with (LD_PRELOAD), the
  vector-register check every guest runs before anything else, and the shim's self-test;
- the shim is used where the host needs it (``XENLVM_UML_SHIM=auto``, the default), always
  (``on``: to exercise it on a host that does not need it) or never (``off``);
- a sandbox that cannot start is explained: the likely cause, what to do, the kernel's panic
  reason and the console's last lines.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

SOURCES = Path(__file__).resolve().parent / "uml"
LINUX = "/usr/bin/linux.uml"
# UML's FP buffer in Debian's 6.1 build (HOST_FP_SIZE): x87, SSE, AVX, AVX-512 and PKRU at
# their standard offsets. A host whose XSAVE area is longer refuses UML's SETREGSET.
UML_FP_SIZE = 2696
HEADER_END = 576  # the legacy area (x87, SSE) and the XSAVE header: always in UML's bytes
# XSAVE components the guest's processes never use: MPX (Linux 5.6 and glibc 2.35 dropped
# it), PKRU (UML has no protection keys) and AMX (a process must ask its kernel for the tiles,
# and UML's kernel has no such request). Any other component counts as used.
UNUSED_BY_GUEST = frozenset({3, 4, 9, 17, 18})
COMPONENT_NAMES = {2: "AVX", 3: "MPX bounds", 4: "MPX config", 5: "AVX-512 opmask",
                   6: "AVX-512 ZMM_Hi256", 7: "AVX-512 Hi16_ZMM", 9: "PKRU", 17: "AMX tile config",
                   18: "AMX tile data", 19: "APX"}
MODES = ("auto", "on", "off")
STATS_FIELDS = ("host_size", "uml_size", "whole", "resized", "deliveries", "restored", "evicted",
                "failures")


class SandboxError(RuntimeError):
    """The sandbox cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Component:
    """One enabled component of the host's XSAVE area (CPUID leaf 0xD, standard format)."""

    bit: int
    offset: int
    size: int

    def describe(self) -> str:
        name = COMPONENT_NAMES.get(self.bit, f"component {self.bit}")
        return f"{name} {self.offset}-{self.offset + self.size}"


@dataclass(frozen=True)
class HostCpu:
    """This CPU's vector registers as the guest's processes see them (vregcheck --host)."""

    level: str        # sse, avx or avx512
    xsave_size: int   # bytes of the XSAVE area of every feature the host kernel enabled
    avx512: bool
    amx: bool
    components: tuple[Component, ...] = ()  # beyond the legacy area, by bit

    def layout(self) -> str:
        """The XSAVE area in words: "x87/SSE and header 0-576, AVX 576-832, ... (2432 bytes)"."""
        parts = [f"x87/SSE and header 0-{HEADER_END}", *(c.describe() for c in self.components)]
        return f"{', '.join(parts)} ({self.xsave_size} bytes)"

    def shim_needed(self) -> str:
        """Why this host needs the XSTATE shim, or "" when it does not."""
        reasons = []
        if self.xsave_size > UML_FP_SIZE:
            features = "AMX" if self.amx else "AVX-512" if self.avx512 else "its features"
            reasons.append(f"its XSAVE area ({self.xsave_size} bytes, {features}) is longer than "
                           f"UML's FP buffer ({UML_FP_SIZE} bytes)")
        if self.avx512:
            reasons.append("with AVX-512, UML's signal frames lose k0-7 and the upper ZMM registers")
        return "; ".join(reasons)

    def describe(self) -> str:
        return (f"{self.level}, XSAVE area {self.xsave_size} bytes, AVX-512 "
                f"{'yes' if self.avx512 else 'no'}, AMX {'yes' if self.amx else 'no'}")


@dataclass(frozen=True)
class Tools:
    vregcheck: Path
    shim: Path
    selftest: Path
    cpu: HostCpu


def resize_bytes(cpu: HostCpu) -> int | None:
    """How much of UML's FP buffer the XSTATE shim may use (XENLVM_UML_SHIM_UML_BYTES) so that
    every guest stop takes its resizing path, as on an AMX host, while every component the
    guest's processes use stays inside those bytes; None where no such size exists.

    A host whose area is longer than UML's buffer (AMX) takes that path with the whole buffer.
    Elsewhere the size is the largest offset of a component the guest does not use that starts
    after the last one it uses (PKRU, MPX): that component then lies beyond UML's bytes, as the
    AMX tiles do on an AMX host. A host whose every component is used (AVX2 without PKRU, the
    AMD EPYC with AVX-512 and no PKRU) has none; its area fits UML's buffer, so it never needs
    the resizing path.
    """
    if cpu.xsave_size > UML_FP_SIZE:
        return UML_FP_SIZE
    used_end = max((c.offset + c.size for c in cpu.components if c.bit not in UNUSED_BY_GUEST),
                   default=HEADER_END)
    unused_after = [c.offset for c in cpu.components if c.bit in UNUSED_BY_GUEST and c.offset >= used_end]
    return max(unused_after, default=None)


def shim_mode() -> str:
    mode = os.environ.get("XENLVM_UML_SHIM", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise SandboxError(f"XENLVM_UML_SHIM={mode!r} is not one of {', '.join(MODES)}: auto uses the "
                           "XSTATE shim where this host needs it, on always, off never")
    return mode


def use_shim(mode: str, cpu: HostCpu) -> bool:
    return mode == "on" or (mode == "auto" and bool(cpu.shim_needed()))


def _compile(compiler: str, out: Path, source: str, *flags: str) -> None:
    argv = [compiler, "-O2", "-Wall", "-o", str(out), str(SOURCES / source), *flags]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SandboxError(f"building the sandbox's helper {source} failed:\n$ {' '.join(argv)}\n"
                           f"{done.stderr.strip()}\nThe C compiler must work (Debian: gcc libc6-dev; "
                           "make test installs them).")


def build_tools(work_root: Path) -> Tools:
    """Compile the helpers once per version of their sources (several pytest workers may ask at
    the same time: one builds, the others wait for it)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SandboxError("no C compiler (cc): the sandbox builds its vector-register check and its "
                           "XSTATE shim with it. Install the Debian packages gcc and libc6-dev "
                           "(make test, make demo and make bench do this themselves).")
    digest = hashlib.sha256()
    for source in sorted(SOURCES.glob("*.[ch]")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    home = work_root / "uml-tools" / digest.hexdigest()[:16]
    home.parent.mkdir(parents=True, exist_ok=True)
    with open(home.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / "done").exists():
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir()
            _compile(compiler, home / "vregcheck", "vregcheck.c", "-pthread")
            _compile(compiler, home / "xstate_selftest", "xstate_selftest.c")
            _compile(compiler, home / "xstate_shim.so", "xstate_shim.c", "-shared", "-fPIC", "-ldl")
            (home / "done").touch()
    return Tools(home / "vregcheck", home / "xstate_shim.so", home / "xstate_selftest",
                 host_cpu(home / "vregcheck"))


def host_cpu(vregcheck: Path) -> HostCpu:
    done = subprocess.run([str(vregcheck), "--host"], capture_output=True, text=True)
    lines = [line.split("=", 1) for line in done.stdout.splitlines() if "=" in line]
    facts = {key: value for key, value in lines if key != "component"}
    if done.returncode != 0 or "xsave_size" not in facts:
        raise SandboxError(f"{vregcheck} --host failed (exit {done.returncode}): {done.stderr.strip()}")
    components = tuple(Component(*map(int, value.split(","))) for key, value in lines if key == "component")
    return HostCpu(facts["level"], int(facts["xsave_size"]), facts["avx512"] == "yes",
                   facts["amx"] == "yes", components)


def read_shim_stats(path: Path) -> dict[str, int]:
    """The shim's counters (struct stats in uml/xstate_shim.c); {} when it never ran."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    if len(data) < 8 + 8 * len(STATS_FIELDS) or not data.startswith(b"XSHIM01\0"):
        return {}
    return dict(zip(STATS_FIELDS, struct.unpack_from(f"<{len(STATS_FIELDS)}Q", data, 8)))


def uml_temp_dir() -> str:
    """Where UML puts the file behind the guest's memory: TMP, TEMP or TMPDIR, else /dev/shm."""
    for name in ("TMP", "TEMP", "TMPDIR"):
        if os.environ.get(name):
            return os.environ[name]
    return "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"


def preflight() -> None:
    """What can be known to fail before booting."""
    if not os.path.exists(LINUX):
        raise SandboxError(f"{LINUX} is missing: install the Debian package user-mode-linux "
                           "(make test, make demo and make bench do this themselves).")
    temp = uml_temp_dir()
    try:
        flags = os.statvfs(temp).f_flag
    except OSError as exc:
        raise SandboxError(f"UML keeps the guest's memory in a file in {temp}, which cannot be used: "
                           f"{exc.strerror}. Set TMPDIR to a writable directory.") from None
    if flags & os.ST_NOEXEC:
        raise SandboxError(f"{temp} is mounted noexec, and UML maps the guest's memory from a file "
                           f"there with execute permission. Remount it (mount -o remount,exec {temp}) "
                           "or set TMPDIR to a directory on a filesystem without noexec.")
    if not os.access(temp, os.W_OK):
        raise SandboxError(f"UML keeps the guest's memory in a file in {temp}, which is not writable "
                           "here. Set TMPDIR to a writable directory.")


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def explain(work: Path, cpu: HostCpu | None, mode: str, shim: bool, what: str) -> str:
    """Why the guest in work did not start or stopped, in words, from its logs.

    mode: the XSTATE shim setting (auto, on, off); shim: whether UML ran with it; what: what
    was seen ("the guest stopped", "the guest did not come up within 90 s").
    """
    console = _tail(work / "console.log", 400)
    vregs = _tail(work / "vregcheck.log", 20)
    init_log = _tail(work / "guest-init.log", 15)
    panic = re.findall(r"Kernel panic - not syncing: (.*)", console)
    cause, advice = _likely_cause(console, vregs, (work / "guest-unsound").exists(), cpu, shim)
    parts = [f"The sandbox (User-Mode Linux) could not start: {what}.", f"Likely cause: {cause}",
             f"What to do: {advice}"]
    if panic:
        parts.append(f"Kernel panic: {panic[-1].strip()}")
    if cpu is not None:
        parts.append(f"Host CPU: {cpu.describe()}; XSTATE shim {'loaded' if shim else 'not loaded'} "
                     f"(XENLVM_UML_SHIM={mode}).")
    if vregs:
        parts.append("Vector-register check in the guest:\n" + _indent(vregs))
    tail = "\n".join(console.splitlines()[-12:])
    parts.append(f"Last lines of the console ({work / 'console.log'}):\n" + (_indent(tail) if tail else
                                                                          "    (empty)"))
    if init_log:
        parts.append(f"Last lines of the guest's init ({work / 'guest-init.log'}):\n" + _indent(init_log))
    return "\n".join(parts)


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())


def _likely_cause(console: str, vregs: str, unsound: bool, cpu: HostCpu | None,
                  shim: bool) -> tuple[str, str]:
    if unsound:
        return ("guest processes do not keep their vector registers on this host "
                f"({cpu.describe() if cpu else 'CPU unknown'}): every result computed in the guest "
                "would be suspect, so the sandbox stops here.",
                "if the XSTATE shim was off, run with XENLVM_UML_SHIM=on; if it was on, this host's "
                "CPU has a feature the shim does not handle (see sandbox/uml/xstate_shim.c). "
                "Report the check's output above.")
    if "ptrace set fp regs failed" in console or "ptrace get fp regs failed" in console:
        size = f"{cpu.xsave_size} bytes" if cpu else "larger"
        if shim:
            return (f"the host's XSAVE area ({size}) is not accepted from UML even with the XSTATE "
                    "shim loaded: a CPU feature the shim does not handle.",
                    "report this with the console lines below; XENLVM_UML_SHIM=off shows UML's own "
                    "behaviour for comparison.")
        return (f"host CPU feature not handled: the host's XSAVE area ({size}; AVX-512/AMX) is longer "
                f"than UML's {UML_FP_SIZE}-byte FP buffer, and the host kernel refuses UML's shorter "
                "one (errno 14, EFAULT).",
                "let the sandbox load its XSTATE shim: unset XENLVM_UML_SHIM or set it to auto or on.")
    if re.search(r"Requested init .* failed|No working init found", console):
        return ("the guest's init script could not be started.",
                "check that sandbox/guest/init.sh exists and is executable.")
    if re.search(r"must be not mounted noexec|Checking PROT_EXEC mmap in \S+\.\.\.(?!OK)", console):
        return (f"{uml_temp_dir()} does not allow executable mappings (mounted noexec).",
                "remount it with exec, or set TMPDIR to a directory that allows it.")
    if re.search(r"[Oo]ut of memory|Cannot allocate memory", console):
        return ("not enough memory for the guest.", "free memory on this machine, or run fewer "
                "sandboxes at once (make test runs 4: pytest -n).")
    if not console.strip():
        return (f"{LINUX} printed nothing.", f"run {LINUX} --version by hand and see what it says.")
    return ("not recognised from the console.", "read the console and init lines below.")
