"""Checks that need the registries: factor kinds and their level parameters, grid rules, benchmark, grader and
pool preset names. They read the raw merged YAML, so they run (and report) even when other sections are broken.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from framework.registry import BENCHMARKS, FACTORS, GRADERS, POOL_PRESETS, ResolveError, suggest
from framework.spec.errors import SpecError, error_message, format_path
from framework.spec.fields import drop_default_nulls
from framework.spec.names import normalize_levels
from framework.spec.yamlsrc import Loc, Source


def _err(source: Source, loc: Loc, message: str) -> SpecError:
    where = source.where(loc)
    return SpecError(format_path(loc), message, *(where or (None, None)))


def _level_entries(raw_levels: Any) -> list[tuple[Loc, str, dict]]:
    """(yaml loc suffix, level name, params) for each well-formed level (a YAML boolean or float is no name: the
    schema reports it)."""
    out = []
    if isinstance(raw_levels, dict):
        for name, params in raw_levels.items():
            if (params is None or isinstance(params, dict)) and not isinstance(name, bool | float):
                out.append(((name,), str(name), params or {}))
    elif isinstance(raw_levels, list):
        for i, (orig, item) in enumerate(zip(raw_levels, normalize_levels(raw_levels))):
            if not isinstance(item, dict) or isinstance(item.get("name"), bool | float):
                continue
            if isinstance(item.get("params", {}), dict) and "name" in item:
                suffix: Loc = (i, "params") if isinstance(orig, dict) and "params" in orig else (i,)
                out.append((suffix, str(item["name"]), item.get("params") or {}))
    return out


def check_factors(source: Source) -> tuple[list[SpecError], dict[str, dict[str, dict]]]:
    """Errors, and the validated params (defaults filled) of each factor's levels."""
    errors: list[SpecError] = []
    resolved: dict[str, dict[str, dict]] = {}
    factors = source.data.get("factors")
    if not isinstance(factors, dict):
        return errors, resolved
    for fname, fraw in factors.items():
        if not isinstance(fraw, dict):
            continue
        kind = fraw.get("kind", fname)
        if not isinstance(kind, str):
            continue
        kind_loc: Loc = ("factors", fname, "kind") if "kind" in fraw else ("factors", fname)
        problem = FACTORS.problem(kind)
        if problem:
            errors.append(_err(source, kind_loc, problem))
            continue
        try:
            factor = FACTORS.resolve(kind)
            params_model = factor.params
        except (ResolveError, AttributeError) as e:
            errors.append(_err(source, kind_loc, f"factor {kind!r} has no usable 'params' model ({e})"))
            continue
        check = getattr(factor, "check", None)
        schema = None if ":" in kind or "." in kind else f"factors.{kind}"  # `ablate schema` knows built-ins
        resolved[fname] = {}
        for suffix, level, params in _level_entries(fraw.get("levels")):
            loc = ("factors", fname, "levels", *suffix)
            params = drop_default_nulls(params, params_model)  # `words: ~` means the default, as in the spec
            try:
                validated = params_model.model_validate(params)
            except ValidationError as e:
                for err in e.errors():
                    sub = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
                    errors.append(_err(source, (*loc, *sub), error_message(err, params_model, schema)))
                continue
            resolved[fname][level] = validated.model_dump(mode="json")
            if check is not None:
                try:
                    check(level, validated)
                except ValueError as e:
                    errors.append(_err(source, loc, str(e)))
    return errors, resolved


def check_grid(source: Source) -> list[SpecError]:
    """Grid rules must name factors and levels that exist."""
    errors: list[SpecError] = []
    factors = source.data.get("factors")
    grid = source.data.get("grid")
    if not isinstance(factors, dict) or not isinstance(grid, dict):
        return errors
    levels = {
        f: [name for _, name, _ in _level_entries(v.get("levels"))] for f, v in factors.items() if isinstance(v, dict)
    }
    for section in ("include", "exclude"):
        rules = grid.get(section)
        if not isinstance(rules, list):
            continue
        for i, rule in enumerate(rules):
            if not isinstance(rule, dict):
                continue
            for fname, value in rule.items():
                loc: Loc = ("grid", section, i, fname)
                if fname not in levels:
                    errors.append(_err(source, loc, f"unknown factor {fname!r}{suggest(str(fname), levels)}"))
                    continue
                for v in value if isinstance(value, list) else [value]:
                    if str(v) not in levels[fname]:
                        msg = (
                            f"factor {fname!r} has no level {v!r}{suggest(str(v), levels[fname])}; "
                            f"levels: {', '.join(levels[fname])}"
                        )
                        errors.append(_err(source, loc, msg))
    return errors


def check_names(source: Source) -> list[SpecError]:
    """Benchmark (a search's validation one too), grader and pool-preset names must resolve."""
    errors: list[SpecError] = []
    ev = source.data.get("eval")
    if isinstance(ev, dict):
        benches = ev.get("benchmarks")
        if isinstance(benches, list):
            for i, b in enumerate(benches):
                name = b if isinstance(b, str) else (b.get("name") if isinstance(b, dict) else None)
                if isinstance(name, str) and (problem := BENCHMARKS.problem(name)):
                    loc: Loc = ("eval", "benchmarks", i) if isinstance(b, str) else ("eval", "benchmarks", i, "name")
                    if isinstance(b, dict) and b.get("path"):  # a file of one's own still needs a known layout
                        problem += (
                            "; a local file takes the name of the benchmark whose layout it has (e.g. aime24), or "
                            "'package.module:attr' for a benchmark defined in code"
                        )
                    errors.append(_err(source, loc, problem))
        grading = ev.get("grading")
        if (
            isinstance(grading, dict)
            and isinstance(grading.get("grader"), str)
            and (problem := GRADERS.problem(grading["grader"]))
        ):
            errors.append(_err(source, ("eval", "grading", "grader"), problem))
    search = source.data.get("search")
    objective = search.get("objective") if isinstance(search, dict) else None
    bench = objective.get("benchmark") if isinstance(objective, dict) else None
    name = bench if isinstance(bench, str) else (bench.get("name") if isinstance(bench, dict) else None)
    if isinstance(name, str) and (problem := BENCHMARKS.problem(name)):
        loc = ("search", "objective", "benchmark") + (("name",) if isinstance(bench, dict) else ())
        errors.append(_err(source, loc, problem))
    pool = source.data.get("pool")
    if isinstance(pool, list):
        for i, p in enumerate(pool):
            if (
                isinstance(p, dict)
                and isinstance(p.get("preset"), str)
                and (problem := POOL_PRESETS.problem(p["preset"]))
            ):
                errors.append(_err(source, ("pool", i, "preset"), problem))
    return errors
