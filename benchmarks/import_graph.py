"""The shape of the package: modules, import edges between them, imports made inside functions, and cycles.

    python benchmarks/import_graph.py [--edges]

Counts every `import framework...`/`from framework... import` (and launchers) in the source, at module level or
inside a function, as an edge from the importing module to the imported one (a package import counts for the
package's __init__; `from pkg import mod` for the module when it is one). Cycles are the strongly connected
components of more than one module: among the module-level edges (the ones Python must resolve at import), and
among all edges (a cycle hidden in a function-level import is still two modules that need each other).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("framework", "launchers")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that `name` is or lies in."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(mod: str, path: Path, known: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported module, at module level) for each import of one of our modules."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # for the type checker only
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if (target := resolve(alias.name, known)) is not None:
                        found.append((target, top))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*up, base]).strip(".")
                for alias in child.names:
                    target = resolve(f"{base}.{alias.name}", known) if f"{base}.{alias.name}" in known else None
                    target = target or resolve(base, known)
                    if target is not None:
                        found.append((target, top))
            visit(child, inner)

    visit(tree, True)
    return [(t, top) for t, top in found if t != mod]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative enough for this size)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def main() -> None:
    known = modules()
    top_edges: dict[str, set[str]] = defaultdict(set)
    all_edges: set[tuple[str, str]] = set()
    inside = 0
    for mod, path in known.items():
        for target, top in imports(mod, path, known):
            all_edges.add((mod, target))
            if top:
                top_edges[mod].add(target)
            else:
                inside += 1
    found = cycles(top_edges)
    every: dict[str, set[str]] = defaultdict(set)
    for a, b in all_edges:
        every[a].add(b)
    found_all = cycles(every)
    lines = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in known.values())
    print(f"modules: {len(known)} ({lines} lines)")
    print(f"import edges between them: {len(all_edges)} ({sum(map(len, top_edges.values()))} at module level)")
    print(f"imports inside functions: {inside}")
    print(f"import cycles (module level): {len(found)}")
    for comp in found:
        print("  " + " <-> ".join(comp))
    print(f"import cycles (counting imports inside functions): {len(found_all)}")
    for comp in found_all:
        print("  " + " <-> ".join(comp))
    if "--edges" in sys.argv:
        for a, b in sorted(all_edges):
            print(f"{a} -> {b}")


if __name__ == "__main__":
    main()
