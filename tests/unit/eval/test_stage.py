"""What the eval stage runs with: the settings its key records, not others read from the spec at run time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def overriding_spec(tmp: Path, **baseline: Any) -> dict[str, Any]:
    """A spec whose baseline 'math' is a local checkpoint that declares 512 positions, with `baseline` settings."""
    (tmp / "math").mkdir(exist_ok=True)
    (tmp / "math" / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    (tmp / "b.jsonl").write_text('{"problem": "1+1?", "expected_answer": "2"}\n')
    return {
        "name": "ctx",
        "model": {"name_or_path": "org/base"},
        "baselines": [{"name": "math", "model": {"name_or_path": str(tmp / "math")}, **baseline}],
        "prompt": {"system": "Arms' system message."},
        "eval": {
            "benchmarks": [{"name": "aime24", "path": str(tmp / "b.jsonl")}],
            "samples": 2,
            "sampling": {"temperature": 0.6, "max_tokens": 300},
            "grading": {"workers": 1},
        },
    }


def run_eval(tmp: Path, data: dict[str, Any], monkeypatch: pytest.MonkeyPatch, prompt_len: int) -> dict[str, Any]:
    """Run the eval stage of the spec's only eval job with a fake engine whose every sample answers 2; what the
    engine and the prompt formatting were given, and metrics.json, come back."""
    spec = spec_from_dict(data)
    plan = build_plan(spec)
    (job,) = plan.by_stage("eval")
    seen: dict[str, Any] = {}

    def fake_generate(model_dir, tokenizer, prompts, ev, dtype, stop_ids):
        seen["ev"] = ev
        return [[{"text": "\\boxed{2}", "n_tokens": 3, "finish_reason": "stop", "seed": 0}] * ev.samples] * len(prompts)

    def fake_prompt_ids(tok, problem, prompt):
        seen["prompt"] = prompt
        return [1] * prompt_len

    monkeypatch.setattr(models, "load_tokenizer", lambda source: object())
    monkeypatch.setattr(evaluate, "prompt_ids", fake_prompt_ids)
    monkeypatch.setattr(evaluate, "generation_stop_ids", lambda model_dir, tok: [0])
    monkeypatch.setattr(evaluate, "generate_hf", fake_generate)
    monkeypatch.setattr(evaluate, "generate_vllm", lambda m, p, ev, dtype, *a: fake_generate(m, None, p, ev, dtype, a))
    build = Build(tmp / "build")
    build.dir.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(LoadedSpec(spec=spec, path=None, source=Source(data=data)), plan, job, Store(tmp / "s"), build)
    evaluate.run(ctx)
    return {**seen, "metrics": json.loads((build.dir / "metrics.json").read_text())}


def test_a_baseline_is_evaluated_with_its_own_prompt_and_sampling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data = overriding_spec(
        tmp_path, prompt={"system": "Please reason step by step."}, sampling={"temperature": 0.2, "max_tokens": 200}
    )
    out = run_eval(tmp_path, data, monkeypatch, prompt_len=100)
    assert out["prompt"].system == "Please reason step by step."
    assert out["prompt"].user_template == spec_from_dict(data).prompt.user_template  # left out: the spec's
    assert (out["ev"].sampling.temperature, out["ev"].sampling.max_tokens) == (0.2, 200)
    assert out["ev"].sampling.top_p == 0.95  # left out: eval.sampling's
    assert out["metrics"]["max_tokens"] == 200 and out["metrics"]["warnings"] == []


def test_a_budget_past_the_models_context_fails_before_the_engine_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The plan cannot know the prompts' length (300 tokens fit 512 alone): the stage refuses 250 + 300."""
    with pytest.raises(models.ModelError) as info:
        run_eval(tmp_path, overriding_spec(tmp_path), monkeypatch, prompt_len=250)
    message = str(info.value)
    assert "the longest prompt (250 tokens) + max_tokens 300" in message and "(512 tokens" in message
    assert "baselines.math.sampling.max_tokens at most 262" in message and "clip_to_context" in message


def test_clip_to_context_lowers_max_tokens_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = run_eval(tmp_path, overriding_spec(tmp_path, clip_to_context=True), monkeypatch, prompt_len=250)
    assert out["ev"].sampling.max_tokens == 262 and out["metrics"]["max_tokens"] == 262
    (warning,) = out["metrics"]["warnings"]
    assert warning.startswith("max_tokens clipped from 300 to 262 to fit the 512-token context")


def test_a_prompt_that_fills_the_context_is_refused_even_when_clipping(tmp_path: Path, monkeypatch):
    with pytest.raises(models.ModelError, match=r"longest prompt \(512 tokens\) leaves no room"):
        run_eval(tmp_path, overriding_spec(tmp_path, clip_to_context=True), monkeypatch, prompt_len=512)
