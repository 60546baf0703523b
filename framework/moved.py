"""Where the modules of the flat layout went when each stage got a package of its own.

A user's factor, grader or benchmark, or a spec naming one by import path ("framework.factors.length:FACTOR"),
keeps working: importing an old name imports the new module under it, with a DeprecationWarning that names
the new path. Standard library only; a name outside `framework.` passes it by one string test.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

MOVED = {
    "framework.tiny": "framework.model.stage",
    "framework.pool_sources": "framework.sources",
    "framework.pool.sources": "framework.sources",
    "framework.eval.engines": "framework.engines",
    "framework.pool_presets": "framework.pool.presets",
    "framework.topics": "framework.pool.topics",
    "framework.selection": "framework.data.selection",
    "framework.factors": "framework.data.factors",
    "framework.train_config": "framework.train.config",
    "framework.train_launch": "framework.train.launch",
    "framework.train_worker": "framework.train.worker",
    "framework.chunked_loss": "framework.train.chunked_loss",
    "framework.lean_activations": "framework.train.lean_activations",
    "framework.fused_kernels": "framework.train.fused_kernels",
    "framework.jit_ops": "framework.train.jit_ops",
    "framework.stop_signals": "framework.train.stop_signals",
    "framework.evaluate": "framework.eval.stage",
    "framework.eval_parallel": "framework.eval.parallel",
    "framework.benchmark_data": "framework.benchmarks.loading",
    "framework.metrics": "framework.grading.metrics",
    "framework.extraction": "framework.grading.extraction",
    "framework.tracking": "framework.log.stage",
    "framework.mlflow_client": "framework.log.mlflow_client",
    "framework.report_plots": "framework.report.plots",
    "framework.stats": "framework.report.stats",
    "framework.significance": "framework.report.significance",
    "framework.store_locks": "framework.store.locks",
    "framework.grid": "framework.sweep.grid",
    "framework.plan": "framework.sweep.plan",
    "framework.stages": "framework.sweep.stages",
    "framework.execute": "framework.sweep.execute",
    "framework.checkpoints": "framework.sweep.pruning",
    "framework.models": "framework.model_source",
}


def new_name(name: str) -> str | None:
    """The module an old name now lives at (a submodule of a moved package follows it), or None."""
    for old, new in MOVED.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old) :]
    return None


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: Any) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {self.new}", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(self.new)
        sys.modules[spec.name] = module
        return module

    def exec_module(self, module: ModuleType) -> None:
        """The new module ran when it was imported."""


class MovedFinder(importlib.abc.MetaPathFinder):
    """First on sys.meta_path, so that a submodule of a moved package (framework.factors.length) is the new
    module and not a second copy of it loaded through the package's path; any other name passes in a string test."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if not fullname.startswith("framework."):
            return None
        new = new_name(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(new))


def old_stage_names(package: str, path: list[str]) -> Any:
    """A stage package's module `__getattr__`: `framework.pool` was the pool stage's module before the stage got a
    package, so its names (`framework.pool:run`, `from framework.pool import read_pool`) still resolve, from where
    they went, with a warning. A submodule not imported yet is left to the import system."""

    def __getattr__(name: str) -> Any:
        import pkgutil

        if name.startswith("__") or name in {m.name for m in pkgutil.iter_modules(path)}:
            raise AttributeError(name)
        for where in (f"{package}.stage", "framework.artifacts", "framework.annotations"):
            module = importlib.import_module(where)
            if hasattr(module, name):
                warnings.warn(f"{package}.{name} moved to {where}.{name}", DeprecationWarning, stacklevel=2)
                return getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def install() -> None:
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedFinder())
