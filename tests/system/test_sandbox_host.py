"""The sandbox's decisions about this host, and its explanations, without booting anything
(sandbox/uml_host.py; the boots themselves are in tests/system/test_sandbox.py)."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from sandbox import guest_paths, uml_host
from sandbox.uml_host import Component, HostCpu, SandboxError

DATA = Path(__file__).resolve().parents[1] / "unit" / "data"


def layout(*components: tuple[int, int, int]) -> tuple[Component, ...]:
    """XSAVE components as CPUID leaf 0xD reports them: (bit, offset, size)."""
    return tuple(Component(*component) for component in components)


# XSAVE layouts (vregcheck --host; Intel's from its SDM's fixed offsets, AMD's from CPUID):
# Sapphire Rapids: AVX-512, PKRU and AMX (11008 bytes); Skylake-SP: AVX-512 and PKRU, MPX's
# place left empty (Linux >= 5.6), UML's 2696 bytes; the same with MPX enabled (Linux < 5.6);
# a Skylake client: AVX2 alone (832 bytes); the AMD EPYC (Zen 3) the sandbox was written on:
# AVX2 and PKRU (2440 bytes); an AMD EPYC with AVX-512 and no PKRU, as recorded on the host of
# issue 22 (2432 bytes); the same CPU (Zen 4) with PKRU (2440 bytes).
AVX = (2, 576, 256)
INTEL_AVX512 = ((5, 1088, 64), (6, 1152, 512), (7, 1664, 1024), (9, 2688, 8))
AMD_AVX512 = ((5, 832, 64), (6, 896, 512), (7, 1408, 1024))
AMX_HOST = HostCpu("avx512", 11008, True, True, layout(AVX, *INTEL_AVX512, (17, 2752, 64), (18, 2816, 8192)))
AVX512_HOST = HostCpu("avx512", 2696, True, False, layout(AVX, *INTEL_AVX512))
MPX = ((3, 960, 64), (4, 1024, 64))
AVX512_MPX_HOST = HostCpu("avx512", 2696, True, False, layout(AVX, *MPX, *INTEL_AVX512))
AVX2_INTEL_HOST = HostCpu("avx", 832, False, False, layout(AVX))
AVX2_HOST = HostCpu("avx", 2440, False, False, layout(AVX, (9, 2432, 8)))
AVX512_AMD_HOST = HostCpu("avx512", 2432, True, False, layout(AVX, *AMD_AVX512))
AVX512_AMD_PKRU_HOST = HostCpu("avx512", 2440, True, False, layout(AVX, *AMD_AVX512, (9, 2432, 8)))


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


@pytest.mark.parametrize(("cpu", "size"), [
    (AMX_HOST, 2696), (AVX512_HOST, 2688), (AVX512_MPX_HOST, 2688), (AVX2_HOST, 2432),
    (AVX512_AMD_PKRU_HOST, 2432), (AVX2_INTEL_HOST, None), (AVX512_AMD_HOST, None)])
def test_the_simulated_uml_buffer_holds_what_the_guest_uses_and_leaves_an_unused_component_out(
        cpu: HostCpu, size: int | None) -> None:
    assert uml_host.resize_bytes(cpu) == size
    if size is None:
        # No such size: the guest uses every component, and the area fits UML's buffer, so the
        # host never takes the resizing path (a host that needs it always gets a size).
        assert cpu.xsave_size <= uml_host.UML_FP_SIZE
        assert all(c.bit not in uml_host.UNUSED_BY_GUEST for c in cpu.components)
        return
    assert size < cpu.xsave_size and size <= uml_host.UML_FP_SIZE  # the shim resizes every call
    assert all(c.offset + c.size <= size for c in cpu.components if c.bit not in uml_host.UNUSED_BY_GUEST)
    assert any(c.offset + c.size > size for c in cpu.components)  # something lies beyond, unused


def test_a_host_that_needs_the_resizing_path_always_runs_it() -> None:
    """Even where UML's buffer cannot hold everything the guest uses (a component after PKRU
    that the guest would use), the test runs and vregcheck judges: no skip hides it."""
    future = HostCpu("avx512", 12000, True, True, AMX_HOST.components + layout((20, 11008, 992)))
    assert uml_host.resize_bytes(future) == uml_host.UML_FP_SIZE


def test_the_layout_names_each_component_where_it_lies() -> None:
    assert AVX512_AMD_HOST.layout() == ("x87/SSE and header 0-576, AVX 576-832, AVX-512 opmask 832-896, "
                                        "AVX-512 ZMM_Hi256 896-1408, AVX-512 Hi16_ZMM 1408-2432 (2432 bytes)")
    assert "PKRU 2688-2696, AMX tile config 2752-2816, AMX tile data 2816-11008" in AMX_HOST.layout()


def test_the_host_cpu_is_read_with_its_layout(tmp_path: Path) -> None:
    """vregcheck --host's lines, as it printed them on the AMD EPYC of issue 22."""
    vregcheck = tmp_path / "vregcheck"
    vregcheck.write_text("#!/bin/sh\nprintf 'level=avx512\\nxcr0=0xe7\\nxsave_size=2432\\navx512=yes\\n"
                         "amx=no\\ncomponent=2,576,256\\ncomponent=5,832,64\\ncomponent=6,896,512\\n"
                         "component=7,1408,1024\\n'\n")
    vregcheck.chmod(0o755)
    assert uml_host.host_cpu(vregcheck) == AVX512_AMD_HOST


