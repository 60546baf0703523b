"""Traces generated in the sweep teach like the paper's: the toy base fine-tuned on 20 traces that the toy teacher
(`toy:teacher`) wrote beats the same base fine-tuned on 20 traces the untuned base wrote, with a paired interval
that excludes zero.

The whole pipeline for real: the generate stage samples both teachers with vLLM's CPU build offline, the pool
grades the traces, ZeRO-3 over two CPU processes fine-tunes, vLLM evaluates, the report compares. At reduced size
(24 problems sampled once per teacher, one seed, 40 test problems with 2 samples each) it takes a few minutes.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import TOY_RECIPE, run_sweep

pytestmark = pytest.mark.integration

SEED = 0  # sampling and training seed; the margins below were measured on seeds 0 and 1


def generated(teacher: str) -> dict:
    return {
        "problems": {"preset": "toy", "options": {"n_problems": 24, "styles": ["direct"]}},
        "teacher": {"model": teacher},
        "prompt": "{problem}",
        "chat": True,
        "sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 256, "seed": SEED},
    }


SPEC = {
    "name": "toy-generated-it",
    "description": "Traces written by the toy teacher vs by the untuned toy base.",
    "model": {"name_or_path": "toy:base"},
    "pool": [
        {"source": "teacher", "generate": generated("toy:teacher")},
        {"source": "base", "generate": generated("toy:base")},
    ],
    "factors": {"source": {"levels": ["teacher", "base"]}},
    "n_examples": 20,
    "seeds": [SEED],
    **TOY_RECIPE,
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_sweep(tmp_path_factory.mktemp("toy-generated"), SPEC)


def test_the_pool_holds_both_teachers_traces_graded(results: Path) -> None:
    (pool_dir,) = [p for p in (results / "store" / "pool").iterdir() if p.is_dir()]
    pool = pd.read_parquet(pool_dir / "pool.parquet").set_index("source")
    for source, teacher in (("teacher", "toy:teacher"), ("base", "toy:base")):
        rows = pool.loc[[source]]
        assert len(rows) == 24 and (rows["teacher"] == teacher).all()
        assert rows.loc[rows["answer"].notna(), "correct"].notna().all()  # graded wherever an answer was found
    # The teacher solves nearly every problem when sampled (0.96 on seeds 0 and 1); the base, never fine-tuned,
    # almost none (0 and 1 of 24, a lucky guess).
    right = pool["correct"].astype("boolean").fillna(False).groupby(level="source").mean()
    assert right["teacher"] > 0.7 and right["base"] < 0.15, right


def test_teacher_traces_beat_base_traces_with_an_interval_that_excludes_zero(results: Path) -> None:
    effects = pd.read_csv(results / "tables" / "effects.csv")
    base = effects[(effects["factor"] == "source") & (effects["level"] == "base")].iloc[0]
    assert base["reference_level"] == "teacher"
    # Measured: -0.95 [-1.00, -0.87] on seed 0, -0.83 [-0.93, -0.72] on seed 1 (teacher 0.98 / 0.84, base 0.03 / 0.01).
    assert base["ci_high"] < 0 and base["estimate"] < -0.4
    arms = pd.read_csv(results / "tables" / "arms.csv").set_index("source")
    assert arms.loc["teacher", "estimate"] > 0.5, arms
    assert arms.loc["base", "estimate"] < 0.15, arms
