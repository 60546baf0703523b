"""The package's layering, checked by import-linter's contracts in .importlinter: stages never import each other
(they talk through the store), launchers import no stage, the core (spec, sweep, store) and the shared pieces import
no stage, no launcher, no report and no CLI. `make lint` runs the same contracts.

Imports of the package's own modules sit at module top; one that stays inside a function (an engine kept out of
the CLI path, a process that must set its environment first) says why in a comment, so the next reader does not
hoist it by accident or keep it lazy for no reason."""

from __future__ import annotations

import ast
import configparser
import io
import subprocess
import sys
import tokenize
from pathlib import Path

from framework.sweep.stages import STAGES

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("framework", "launchers")


def contracts() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    return config


def test_every_stage_package_is_in_the_independence_contract():
    """A new stage must not escape the contract: each stage's entry point lives in framework.<stage>."""
    modules = contracts()["importlinter:contract:stages"]["modules"].split()
    packages = {STAGES[s].target.split(":")[0].rsplit(".", 1)[0] for s in STAGES}
    assert packages == {f"framework.{s}" for s in STAGES}
    assert set(modules) == packages


def test_the_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def _own_import(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] in PACKAGES
    return any(alias.name.split(".")[0] in PACKAGES for alias in node.names)


def unexplained_lazy_imports(source: str) -> list[int]:
    """Lines of imports of our own packages made inside a function with no comment saying why: a comment line
    just above the run of import statements it starts, or a comment on the import itself. Imports under
    `if TYPE_CHECKING:` are for the type checker and exempt."""
    lines = source.splitlines()
    comments = {
        tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT
    }

    def explained(run: list[ast.stmt], node: ast.Import | ast.ImportFrom) -> bool:
        own = range(node.lineno, (node.end_lineno or node.lineno) + 1)
        above = run[0].lineno - 1
        return any(n in comments for n in own) or (above >= 1 and lines[above - 1].lstrip().startswith("#"))

    found: list[int] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        run: list[ast.stmt] = []  # consecutive import statements of one body: one comment may explain them all
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                run = []
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                if not (run and run[-1].end_lineno == child.lineno - 1):
                    run = []
                run.append(child)
                if in_function and _own_import(child) and not explained(run, child):
                    found.append(child.lineno)
                continue
            run = []
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(ast.parse(source), False)
    return found


def test_an_import_inside_a_function_without_a_reason_is_found():
    source = """import os
from framework.errors import UserError


def f():
    import json

    from framework.store import Store
    return Store


def g():
    # lazy: imports torch, which the CLI path must not pay for
    import torch
    from framework.train import worker
    from . import sibling

    x = 1  # a comment on another line explains nothing
    from launchers import local
    from framework.eval import stage  # runs in the eval process only
    if TYPE_CHECKING:
        from framework.spec import Spec


class C:
    def m(self):
        from .base import thing
        return thing
"""
    assert unexplained_lazy_imports(source) == [8, 19, 27]


def test_every_import_of_our_own_modules_inside_a_function_says_why():
    """Imports belong at module top; one kept inside a function (an engine the CLI must not load, a process that
    sets its environment before importing, an import cycle) carries a comment on or just above it saying so."""
    missing = [
        f"{path.relative_to(ROOT)}:{line}: {path.read_text(encoding='utf-8').splitlines()[line - 1].strip()}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for line in unexplained_lazy_imports(path.read_text(encoding="utf-8"))
    ]
    assert not missing, "imports inside functions with no comment saying why they are not at module top:\n" + (
        "\n".join(missing)
    )
