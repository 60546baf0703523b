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
