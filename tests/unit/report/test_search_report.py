"""The report of a sweep with a search (tests/unit/report/search_sweep.py): comparisons within each recipe, the
"does the effect survive per-arm tuning?" table, the Search section, and the recipe and parameters of each cell."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from framework.report import SEARCH_COLUMNS, report_frame, write_report
from framework.report.search import survival_verdict
from tests.synthetic import FAKE_SECRET
from tests.unit.report.search_sweep import SearchSweep, search_sweep


@pytest.fixture(scope="module")
def per_arm(tmp_path_factory: pytest.TempPathFactory) -> tuple[SearchSweep, Path, str]:
    tmp = tmp_path_factory.mktemp("per_arm")
    sw = search_sweep(tmp)
    out = tmp / "out"
    text = write_report(sw.loaded, sw.plan, sw.store, out, track=False).read_text()
    return sw, out, text


def _recipe_of(arm: str) -> str | None:
    return next((p.split("=", 1)[1] for p in arm.split(",") if p.startswith("recipe=")), None)


def test_every_comparison_is_made_within_one_recipe(per_arm):
    sw, out, _ = per_arm
    arms = pd.read_csv(out / "tables" / "arms.csv")
    trained = arms[~arms["baseline"]]
    assert set(trained["recipe"]) == {"shared", "own"} and len(trained) == 8
    assert all(_recipe_of(a) == r for a, r in zip(trained["arm"], trained["recipe"]))
    assert (arms.loc[arms["baseline"], "recipe"].value_counts() == 1).all()  # the base model beside each recipe
    pairs = pd.read_csv(out / "tables" / "comparisons.csv")
    assert len(pairs) == 8  # 4 one-factor pairs per recipe, none across recipes
    for _, r in pairs.iterrows():
        assert _recipe_of(r["arm"]) == _recipe_of(r["vs_arm"]) == r["recipe"]
    effects = pd.read_csv(out / "tables" / "effects.csv").set_index(["recipe", "factor", "level"])
    means = report_frame(sw.plan, sw.store).groupby("arm")["pass@1"].mean()

    def arm(source: str, keywords: str, recipe: str) -> float:
        return means[f"source={source},keywords={keywords},recipe={recipe}"]

    for recipe in ("shared", "own"):
        expected = (
            arm("qwq_32b_preview", "mask", recipe)
            - arm("qwq_32b_preview", "keep", recipe)
            + arm("human_stage4", "mask", recipe)
            - arm("human_stage4", "keep", recipe)
        ) / 2
        assert effects.loc[(recipe, "keywords", "mask"), "estimate"] == pytest.approx(expected)


def test_the_survive_table_sets_both_recipes_effects_side_by_side_with_a_verdict(per_arm):
    _, out, text = per_arm
    survive = pd.read_csv(out / "tables" / "survive.csv").set_index(["factor", "level"])
    effects = pd.read_csv(out / "tables" / "effects.csv").set_index(["recipe", "factor", "level"])
    for recipe in ("shared", "own"):
        for key in [("source", "human_stage4"), ("keywords", "mask")]:
            for col in ("estimate", "ci_low", "ci_high", "p_value"):
                assert survive.loc[key, f"{recipe}_{col}"] == pytest.approx(effects.loc[(recipe, *key), col])
    # the synthetic world: human traces hurt under both recipes; masking hurts only under the shared recipe
    assert survive.loc[("source", "human_stage4"), "verdict"] == "survives: same sign, both intervals exclude 0"
    assert survive.loc[("keywords", "mask"), "verdict"].startswith("does not survive tuning")
    assert survive.loc[("keywords", "mask"), "shared_ci_high"] < 0 < survive.loc[("keywords", "mask"), "own_ci_high"]
    assert "## Does the effect survive per-arm tuning?" in text
    assert "| keywords | mask | keep | " in text and "does not survive tuning: the own-recipe interval covers 0" in text


@pytest.mark.parametrize(
    ("shared", "own", "verdict"),
    [
        ((-0.2, -0.3, -0.1), (-0.1, -0.15, -0.05), "survives: same sign, both intervals exclude 0"),
        ((-0.2, -0.3, -0.1), (0.1, 0.05, 0.15), "reverses: opposite signs, both intervals exclude 0"),
        ((-0.2, -0.3, -0.1), (-0.02, -0.08, 0.04), "does not survive tuning: the own-recipe interval covers 0"),
        ((-0.2, -0.3, -0.1), (0.02, -0.04, 0.08), "does not survive tuning: the own-recipe interval covers 0 and the sign flips"),
        ((-0.02, -0.08, 0.04), (0.2, 0.1, 0.3), "appears only under own recipes: the shared-recipe interval covers 0"),
        ((0.01, -0.05, 0.07), (0.0, -0.06, 0.06), "no effect shown under either recipe: both intervals cover 0"),
        ((-0.2, -0.3, -0.1), (math.nan, math.nan, math.nan), "not estimable: the effect is missing under one recipe"),
    ],
)  # fmt: skip
def test_the_verdict_follows_the_two_intervals(shared, own, verdict):
    def row(v: tuple[float, float, float], over: str = "seed+problem") -> dict:
        return {"estimate": v[0], "ci_low": v[1], "ci_high": v[2], "over": over}

    assert survival_verdict(row(shared), row(own)) == verdict
    if not math.isnan(own[0]):  # intervals that cannot speak for other training runs say so
        conditional = survival_verdict(row(shared, "problem"), row(own))
        assert conditional == verdict + "; for these fine-tunes only (too few seeds)"


def test_the_search_section_shows_each_study_with_its_plots(per_arm):
    sw, out, text = per_arm
    assert "## Search" in text and "learning_rate float 1e-05..0.001, log; epochs int 2..6, step 2" in text
    studies = pd.read_csv(out / "tables" / "studies.csv")
    assert len(studies) == 4 and studies["done"].all()
    for key, best in sw.best.items():
        row = studies.set_index("study").loc[key]
        assert json.loads(row["params"]) == best["params"] and row["trial"] == 3
        assert row["value"] == pytest.approx(best["value"]) and (row["complete"], row["pruned"], row["failed"]) == (
            2,
            1,
            1,
        )
        assert (
            f"- Best parameters: learning_rate = {best['params']['learning_rate']:.4g}, epochs = 2 (trial 3)." in text
        )
        assert f"- Objective: pass@1 = {best['value']:.4g} (maximize)." in text
        for name in ("history", "importance"):
            (png,) = (out / "plots").glob(f"search-*-{key[:8]}-{name}.png")
            assert png.read_bytes() == (sw.store.path("search", key) / f"{name}.png").read_bytes()
            assert f"(plots/{png.name})" in text
    assert "### Study of source=human_stage4,keywords=mask" in text
    assert "- Trials: 2 complete, 1 pruned, 1 failed." in text and "learning_rate 80%, epochs 20%" in text
    trials = pd.read_csv(out / "tables" / "trials.csv")
    assert len(trials) == 16 and list(trials.columns[:3]) == ["study", "arm", "number"]
    assert FAKE_SECRET not in text and FAKE_SECRET not in (out / "tables" / "studies.csv").read_text()


def test_cells_carry_the_recipe_and_the_parameters_they_trained_with(per_arm):
    sw, out, _ = per_arm
    cells = pd.read_csv(out / "tables" / "cells.csv")
    head = list(cells.columns[:11])
    assert head[4:11] == ["source", "keywords", *SEARCH_COLUMNS, "param.learning_rate", "param.epochs"]
    reference_study = next(k for k, b in sw.best.items() if b["trial"] == 3 and b["value"] == pytest.approx(0.55))
    for _, r in cells[cells["baseline"].isna()].iterrows():
        best = sw.best[r["recipe_study"]]
        assert r["param.learning_rate"] == pytest.approx(best["params"]["learning_rate"]) and r["recipe_trial"] == 3
        reference = r["source"] == "qwq_32b_preview" and r["keywords"] == "keep"
        assert (r["recipe_study"] == reference_study) == (r["recipe"] == "shared" or reference)
    frame = report_frame(sw.plan, sw.store)
    assert str(frame["param.epochs"].dtype) == "Int64" and str(frame["recipe_trial"].dtype) == "Int64"


def test_a_train_jobs_own_record_of_its_parameters_wins_and_an_unfinished_study_is_said(tmp_path):
    sw = search_sweep(tmp_path, seeds=(0,), n_problems=12)
    cell = next(c for c in sw.plan.cells if c.recipe == "own" and c.level_map["keywords"] == "mask")
    (job,) = sw.plan.cell_jobs[cell.id]["train"]
    path = sw.store.path(*job.split("/")) / "metrics.json"
    path.write_text(
        json.dumps({**json.loads(path.read_text()), "search": {"params": {"learning_rate": 0.123}, "trial": 7}})
    )
    frame = report_frame(sw.plan, sw.store).set_index("cell")
    assert frame.loc[cell.id, "param.learning_rate"] == 0.123 and frame.loc[cell.id, "recipe_trial"] == 7
    study = frame.loc[cell.id.replace("keywords=mask", "keywords=keep"), "recipe_study"]
    sw.store.invalidate("search", study)
    text = write_report(sw.loaded, sw.plan, sw.store, tmp_path / "out", track=False).read_text()
    assert f"Not finished yet (search/{study})." in text
    assert pd.isna(
        report_frame(sw.plan, sw.store)
        .set_index("cell")
        .loc[cell.id.replace("keywords=mask", "keywords=keep"), "param.learning_rate"]
    )


def test_in_shared_mode_the_report_says_every_arm_used_the_reference_arms_recipe(tmp_path):
    sw = search_sweep(tmp_path, mode="shared", seeds=(0,), n_problems=12)
    out = tmp_path / "out"
    text = write_report(sw.loaded, sw.plan, sw.store, out, track=False).read_text()
    assert "Every arm was trained with the reference arm's best parameters (`search.mode: shared`)" in text
    assert not (out / "tables" / "survive.csv").exists()
    arms = pd.read_csv(out / "tables" / "arms.csv")
    assert set(arms.loc[~arms["baseline"], "recipe"]) == {"shared"} and len(sw.best) == 1
    assert "### Study of source=qwq_32b_preview,keywords=keep" in text


def test_results_schema_doc_lists_the_search_columns():
    doc = (Path(__file__).resolve().parents[3] / "docs" / "results-schema.md").read_text()
    for name, (dtype, _) in SEARCH_COLUMNS.items():
        assert f"| `{name}` | {dtype} |" in doc, name
    for table in ("survive.csv", "studies.csv", "trials.csv"):
        assert f"`{table}`" in doc, table
