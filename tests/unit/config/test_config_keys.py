"""Each configuration key is declared once, on its field in xenlvm.config.model: config.example.yaml
and the README's key lists must name exactly those keys, no more and no fewer."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from xenlvm.config.load import sections

REPO = Path(__file__).resolve().parents[3]
README = (REPO / "README.md").read_text()

_SPEC = importlib.util.spec_from_file_location("generate", REPO / "doc" / "generate.py")
generate = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(generate)

_KEY = re.compile(r"^(?P<indent>\s*)(?:#\s*)?(?:- )?(?P<key>[a-z_]+):")


def _chapter(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def _yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.S)


def _keys_under(block: str, name: str) -> set[str]:
    """The keys (also commented-out ones) of the mapping that `name:` opens in a YAML block."""
    lines = block.splitlines()
    start = [i for i, line in enumerate(lines) if re.match(rf"^\s*{name}:", line)][-1]  # the innermost
    indent = len(lines[start]) - len(lines[start].lstrip())
    found = set()
    for line in lines[start + 1:]:
        match = _KEY.match(line)
        if match is None:
            continue
        if len(match["indent"]) <= indent:
            break
        found.add(match["key"])
    return found


def test_config_example_shows_exactly_the_declared_keys():
    shown = generate.example_keys((REPO / "config.example.yaml").read_text())
    for section, declared in sections().items():
        prefix = f"{section}." if section else ""
        in_example = {path[len(prefix):] for path in shown
                      if path.startswith(prefix) and "." not in path[len(prefix):]}
        assert in_example == set(declared), section


def test_the_readme_lists_exactly_the_keys_of_settings():
    [bullet] = re.findall(r"^- \*\*settings\*\*:(.*?)(?=\n\n|\n- |\Z)", _chapter("Configuration"),
                          flags=re.M | re.S)
    named = re.sub(r"\([^)]*\)", "", bullet)  # each key, with what it is for in parentheses
    assert set(re.findall(r"`([a-z_]+)`", named)) == set(sections()["settings"])


def test_the_readme_lists_exactly_the_keys_of_a_job():
    chapter = _chapter("Configuration")
    smallest, several = _yaml_blocks(chapter)[:2]
    shown = _keys_under(smallest, "xenvm") | set(re.findall(r"^- \*\*([a-z_]+)\*\*", chapter, flags=re.M))
    assert shown - {"settings"} == set(sections()["jobs.NAME"])
    items = set(re.findall(r"([a-z_]+):", " ".join(re.findall(r"\{(.*?)\}", several))))
    assert items == set(sections()["jobs.NAME.volumes[]"])


@pytest.mark.parametrize(("chapter", "section"), [
    ("Xen consistency", "xen"),
    ("VMs on their own logical volumes", "vmdisks"),
    ("Snapshot watchdog", "watchdog"),
])
def test_the_readme_shows_exactly_the_keys_of_each_section(chapter, section):
    block = _yaml_blocks(_chapter(chapter))[0]
    assert _keys_under(block, section) == set(sections()[f"jobs.NAME.{section}"])
