"""The sandbox's decisions about this host, and its explanations, without booting anything
(tests/system/uml_host.py; the boots themselves are in tests/system/test_sandbox.py)."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from tests.system import uml_host
from tests.system.uml_host import HostCpu, SandboxError

DATA = Path(__file__).parent / "data"
# Sapphire Rapids: AVX-512 and AMX (XSAVE area 11008 bytes); Skylake-SP: AVX-512 without AMX,
# whose area is UML's 2696 bytes; the AMD EPYC (Zen 3) these tests were written on: AVX2 and
# PKRU, 2440 bytes.
AMX_HOST = HostCpu("avx512", 11008, avx512=True, amx=True)
AVX512_HOST = HostCpu("avx512", 2696, avx512=True, amx=False)
AVX2_HOST = HostCpu("avx", 2440, avx512=False, amx=False)


def test_an_amx_host_needs_the_shim_for_the_size_and_the_signal_frames() -> None:
    reason = AMX_HOST.shim_needed()
    assert "11008 bytes, AMX" in reason and "longer than UML's FP buffer (2696 bytes)" in reason
    assert "signal frames" in reason


def test_an_avx512_host_needs_the_shim_for_the_signal_frames_alone() -> None:
    reason = AVX512_HOST.shim_needed()
    assert "signal frames" in reason and "longer" not in reason


def test_an_avx2_host_does_not_need_the_shim() -> None:
    assert AVX2_HOST.shim_needed() == ""


@pytest.mark.parametrize(("mode", "cpu", "used"), [
    ("auto", AMX_HOST, True), ("auto", AVX512_HOST, True), ("auto", AVX2_HOST, False),
    ("on", AVX2_HOST, True), ("off", AMX_HOST, False)])
def test_shim_use_follows_the_mode_and_the_host(mode: str, cpu: HostCpu, used: bool) -> None:
    assert uml_host.use_shim(mode, cpu) is used


def test_the_shim_mode_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("XENLVM_UML_SHIM", raising=False)
    assert uml_host.shim_mode() == "auto"
    monkeypatch.setenv("XENLVM_UML_SHIM", " ON ")
    assert uml_host.shim_mode() == "on"
    monkeypatch.setenv("XENLVM_UML_SHIM", "yes")
    with pytest.raises(SandboxError, match="XENLVM_UML_SHIM='yes' is not one of auto, on, off"):
        uml_host.shim_mode()


def test_the_avx512_amx_panic_is_explained_as_the_cpu_feature_with_what_to_do(tmp_path: Path) -> None:
    """The console as reported from an AVX-512/AMX host (issue 13): this machine's boot lines,
    then the two lines that host printed."""
    work = tmp_path
    shutil.copy(DATA / "uml_console_avx512_amx_panic.log", work / "console.log")
    message = uml_host.explain(work, AMX_HOST, "off", False, "the guest stopped")
    assert "Likely cause: host CPU feature not handled: the host's XSAVE area (11008 bytes" in message
    assert "What to do: let the sandbox load its XSTATE shim: unset XENLVM_UML_SHIM" in message
    assert "Kernel panic: Attempted to kill init! exitcode=0x0000000b" in message
    assert "XSTATE shim not loaded (XENLVM_UML_SHIM=off)" in message
    assert "userspace - ptrace set fp regs failed, errno = 14" in message  # the console's tail
    loaded = uml_host.explain(work, AMX_HOST, "on", True, "the guest stopped")
    assert "not accepted from UML even with the XSTATE shim loaded" in loaded


def test_an_unsound_guest_is_explained_with_the_checks_words(tmp_path: Path) -> None:
    (tmp_path / "console.log").write_text("Run /init as init process\n")
    (tmp_path / "guest-unsound").write_text("unsound\n")
    (tmp_path / "vregcheck.log").write_text("vregcheck: thread 2, across a page fault: zmm17 byte 0: "
                                            "expected 3c, got 00\n")
    message = uml_host.explain(tmp_path, AVX512_HOST, "auto", True, "its processes lose vector registers")
    assert "do not keep their vector registers" in message and "would be suspect" in message
    assert "across a page fault: zmm17 byte 0" in message


def test_a_silent_uml_is_explained(tmp_path: Path) -> None:
    (tmp_path / "console.log").write_text("")
    message = uml_host.explain(tmp_path, None, "auto", False, "the guest stopped")
    assert "printed nothing" in message and "(empty)" in message


def test_preflight_names_a_missing_uml(monkeypatch) -> None:
    monkeypatch.setattr(uml_host, "LINUX", "/nonexistent/linux.uml")
    with pytest.raises(SandboxError, match="linux.uml is missing: install the Debian package user-mode"):
        uml_host.preflight()


def test_preflight_names_a_noexec_memory_directory(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(uml_host, "LINUX", "/bin/sh")  # exists
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("TMP", raising=False)
    monkeypatch.delenv("TEMP", raising=False)
    real = os.statvfs

    class NoExec:
        def __init__(self, path: str) -> None:
            self.f_flag = real(path).f_flag | os.ST_NOEXEC

    monkeypatch.setattr(os, "statvfs", NoExec)
    with pytest.raises(SandboxError, match=f"{tmp_path} is mounted noexec"):
        uml_host.preflight()


def test_shim_stats_that_are_missing_or_foreign_read_as_none(tmp_path: Path) -> None:
    assert uml_host.read_shim_stats(tmp_path / "absent") == {}
    (tmp_path / "foreign").write_bytes(b"\0" * 80)
    assert uml_host.read_shim_stats(tmp_path / "foreign") == {}
    counters = list(range(1, len(uml_host.STATS_FIELDS) + 1))
    (tmp_path / "stats").write_bytes(b"XSHIM01\0" + struct.pack(f"<{len(counters)}Q", *counters))
    assert uml_host.read_shim_stats(tmp_path / "stats") == dict(zip(uml_host.STATS_FIELDS, counters))
