"""`ablate plan` shows how each evaluated model's eval job spreads over GPUs, and prices it with those GPUs."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from framework.cli import main
from framework.spec import spec_from_dict
from framework.store import Store
from framework.sweep import cost, eval_layout, model_size
from framework.sweep.plan import PlanError, build_plan


def slurm(gpus: int) -> dict[str, Any]:
    return {"kind": "slurm", "slurm": {"gpus_per_node": gpus, "stages": {"train": {"gpus_per_node": 4}}}}


def plan_json(write_spec, data: dict[str, Any], capsys, *args: str) -> dict[str, Any]:
    assert main(["plan", str(write_spec(data)), "--json", "--no-build", *args]) == 0
    return json.loads(capsys.readouterr().out)["cost"]


def test_a_slurm_eval_job_s_layout_per_model_from_its_gpus_and_their_memory(minimal, write_spec, in_tmp, capsys):
    minimal["model"] = {"name_or_path": "Qwen/Qwen2.5-32B"}
    minimal["baselines"] = ["base", {"name": "big", "model": {"name_or_path": "Qwen/Qwen2.5-72B-Instruct"}}]
    minimal["train"] = {"global_batch_size": 4}
    minimal["launcher"] = slurm(8)
    h100 = plan_json(write_spec, minimal, capsys, "--gpu", "h100")
    layouts = {e["model"]: (e["tp"], e["dp"], e["gpus"]) for e in h100["eval_layout"]}
    assert layouts == {"Qwen/Qwen2.5-32B": (2, 4, 8), "Qwen/Qwen2.5-72B-Instruct": (4, 2, 8)}
    assert next(s for s in h100["stages"] if s["stage"] == "eval")["gpus_per_job"] == 8
    h200 = plan_json(write_spec, minimal, capsys, "--gpu", "h200")
    assert {e["model"]: (e["tp"], e["dp"]) for e in h200["eval_layout"]}["Qwen/Qwen2.5-32B"] == (1, 8)
    assert main(["plan", str(write_spec(minimal)), "--no-build"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "evaluation layout (eval.tensor_parallel_size x data_parallel_size):" in out
    assert "Qwen/Qwen2.5-32B: 2 x 4 (tensor x data parallel) per Slurm eval job of 8 GPU(s) (H100, 80 GiB)" in out
    assert "fit 2 x 80 GiB GPU(s)" in out


def test_a_fixed_size_shows_in_the_plan_and_sets_the_gpus_an_eval_job_uses(minimal, write_spec, in_tmp, capsys):
    minimal["model"] = {"name_or_path": "Qwen/Qwen2.5-7B"}
    minimal["train"] = {"global_batch_size": 4}
    minimal["launcher"] = slurm(8)
    minimal["eval"]["tensor_parallel_size"] = 2
    (entry,) = (c := plan_json(write_spec, minimal, capsys))["eval_layout"]
    assert (entry["tp"], entry["dp"]) == (2, 4) and "tensor_parallel_size 2 fixed" in entry["why"]
    minimal["eval"]["data_parallel_size"] = 1
    (entry,) = (c := plan_json(write_spec, minimal, capsys))["eval_layout"]
    assert (entry["tp"], entry["dp"], entry["gpus"]) == (2, 1, 2)
    assert next(s for s in c["stages"] if s["stage"] == "eval")["gpus_per_job"] == 2


def test_a_local_plan_without_gpus_says_cpu(minimal, write_spec, in_tmp, capsys, monkeypatch):
    monkeypatch.setattr(cost, "local_gpu_count", lambda: 0)
    (entry,) = plan_json(write_spec, minimal, capsys)["eval_layout"]
    assert entry["line"] == "Qwen/Qwen2.5-0.5B: 1 x 1 on CPU" and entry["gpus"] == 0


def test_a_local_eval_job_gets_one_engine_of_the_gpus_listed(minimal, tmp_path, monkeypatch):
    monkeypatch.setattr(cost, "local_gpu_memory_gib", lambda: 80.0)
    minimal["model"] = {"name_or_path": "Qwen/Qwen2.5-32B"}
    minimal["train"] = {"global_batch_size": 4}
    minimal["launcher"] = {"kind": "local", "local": {"gpus": [0, 1, 2, 3]}}
    plan = build_plan(spec_from_dict(minimal))
    estimate = cost.estimate_cost(plan, Store(tmp_path / "store"), None)
    (entry,) = estimate.eval_layout
    assert (entry["tp"], entry["dp"]) == (2, 1)
    assert "per local eval job of 2 of the 4 GPU(s) here (80 GiB)" in entry["line"]
    assert next(s for s in estimate.stages if s.stage == "eval").gpus_per_job == 2


def test_a_slurm_eval_job_smaller_than_the_fixed_sizes_is_a_plan_problem(minimal):
    minimal["train"] = {"global_batch_size": 4}
    minimal["launcher"] = slurm(4)
    minimal["eval"]["data_parallel_size"] = 8  # tensor_parallel_size auto: at least 1 GPU per engine
    with pytest.raises(PlanError, match=r"eval: tensor_parallel_size x data_parallel_size = 8 GPUs, but the Slurm"):
        build_plan(spec_from_dict(minimal))
    minimal["eval"]["data_parallel_size"] = "auto"  # both auto: whatever the job has
    build_plan(spec_from_dict(minimal))


def test_the_gpus_visible_here_stop_where_cuda_stops_enumerating(monkeypatch):
    from framework.sweep.eval_layout import local_gpu_count

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0, 1,GPU-5d2b,-1,3")
    assert local_gpu_count() == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert local_gpu_count() == 0


def test_the_layout_and_a_model_s_size_import_neither_the_plan_nor_its_cost():
    """cost and plan import eval_layout and model_size: an import back, even inside a function, is a cycle. Every
    import statement of the two modules is read (a lazy one never shows in sys.modules until its function runs)."""
    forbidden = ("framework.sweep.cost", "framework.sweep.plan")
    for module in (eval_layout, model_size):
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {
            f"{n.module}.{a.name}" if n.module == "framework.sweep" else n.module or ""
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom)
            for a in n.names
        }
        assert not {m for m in imported if m.startswith(forbidden)}, (module.__name__, imported)
    code = (
        "import sys, framework.sweep.eval_layout, framework.sweep.model_size; "
        "print([m for m in ('framework.sweep.cost', 'framework.sweep.plan') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
