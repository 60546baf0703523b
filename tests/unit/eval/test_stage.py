"""What the eval stage runs with: the settings its key records, not others read from the spec at run time."""

from __future__ import annotations

from pathlib import Path

import pytest

from framework import model_source as models
from framework.eval import stage as evaluate
from framework.spec import LoadedSpec, spec_from_dict
from framework.spec.yamlsrc import Source
from framework.store import Build, Store
from framework.sweep.execute import StageContext
from framework.sweep.plan import build_plan


class Generated(Exception):
    pass


def test_a_baseline_is_evaluated_in_the_dtype_its_key_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bench = tmp_path / "b.jsonl"
    bench.write_text('{"problem": "1+1?", "expected_answer": "2"}\n')
    data = {
        "name": "dt",
        "model": {"name_or_path": "org/base", "dtype": "bfloat16"},
        "pool": [{"preset": "toy"}],
        "baselines": [{"name": "other", "model": {"name_or_path": "org/other", "dtype": "float16"}}],
        "eval": {"benchmarks": [{"name": "aime24", "path": str(bench)}], "samples": 1},
    }
    spec = spec_from_dict(data)
    plan = build_plan(spec)
    (job,) = [j for j in plan.by_stage("eval") if j.config.get("model", {}).get("hub") == "org/other"]
    assert job.config["dtype"] == "float16"
    seen: list[str] = []

    def fake_generate(model_dir, tokenizer, prompts, ev, dtype, stop_ids):
        seen.append(dtype)
        raise Generated

    monkeypatch.setattr(evaluate, "model_source_for", lambda ctx: evaluate_source(tmp_path))
    monkeypatch.setattr(models, "load_tokenizer", lambda source: object())
    monkeypatch.setattr(evaluate, "prompt_ids", lambda tok, problem, prompt: [1, 2])
    monkeypatch.setattr(evaluate, "generation_stop_ids", lambda model_dir, tok: [0])
    monkeypatch.setattr(evaluate, "generate_hf", fake_generate)
    monkeypatch.setattr(evaluate, "generate_vllm", lambda m, p, ev, dtype, *a: fake_generate(m, None, p, ev, dtype, a))
    store = Store(tmp_path / "store")
    ctx = StageContext(LoadedSpec(spec=spec, path=None, source=Source(data=data)), plan, job, store, Build(tmp_path))
    with pytest.raises(Generated):
        evaluate.run(ctx)
    assert seen == ["float16"]


def evaluate_source(tmp: Path):
    from framework.model_source import ModelSource

    return ModelSource("local", str(tmp))
