"""The toy world's public interface: problems, traces, a trace pool, a benchmark, a corpus and its vocabulary.

A word-level world small enough for a ~1M-parameter model trained from scratch on a CPU, built so that the base
model holds a latent skill (every single fact of f) that a few long chain-of-thought traces can unlock. Pure
Python: generating the pool, the benchmark or a corpus costs milliseconds and needs no ML stack.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from framework.toy.core import Problem, World, all_problems, make_world, split_problems
from framework.toy.corpus import catalog, pretraining_documents
from framework.toy.traces import REFLECTION, STYLES, boxed, render_trace

__all__ = [
    "REFLECTION",
    "STYLES",
    "Problem",
    "World",
    "all_problems",
    "benchmark_rows",
    "make_world",
    "pool_rows",
    "pretraining_documents",
    "render_trace",
    "split_problems",
    "tokenizer_corpus",
    "vocabulary",
]

POOL_COLUMNS = ("problem_id", "problem", "trace", "source", "expected_answer", "difficulty", "topic")
BENCHMARK_COLUMNS = ("id", "problem", "expected_answer", "subset_for_metrics")
TOKENIZER_SAMPLE_DOCS = 2000


def pool_rows(
    world: World,
    *,
    seed: int = 0,
    n_problems: int = 64,
    styles: Sequence[str] = STYLES,
    fns: Sequence[str] = ("f", "g"),
    ks: Sequence[int] = (2, 3, 4, 5),
) -> list[dict]:
    """One row per (training problem, style); `source` is the style, so the source factor selects an arm.

    The training problems are the front of each stratum's order (see `split_problems`), disjoint from the test
    problems `benchmark_rows` serves with the same seed. `expected_answer` is the true answer also for
    long_cot_wrong rows, so grading marks those traces incorrect.
    """
    train = split_problems(world, seed=seed, n_train=n_problems, n_dev=0, n_test=0, fns=fns, ks=ks)["train"]
    rows = []
    for problem in train:
        for style in styles:
            rng = random.Random(f"toy-pool:{world.seed}:{seed}:{problem.problem_id}:{style}")
            trace, _ = render_trace(world, problem, style, rng=rng)
            rows.append(
                {
                    "problem_id": problem.problem_id,
                    "problem": problem.text,
                    "trace": trace,
                    "source": style,
                    "expected_answer": str(problem.answer),
                    "difficulty": problem.k,
                    "topic": problem.fn,
                }
            )
    return rows


def benchmark_rows(
    world: World,
    *,
    split: str = "test",
    seed: int = 0,
    limit: int | None = None,
    n_dev: int = 100,
    n_test: int = 200,
    fns: Sequence[str] = ("f", "g"),
    ks: Sequence[int] = (2, 3, 4, 5),
) -> list[dict]:
    """Held-out problems in NeMo-Skills' layout, with per-hop-count subsets; a `limit` keeps a balanced prefix."""
    if split not in ("dev", "test"):
        raise ValueError(f"benchmark split must be 'dev' or 'test', got {split!r}")
    problems = split_problems(
        world, seed=seed, n_train=0, n_dev=n_dev if split == "dev" else 0, n_test=n_test, fns=fns, ks=ks
    )[split]
    return [
        {"id": p.problem_id, "problem": p.text, "expected_answer": str(p.answer), "subset_for_metrics": f"k={p.k}"}
        for p in problems[:limit]
    ]


def tokenizer_corpus(world: World) -> list[str]:
    """Texts that contain every word the world can emit: all problems and all their traces, a corpus sample,
    every fixed phrase and every number, so a tokenizer trained on them never meets an unknown word."""
    texts = [" ".join(str(v) for v in range(world.n_values)), boxed(0), *catalog()]
    for problem in all_problems(world):
        texts.append(problem.text)
        texts += [render_trace(world, problem, style)[0] for style in STYLES]
    texts += pretraining_documents(world, n_docs=TOKENIZER_SAMPLE_DOCS, seed=0)
    return texts


def vocabulary(world: World) -> list[str]:
    """The complete, sorted word list (words are space-separated): a word-level tokenizer built from it has no
    unknowns on anything this world produces."""
    return sorted({word for text in tokenizer_corpus(world) for word in text.split()})
