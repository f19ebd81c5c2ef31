"""The package's structure holds: the layers its sub-packages declare, no import cycle, ``orthanc``
imported by the adapter alone, and no module over 500 lines.

Each sub-package's docstring has a ``May import:`` line naming the other parts of the package its
modules may import; the top-level modules' rules are :data:`TOP_LEVEL_RULES`. Imports under
``if TYPE_CHECKING:`` are annotations only and do not count; imports inside functions do.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = "bodypart_router"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / "plugin" / PACKAGE
#: Where ``import orthanc`` is allowed: the adapter (its bootstrap script included).
ADAPTER = "orthanc_plugin"
MAX_LINES = 500
#: Modules still over :data:`MAX_LINES`, each being split by a change of its own. Delete the entry
#: when the module is split: the test fails while an entry is no longer needed.
OVERSIZED = {
}
#: What each top-level module may import (the sub-packages say it in their docstrings).
TOP_LEVEL_RULES: dict[str, set[str]] = {
    "states": set(),
    "retry": set(),
    "errors": {"states"},
    "logs": set(),
    "service_thread": set(),
    "cli": {"imaging", "inference", "routing", "config", "errors", "logs"},
    "__main__": {"cli"},
}
MAY_IMPORT = re.compile(r"^May import: (.*)\.$", re.M)


def modules(package_dir: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every Python file of the package (a package is its ``__init__``)."""
    found: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_package(name: str, files: Mapping[str, Path]) -> bool:
    return files[name].name == "__init__.py"


def _runtime_nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def imports(name: str, files: Mapping[str, Path]) -> tuple[set[str], set[str]]:
    """(modules of the package that ``name`` imports at run time, top-level names of other imports)."""
    tree = ast.parse(files[name].read_text(encoding="utf-8"))
    package = name if _is_package(name, files) else name.rpartition(".")[0]
    inside: set[str] = set()
    outside: set[str] = set()

    def target(dotted: str) -> None:
        while dotted and dotted not in files:  # an attribute of a module, not a module
            dotted = dotted.rpartition(".")[0]
        if dotted:
            inside.add(dotted)

    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root == name.split(".")[0]:
                    target(alias.name)
                else:
                    outside.add(root)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != name.split(".")[0]:
                outside.add(module.split(".")[0])
                continue
            for alias in node.names:  # ``from . import jpeg2000`` imports a module
                if f"{module}.{alias.name}" in files:
                    target(f"{module}.{alias.name}")
                else:
                    target(module)
    inside.discard(name)
    return inside, outside


def import_graph(files: Mapping[str, Path]) -> dict[str, set[str]]:
    return {name: imports(name, files)[0] for name in files}


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def part_of(name: str) -> str:
    """The sub-package or top-level module a module belongs to (``""`` for the package itself)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_rules(files: Mapping[str, Path], top_level: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """Part -> the parts it may import, from each sub-package's ``May import:`` line and ``top_level``."""
    rules: dict[str, set[str]] = {part: set(allowed) for part, allowed in top_level.items()}
    for name, path in files.items():
        if name.count(".") == 1 and _is_package(name, files):
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
            match = MAY_IMPORT.search(doc)
            if match is None:
                raise AssertionError(f"{path}: its docstring has no 'May import: ...' line")
            allowed = match.group(1).strip()
            rules[part_of(name)] = set() if allowed == "nothing" else {p.strip() for p in allowed.split(",")}
    return rules


def layer_breaches(files: Mapping[str, Path], top_level: Mapping[str, set[str]]) -> list[str]:
    rules = layer_rules(files, top_level)
    breaches = []
    for name, targets in import_graph(files).items():
        part = part_of(name)
        if not part:
            continue
        if part not in rules:
            breaches.append(f"{name}: a top-level module with no rule (put it in a sub-package, or in TOP_LEVEL_RULES)")
            continue
        for target in sorted(targets):
            other = part_of(target)
            if other and other != part and other not in rules[part]:
                breaches.append(f"{name} imports {target}: {part} may import only {', '.join(sorted(rules[part])) or 'nothing'}")
    return breaches


