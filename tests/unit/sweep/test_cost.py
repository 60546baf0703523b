"""The cost `ablate plan` prints: FLOP arithmetic, default rates, and rates measured in the store replacing them."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from framework.cli import main
from framework.spec import spec_from_dict
from framework.store import MARKER, Store
from framework.sweep.cost import GPU_TABLE, estimate_cost, render, train_flops_per_token
from framework.sweep.model_size import ModelSize, size_from_config
from framework.sweep.plan import build_plan
from tests.helpers import MINIMAL

# A small Qwen2 shape: per layer attention 3 × 4096 (q, o: 64×64; k+v: 2×64×32), MLP 3×64×128, 2 norms of 64;
# tied embeddings 1000×64, the final norm 64.
CONFIG = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "intermediate_size": 128,
    "vocab_size": 1000,
    "tie_word_embeddings": True,
}
PARAMS = 2 * (4096 + 4096 + 4096 + 3 * 64 * 128 + 2 * 64) + 1000 * 64 + 64  # 138,048


@pytest.fixture
def spec_dict(tmp_path: Path) -> dict:
    """MINIMAL on a local model of the CONFIG shape (8 trainings, 9 evaluations of aime24: 30 problems)."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(CONFIG))
    data = copy.deepcopy(MINIMAL)
    data["model"] = {"name_or_path": str(model)}
    data["train"] = {"gradient_checkpointing": True, "offload_optimizer": False}
    return data


def test_parameters_from_config():
    size = size_from_config(CONFIG, "test")
    assert size is not None and size.params == PARAMS == 138_048
    assert (size.layers, size.attn_width) == (2, 64)
    untied = size_from_config({**CONFIG, "tie_word_embeddings": False}, "test")
    assert untied is not None and untied.params == PARAMS + 64_000


def test_hand_computed_train_and_eval_hours(spec_dict, tmp_path):
    plan = build_plan(spec_from_dict(spec_dict))
    cost = estimate_cost(plan, Store(tmp_path / "store"), None, gpu="h100")
    train, ev = (next(s for s in cost.stages if s.stage == k) for k in ("train", "eval"))
    # no pool yet: 20 examples × 4096 tokens, 3 epochs; 6N + 6·L·s·d per token; H100 at 989 TFLOP/s × 24.1%
    per_token = 6 * PARAMS + 6 * 2 * 4096 * 64
    assert train.todo == train.jobs == 8
    assert train.gpu_hours == pytest.approx(8 * per_token * 20 * 4096 * 3 / (989e12 * 0.241) / 3600)
    assert any("assumed 4096 per example" in n for n in train.notes)
    # 30 problems × 4 samples × 32768 tokens at most, 2N per token, at 10% of the H100's peak
    assert ev.todo == 9 and ev.gpus_per_job == 1
    assert ev.gpu_hours == pytest.approx(9 * 2 * PARAMS * 30 * 4 * 32768 / (0.1 * 989e12) / 3600)
    assert cost.total_gpu_hours == pytest.approx(train.gpu_hours + ev.gpu_hours)
    h200 = estimate_cost(plan, Store(tmp_path / "store"), None, gpu="h200")
    assert next(s for s in h200.stages if s.stage == "train").gpu_hours == pytest.approx(
        train.gpu_hours * 0.241 / 0.266
    )


def test_a_baseline_with_its_own_budget_is_priced_at_it(spec_dict, tmp_path):
    spec_dict["baselines"] = [{"name": "base", "sampling": {"max_tokens": 1024}}]
    plan = build_plan(spec_from_dict(spec_dict))
    ev = next(s for s in estimate_cost(plan, Store(tmp_path / "store"), None, gpu="h100").stages if s.stage == "eval")
    per_token = 2 * PARAMS * 30 * 4 / (0.1 * 989e12) / 3600
    assert ev.gpu_hours == pytest.approx(8 * per_token * 32768 + per_token * 1024)  # 8 arms, 1 baseline


