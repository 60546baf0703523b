"""The toy world: a word-level k-hop permutation task small enough to reproduce the paper's effect on a CPU.

`framework.toy.world` is the public interface; `core`, `traces` and `corpus` hold its parts.
"""

from framework.toy.world import (
    REFLECTION,
    STYLES,
    Problem,
    World,
    all_problems,
    benchmark_rows,
    make_world,
    pool_rows,
    pretraining_documents,
    render_trace,
    split_problems,
    tokenizer_corpus,
    vocabulary,
)

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
