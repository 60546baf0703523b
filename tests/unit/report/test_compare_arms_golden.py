"""compare_arms' whole output on one synthetic sweep, pinned: every table's columns, their order and dtypes, every
value, and the notes in their order. The secondary permutation tests draw from one seeded stream in a fixed
order, so a restructuring of compare_arms that reorders a draw, a row or a note shows up here even where each
number would still be plausible. A deliberate change of the output rewrites compare_arms.json with
`.venv/bin/python -m tests.unit.report.test_compare_arms_golden --write` and says why in its commit."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from framework.report.stats import Arm, ArmCounts, Comparison, compare_arms

GOLDEN = Path(__file__).with_name("compare_arms.json")
TABLES = ("arms", "levels", "effects", "pairs", "baselines")


def synthetic_arms() -> tuple[list[Arm], dict[str, list[str]], dict[str, str]]:
    """A 3x3 design with holes, one factor named like a fixed column, and every note compare_arms writes: an arm
    left with one seed (borrows), one that is never right (rule of three), one whose seeds scatter (seed share),
    a level with no arm at all, a baseline, and a difference the problems call but the interval does not."""
    rng = np.random.default_rng(11)
    problems = rng.uniform(0.2, 0.8, 24)

    def arm(arm_id: str, levels: dict[str, str], shift: float, seed_offsets: list[float], k: int = 8) -> Arm:
        p = np.clip(problems[None, :] + shift + np.array(seed_offsets)[:, None], 0.0, 1.0)
        total = np.full(p.shape, k)
        return Arm(arm_id, levels, ArmCounts(rng.binomial(total, p), total))

    factors = {"source": ["long", "terse", "direct"], "keywords": ["keep", "mask", "inject"], "arm": ["a"]}
    references = {"source": "long", "keywords": "keep", "arm": "a"}
    arms = [
        arm("long,keep", {"source": "long", "keywords": "keep", "arm": "a"}, 0.1, [0.0, 0.02, -0.02]),
        arm("terse,keep", {"source": "terse", "keywords": "keep", "arm": "a"}, 0.06, [0.0, 0.01, -0.01]),
        arm("long,mask", {"source": "long", "keywords": "mask", "arm": "a"}, 0.15, [-0.3, 0.0, 0.3]),
        arm("terse,mask", {"source": "terse", "keywords": "mask", "arm": "a"}, 0.08, [0.0, 0.05]),
        arm("direct,keep", {"source": "direct", "keywords": "keep", "arm": "a"}, 0.12, [0.0]),
        Arm(
            "direct,mask",
            {"source": "direct", "keywords": "mask", "arm": "a"},
            ArmCounts(np.zeros((2, 24), dtype=int), np.full((2, 24), 8)),
        ),
        arm("baseline=base", {}, 0.0, [0.0]),
    ]
    arms[-1] = Arm(arms[-1].id, {}, arms[-1].counts, baseline=True)
    return arms, factors, references


def snapshot(cmp: Comparison) -> dict:
    """The comparison as JSON: per table its columns, dtypes and rows (NaN as null), then the notes."""
    out: dict = {}
    for name in TABLES:
        frame = getattr(cmp, name)
        rows = [
            [None if isinstance(v, float) and math.isnan(v) else v for v in row]
            for row in frame.astype(object).itertuples(index=False, name=None)
        ]
        out[name] = {
            "columns": list(frame.columns),
            "dtypes": [str(t) for t in frame.dtypes],
            "rows": [[v.item() if isinstance(v, np.generic) else v for v in row] for row in rows],
        }
    out["notes"] = list(cmp.notes)
    return out


def diagonal_arms() -> tuple[list[Arm], dict[str, list[str]], dict[str, str]]:
    """A 2x2 whose diagonal cells failed: no level has a combination of the other factor's levels in common."""
    total = np.full((2, 6), 10)
    arms = [
        Arm("x,p", {"a": "x", "b": "p"}, ArmCounts(np.tile([2, 4, 6, 8, 4, 5], (2, 1)), total)),
        Arm("y,q", {"a": "y", "b": "q"}, ArmCounts(np.array([[7, 7, 9, 6, 8, 7], [5, 6, 9, 7, 8, 6]]), total)),
    ]
    return arms, {"a": ["x", "y"], "b": ["p", "q"]}, {"a": "x", "b": "p"}


def run() -> dict:
    """Both sweeps' snapshots, keyed by the sweep's name."""
    out = {}
    for name, make in (("factorial", synthetic_arms), ("diagonal", diagonal_arms)):
        arms, factors, references = make()
        out[name] = snapshot(compare_arms(arms, factors, references, n_perm=300, seed=3))
    return out


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b and type(a) is type(b)


def test_compare_arms_output_is_the_recorded_one():
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    now = json.loads(json.dumps(run()))  # the same JSON round trip the recorded file went through
    assert now.keys() == golden.keys()
    for sweep, recorded_sweep in golden.items():
        for name in TABLES:
            table, recorded = now[sweep][name], recorded_sweep[name]
            assert table["columns"] == recorded["columns"], (sweep, name)
            assert table["dtypes"] == recorded["dtypes"], (sweep, name)
            assert len(table["rows"]) == len(recorded["rows"]), (sweep, name)
            for i, (row, old) in enumerate(zip(table["rows"], recorded["rows"])):
                assert all(_same(a, b) for a, b in zip(row, old, strict=True)), (sweep, name, i, row, old)
        assert now[sweep]["notes"] == recorded_sweep["notes"], sweep


def test_the_recorded_sweep_exercises_every_kind_of_note():
    """The golden file pins only what the sweeps reach: they must reach every branch that writes a note."""
    notes = [n for sweep in json.loads(GOLDEN.read_text(encoding="utf-8")).values() for n in sweep["notes"]]
    for fragment in (
        "every sample is wrong",
        "one seed evaluated",
        "degree(s) of freedom (fewer than",
        "no combination of the other factors' levels",
        "keywords=inject: no pair of arms",
        "may be one of training runs",
    ):
        assert any(fragment in n for n in notes), fragment


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    GOLDEN.write_text(json.dumps(run(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN}")
