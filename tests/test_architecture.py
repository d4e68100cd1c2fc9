"""Imports run down the data flow and never in a circle (read from the source with ``ast``, lazy imports included).

Order, bottom to top: the helpers importable anywhere (``errors``, ``checks``, ``script_args``, ``io``, ``runtime``,
``progress``, ``cli_params``), then the stages ``acoustics -> data -> features -> models ->
explain -> experiments -> plots -> report``, then ``study`` (runs every stage) and ``cli``. A module may
import from its own rank or below. The package root (``xai_loc/__init__.py``) is the parent
of every module, run by Python before any of them, so importing a name from it (``from
xai_loc import __version__``) adds no dependency; its own imports are the public facade and
rank at the top.
"""
from __future__ import annotations

import ast
from pathlib import Path

import xai_loc

PACKAGE = Path(xai_loc.__file__).parent
BOTTOM = ("errors", "checks", "script_args", "io", "runtime", "progress", "cli_params", "cluster")
STAGES = ("acoustics", "data", "features", "models", "explain", "experiments", "plots", "report")
TOP = ("study", "cli")
RANK = {name: 0 for name in BOTTOM} | {name: 1 + i for i, name in enumerate(STAGES + TOP)}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("xai_loc", *path.relative_to(PACKAGE).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _rank(module: str) -> int:
    """Rank of a module in the order; the package root ranks at the top (its imports are the facade)."""
    parts = module.split(".")
    if len(parts) == 1:
        return max(RANK.values()) + 1
    assert parts[1] in RANK, f"{module} is not in the import order of {__name__}; place it there"
    return RANK[parts[1]]


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[str, int]]:
    """``(imported xai_loc module, line)`` of every import in ``source``, inside functions too.

    ``from pkg import name`` counts as an import of ``pkg.name`` where that is a module.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.split(".")[0] == "xai_loc"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "xai_loc":
                continue
            for alias in node.names:
                found.append((f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target, node.lineno))
    return found


def _graph() -> dict[str, set[tuple[str, int]]]:
    return {module: set(imports(path.read_text(), module, path.name == "__init__.py"))
            for module, path in MODULES.items()}


def test_the_scan_sees_lazy_and_package_imports():
    source = "def f():\n    from xai_loc.plots import hofman\n    import xai_loc.models.zoo\n"
    assert imports(source, "xai_loc.experiments.cues") == [("xai_loc.plots.hofman", 2), ("xai_loc.models.zoo", 3)]
    assert "xai_loc.study" in {target for target, _ in _graph()["xai_loc.cli.multichannel"]}  # inside a command
    assert all(_rank(module) >= 0 for module in MODULES)  # every module has its place in the order


def test_imports_run_down_the_data_flow():
    backwards = [f"{MODULES[module].relative_to(PACKAGE.parent)}:{line} {module} -> {target}"
                 for module, targets in _graph().items() for target, line in sorted(targets)
                 if target != "xai_loc" and module != "xai_loc" and _rank(target) > _rank(module)]
    assert not backwards, "imports that run up the stages:\n" + "\n".join(backwards)


def test_no_modules_import_each_other():
    """No cycle of any length between modules (Tarjan's strongly connected components)."""
    edges = {module: {t for t, _ in targets if t in MODULES and t not in ("xai_loc", module)}
             for module, targets in _graph().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not cycles, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in cycles)
