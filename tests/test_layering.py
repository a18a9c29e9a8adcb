"""The two packages are layered one way: `delf_baseline` builds on `lmkcomp`, and lmkcomp's library
never imports `delf_baseline`; only its wiring layers (the CLI, the commands, the benchmarks and
the demo), which put both together, may.

Imports are read from the source with `ast`, every one of them: at module level and inside
functions (imported on use), so a lazy import does not slip through.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("lmkcomp", "delf_baseline")
#: the lmkcomp modules (and packages) allowed to import delf_baseline
WIRING = ("lmkcomp.cli", "lmkcomp.commands", "lmkcomp.bench", "lmkcomp.demo")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, name: str) -> set[str]:
    """Every module an `import` or `from ... import` anywhere in the file names, absolute, with
    the packages above it (importing `a.b.c` runs `a` and `a.b` too); `from m import x` also
    counts `m.x`, which is a module when x is a submodule."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    named: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            named.add(base)
            named.update(f"{base}.{alias.name}" for alias in node.names)
    with_parents = set()
    for module in named:
        parts = module.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return with_parents


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the two packages it imports."""
    files = {module_name(path): path for package in PACKAGES for path in (REPO / package).rglob("*.py")}
    return {name: {m for m in imported_modules(path, name) if m in files and m != name}
            for name, path in files.items()}


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of `graph` (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


def test_the_walker_sees_lazy_and_relative_imports(tmp_path):
    source = tmp_path / "lmkcomp" / "local" / "demo.py"
    source.parent.mkdir(parents=True)
    source.write_text("from . import record\n\ndef use():\n    from delf_baseline.model import Delf\n")
    imported = imported_modules(source, "lmkcomp.local.demo")
    assert {"lmkcomp.local.record", "delf_baseline", "delf_baseline.model"} <= imported


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert sorted(map(sorted, strongly_connected(graph))) == [["a", "b", "c"], ["d"]]


def test_lmkcomp_library_never_imports_delf_baseline():
    graph = import_graph()
    assert any(in_package(m, "delf_baseline") for m in graph["lmkcomp.cli"] | graph["lmkcomp.commands.delf"])
    offenders = sorted(f"{module} imports {target}" for module, targets in graph.items()
                       if in_package(module, "lmkcomp") and not any(in_package(module, w) for w in WIRING)
                       for target in targets if in_package(target, "delf_baseline"))
    assert offenders == []


def test_no_import_cycle_between_the_packages():
    crossing = [sorted(component) for component in strongly_connected(import_graph())
                if all(any(in_package(m, p) for m in component) for p in PACKAGES)]
    assert crossing == []
