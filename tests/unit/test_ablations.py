"""Every shipped spec in ablations/ validates and plans; every base file is used by some spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from framework.spec import load_spec
from framework.sweep.plan import build_plan

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "ablations").glob("*.yaml"))
BASES = sorted((ROOT / "ablations").glob("*/*.yaml"))


def test_there_is_a_spec_per_paper_factor():
    names = {p.stem for p in SPECS}
    assert "quickstart" in names
    for factor in ("source", "length", "difficulty", "diversity", "keywords", "correctness"):
        assert f"paper-{factor}" in names


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_spec_validates_and_plans(path: Path, tmp_path, monkeypatch):
    loaded = load_spec(path)
    assert loaded.spec.name == path.stem, "a spec's name matches its file name"
    assert path.read_text().startswith("#"), "a spec opens with a comment saying what it asks"
    assert "ablate run" in path.read_text().split("\nname:")[0] or "make demo" in path.read_text()
    # Plan where the cluster's local data exists: stand-in files of the same layout in a scratch directory.
    monkeypatch.chdir(tmp_path)
    plan = build_plan(loaded.spec, path, strict=False)
    for warning in plan.warnings:
        rel = warning.split("'")[1]
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text('{"problem": "1+1", "expected_answer": "2"}\n')
    plan = build_plan(loaded.spec, path)
    assert plan.cells and plan.by_stage("train") and plan.by_stage("eval")
    # one training per trained cell; under a search the reference arm's two recipes are one study's best
    trained = {
        (c.levels, c.seed, c.recipe if c.levels != plan_reference(plan) else None)
        for c in plan.cells
        if c.baseline is None
    }
    assert len(plan.by_stage("train")) == len(trained)


def plan_reference(plan):
    from framework.sweep.grid import reference_arm

    return reference_arm(plan.spec) if plan.spec.search is not None else None


def test_every_base_file_is_included_somewhere():
    used = {f.resolve() for p in SPECS for f in load_spec(p).files}
    assert all(b.resolve() in used for b in BASES)
