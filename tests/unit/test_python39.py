"""xenlvm runs on Python 3.9 (pyproject: requires-python >=3.9; Debian 11 dom0s): no syntax or
call that needs a newer Python may reach xenlvm/. ruff's target-version does not catch calls
like zip(strict=...), which are valid syntax and fail only when they run."""

from __future__ import annotations

import ast
import glob
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON39 = ["/usr/bin/python3.9", *sorted(glob.glob("/root/.pyenv/versions/3.9.*/bin/python3.9")),
            shutil.which("python3.9")]  # the pyenv shim last: it fails when 3.9 is not selected

# keyword arguments added after 3.9 to calls xenlvm may make
NEW_KEYWORDS = {("zip", "strict"), ("bisect", "key"), ("bisect_left", "key"), ("bisect_right", "key"),
                ("insort", "key"), ("insort_left", "key"), ("insort_right", "key"),
                ("dataclass", "slots"), ("dataclass", "kw_only"), ("dataclass", "match_args")}
# names that do not exist before 3.10 (module.name, or a bare name imported from a module)
NEW_NAMES = {"pairwise", "aclosing", "anext", "aiter", "TypeAlias", "ParamSpec", "Concatenate",
             "TypeGuard", "Self", "Never", "LiteralString", "StrEnum", "UTC", "ExceptionGroup",
             "BaseExceptionGroup", "tomllib", "bit_count", "is_integer_ratio"}
BUILTIN_TYPES = {"int", "str", "bytes", "float", "bool", "dict", "list", "tuple", "set", "frozenset",
                 "type", "object"}


def sources() -> list[str]:
    return sorted(glob.glob(os.path.join(ROOT, "xenlvm", "**", "*.py"), recursive=True))


def _annotations(tree: ast.AST) -> set[int]:
    """ids of every node inside an annotation (not evaluated under 'from __future__ import annotations')."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        parts: list[ast.AST | None] = []
        if isinstance(node, (ast.AnnAssign, ast.arg)):
            parts = [node.annotation]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            parts = [node.returns]
        for part in parts:
            if part is not None:
                inside.update(id(n) for n in ast.walk(part))
    return inside


def _is_type_like(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and node.value is None:
        return True
    if isinstance(node, ast.Name):
        return node.id in BUILTIN_TYPES or node.id[:1].isupper()
    if isinstance(node, ast.Subscript):
        return True  # list[int] | None
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and _is_type_like(node.left)


def _called_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def problems_of(text: str, name: str) -> list[str]:
    """What in the source text needs a Python newer than 3.9."""
    tree = ast.parse(text, name)
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
                 and any(a.name == "annotations" for a in n.names) for n in tree.body)
    in_annotation = _annotations(tree)
    found = []
    for node in ast.walk(tree):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if type(node).__name__ in ("Match", "TryStar"):
            found.append(f"{where}: a {type(node).__name__} statement (Python 3.10/3.11)")
        elif isinstance(node, ast.Call):
            for keyword in node.keywords:
                if (_called_name(node), keyword.arg) in NEW_KEYWORDS:
                    found.append(f"{where}: {_called_name(node)}({keyword.arg}=...) needs Python 3.10")
        elif isinstance(node, ast.Attribute) and node.attr in NEW_NAMES:
            found.append(f"{where}: .{node.attr} needs Python 3.10 or later")
        elif isinstance(node, ast.ImportFrom) and any(a.name in NEW_NAMES for a in node.names):
            found.append(f"{where}: imports a name that needs Python 3.10 or later")
        elif isinstance(node, ast.Import) and any(a.name in NEW_NAMES for a in node.names):
            found.append(f"{where}: imports a module that needs Python 3.11")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and _is_type_like(node.left) \
                and _is_type_like(node.right):
            if id(node) not in in_annotation:
                found.append(f"{where}: X | Y of types evaluated at run time needs Python 3.10")
            elif not future:
                found.append(f"{where}: X | Y in an annotation without 'from __future__ import annotations'")
    return found


def test_no_module_of_xenlvm_needs_a_python_newer_than_3_9():
    found = []
    for path in sources():
        with open(path, encoding="utf-8") as f:
            found += problems_of(f.read(), os.path.relpath(path, ROOT))
    assert found == []


@pytest.mark.parametrize("text", [
    "pairs = list(zip(a, b, strict=True))\n",
    "match x:\n    case 1:\n        pass\n",
    "from __future__ import annotations\nok = isinstance(x, int | str)\n",
    "Alias = list[int] | None\n",
    "def f(x: int | None) -> None:\n    pass\n",
    "from itertools import pairwise\n",
    "import tomllib\n",
    "from dataclasses import dataclass\n@dataclass(frozen=True, slots=True)\nclass A:\n    x: int\n",
])
def test_the_guard_finds_what_python_3_9_cannot_run(text):
    assert problems_of(text, "example.py") != []


@pytest.mark.parametrize("text", [
    "from __future__ import annotations\ndef f(x: int | None) -> list[int] | None:\n    return None\n",
    "flags = os.O_RDONLY | os.O_CLOEXEC\n",
    "mode = stat.S_IRUSR | 0o600\n",
    "pairs = list(zip(a, b))\n",
])
def test_the_guard_lets_python_3_9_code_pass(text):
    assert problems_of(text, "example.py") == []


def python39() -> str | None:
    return next((p for p in PYTHON39 if p and os.access(p, os.X_OK)), None)


@pytest.mark.skipif(python39() is None, reason="no python3.9 interpreter on this machine")
def test_every_module_compiles_with_python_3_9():
    """The real 3.9 parser: catches syntax the checks above do not know (parenthesised context
    managers, new grammar)."""
    env = {**os.environ, "PYTHONPYCACHEPREFIX": "/tmp/xenlvm-py39cache"}  # no .pyc in the tree
    result = subprocess.run([python39(), "-m", "compileall", "-q", "-f", os.path.join(ROOT, "xenlvm")],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


CHAIN_ON_39 = """
import hashlib, os, sys
from xenlvm.increments import chain, fileformat as increment
from xenlvm.increments.fileformat import DATA, ZEROS, Range
folder = sys.argv[1]
first = os.urandom(4096)
second = bytes(512) + first[512:1024] + b"x" * 1024 + first[2048:]
with open(os.path.join(folder, "xvda.20261206T000000_1.img"), "wb") as f:
    f.write(first)
with open(os.path.join(folder, "snapshot"), "wb") as f:
    f.write(second)
path = os.path.join(folder, "xvda.20261206T010000_2.incr")
increment.write_increment(path, os.path.join(folder, "snapshot"), disk="vm2/xvda", disk_size=4096,
                          run="20261206T010000_2", base="20261206T000000_1",
                          ranges=[Range(0, 512, ZEROS), Range(1024, 1024, DATA)],
                          base_image_sha256=hashlib.sha256(first).digest())
found = chain.resolve(path)
assert b"".join(chain.read_disk(found)) == second
print("ok")
"""


@pytest.mark.skipif(python39() is None, reason="no python3.9 interpreter on this machine")
def test_an_increment_chain_is_written_and_read_back_by_python_3_9(tmp_path):
    """The restore path of a chain, run by Python 3.9 itself (it needs no package beyond the
    standard library): what the static checks cannot see fails here."""
    env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONPYCACHEPREFIX": "/tmp/xenlvm-py39cache"}
    result = subprocess.run([python39(), "-c", CHAIN_ON_39, str(tmp_path)], capture_output=True, text=True,
                            timeout=120, env=env)
    assert (result.returncode, result.stdout) == (0, "ok\n"), result.stderr
