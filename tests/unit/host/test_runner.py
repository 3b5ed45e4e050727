"""The one door to the outside, exercised with real, harmless programs."""

from __future__ import annotations

import inspect
import logging
import shlex
import time

import pytest

from tests.unit.fakes import FakeRunner
from xenlvm.errors import CommandFailed
from xenlvm.host import DEFAULT_PATH
from xenlvm.host.runner import Result, Runner, quote, which


@pytest.fixture
def command_log():
    """The messages the runner logs, whatever the logging setup of the process."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("xenlvm.command")
    handler, level = Collect(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield messages
    logger.removeHandler(handler)
    logger.setLevel(level)


# ---------------------------------------------------------------------------------------------
# Results and failures


def test_query_returns_the_programs_output():
    result = Runner().query(["/bin/echo", "hello", "world"])
    assert isinstance(result, Result)
    assert result.argv == ("/bin/echo", "hello", "world")
    assert result.returncode == 0
    assert result.stdout == "hello world\n"
    assert result.stderr == ""
    assert 0 <= result.duration < 10


def test_non_zero_exit_is_a_command_failure_naming_command_and_status():
    with pytest.raises(CommandFailed) as caught:
        Runner().query(["/bin/false"])
    assert caught.value.returncode == 1
    assert caught.value.argv == ["/bin/false"]
    assert not caught.value.timed_out and not caught.value.not_found
    assert "/bin/false failed with exit status 1" in str(caught.value)


def test_command_failure_keeps_the_programs_stderr():
    with pytest.raises(CommandFailed) as caught:
        Runner().query(["/bin/sh", "-c", "echo 'Volume group \"system\" not found' >&2; exit 5"])
    assert caught.value.returncode == 5
    assert caught.value.stderr == 'Volume group "system" not found'
    assert 'Volume group "system" not found' in str(caught.value)


def test_stderr_alone_does_not_fail_a_command():
    # LVM warns on stderr in normal operation: the exit status decides.
    result = Runner().query(["/bin/sh", "-c", "echo '  WARNING: something' >&2; echo ok"])
    assert result.stdout == "ok\n"
    assert "WARNING" in result.stderr


def test_accepted_exit_codes_are_not_failures():
    assert Runner().query(["/bin/false"], ok_codes=(0, 1)).returncode == 1


def test_command_running_past_its_timeout_is_killed_and_reported():
    start = time.monotonic()
    with pytest.raises(CommandFailed) as caught:
        Runner(timeout=60).query(["sleep", "30"], timeout=0.3)
    assert time.monotonic() - start < 10
    assert caught.value.timed_out
    assert caught.value.returncode is None
    assert "did not finish within 0.3 s" in str(caught.value)


def test_runner_timeout_applies_when_the_call_gives_none():
    with pytest.raises(CommandFailed) as caught:
        Runner(timeout=0.3).query(["sleep", "30"])
    assert caught.value.timed_out


def test_timed_out_command_keeps_what_it_wrote_on_stderr():
    with pytest.raises(CommandFailed) as caught:
        Runner().query(["/bin/sh", "-c", "echo 'waiting for lock' >&2; exec sleep 30"], timeout=1)
    assert caught.value.timed_out
    assert "waiting for lock" in caught.value.stderr


def test_missing_program_is_reported_as_not_found():
    with pytest.raises(CommandFailed) as caught:
        Runner().query(["/nonexistent/xenlvm-no-such-program", "--version"])
    assert caught.value.not_found
    assert caught.value.returncode is None
    assert "program not found" in str(caught.value)


def test_program_that_cannot_be_executed_is_a_command_failure(tmp_path):
    script = tmp_path / "lvs"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    with pytest.raises(CommandFailed):
        Runner().query([str(script)])


def test_commands_read_no_input():
    # cat would wait forever on an inherited terminal or pipe; it must see end-of-file at once.
    assert Runner(timeout=10).query(["cat"]).stdout == ""


def test_output_that_is_not_utf8_does_not_break_the_runner():
    result = Runner().query(["/usr/bin/printf", "caf\\351\\n"])
    assert result.stdout.startswith("caf")


# ---------------------------------------------------------------------------------------------
# The environment every command gets


def test_commands_run_with_a_clean_environment(monkeypatch):
    monkeypatch.setenv("LVM_SYSTEM_DIR", "/tmp/evil-lvm")
    monkeypatch.setenv("LVM_VG_NAME", "wrongvg")
    monkeypatch.setenv("DM_DISABLE_UDEV", "1")
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("XENLVM_SECRET", "x")

    output = Runner().query(["env"]).stdout
    env = dict(line.split("=", 1) for line in output.splitlines())

    assert env["PATH"] == DEFAULT_PATH
    assert env["LC_ALL"] == "C"
    assert env["LANG"] == "C"
    for inherited in ("LVM_SYSTEM_DIR", "LVM_VG_NAME", "DM_DISABLE_UDEV", "XENLVM_SECRET"):
        assert inherited not in env
    assert {k for k in env if k.startswith("LVM_")} <= {"LVM_SUPPRESS_FD_WARNINGS"}


def test_programs_are_found_on_the_configured_path_only(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", DEFAULT_PATH)
    with pytest.raises(CommandFailed) as caught:
        Runner(path=str(tmp_path)).query(["echo", "hi"])
    assert caught.value.not_found

    tool = tmp_path / "lvs"
    tool.write_text("#!/bin/sh\necho fake lvs\n")
    tool.chmod(0o755)
    assert Runner(path=str(tmp_path)).query(["lvs"]).stdout == "fake lvs\n"


# ---------------------------------------------------------------------------------------------
# Queries and changes, dry run


def test_dry_run_change_is_logged_and_not_run(tmp_path, command_log):
    target = tmp_path / "created by the change"
    result = Runner(dry_run=True).change(["touch", str(target)])

    assert result is None
    assert not target.exists()
    assert any("would run" in m and shlex.split(m.split(": ", 1)[1]) == ["touch", str(target)]
               for m in command_log)


def test_dry_run_still_runs_queries():
    assert Runner(dry_run=True).query(["/bin/echo", "asked"]).stdout == "asked\n"


def test_change_runs_when_not_a_dry_run(tmp_path):
    target = tmp_path / "created"
    result = Runner().change(["touch", str(target)])
    assert result is not None and result.returncode == 0
    assert target.exists()


def test_a_changes_input_is_its_standard_input_and_is_logged_with_it(tmp_path, command_log):
    target = tmp_path / "written from stdin"
    Runner().change(["/bin/sh", "-c", f"cat > {shlex.quote(str(target))}"], input="label: gpt\n")
    assert target.read_text() == "label: gpt\n"
    assert any(m.startswith("run: /bin/sh") and m.endswith(" <<'EOF'\nlabel: gpt\nEOF") for m in command_log)


def test_the_fake_runner_takes_what_the_runner_takes_and_keeps_its_dry_run(tmp_path):
    for method in ("query", "change", "change_all"):
        assert inspect.signature(getattr(FakeRunner, method)).parameters.keys() == \
            inspect.signature(getattr(Runner, method)).parameters.keys(), method
    target = tmp_path / "not created"
    real, fake = Runner(dry_run=True), FakeRunner(dry_run=True).on("touch", "")
    for runner in (real, fake):
        assert runner.change(["touch", str(target)], input="text\n") is None
        assert runner.change_all([["touch", str(target)]]) == [None]
        assert runner.count == 0
    assert not target.exists()
    assert [(c.kind, c.input) for c in fake.calls] == [("would change", "text\n"), ("would change", None)]
    fake = FakeRunner().on("sfdisk", "")
    assert fake.change(["sfdisk", "/dev/x"], input="label: gpt\n").stdout == ""
    assert fake.inputs_of("sfdisk") == ["label: gpt\n"] and fake.count == 1


def test_every_command_is_logged_with_its_exact_argv_and_exit_status(command_log):
    Runner().query(["/bin/echo", "two words", "it's"])
    assert "run: /bin/echo 'two words' 'it'\"'\"'s'" in command_log
    assert any(m.startswith("exit 0 after ") and m.endswith("/bin/echo") for m in command_log)


def test_logged_stderr_stays_on_one_line(command_log):
    Runner().query(["/bin/sh", "-c", "printf 'line one\\nline two\\n' >&2"])
    [exit_line] = [m for m in command_log if m.startswith("exit ")]
    assert "\n" not in exit_line
    assert "line one line two" in exit_line


# ---------------------------------------------------------------------------------------------
# Helpers


@pytest.mark.parametrize("argv", [
    ["lvcreate", "--snapshot", "--name", "vmbackup", "system/xenvm"],
    ["mount", "-o", "ro,nouuid", "/dev/mapper/a--b-c", "/mnt/vm backup"],
    ["echo", "it's", "$HOME", "`id`", "a;b", ""],
])
def test_quoted_command_pastes_back_into_a_shell_as_the_same_argv(argv):
    assert shlex.split(quote(argv)) == argv


def test_which_finds_an_executable_on_the_given_path(tmp_path):
    assert which("sh", f"{tmp_path}:/bin") == "/bin/sh"
    assert which("sh", str(tmp_path)) is None
    (tmp_path / "notexec").write_text("")
    assert which("notexec", str(tmp_path)) is None


def test_runner_counts_only_the_commands_it_really_ran():
    runner = Runner(dry_run=True)
    runner.query(["/bin/true"])
    runner.change(["/bin/true"])
    assert runner.count == 1
