"""Lazy registries: components are named by a string and imported only when used.

A name is either a built-in (mapped to "package.module:attr") or itself a "package.module:attr" path, so users
plug in their own factor, benchmark or grader without touching ablate. Nothing here imports vLLM or DeepSpeed.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any


class ResolveError(LookupError):
    """A component name that names nothing importable."""


def import_object(path: str) -> Any:
    """Import "package.module:attr" (attr may be dotted)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ResolveError(f"{path!r} is not of the form 'package.module:attr'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ResolveError(f"cannot import module {module_name!r} ({e})") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise ResolveError(f"module {module_name!r} has no attribute {attr!r}") from e
    return obj


def suggest(name: str, candidates: list[str] | tuple[str, ...] | set[str]) -> str:
    """' (did you mean "x"?)' or ''."""
    ordered = sorted(candidates)
    close = difflib.get_close_matches(name, ordered, n=1, cutoff=0.6)
    if not close and len(name) >= 2:
        close = [c for c in ordered if c.lower().startswith(name.lower())][:1]
    return f' (did you mean "{close[0]}"?)' if close else ""


class Registry:
    """Names of one kind of component, resolved on first use."""

    def __init__(self, kind: str, builtins: dict[str, str]) -> None:
        self.kind = kind
        self._targets: dict[str, Any] = dict(builtins)
        self._cache: dict[str, Any] = {}

    def register(self, name: str, target: str | Any) -> None:
        self._targets[name] = target
        self._cache.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._targets)

    def problem(self, name: str) -> str | None:
        """Why `name` cannot be resolved, or None. Built-ins are not imported; import paths are."""
        if name in self._targets:
            return None
        if ":" in name:
            try:
                self.resolve(name)
            except ResolveError as e:
                return f"{self.kind} {name!r}: {e}"
            return None
        return f"unknown {self.kind} {name!r}{suggest(name, self._targets)}; known: {', '.join(self.names())}"

    def resolve(self, name: str) -> Any:
        if name in self._cache:
            return self._cache[name]
        target = self._targets.get(name, name)
        if isinstance(target, str):
            if ":" not in target:
                raise ResolveError(
                    f"unknown {self.kind} {name!r}{suggest(name, self._targets)}; known: {', '.join(self.names())}"
                )
            target = import_object(target)
        self._cache[name] = target
        return target


FACTORS = Registry(
    "factor",
    {
        name: f"framework.data.factors.{name}:FACTOR"
        for name in ("source", "length", "difficulty", "diversity", "keywords", "correctness")
    },
)
BENCHMARKS = Registry(
    "benchmark",
    {
        name: f"framework.benchmarks:{attr}"
        for name, attr in {
            "comp-math-24-25": "COMP_MATH_24_25",
            "aime24": "AIME24",
            "aime25": "AIME25",
            "hmmt-24-25": "HMMT_24_25",
            "hmmt-feb-2025": "HMMT_FEB_2025",
            "math-500": "MATH_500",
            "gpqa-diamond": "GPQA_DIAMOND",
            "toy": "TOY",
            "toy-dev": "TOY_DEV",
        }.items()
    },
)
GRADERS = Registry(
    "grader",
    {"math": "framework.grading:grade_math", "multiple_choice": "framework.grading:grade_multiple_choice"},
)
POOL_PRESETS = Registry(
    "pool preset",
    {
        "nemotron-math-human-reasoning": "framework.pool.presets:NEMOTRON_MATH_HUMAN_REASONING",
        "open-math-reasoning": "framework.pool.presets:OPEN_MATH_REASONING",
        "toy": "framework.pool.presets:TOY",
    },
)
