"""Lazy registries: built-ins resolve, import paths resolve, and importing the framework stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from framework.registry import BENCHMARKS, FACTORS, POOL_PRESETS, Registry, ResolveError, import_object


def test_builtin_factors_benchmarks_and_presets_resolve():
    for reg in (FACTORS, BENCHMARKS, POOL_PRESETS):
        for name in reg.names():
            assert reg.resolve(name) is not None
    assert FACTORS.resolve("keywords").phase == "transform"


def test_import_paths_and_errors():
    assert import_object("framework.registry:Registry") is Registry
    with pytest.raises(ResolveError, match="not of the form"):
        import_object("framework.registry")
    with pytest.raises(ResolveError, match="no attribute"):
        import_object("framework.registry:Nope")
    reg = Registry("thing", {"a": "framework.registry:Registry"})
    assert reg.problem("b") is not None and reg.problem("a") is None
    assert "did you mean" in (reg.problem("aa") or "") or "known: a" in (reg.problem("aa") or "")
    assert reg.problem("framework.registry:suggest") is None


def test_the_cli_loads_no_table_drawing_nor_pandas_until_a_command_needs_them():
    """Every stage job is a process of its own (`ablate exec`): what the CLI module imports, each job pays."""
    code = "import sys, framework.cli\nprint(','.join(m for m in ('rich', 'pandas', 'httpx2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_importing_the_framework_and_planning_loads_no_engine():
    code = (
        "import sys, framework, framework.cli, framework.sweep.plan, framework.sweep.execute, launchers\n"
        "from framework.spec import spec_from_dict\n"
        "heavy = [m for m in ('torch', 'vllm', 'deepspeed', 'transformers', 'mlflow') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
