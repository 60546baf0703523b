"""Small specs and utilities shared by tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

MINIMAL: dict[str, Any] = {
    "name": "mini",
    "model": {"name_or_path": "Qwen/Qwen2.5-0.5B"},
    "pool": [{"preset": "nemotron-math-human-reasoning"}],
    "factors": {
        "source": {"levels": ["qwq_32b_preview", "human_stage4"]},
        "keywords": {"levels": {"keep": {}, "mask": {"mode": "delete"}}},
    },
    "seeds": [0, 1],
    "baselines": ["base"],
    "eval": {"benchmarks": ["aime24"], "samples": 4},
}

# The smallest Qwen2 the stages accept (head_dim 64 for vLLM's CPU kernels), for tests that really train or
# generate: building it takes seconds and ZeRO-3 over two CPU processes runs a step in well under a second.
TINY_MODEL: dict[str, Any] = {
    "tiny": {
        "hidden_size": 128,
        "num_layers": 2,
        "num_heads": 2,
        "intermediate_size": 256,
        "max_position_embeddings": 512,
    }
}

# The toy effect's fine-tune and evaluation (the settings toy-world.md found to show the effect in minutes).
TOY_RECIPE: dict[str, Any] = {
    "prompt": {"user_template": "{problem}"},
    "train": {
        "epochs": 40,
        "learning_rate": 5.0e-4,
        "warmup_ratio": 0.1,
        "global_batch_size": 4,
        "max_seq_len": 512,
        "gradient_checkpointing": False,
        "processes": 2,
    },
    "eval": {
        "benchmarks": [{"name": "toy", "limit": 40}],
        "samples": 2,
        "sampling": {"temperature": 0.6, "top_p": 0.95, "max_tokens": 256},
    },
}


def generation_spec(source: str, generate: dict[str, Any], name: str = "gen", **extra: Any) -> dict[str, Any]:
    """A toy spec whose pool is the toy preset and one generated source `source` (more in `extra["pool"]`),
    compared with the preset's long chains; small enough that planning and the cheap stages take seconds."""
    spec: dict[str, Any] = {
        "name": name,
        "model": {"name_or_path": "toy:base"},
        "prompt": {"user_template": "{problem}"},
        "pool": [{"preset": "toy"}, {"source": source, "generate": generate}],
        "factors": {"source": {"levels": ["long_cot", source]}},
        "n_examples": 2,
        "seeds": [0],
        "eval": {"benchmarks": [{"name": "toy", "limit": 4}], "samples": 1, "sampling": {"max_tokens": 16}},
    }
    return {**spec, **extra}


def run_sweep(cwd: Path, spec: dict[str, Any], timeout_s: float = 1500) -> Path:
    """`ablate run` a spec in `cwd` (a fresh directory) as a user would, with no tracking URI from the
    environment; returns the sweep's results directory. Fails with the run's output tail."""
    (cwd / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "framework.cli", "run", "spec.yaml"]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return cwd / "results" / spec["name"]


def perturbed_toy_copy(out: Path, seed: int) -> Path:
    """A fine-tune of the toy base as far as an engine can tell: the base's files, its weights moved by seeded noise
    (5% of each tensor's spread). Built in a second; what warm-engine tests and benchmarks load checkpoint after
    checkpoint."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from framework.locations import toy_base_path

    base = toy_base_path()
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05 * p.std().clamp_min(1e-3))
    model.save_pretrained(out)
    for f in base.iterdir():
        if f.name.startswith("tokenizer") or f.name in ("chat_template.jinja", "generation_config.json"):
            shutil.copy(f, out)
    return out
