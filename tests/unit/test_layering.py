"""The layers of xenlvm: a module imports only from its own package and from lower layers, and no
modules import each other in a circle, counting every import (at the top, inside functions, and
under ``if TYPE_CHECKING:``). bench/ has no circle either."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Lowest first. A top-level module is its own unit; a subpackage is one unit for the rule.
LAYERS: list[set[str]] = [
    {"xenlvm", "xenlvm.errors", "xenlvm.sizes", "xenlvm.logs"},  # foundation: imports nothing of xenlvm's
    {"xenlvm.host"},         # runs commands, reads the host; knows nothing of jobs
    {"xenlvm.config"},       # the configuration's records and its one reader
    {"xenlvm.core"},         # ownership, context, inventory, preflight, undo, state, the monitors' frame
    {"xenlvm.xen"},          # domains, pause windows, export
    {"xenlvm.quiesce"},      # freeze/thaw and its guard
    {"xenlvm.watchdog"},     # the snapshot watchdog
    {"xenlvm.targets"},      # the target kinds' base and the volume kind
    {"xenlvm.increments"},   # increment files, chains, thin_delta
    {"xenlvm.vmdisks"},      # the VM-disk kind
    {"xenlvm.thinpool"},     # pool decisions and the pool guard (it drops both kinds' snapshots)
    {"xenlvm.phases"},       # pre, post
    {"xenlvm.admin"},        # check, status, install-hooks, restores
    {"xenlvm.sesam", "xenlvm.app", "xenlvm.hook_entry", "xenlvm.cli", "xenlvm.__main__"},  # the entry
]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str) -> set[str]:
    """Every module path imports, wherever the import statement is."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same project it imports (a name imported from a module counts
    as that module)."""
    files = {module_name(p, REPO): p for p in sorted((REPO / package).rglob("*.py"))}
    edges = {}
    for name, path in files.items():
        edges[name] = {target for target in imports_of(path, name) if target in files and target != name}
    return edges


def unit(module: str) -> str:
    parts = module.split(".")
    candidate = ".".join(parts[:2])
    return candidate if any(candidate in layer for layer in LAYERS) else module


def rank(module: str) -> int:
    for index, layer in enumerate(LAYERS):
        if unit(module) in layer:
            return index
    raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS")


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), as sorted lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{source} imports {target}" for source, targets in edges.items() for target in targets
                  if rank(target) > rank(source))


def test_every_module_of_xenlvm_has_a_layer():
    for module in graph("xenlvm"):
        rank(module)


def test_no_module_of_xenlvm_imports_from_a_higher_layer():
    assert upward_imports(graph("xenlvm")) == []


def test_no_modules_of_xenlvm_import_each_other_in_a_circle():
    assert circles(graph("xenlvm")) == []


def test_no_modules_of_bench_import_each_other_in_a_circle():
    assert circles(graph("bench")) == []


def test_bench_does_not_import_the_tests():
    assert [f"{source} imports {target}" for source, targets in graph_with_tests("bench").items()
            for target in targets if target.startswith("tests")] == []


def test_the_sandbox_imports_neither_the_tests_nor_the_bench_and_has_no_circle():
    """sandbox/ is what tests/system, make demo and make bench share: it depends on neither."""
    assert [f"{source} imports {target}" for source, targets in graph_with_tests("sandbox").items()
            for target in targets] == []
    assert not any(name.startswith("bench") for path in sorted((REPO / "sandbox").rglob("*.py"))
                   for name in imports_of(path, module_name(path, REPO)))
    assert circles(graph("sandbox")) == []


def graph_with_tests(package: str) -> dict[str, set[str]]:
    files = [p for p in sorted((REPO / package).rglob("*.py"))]
    return {module_name(p, REPO): {t for t in imports_of(p, module_name(p, REPO)) if t.startswith("tests.")}
            for p in files}


def test_the_checker_sees_imports_inside_functions_and_under_type_checking(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text(
        "TYPE_CHECKING = False\nif TYPE_CHECKING:\n    from pkg.b import B\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from pkg import a\n    from . import c\n")
    (tmp_path / "pkg" / "c.py").write_text("")
    assert imports_of(tmp_path / "pkg" / "a.py", "pkg.a") >= {"pkg.b"}
    assert imports_of(tmp_path / "pkg" / "b.py", "pkg.b") >= {"pkg.a", "pkg.c"}
    assert circles({"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a", "pkg.c"}, "pkg.c": set()}) == [["pkg.a", "pkg.b"]]
    assert upward_imports({"xenlvm.host.lvm": {"xenlvm.config.model"}, "xenlvm.config.model": set()}) == \
        ["xenlvm.host.lvm imports xenlvm.config.model"]