# -- what the guest hides and keeps in view (guest_paths.py, used by init.sh and private-root.sh)

def view(path: str, mounts: list[tuple[str, str]]) -> str:
    """What the guest sees at path after mounts (mount point, kind) in order: "host" (this
    machine's directory, shared both ways), "copy" (an overlay: this machine's files, writes
    kept in the guest) or "hidden" (an empty tmpfs). A mount hides the earlier mounts at or
    below its mount point, as it covers the tree they were mounted on."""
    visible: list[tuple[str, str]] = []
    for point, kind in mounts:
        visible = [(p, k) for p, k in visible if not guest_paths.covers(point, p)] + [(point, kind)]
    covering = [(p, k) for p, k in visible if guest_paths.covers(p, path)]
    return max(covering, key=lambda mount: len(mount[0]))[1] if covering else "host"


def booted(keep: list[str]) -> list[tuple[str, str]]:
    """The mounts init.sh makes, in its order."""
    return ([(d, "hidden") for d in guest_paths.HIDDEN] + [(d, "copy") for d in guest_paths.OVERLAID]
            + [(p, "host") for p in guest_paths.boot_binds(keep)])


def made_private(mounts: list[tuple[str, str]], work: str) -> list[tuple[str, str]]:
    """The mounts private-root.sh adds, in its order."""
    return (mounts + [(d, "copy") for d in guest_paths.PRIVATE]
            + [(p, "host") for p in guest_paths.private_binds(work)])


CHECKOUTS = ("/var/tmp/x", "/usr/local/src/x", "/srv/x", "/root/x", "/home/u/x",
             "/var/lib/jenkins/workspace/x", "/tmp/x", "/work/x", "/opt/x")
PYTHONS = ("/usr", "/root/.pyenv/versions/3.12.1", "/usr/local")


@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("checkout", CHECKOUTS)
@pytest.mark.parametrize("work_in", [None, "/var/tmp/xenlvm-test-abc"])
def test_the_guest_keeps_the_checkout_python_and_mailbox_wherever_they_are(
        checkout: str, python: str, work_in: str | None) -> None:
    """work_in: the checkout's .work/, or test_deb's work directory under /var/tmp."""
    venv, work = f"{checkout}/.venv", f"{work_in or checkout + '/.work'}/deb-1"
    keep = [checkout, python, venv, work]
    mounts = booted(keep)
    assert {path: view(path, mounts) for path in keep} == dict.fromkeys(keep, "host")
    # Nothing else comes back: a bind back is one of the kept paths, and every hidden
    # directory that holds none of them stays hidden.
    assert set(guest_paths.boot_binds(keep)) <= set(keep)
    for hidden in guest_paths.HIDDEN:
        if not any(guest_paths.covers(path, hidden) for path in keep):
            assert view(f"{hidden}/file", mounts) == "hidden", hidden

    private = made_private(mounts, work)
    assert view(f"{work}/mailbox/resp-7.json", private) == "host"  # the host sees the answers
    for path in (checkout, python, venv):  # readable, as this machine's files
        assert view(path, private) in ("host", "copy"), path
    for written in ("/usr/lib/python3/dist-packages/xenlvm", "/usr/sbin/xenlvm", "/var/lib/dpkg/status",
                    "/var/log/xenlvm.log"):  # what dpkg and the package write stays in the guest
        assert view(written, private) == "copy", written


def test_bind_back_keeps_the_outermost_paths_under_the_hidden_directories() -> None:
    assert guest_paths.bind_back(["/root/x/.venv", "/usr", "/root/x", "/root/x/.work/a-1", "/srv/"],
                                 guest_paths.HIDDEN) == ["/root/x", "/srv"]
    everything = guest_paths.HIDDEN + guest_paths.OVERLAID + guest_paths.PRIVATE
    assert guest_paths.bind_back(["/varnish/x", "/tmpfiles/y"], everything) == []
    assert guest_paths.private_binds("/usr/local/src/x/.work/deb-1") == ["/usr/local/src/x/.work/deb-1"]
    assert guest_paths.private_binds("/root/x/.work/deb-1") == []
