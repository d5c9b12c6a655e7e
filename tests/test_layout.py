"""The package's shape, checked from source with ``ast``: straight layers (no import cycle, counting imports
inside functions) and small functions (at most 80 lines and 8 parameters)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stitching"
MAX_LINES = 80
MAX_PARAMS = 8
# LightningCLI configures these classes through their __init__ signature: every option is a parameter.
CONFIGURED_BASES = {"LightningModule", "LightningDataModule"}


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _parse(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))


def _resolve(name: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _owner(target: str) -> str | None:
    """The stitching module that ``target`` names (a module, or a name inside one)."""
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def imports(name: str) -> set[str]:
    """The stitching modules ``name`` imports anywhere: top level, inside functions, or by name as the
    argument of a call (``import_module``); ``if TYPE_CHECKING:`` blocks do not count."""
    tree = _parse(name)
    type_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, node)
            targets = [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call):  # import_module("stitching.x"), lazy("stitching.x", "f")
            targets = [a.value for a in node.args if isinstance(a, ast.Constant) and a.value in MODULES]
        else:
            continue
        for target in targets:
            owner = _owner(target)
            if owner and owner != name:
                found.add(owner)
    # Importing a module runs its packages' __init__ first; a package's own __init__ is not an edge.
    return {m for m in found if not name.startswith(m + ".")}


def import_cycles() -> list[list[str]]:
    """Every strongly connected group of more than one module in the import graph (Tarjan)."""
    graph = {m: imports(m) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for m in graph:
        if m not in index:
            visit(m)
    return cycles


def _cycle_path(group: list[str]) -> str:
    """One concrete cycle inside a strongly connected group, e.g. ``a -> b -> a``."""
    members = set(group)
    start, path, seen = group[0], [group[0]], {group[0]}
    while True:
        nxt = sorted(imports(path[-1]) & members)
        if start in nxt and len(path) > 1:
            return " -> ".join([*path, start])
        step = next((m for m in nxt if m not in seen), None)
        if step is None:
            return " <-> ".join(group)
        path.append(step)
        seen.add(step)


def test_no_import_cycle() -> None:
    cycles = import_cycles()
    report = [f"{_cycle_path(g)}  (group: {', '.join(g)})" for g in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(report)


def configured_classes() -> set[str]:
    """Names of the package's LightningModule/LightningDataModule subclasses, direct or indirect."""
    bases = {}
    for name in MODULES:
        for cls in ast.walk(_parse(name)):
            if isinstance(cls, ast.ClassDef):
                bases[cls.name] = {ast.unparse(b).rpartition(".")[2] for b in cls.bases}
    found = set(CONFIGURED_BASES)
    while True:
        more = {c for c, b in bases.items() if b & found} - found
        if not more:
            return found - CONFIGURED_BASES
        found |= more


def _exempt(tree: ast.Module, configured: set[str]) -> set[int]:
    """ids of the ``__init__`` functions of ``configured`` classes in ``tree``."""
    return {
        id(f)
        for cls in ast.walk(tree)
        if isinstance(cls, ast.ClassDef) and cls.name in configured
        for f in cls.body
        if isinstance(f, ast.FunctionDef) and f.name == "__init__"
    }


def oversized_functions(name: str, configured: frozenset[str] = frozenset()) -> list[str]:
    """``module:function (why)`` for each function of ``name`` over the line or parameter limit; the
    ``__init__`` of a ``configured`` class may take any number of parameters."""
    tree = _parse(name)
    exempt = _exempt(tree, configured)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        lines = node.end_lineno - node.lineno + 1
        args = node.args
        params = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
        params += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
        params = [p for p in params if p not in ("self", "cls")]
        if lines > MAX_LINES:
            found.append(f"{name}:{node.name} ({lines} lines)")
        if len(params) > MAX_PARAMS and id(node) not in exempt:
            found.append(f"{name}:{node.name} ({len(params)} parameters)")
    return found


@pytest.fixture(scope="module")
def configured() -> frozenset[str]:
    return frozenset(configured_classes())


def test_lightning_classes_are_found(configured) -> None:
    assert {"ClassifierModule", "StitchModule", "DigitsDataModule"} <= configured


@pytest.mark.parametrize("name", sorted(MODULES))
def test_small_functions(name: str, configured) -> None:
    oversized = oversized_functions(name, configured)
    assert not oversized, f"over {MAX_LINES} lines or {MAX_PARAMS} parameters: {oversized}"


def test_checks_catch_what_they_look_for(tmp_path, monkeypatch) -> None:
    """The checks see a cycle made only by an import inside a function, a long or wide function, and
    exempt only the ``__init__`` of a Lightning class."""
    pkg = tmp_path / "stitching"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import stitching.b\n")
    (pkg / "b.py").write_text(
        "def f(a, b, c, d, e, f, g, h, i):\n    from stitching import a\n"
        + "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES))
    )
    (pkg / "c.py").write_text(
        "class M(L.LightningModule):\n    def __init__(self, a, b, c, d, e, f, g, h, i):\n        pass\n"
    )
    monkeypatch.setitem(globals(), "MODULES", {_module_name(p, pkg): p for p in sorted(pkg.rglob("*.py"))})
    assert import_cycles() == [["stitching.a", "stitching.b"]]
    assert _cycle_path(["stitching.a", "stitching.b"]) == "stitching.a -> stitching.b -> stitching.a"
    assert oversized_functions("stitching.b") == [
        f"stitching.b:f ({MAX_LINES + 2} lines)",
        "stitching.b:f (9 parameters)",
    ]
    assert configured_classes() == {"M"}
    assert oversized_functions("stitching.c", frozenset({"M"})) == []
    assert oversized_functions("stitching.c") == ["stitching.c:__init__ (9 parameters)"]