def test_h200_default_reproduces_the_gpu_measurement():
    """benchmarks/train_gpu.py on one H200 (1.5B Qwen2.5 shape, 16k tokens, gradient checkpointing): 19.5k
    tokens/s; the default rate and FLOP count give it back within 3% (Qwen2's q/k/v biases are not counted)."""
    shape = {**CONFIG, "hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12}
    size = size_from_config(
        {**shape, "num_key_value_heads": 2, "intermediate_size": 8960, "vocab_size": 151936}, "1.5b"
    )
    assert size is not None
    tokens_s = GPU_TABLE["h200"].train_flops(True) / train_flops_per_token(size, 16384)
    assert tokens_s == pytest.approx(19.5e3, rel=0.03)


def finish(store: Store, stage: str, key: str, manifest: dict, files: dict[str, str] | None = None) -> None:
    out = store.path(stage, key)
    out.mkdir(parents=True)
    (out / "manifest.json").write_text(json.dumps(manifest))
    for name, text in (files or {}).items():
        (out / name).write_text(text)
    (out / MARKER).write_text("{}")


def test_a_finished_training_in_the_store_replaces_the_default_rate(spec_dict, tmp_path):
    plan = build_plan(spec_from_dict(spec_dict))
    store = Store(tmp_path / "store")
    first, *rest = plan.by_stage("train")
    # 20 examples of 500 tokens, 3 epochs, on 2 GPUs in 100 s
    record = {
        "tokens": {"total_per_epoch": 10_000, "total_trained": 30_000},
        "examples": {"examples": 20, "kept": 20},
        "layout": {"world_size": 2, "gpu": True},
        "train_s": 100.0,
    }
    finish(store, "train", first.key, {"train": record})
    size = ModelSize(PARAMS, 2, 64, "test")
    measured = train_flops_per_token(size, 500) * 30_000 / (100.0 * 2)  # model FLOP/s per GPU
    cost = estimate_cost(plan, store, None, gpu="h100")
    train = next(s for s in cost.stages if s.stage == "train")
    assert (train.jobs, train.todo) == (8, 7)
    assert train.rate.startswith("measured: 1 finished training(s) in this store (GPU)")
    per_token = 6 * PARAMS + 6 * 2 * 4096 * 64
    assert train.gpu_hours == pytest.approx(7 * per_token * 20 * 4096 * 3 / measured / 3600)
    assert len(rest) == 7


def test_finished_evaluations_give_the_rate_and_the_tokens_per_sample(spec_dict, tmp_path):
    pd = pytest.importorskip("pandas")
    plan = build_plan(spec_from_dict(spec_dict))
    store = Store(tmp_path / "store")
    job = plan.by_stage("eval")[0]
    finish(store, "eval", job.key, {}, {"metrics.json": json.dumps({"n_problems": 30, "timings": {"generate_s": 10}})})
    pd.DataFrame({"n_tokens": [100, 300] * 60}).to_parquet(store.path("eval", job.key) / "samples.parquet")
    cost = estimate_cost(plan, store, None)
    ev = next(s for s in cost.stages if s.stage == "eval")
    rate = 2 * PARAMS * 24_000 / 10  # 120 samples of 200 tokens in 10 s on one GPU
    assert ev.rate.startswith("measured: 1 finished evaluation(s)") and ev.todo == 8
    assert ev.gpu_hours == pytest.approx(8 * 2 * PARAMS * 30 * 4 * 200 / rate / 3600)
    assert any("200, the mean of finished evaluations" in n for n in ev.notes)


def test_a_second_round_measures_the_rate_of_its_own_samples_only(spec_dict, tmp_path):
    """A budget's second round times its own generation but stores both rounds' samples: counting round 1's
    tokens against round 2's seconds inflated the rate, and a round 2 that drew nothing made it infinite."""
    pd = pytest.importorskip("pandas")
    spec_dict["eval"] = {**spec_dict["eval"], "samples": {"budget": 8, "first_round": 4, "max": 16}}
    plan = build_plan(spec_from_dict(spec_dict))
    store = Store(tmp_path / "store")
    second = next(j for j in plan.by_stage("eval") if j.config.get("round") == 2)
    metrics = json.dumps({"n_problems": 30, "timings": {"generate_s": 10}})
    finish(store, "eval", second.key, {}, {"metrics.json": metrics})
    rounds = pd.DataFrame({"n_tokens": [1000] * 120 + [200] * 120, "round": [1] * 120 + [2] * 120})
    rounds.to_parquet(store.path("eval", second.key) / "samples.parquet")
    ev = next(s for s in estimate_cost(plan, store, None).stages if s.stage == "eval")
    assert ev.rate.startswith("measured: 1 finished evaluation(s)")
    assert any("200, the mean of finished evaluations" in n for n in ev.notes)  # round 2's tokens, not 600
    # a second round that drew nothing measured nothing: the default rate stays
    rounds[rounds["round"] == 1].to_parquet(store.path("eval", second.key) / "samples.parquet")
    ev = next(s for s in estimate_cost(plan, store, None).stages if s.stage == "eval")
    assert ev.rate.startswith("H100 default")


def test_plan_prints_the_cost_table_and_json_carries_it(write_spec, spec_dict, in_tmp, capsys):
    path = write_spec(spec_dict)
    assert main(["plan", str(path), "--json", "--no-build", "--gpu", "a100"]) == 0
    cost = json.loads(capsys.readouterr().out)["cost"]
    assert cost["gpu"] == "a100" and [s["stage"] for s in cost["stages"]] == ["train", "eval"]
    assert cost["total_gpu_hours"] == pytest.approx(sum(s["gpu_hours"] for s in cost["stages"]))
    assert cost["stages"][0]["rate"].startswith("A100 default")
    assert main(["plan", str(path), "--no-build", "--gpu", "a100"]) == 0
    out = capsys.readouterr().out
    assert "cost of the jobs not done yet" in out and "\n".join(render(cost)) in out
    with pytest.raises(SystemExit) as refused:  # a GPU kind without rates is a usage error
        main(["plan", str(path), "--no-build", "--gpu", "v100"])
    assert refused.value.code == 2


def test_cost_imports_no_stage():
    code = (
        "import sys, framework.sweep.cost; "
        "print([m for m in ('framework.generate', 'framework.train', 'framework.eval', 'framework.pool') "
        "if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_slurm_time_limits_in_hours():
    from framework.sweep.cost import slurm_hours

    assert slurm_hours("90") == 1.5  # minutes
    assert slurm_hours("30:00") == 0.5  # MM:SS
    assert slurm_hours("06:00:00") == 6.0
    assert slurm_hours("1-12") == 36.0 and slurm_hours("2-01:30") == 49.5 and slurm_hours("1-00:00:36") == 24.01
    assert slurm_hours("UNLIMITED") is None and slurm_hours(None) is None
    assert slurm_hours("0") is None and slurm_hours("00:00:00") is None  # sbatch reads 0 as no limit


def test_plan_warns_when_a_job_outlasts_its_slurm_time_limit(spec_dict, tmp_path):
    """A 70B-shaped model: 9 evaluations of 30 problems x 4 samples x 32,768 tokens, about 1.5 h per job on one
    GPU, against 10 minutes; its trainings (~7 min each) stay under 4 hours."""
    big = {**CONFIG, "hidden_size": 8192, "num_hidden_layers": 80, "num_attention_heads": 64,
           "num_key_value_heads": 8, "intermediate_size": 28672, "vocab_size": 152064}  # fmt: skip
    (Path(spec_dict["model"]["name_or_path"]) / "config.json").write_text(json.dumps(big))
    spec_dict["launcher"] = {"kind": "slurm", "slurm": {"time": "04:00:00", "stages": {"eval": {"time": "10"}}}}
    plan = build_plan(spec_from_dict(spec_dict))
    cost = estimate_cost(plan, Store(tmp_path / "store"), None)
    lines = "\n".join(render(cost.to_dict()))
    (ev,) = [s for s in cost.stages if s.stage == "eval"]
    assert ev.wall_hours_per_job > 10 / 60
    assert "against the Slurm time limit 10 (launcher.slurm.stages.eval.time)" in " ".join(lines.split())
    assert not [n for s in cost.stages if s.stage == "train" for n in s.notes if "time limit" in n]  # under 4 h
    spec_dict["launcher"]["slurm"]["stages"]["eval"]["time"] = "UNLIMITED"
    plan = build_plan(spec_from_dict(spec_dict))
    assert not any(
        "time limit" in n for s in estimate_cost(plan, Store(tmp_path / "store2"), None).stages for n in s.notes
    )
