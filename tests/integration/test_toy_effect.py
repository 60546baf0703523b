"""The paper's direction through the whole pipeline, at reduced size: the shipped toy base fine-tuned on 20 long
chain-of-thought traces beats the same base fine-tuned on 20 direct answers, and the report's paired interval
for the difference excludes zero.

Real ZeRO-3 over two CPU processes, real vLLM sampling, the real report: one seed per arm and 40 test problems
with 2 samples each keep it to a few minutes. Training settings are the ones the dev split chose
(framework/toy/assets/STUDY.md), where long CoT reached 0.88 and direct 0.01 on this base.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import TOY_RECIPE, run_sweep

pytestmark = pytest.mark.integration

SPEC = {
    "name": "toy-effect-it",
    "description": "Long chain-of-thought vs direct answers on the toy base.",
    "model": {"name_or_path": "toy:base"},
    "pool": [{"preset": "toy"}],
    "factors": {"source": {"levels": ["long_cot", "direct"]}},
    "n_examples": 20,
    "seeds": [0],
    **TOY_RECIPE,
}


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_sweep(tmp_path_factory.mktemp("toy-effect"), SPEC) / "tables"


def test_long_cot_beats_direct_with_an_interval_that_excludes_zero(tables: Path) -> None:
    effects = pd.read_csv(tables / "effects.csv")
    direct = effects[(effects["factor"] == "source") & (effects["level"] == "direct")].iloc[0]
    assert direct["reference_level"] == "long_cot"
    # direct - long_cot: the whole interval below zero, and by a wide margin (the study measured -0.87).
    assert direct["ci_high"] < 0
    assert direct["estimate"] < -0.4


def test_arms_reach_what_the_study_measured(tables: Path) -> None:
    arms = pd.read_csv(tables / "arms.csv").set_index("source")
    assert arms.loc["long_cot", "estimate"] > 0.5, arms
    assert arms.loc["direct", "estimate"] < 0.15, arms
