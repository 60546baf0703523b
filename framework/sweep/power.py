"""Power before launch: for each comparison a spec makes, the smallest difference its design can detect.

Each factor level's effect against its reference is what the report tests (`framework.report.stats`: the t test
its interval inverts, two-sided 5%); `plan` prints the true difference that test finds with 80% power, from the
design (problems x samples x seeds, and how many arms pool the seed variance) and the variance components of
`framework.variance`: measured on this store's finished evaluations of the benchmark once there are any, else
assumed competition-math-like values (and it says which). A level's effect averages its arm pairs (one per
combination of the other factors' levels); their variances are taken as independent, which is optimistic where
they share problems, exact in a one-at-a-time design (one pair).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from framework.sweep.cost import _benchmark_problems
from framework.sweep.evaluations import finished_evaluations
from framework.variance import ASSUMED, MIN_SEED_DF, ArmCounts, Components, align, measured_components

if TYPE_CHECKING:
    from framework.store import Store
    from framework.sweep.grid import Cell
    from framework.sweep.plan import Plan

__all__ = ["Detectable", "estimate_power", "render"]


@dataclass(frozen=True)
class Detectable:
    """What one comparison's design can detect."""

    benchmark: str
    comparison: str
    pairs: int
    problems: int | None
    samples: float
    seeds: int
    detectable: float | None  # pass@1 difference (0-1) found with 80% power; None without a test or a count
    over: str  # "seed+problem"; "" when the report will not test it over training runs (too few seeds)
    narrows_most: str
    source: str
    seeds_needed: int  # the fewest seeds per arm whose pooled seed variance the report tests with
    detectable_then: float | None  # what that many seeds would detect

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def estimate_power(plan: Plan, store: Store, spec_dir: Path | None, power: float = 0.8) -> list[Detectable]:
    """One row per (benchmark, factor level against its reference)."""
    spec = plan.spec
    # Under a search every recipe's comparisons have the same design: the first recipe's arms stand for them.
    first = plan.cells[0].recipe if plan.cells else None
    trained = {c.arm_id: c.level_map for c in plan.cells if c.baseline is None and c.recipe == first}
    seeds = len(spec.seeds)
    problems = _benchmark_problems(plan, store, spec_dir, store.done_keys("eval"))
    rows = []
    for bench in spec.eval.benchmarks:
        samples = _samples(bench.samples if bench.samples is not None else spec.eval.samples)
        components = _measured(plan, store, bench.name) or ASSUMED
        n = problems.get(bench.name)
        for factor, fs in spec.factors.items():
            ref = fs.reference_level
            for level in (lv.name for lv in fs.levels if lv.name != ref):
                pairs = _pairs(trained, factor, level, ref)
                if not pairs:
                    continue
                arms = len(trained)
                scaled = _scaled(components.pair(n or 2, samples, seeds, arms=arms), pairs)
                needed = max(seeds, 1 + -(-MIN_SEED_DF // max(arms, 1)))
                then = _scaled(components.pair(n or 2, samples, needed, arms=arms), pairs)
                rows.append(
                    Detectable(
                        benchmark=bench.name,
                        comparison=f"{factor}={level} vs {ref}",
                        pairs=pairs,
                        problems=n,
                        samples=samples,
                        seeds=seeds,
                        detectable=components.detectable(scaled, power) if n else None,
                        over="seed+problem" if arms * (seeds - 1) >= MIN_SEED_DF else "",
                        narrows_most=scaled.narrows_most() if n else "",
                        source=components.source,
                        seeds_needed=needed,
                        detectable_then=components.detectable(then, power) if n else None,
                    )
                )
    return rows


def _samples(value: Any) -> float:
    """Samples per problem: the constant, or a budget's mean."""
    return float(getattr(value, "budget", value))


def _pairs(trained: dict[str, dict[str, str]], factor: str, level: str, ref: str) -> int:
    """Arms at `level` with a twin at `ref` (the other factors equal): the pairs its effect averages."""
    at_ref = {
        tuple(sorted((k, v) for k, v in m.items() if k != factor)) for m in trained.values() if m.get(factor) == ref
    }
    return sum(
        tuple(sorted((k, v) for k, v in m.items() if k != factor)) in at_ref
        for m in trained.values()
        if m.get(factor) == level
    )


def _scaled(contrast: Any, pairs: int) -> Any:
    """The contrast averaged over `pairs` independent pairs: every variance over `pairs`."""
    return replace(
        contrast,
        variance=contrast.variance / pairs,
        parts={k: v / pairs for k, v in contrast.parts.items()},
        doubled={k: v / pairs for k, v in contrast.doubled.items()},
    )


def _measured(plan: Plan, store: Store, benchmark: str) -> Components | None:
    """The components of this store's finished evaluations of `benchmark` in this plan (None before any). One whose
    files cannot be read is left out, and the source says so (the report is where it is an error)."""
    unreadable: list[str] = []
    finished = finished_evaluations(plan, store, benchmark, unreadable=unreadable)
    keys, aligned = align({f.cell.id: f.counts for f in finished})
    if not keys:
        return None
    by_arm: dict[str, list[Cell]] = {}
    for f in finished:
        by_arm.setdefault(f.cell.arm_id, []).append(f.cell)
    arms = [
        ArmCounts(np.stack([aligned[c.id][0] for c in cells]), np.stack([aligned[c.id][1] for c in cells]))
        for cells in by_arm.values()
    ]
    trained = [cells[0].baseline is None for cells in by_arm.values()]
    source = f"measured on {len(finished)} finished evaluation(s) in this store"
    if unreadable:
        source += f" ({len(unreadable)} more could not be read: {', '.join(unreadable)})"
    return measured_components(arms, trained, source)


def render(rows: list[dict[str, Any]], width: int = 80) -> list[str]:
    """The plan's power lines, per benchmark and design, wrapped to `width`."""
    if not rows:
        return []
    lines = ["Detectable difference (80% power, the report's two-sided 5% test):"]
    designs: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        designs.setdefault((r["benchmark"], r["problems"], r["samples"], r["seeds"], r["over"]), []).append(r)
    for (bench, problems, samples, seeds, _), group in designs.items():
        head = f"{bench}: {problems or '?'} problems x {samples:g} samples x {seeds} seed(s)"
        lines += textwrap.wrap(head, width - 2, initial_indent="  ", subsequent_indent="    ")
        for r in group:
            pairs = f" ({r['pairs']} pairs)" if r["pairs"] > 1 else ""
            if r["detectable"] is not None:
                found = f"{r['detectable'] * 100:.1f} pp"
            elif not r["problems"]:
                found = "? (problems unknown)"
            else:
                then = r["detectable_then"]
                found = (
                    f"no test over training runs at {r['seeds']} seed(s); {r['seeds_needed']} seeds per arm would "
                    f"detect {then * 100:.1f} pp"
                    if then is not None
                    else "no test over training runs"
                )
            most = f"; more {r['narrows_most']} narrow it most" if r["narrows_most"] and r["detectable"] else ""
            lines += textwrap.wrap(
                f"{r['comparison']}{pairs}: {found}{most}", width - 4, initial_indent="    ", subsequent_indent="      "
            )
    notes = [f"variance components: {'; '.join(sorted({r['source'] for r in rows}))}"]
    if any(r["over"] != "seed+problem" for r in rows):
        notes.append(
            f"with these seeds the seed-to-seed variance rests on fewer than {MIN_SEED_DF} degrees of freedom: "
            "the report's intervals will speak for these fine-tunes only and it will not test the data's effect; "
            "add seeds (`seeds:`) for a claim about the data"
        )
    for note in notes:
        lines += textwrap.wrap(note, width - 2, initial_indent="  ", subsequent_indent="    ")
    return lines
