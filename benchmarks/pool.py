"""Pool annotation throughput against the raw libraries doing the same work (goal: >= 0.9x of raw).

    .venv/bin/python benchmarks/pool.py [--traces 100000] [--graded 2000] [--topics 8]

Generates a toy pool of N traces (the toy world's four styles, repeated with distinct problem ids), then times
each annotation step as the pool stage runs it beside the bare library call on the same texts:
tokenization (batched fast tokenizer), reflection-keyword counting (one compiled regex), and grading (the pool
stage's grade_many vs a plain math_verify parse+verify loop, on a subsample since the raw loop is slow).
Prints traces/s and answers/s per core, and the ratios; then the time to cluster the pool's problems into topics
(`annotate.topics: cluster`, TF-IDF embedder), which has no raw baseline.
"""

from __future__ import annotations

import argparse
import os
import re
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def toy_pool(n: int) -> list[dict]:
    from framework.toy import make_world, pool_rows

    rows = pool_rows(make_world(0))
    return [{**rows[i % len(rows)], "problem_id": f"{rows[i % len(rows)]['problem_id']}-{i}"} for i in range(n)]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--graded", type=int, default=2000)
    parser.add_argument("--topics", type=int, default=8, help="clusters for the topic-clustering timing")
    args = parser.parse_args()

    import tempfile
    from pathlib import Path

    from framework.annotations import count_keywords
    from framework.artifacts import count_tokens
    from framework.grading import grade_many
    from framework.grading.extraction import extract_answer
    from framework.model.stage import build, toy_corpus
    from framework.spec.models import TinyModelSpec
    from framework.spec.pool import DEFAULT_REFLECTION_KEYWORDS

    rows = toy_pool(args.traces)
    texts = [r["trace"] for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        build(TinyModelSpec(), Path(tmp), toy_corpus())
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tmp)
    print(f"pool: {len(texts)} traces, mean {sum(map(len, texts)) / len(texts):.0f} chars; 1 process (per core)")

    ours, t_ours = timed(lambda: count_tokens(tok, texts))
    raw, t_raw = timed(lambda: [len(x) for x in tok(texts, add_special_tokens=False)["input_ids"]])
    assert ours == raw
    print(
        f"tokenize   ablate {len(texts) / t_ours:10.0f} traces/s   raw {len(texts) / t_raw:10.0f} traces/s   "
        f"ratio {t_raw / t_ours:.2f}x"
    )

    words = DEFAULT_REFLECTION_KEYWORDS
    pattern = re.compile(
        r"(?<!\w)(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")(?!\w)", re.IGNORECASE
    )
    ours, t_ours = timed(lambda: [count_keywords(t, words) for t in texts])
    raw, t_raw = timed(lambda: [len(pattern.findall(t)) for t in texts])
    print(
        f"keywords   ablate {len(texts) / t_ours:10.0f} traces/s   raw {len(texts) / t_raw:10.0f} traces/s   "
        f"ratio {t_raw / t_ours:.2f}x   (agree on {sum(a == b for a, b in zip(ours, raw)) / len(raw):.1%})"
    )

    from math_verify import parse, verify

    sub = rows[: args.graded]
    answers = [extract_answer(r["trace"])[0] for r in sub]
    items = [(a, r["expected_answer"]) for a, r in zip(answers, sub)]
    ours, t_ours = timed(lambda: grade_many(items, timeout_s=5.0, workers=1))
    raw, t_raw = timed(lambda: [bool(verify(parse(f"\\boxed{{{e}}}"), parse(f"\\boxed{{{a}}}"))) for a, e in items])
    agree = sum(v.correct == r for v, r in zip(ours, raw)) / len(raw)
    print(
        f"grading    ablate {len(items) / t_ours:10.0f} answers/s  raw {len(items) / t_raw:10.0f} answers/s  "
        f"ratio {t_raw / t_ours:.2f}x   (verdicts agree on {agree:.1%}; 1 grading worker)"
    )

    import pandas as pd

    from framework.pool.topics import cluster_topics, tfidf
    from framework.spec.pool import TopicClusterSpec

    frame = pd.DataFrame(rows)
    settings = TopicClusterSpec(n_topics=args.topics)
    (_, report), t_ours = timed(lambda: cluster_topics(frame, settings, lambda texts: tfidf(texts)[0]))
    print(
        f"topics     ablate {report['problems'] / t_ours:10.0f} problems/s ({report['problems']} problems, TF-IDF + "
        f"spherical k-means, k={args.topics}, {settings.restarts} restarts; purity vs given {report.get('purity_against_given')}; "
        "no raw baseline: no clustering library is a dependency)"
    )


if __name__ == "__main__":
    main()
