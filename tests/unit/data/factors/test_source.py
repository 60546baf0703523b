"""source factor: exact label match, level name as the default label."""

from __future__ import annotations

import numpy as np
import pandas as pd

from framework.data.factors.base import FactorContext
from framework.data.factors.source import FACTOR, Params, apply


def _ctx() -> FactorContext:
    return FactorContext(rng=np.random.default_rng(0), n_examples=2, reflection_keywords=["wait"])


def _pool() -> pd.DataFrame:
    sources = ["r1", "human_stage4", "r1", "nonreasoning", "human_stage4", "r1", "human_stage40"]
    return pd.DataFrame(
        {
            "trace_id": [f"t{i}" for i in range(len(sources))],
            "source": sources,
            "extra": list(range(len(sources))),
        },
        index=[10 * i for i in range(len(sources))],
    )


def test_level_name_is_the_default_source() -> None:
    out = apply(_pool(), "human_stage4", Params(), _ctx())
    assert out["trace_id"].tolist() == ["t1", "t4"]  # not human_stage40: exact match
    assert out.index.tolist() == [10, 40]
    assert out.columns.tolist() == ["trace_id", "source", "extra"]


def test_explicit_sources_override_the_level_name() -> None:
    ctx = _ctx()
    out = apply(_pool(), "reasoning", Params(sources=["r1", "nonreasoning"]), ctx)
    assert out["trace_id"].tolist() == ["t0", "t2", "t3", "t5"]
    assert ctx.report == {"sources": ["r1", "nonreasoning"], "kept": {"r1": 3, "nonreasoning": 1}}


def test_unknown_source_keeps_nothing_and_says_which_sources_there_are() -> None:
    ctx = _ctx()
    assert apply(_pool(), "gpt", Params(), ctx).empty
    assert (
        ctx.report["hint"]
        == "no trace has source 'gpt'; the sources here: human_stage4, human_stage40, nonreasoning, r1"
    )


def test_factor_declaration() -> None:
    assert (FACTOR.name, FACTOR.phase, FACTOR.order) == ("source", "filter", 10)
