"""Expansion of a spec's factors x seeds into cells, and the baseline cells beside them."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

from framework.errors import UserError
from framework.hashing import content_key
from framework.spec.ablation import AblationSpec

Arm = tuple[tuple[str, str], ...]  # ((factor, level), ...) in the spec's factor order


@dataclass(frozen=True)
class Cell:
    """One trained-and-evaluated unit: an arm (a level per factor) and a seed, or a baseline model. Under a search,
    a trained cell also names the recipe it trains with: "shared" (the reference arm's best) or "own" (its arm's)."""

    levels: Arm
    seed: int | None
    baseline: str | None
    key: str
    recipe: str | None = None

    @cached_property
    def arm_id(self) -> str:
        """The cell's id without its seed: replicates of one arm share it."""
        if self.baseline is not None:
            return f"baseline={self.baseline}"
        parts = [f"{f}={lv}" for f, lv in self.levels] + ([f"recipe={self.recipe}"] if self.recipe else [])
        return ",".join(parts) or "all"

    @cached_property
    def id(self) -> str:
        if self.baseline is not None:
            return self.arm_id
        recipe = [f"recipe={self.recipe}"] if self.recipe else []
        return ",".join([*(f"{f}={lv}" for f, lv in self.levels), *recipe, f"seed={self.seed}"])

    @property
    def level_map(self) -> dict[str, str]:
        return dict(self.levels)


def _arms(spec: AblationSpec) -> list[Arm]:
    factors = spec.factors
    names = list(factors)
    if not names:
        return [()] if spec.trains else []  # baselines and no factors: evaluation only
    ref = {f: factors[f].reference_level for f in names}
    if spec.grid.design == "factorial":
        combos = itertools.product(*([lv.name for lv in factors[f].levels] for f in names))
        arms = [tuple(zip(names, combo)) for combo in combos]
    else:
        arms = [tuple((f, ref[f]) for f in names)]
        for f in names:
            for lv in factors[f].levels:
                if lv.name != ref[f]:
                    arms.append(tuple((g, lv.name if g == f else ref[g]) for g in names))
    for rule in spec.grid.include:
        arms.append(tuple((f, rule.get(f, ref[f])) for f in names))

    def excluded(arm: Arm) -> bool:
        levels = dict(arm)
        for rule in spec.grid.exclude:
            if all(levels[f] in (v if isinstance(v, list) else [v]) for f, v in rule.items()):
                return True
        return False

    kept = [a for a in dict.fromkeys(arms) if not excluded(a)]
    if not kept:
        raise UserError(
            f"grid.exclude removes all {len(dict.fromkeys(arms))} arms of the grid: nothing would be trained"
        )
    return kept


def arm_definition(spec: AblationSpec, arm: Arm) -> list[list]:
    """What an arm means, independent of YAML order and naming of factors' keys: (kind, level, params)."""
    out = []
    for fname, level in sorted(arm):
        factor = spec.factors[fname]
        params = next(lv.params for lv in factor.levels if lv.name == level)
        out.append([fname, factor.kind or fname, level, params])
    return out


def recipes(spec: AblationSpec) -> list[str | None]:
    """The recipes every arm trains with: the spec's (no search); the reference arm's best (shared); or, per arm,
    both the reference arm's best and the arm's own, which the report sets side by side."""
    if spec.search is None:
        return [None]
    return ["shared"] if spec.search.mode == "shared" else ["shared", "own"]


def reference_arm(spec: AblationSpec) -> Arm:
    """The arm whose levels are every factor's reference: the shared recipe is searched on it."""
    return tuple((f, spec.factors[f].reference_level) for f in spec.factors)


def expand(spec: AblationSpec) -> list[Cell]:
    """Arms x recipes x seeds, then baselines. Deterministic: same spec, same cells in the same order with the
    same keys."""
    cells = []
    for arm in _arms(spec):
        definition = arm_definition(spec, arm)
        for recipe in recipes(spec):
            extra = {"recipe": recipe} if recipe else {}  # cells without a search keep their keys
            for seed in spec.seeds:
                cells.append(Cell(arm, seed, None, content_key({"arm": definition, "seed": seed, **extra}), recipe))
    for b in spec.baselines:
        model = (b.model or spec.model).model_dump(mode="json")
        cells.append(Cell((), None, b.name, content_key({"baseline": b.name, "model": model})))
    return cells
