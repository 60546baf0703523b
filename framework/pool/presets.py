"""Built-in pool layouts: a hub id plus the column mapping onto ablate's pool schema."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PoolPreset:
    name: str
    hub: str | None
    split: str = "train"
    columns: dict[str, str] = field(default_factory=dict)
    description: str = ""
    # `on_missing` when the source sets none: released data known to lack some answers keeps those rows ungraded
    on_missing: str = "error"


NEMOTRON_MATH_HUMAN_REASONING = PoolPreset(
    "nemotron-math-human-reasoning",
    hub="nvidia/Nemotron-Math-HumanReasoning",
    columns={
        "problem": "problem",
        "trace": "solution",
        "source": "solution_type",
        "expected_answer": "expected_answer",
    },
    description="Human-written solutions (human_stage1..4) and QwQ-32B-Preview traces of the same problems.",
    on_missing="keep",
)
OPEN_MATH_REASONING = PoolPreset(
    "open-math-reasoning",
    hub="nvidia/OpenMathReasoning",
    split="cot",
    columns={
        "problem": "problem",
        "trace": "generated_solution",
        "source": "generation_model",
        "expected_answer": "expected_answer",
        "pass_rate": "pass_rate_72b_tir",
    },
    # No topic: its problem_source is the AoPS forum a problem came from (high-school math, olympiads, college
    # math), a difficulty tier rather than a subject; diversity studies cluster problems (annotate.topics).
    description="NeMo-Skills layout; pass_rate is the 72B TIR pass rate (difficulty `by: pass_rate` = 1 - it); "
    "traces from DeepSeek-R1 and QwQ-32B (source).",
    on_missing="keep",
)
TOY = PoolPreset("toy", hub=None, description="The toy world's traces, generated in code (options: seed, sizes).")
