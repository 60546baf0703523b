"""What `ablate plan` says a design can detect: per comparison, from assumed components until the store has
evaluations, then from those."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from framework.cli import main
from framework.errors import UserError
from framework.spec import spec_from_dict
from framework.store import MARKER, Store
from framework.sweep.evaluations import finished_evaluations
from framework.sweep.plan import build_plan
from framework.sweep.power import estimate_power, render
from framework.variance import ASSUMED
from tests.helpers import MINIMAL


def test_plan_prints_the_detectable_difference_of_every_comparison(write_spec, in_tmp, capsys):
    path = write_spec(copy.deepcopy(MINIMAL))
    assert main(["plan", str(path), "--json", "--no-build"]) == 0
    rows = json.loads(capsys.readouterr().out)["power"]
    assert [r["comparison"] for r in rows] == ["source=human_stage4 vs qwq_32b_preview", "keywords=mask vs keep"]
    for r in rows:
        # aime24: 30 problems x 4 samples x 2 seeds; a 2x2 factorial: each effect averages 2 arm pairs
        assert (r["problems"], r["samples"], r["seeds"], r["pairs"]) == (30, 4.0, 2, 2)
        assert r["over"] == "seed+problem"  # 4 arms x 1 degree of freedom each: enough to pool
        pair = ASSUMED.pair(30, 4, 2, 4)
        assert 0 < r["detectable"] < ASSUMED.detectable(pair)  # two pairs average: smaller than one pair's
        assert r["source"].startswith("assumed")
    assert main(["plan", str(path), "--no-build"]) == 0
    out = capsys.readouterr().out
    assert "Detectable difference (80% power" in out and "keywords=mask vs keep (2 pairs)" in out


def test_one_seed_says_the_tests_speak_for_these_fine_tunes(tmp_path):
    spec = spec_from_dict({**copy.deepcopy(MINIMAL), "seeds": [0]})
    plan = build_plan(spec, results_base=tmp_path / "results")
    rows = [r.to_dict() for r in estimate_power(plan, Store(tmp_path / "store"), None)]
    assert {r["over"] for r in rows} == {""} and {r["detectable"] for r in rows} == {None}
    # 4 arms need 2 seeds each for 4 degrees of freedom: plan says what that would detect
    assert {r["seeds_needed"] for r in rows} == {2} and all(0 < r["detectable_then"] < 1 for r in rows)
    assert "fewer than 4 degrees of freedom" in " ".join(" ".join(render(rows)).split())


@pytest.mark.parametrize("subset", [True, False], ids=["subsets", "no-subset-column"])
def test_finished_evaluations_replace_the_assumed_components(tmp_path, subset):
    """Read as the report reads them: a samples table without a `subset` column (a benchmark with none) counts too;
    the plan once skipped such evaluations silently and assumed the components."""
    spec = spec_from_dict(copy.deepcopy(MINIMAL))
    store = Store(tmp_path / "store")
    plan = build_plan(spec, results_base=tmp_path / "results")
    rng = np.random.default_rng(0)
    problems = np.arange(30)
    for cell in plan.cells:
        (job,) = plan.cell_jobs[cell.id]["eval"]
        stage, key = job.split("/")
        out = store.path(stage, key)
        out.mkdir(parents=True)
        ids = np.repeat(problems, 4)
        p = np.repeat(np.linspace(0.05, 0.95, 30), 4)  # every arm alike: no interaction, only sampling
        table = pd.DataFrame({"problem_id": ids.astype(str), "subset": "", "correct": rng.random(ids.size) < p})
        (table if subset else table.drop(columns="subset")).to_parquet(out / "samples.parquet")
        (out / MARKER).write_text("{}")
    rows = estimate_power(plan, store, None)
    assert all(r.source == "measured on 9 finished evaluation(s) in this store" for r in rows)
    # arms that differ only by sampling noise: the measured interaction is about 0, far below the assumed 0.01
    assert all(r.detectable < ASSUMED.detectable(ASSUMED.pair(30, 4, 2, 4)) for r in rows)

    # one file cut short: plan leaves that evaluation out and says so; the report refuses it, naming it
    broken = store.path(*plan.cell_jobs[plan.cells[0].id]["eval"][0].split("/"))
    (broken / "samples.parquet").write_bytes(b"PAR1 cut short")
    rows = estimate_power(plan, store, None)
    assert all(r.source.startswith("measured on 8 finished evaluation(s)") and str(broken) in r.source for r in rows)
    bench = plan.jobs[plan.cell_jobs[plan.cells[0].id]["eval"][0]].config["benchmark"]["name"]
    with pytest.raises(UserError, match=r"cannot be read.*delete that directory"):
        finished_evaluations(plan, store, bench)