def orthanc_importers(files: Mapping[str, Path], adapter: str = ADAPTER) -> list[str]:
    return sorted(name for name in files if "orthanc" in imports(name, files)[1] and part_of(name) != adapter)


def oversized(files: Mapping[str, Path], exceptions: Mapping[str, str]) -> list[str]:
    problems = []
    for name, path in files.items():
        count = len(path.read_text(encoding="utf-8").splitlines())
        if count > MAX_LINES and name not in exceptions:
            problems.append(f"{name} has {count} lines, over {MAX_LINES}: split it by responsibility")
        if count <= MAX_LINES and name in exceptions:
            problems.append(f"{name} has {count} lines now: delete its OVERSIZED entry")
    problems += [f"{name} is in OVERSIZED but does not exist" for name in exceptions if name not in files]
    return problems


@pytest.fixture(scope="module")
def files() -> dict[str, Path]:
    return modules(PACKAGE_DIR, PACKAGE)


def test_there_is_no_import_cycle(files: dict[str, Path]) -> None:
    found = cycles(import_graph(files))
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_each_part_imports_only_what_its_docstring_allows(files: dict[str, Path]) -> None:
    breaches = layer_breaches(files, TOP_LEVEL_RULES)
    assert not breaches, "\n".join(breaches)


def test_imaging_and_inference_stay_below_routing_forwarding_ops_and_the_adapter(files: dict[str, Path]) -> None:
    rules = layer_rules(files, TOP_LEVEL_RULES)
    for part in ("imaging", "inference"):
        assert not rules[part] & {"routing", "config", "forwarding", "ops", ADAPTER}, (part, rules[part])


def test_only_the_adapter_imports_orthanc(files: dict[str, Path]) -> None:
    importers = orthanc_importers(files)
    assert not importers, f"import orthanc outside {ADAPTER}/: {', '.join(importers)}"
    assert "bodypart_router.orthanc_plugin.bootstrap.orthanc_bootstrap" in files  # checked like the rest


def test_no_module_is_over_500_lines(files: dict[str, Path]) -> None:
    problems = oversized(files, OVERSIZED)
    assert not problems, "\n".join(problems)


# ---- the checks themselves catch what they are for -------------------------------------------


def _package(root: Path, sources: Mapping[str, str]) -> dict[str, Path]:
    for relative, text in sources.items():
        path = root / "pkg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return modules(root / "pkg", "pkg")


def test_the_checks_find_a_cycle_a_layer_breach_an_orthanc_import_and_a_long_module(tmp_path: Path) -> None:
    files = _package(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": '"""Low.\n\nMay import: nothing.\n"""\n',
        "low/a.py": "from ..high import b\n",  # a breach, and with high.b a cycle
        "high/__init__.py": '"""High.\n\nMay import: low.\n"""\n',
        "high/b.py": "from typing import TYPE_CHECKING\nfrom ..low import a\nif TYPE_CHECKING:\n    from . import c\n",
        "high/c.py": "from . import b\n",  # only an annotation import back: no cycle
        "low/d.py": "def f():\n    import orthanc\n" + "x = 1\n" * MAX_LINES,
        "adapter.py": "import orthanc\n",
    })
    assert cycles(import_graph(files)) == [["pkg.high.b", "pkg.low.a"]]
    breaches = layer_breaches(files, {"adapter": {"low", "high"}})
    assert breaches == ["pkg.low.a imports pkg.high.b: low may import only nothing"]
    assert orthanc_importers(files, adapter="adapter") == ["pkg.low.d"]
    assert oversized(files, {}) == [f"pkg.low.d has {MAX_LINES + 2} lines, over {MAX_LINES}: split it by responsibility"]
    assert oversized(files, {"pkg.low.d": "", "pkg.low.a": ""}) == ["pkg.low.a has 1 lines now: delete its OVERSIZED entry"]
    assert "pkg.adapter: a top-level module with no rule (put it in a sub-package, or in TOP_LEVEL_RULES)" in \
        layer_breaches(files, {})
