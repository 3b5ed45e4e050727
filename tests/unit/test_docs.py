"""The man page and the bash completion are generated (doc/generate.py) from the click command
tree and the configuration parsers, with each key's comment from config.example.yaml: they
must be current, cover everything, and the generator must refuse a key nobody documented."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from xenlvm.cli import main

REPO = Path(__file__).resolve().parents[2]

_SPEC = importlib.util.spec_from_file_location("generate", REPO / "doc" / "generate.py")
generate = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(generate)


def test_the_committed_man_page_and_completion_are_what_the_sources_give():
    assert (REPO / "doc" / "xenlvm.8").read_text() == generate.man_page(), \
        "doc/xenlvm.8 is stale: run python3 doc/generate.py"
    assert (REPO / "doc" / "xenlvm.bash-completion").read_text() == generate.bash_completion(), \
        "doc/xenlvm.bash-completion is stale: run python3 doc/generate.py"


def test_the_man_page_names_every_command_option_and_config_key():
    page = generate.man_page().replace("\\-", "-")
    top = click.Context(main, info_name="xenlvm", **main.context_settings)
    for name, command in main.commands.items():
        assert f".SS {name}\n" in page
        for param in command.get_params(click.Context(command, info_name=name, parent=top)):
            if isinstance(param, click.Option) and not param.hidden:
                assert all(f"\\fB{opt}\\fR" in page for opt in param.opts), (name, param.opts)
    for section, parsers in generate.SECTIONS.items():
        if section:
            assert f'.SS "{section.removesuffix("[]")}' in page
            for key in parsers:
                assert f"\\fB{key}\\fR" in page, (section, key)


def test_a_config_key_without_a_comment_in_the_example_stops_the_generator(monkeypatch):
    monkeypatch.setitem(generate.SECTIONS["jobs.NAME.watchdog"], "new_knob", int)
    with pytest.raises(ValueError, match="does not show jobs.NAME.watchdog.new_knob"):
        generate.man_page()


def test_the_man_page_renders_without_a_groff_warning():
    groff = shutil.which("groff")
    assert groff, "groff is missing: make deps installs man-db, which brings it"
    done = subprocess.run([groff, "-man", "-ww", "-z", str(REPO / "doc" / "xenlvm.8")],
                          capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.parametrize(("line", "expected"), [
    ("xenlvm ins", ["install-hooks"]),
    ("xenlvm ", ["check", "cleanup", "install-hooks", "post", "pre", "restore-disk", "restore-image",
                 "status"]),
    ("xenlvm restore-disk --", ["--dry-run", "--from", "--help", "--to", "--yes"]),
    ("xenlvm --config /etc/x.yaml st", ["status"]),
    ("xenlvm pre --d", ["--dry-run"]),
    ("xenlvm -v status --j", ["--job", "--json"]),
    ("xenlvm check --hooks-dir /us", ["/usr"]),
])
def test_bash_completes_commands_and_their_options(line, expected):
    script = ('. "$2"; read -ra COMP_WORDS <<< "$1"; [ "${1% }" = "$1" ] || COMP_WORDS+=(""); '
              'COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _xenlvm; printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "-c", script, "bash", line, str(REPO / "doc" / "xenlvm.bash-completion")],
                          capture_output=True, text=True, check=True)
    assert sorted(done.stdout.split()) == expected
