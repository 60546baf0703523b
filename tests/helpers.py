"""Small specs and utilities shared by tests."""

from __future__ import annotations

from typing import Any

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
