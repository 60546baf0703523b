"""The comparison's arithmetic: medians over runs, ratios to the first variant, failed runs shown, not hidden."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("train_gpu_compare", REPO / "benchmarks" / "train_gpu_compare.py")
assert _spec and _spec.loader
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)


def _run(step: float, mfu: float | None = None, peak: float | None = None) -> dict:
    return {"step_s_median": step, "tokens_per_step": 1000, "mfu": mfu, "peak_memory_allocated_gib": peak}


def test_each_variant_is_the_median_of_its_runs_and_a_ratio_to_the_baseline() -> None:
    rows = compare.summarize(
        {
            "zero3": [_run(2.0, 0.30, 60.0), _run(2.4, 0.25, 61.0), _run(2.2, 0.27, 60.5)],
            "whole-layer": [_run(1.0, 0.5, 62.0), _run(1.2, 0.45, 62.0), _run(5.0, 0.1, 63.0)],
        }
    )
    base, fast = rows
    assert base["step_s"] == 2.2 and base["vs_baseline"] == 1.0 and base["mfu"] == 0.27 and base["peak_gib"] == 61.0
    assert fast["step_s"] == 1.2 and fast["vs_baseline"] == pytest.approx(1.2 / 2.2)
    assert fast["tokens_per_s"] == pytest.approx(1000 / 1.2) and fast["peak_gib"] == 63.0


def test_a_failed_run_is_reported_and_leaves_the_others_counted() -> None:
    rows = compare.summarize({"zero3": [_run(2.0)], "zero0": [{"error": "exit 1: out of memory"}, _run(1.0)]})
    assert rows[1]["runs"] == 1 and rows[1]["errors"] == ["exit 1: out of memory"]
    assert rows[1]["vs_baseline"] == 0.5 and rows[1]["mfu"] is None  # no GPU peak: no MFU, not a zero
    text = compare.table(rows)
    assert "zero0: exit 1: out of memory" in text and "n/a" in text


def test_a_baseline_that_failed_gives_no_ratios() -> None:
    rows = compare.summarize({"zero3": [{"error": "timed out after 300 s"}], "zero0": [_run(1.0)]})
    assert all(r["vs_baseline"] is None for r in rows)


def test_flags_after_the_double_dash_go_to_every_run() -> None:
    opts, shared = compare.parse_args(["--rounds", "2", "--variants", "zero3,zero0", "--", "--size", "skeleton"])
    assert opts.rounds == 2 and opts.variants == ["zero3", "zero0"] and shared == ["--size", "skeleton"]
    with pytest.raises(SystemExit):
        compare.parse_args(["--variants", "zero9"])
    with pytest.raises(SystemExit):
        compare.parse_args(["--", "--json", "x.json"])
