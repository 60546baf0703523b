"""Built-in benchmarks: where each one lives and how its answers are graded.

A benchmark loads from its hub id, or from a local JSONL/Parquet file in the NeMo-Skills layout (`problem`,
`expected_answer`, optional `subset_for_metrics`, `id`) given as `path:` in the spec. comp-math-24-25 has no
single hub copy: `ablate fetch comp-math-24-25` writes NeMo-Skills' file; point `path:` at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from framework.errors import UserError


class BenchmarkError(UserError):
    """A benchmark that cannot be loaded or lacks a field."""


@dataclass(frozen=True)
class Benchmark:
    name: str
    hub: str | None  # None: a local `path:` is required (or the toy generator)
    split: str = "test"
    config: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # internal field -> column in the source
    grader: str = "math"
    subset_field: str | None = None  # per-subset metrics (e.g. aime24 / aime25 / hmmt inside comp-math-24-25)
    description: str = ""


COMP_MATH_24_25 = Benchmark(
    "comp-math-24-25",
    hub=None,
    subset_field="subset_for_metrics",
    description="AIME 2024, AIME 2025 and HMMT Feb 2024/2025 (the paper's headline benchmark); NeMo-Skills layout.",
)
AIME24 = Benchmark("aime24", hub="HuggingFaceH4/aime_2024", split="train", columns={"expected_answer": "answer"})
AIME25 = Benchmark("aime25", hub="math-ai/aime25", columns={"expected_answer": "answer"})
HMMT_24_25 = Benchmark("hmmt-24-25", hub=None, subset_field="subset_for_metrics", description="NeMo-Skills layout.")
HMMT_FEB_2025 = Benchmark(
    "hmmt-feb-2025", hub="MathArena/hmmt_feb_2025", split="train", columns={"expected_answer": "answer"}
)
MATH_500 = Benchmark("math-500", hub="HuggingFaceH4/MATH-500", columns={"expected_answer": "answer"})
GPQA_DIAMOND = Benchmark(
    "gpqa-diamond",
    hub="Idavidrein/gpqa",
    config="gpqa_diamond",
    split="train",
    grader="multiple_choice",
    description="Multiple choice; options are shuffled with a fixed seed per question.",
)
TOY = Benchmark("toy", hub=None, description="Held-out problems of the toy world, generated in code.")
TOY_DEV = Benchmark(
    "toy-dev",
    hub=None,
    split="dev",
    description="The toy world's development problems, disjoint from `toy` and from the pool: for validation.",
)
