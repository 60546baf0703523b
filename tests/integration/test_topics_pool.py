"""Topics from clusters, through the real pool and data stages (`ablate plan` builds both) on the toy world."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from framework.cli import main


def spec(embedder: str) -> dict:
    return {
        "name": f"topics-{embedder}",
        "model": {"name_or_path": "toy:base"},
        "pool": [{"preset": "toy"}],
        "annotate": {"topics": "cluster", "topic_clusters": {"embedder": embedder, "n_topics": 2}},
        "factors": {"diversity": {"levels": ["single_topic", "stratified"]}},
        "n_examples": 8,
        "seeds": [0],
        "eval": {"benchmarks": [{"name": "toy", "limit": 4}], "sampling": {"max_tokens": 64}},
    }


@pytest.mark.parametrize("embedder", ["tfidf", "base"])
def test_clustered_topics_reach_the_pool_and_the_diversity_factor(embedder, write_spec, in_tmp, capsys):
    path = write_spec(spec(embedder))
    assert main(["plan", str(path), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    store = Path("results") / f"topics-{embedder}" / "store"
    (pool_dir,) = (store / "pool").glob("*/")
    pool = pd.read_parquet(pool_dir / "pool.parquet")
    assert set(pool["topic"]) == {"cluster-0", "cluster-1"}
    assert set(pool["topic_given"]) == {"f", "g"}  # the toy world's own topics are kept beside the clusters
    assert (pool.groupby("problem_id")["topic"].nunique() == 1).all()
    report = json.loads((pool_dir / "stats.json").read_text())["topic_clusters"]
    assert report["embedder"] == embedder and report["problems"] == pool["problem_id"].nunique()
    assert report["purity_against_given"] == 1.0  # both embedders separate "apply f" from "apply g" problems
    assert plan["topic_clusters"] == {pool_dir.name: report}  # `ablate plan` shows the clusters
    mixes = {}
    for data_dir in (store / "data").glob("*/"):
        train = pd.read_json(data_dir / "train.jsonl", lines=True)
        mixes[data_dir.name] = set(train["topic"])
    assert sorted(len(m) for m in mixes.values()) == [1, 2], (mixes, plan.get("counts"))
