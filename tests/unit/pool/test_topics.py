"""Topics from clusters of problem embeddings: the clustering, the TF-IDF embedder and the per-pool assignment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from framework.pool.topics import cluster_topics, purity, spherical_kmeans, tfidf
from framework.spec.pool import TopicClusterSpec

SUBJECTS = {
    "geometry": [
        "A triangle has sides 3, 4 and 5. Find the area of the triangle.",
        "Find the radius of the circle inscribed in a right triangle with legs 6 and 8.",
        "The angle at the center of a circle subtends an arc; find the inscribed angle of the triangle.",
        "A square is inscribed in a circle of radius 2. Find the area of the square.",
        "In triangle ABC the angle bisector meets side BC; find the ratio of the sides of the triangle.",
        "Find the perimeter of a regular hexagon inscribed in a circle with radius 5.",
    ],
    "probability": [
        "Two fair dice are rolled. What is the probability that the sum is 7?",
        "A coin is flipped 5 times. What is the probability of exactly 3 heads?",
        "A bag holds 3 red and 5 blue balls; two are drawn at random. Find the probability both are red.",
        "What is the expected number of rolls of a fair die until a 6 appears, and its probability?",
        "Cards are drawn at random from a deck. What is the probability the first two are aces?",
        "A fair coin is tossed until heads appears. Find the probability it takes more than 3 tosses.",
    ],
    "number_theory": [
        "Find the remainder when 2^100 is divided by 7, using modular arithmetic.",
        "How many positive divisors does 360 have? Use its prime factorization.",
        "Find the greatest common divisor of 1071 and 462 and the least common multiple.",
        "Find all primes p such that p + 2 is also prime and p divides 15, the divisors of 15.",
        "What is the last digit of 7^2024, working modulo 10 with remainders?",
        "Find the smallest positive integer with remainder 1 modulo 2, 3 and 5 and divisors of 30.",
    ],
}


def subject_pool(traces_per_problem: int = 2) -> pd.DataFrame:
    rows = []
    for subject, problems in SUBJECTS.items():
        for i, problem in enumerate(problems):
            for t in range(traces_per_problem):
                rows.append({"problem_id": f"{subject[:3]}{i}", "problem": problem, "trace": f"t{t}", "topic": subject})
    return pd.DataFrame(rows)


def embed(texts):
    return tfidf(texts)[0]


def partition(labels) -> set[frozenset[int]]:
    return {frozenset(np.flatnonzero(np.asarray(labels) == c).tolist()) for c in set(labels)}


def test_kmeans_finds_separated_directions_and_is_seeded():
    rng = np.random.default_rng(0)
    axes = np.eye(3)
    x = np.vstack([axes[i] + 0.1 * rng.standard_normal((20, 3)) for i in range(3)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels, centers, cohesion = spherical_kmeans(x, 3, seed=1)
    truth = np.repeat(np.arange(3), 20)
    assert partition(labels) == partition(truth)
    assert np.allclose(np.linalg.norm(centers, axis=1), 1.0) and 0.9 < cohesion <= 1.0
    again, _, _ = spherical_kmeans(x, 3, seed=1)
    assert np.array_equal(labels, again)


@pytest.mark.parametrize("seed", range(5))
def test_kmeans_returns_exactly_k_clusters_when_points_have_fewer_directions(seed):
    x = np.vstack([np.tile([1.0, 0.0], (10, 1)), np.tile([0.0, 1.0], (3, 1))])  # 2 directions, 3 clusters asked
    labels, _, _ = spherical_kmeans(x, 3, seed=seed, restarts=1)
    assert sorted(set(labels.tolist())) == [0, 1, 2]
    assert len(set(labels[:10])) + len(set(labels[10:])) == 3  # one direction split, none mixed


def test_tfidf_rows_are_unit_and_equal_texts_embed_equally():
    matrix, vocab = tfidf(["the cat sat", "the cat sat", "a dog ran far", ""])
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    assert np.allclose(norms[:3], 1.0) and norms[3] == 0.0
    assert (matrix[0] != matrix[1]).nnz == 0
    assert set(vocab) == {"the", "cat", "sat", "a", "dog", "ran", "far"}


def test_clusters_recover_subjects_and_traces_of_a_problem_share_one_topic():
    pool = subject_pool()
    topics, report = cluster_topics(pool, TopicClusterSpec(n_topics=3), embed)
    assert report["purity_against_given"] == 1.0
    frame = pool.assign(found=topics)
    assert (frame.groupby("problem_id")["found"].nunique() == 1).all()
    assert set(topics) == {"cluster-0", "cluster-1", "cluster-2"}
    assert sum(c["problems"] for c in report["clusters"].values()) == 18
    described = {name: c["top_terms"] for name, c in report["clusters"].items()}
    by_subject = frame.groupby("topic")["found"].first()
    assert "triangle" in described[by_subject["geometry"]]
    assert "probability" in described[by_subject["probability"]]


def test_topics_do_not_depend_on_pool_row_order():
    pool = subject_pool()
    topics, _ = cluster_topics(pool, TopicClusterSpec(n_topics=4, seed=3), embed)
    shuffled = pool.sample(frac=1.0, random_state=7)
    again, _ = cluster_topics(shuffled, TopicClusterSpec(n_topics=4, seed=3), embed)
    assert dict(zip(pool["problem_id"], topics)) == dict(zip(shuffled["problem_id"], again))


def test_cluster_names_are_numbered_by_size():
    pool = subject_pool()
    pool = pool[~pool["problem_id"].isin(["num0", "num1", "num2", "pro0"])]  # sizes 6, 5, 3
    _, report = cluster_topics(pool, TopicClusterSpec(n_topics=3), embed)
    sizes = [report["clusters"][f"cluster-{i}"]["problems"] for i in range(3)]
    assert sizes == sorted(sizes, reverse=True) == [6, 5, 3]


def test_more_topics_than_problems_is_an_error():
    with pytest.raises(ValueError, match="n_topics is 40 but the pool has 18 problems"):
        cluster_topics(subject_pool(), TopicClusterSpec(n_topics=40), embed)


def test_toy_world_topics_are_recovered_from_problem_text():
    from framework.toy import make_world, pool_rows

    pool = pd.DataFrame(pool_rows(make_world(0)))
    _, report = cluster_topics(pool, TopicClusterSpec(n_topics=2), embed)
    assert report["purity_against_given"] == 1.0


def test_purity():
    assert purity(["a", "a", "b", "b"], ["x", "x", "y", "y"]) == 1.0
    assert purity(["a", "a", "a", "a"], ["x", "x", "y", "y"]) == 0.5
    assert purity(["a", "b", "c", "d"], ["x", "x", "y", "y"]) == 1.0  # finer clusters than labels are still pure


def test_fewer_distinct_problems_than_topics_still_gives_every_topic():
    pool = pd.DataFrame({"problem_id": [f"p{i}" for i in range(6)], "problem": ["same words"] * 5 + ["other"]})
    topics, report = cluster_topics(pool, TopicClusterSpec(n_topics=4), embed)
    assert sorted(set(topics)) == ["cluster-0", "cluster-1", "cluster-2", "cluster-3"]
    assert sum(c["problems"] for c in report["clusters"].values()) == 6


def test_a_topic_word_shared_by_most_problems_still_separates_them():
    """Most problems in a pool may share one subject; its words must not be dropped as stop words."""
    algebra = [f"Solve the equation {i}x + {i + 1} = 0 for x, an equation in one unknown." for i in range(10)]
    geometry = [f"Find the area of a triangle with base {i} and height {i + 2}." for i in range(4)]
    pool = pd.DataFrame(
        {
            "problem_id": [f"p{i:02d}" for i in range(14)],
            "problem": algebra + geometry,
            "topic": ["algebra"] * 10 + ["geometry"] * 4,
        }
    )
    _, report = cluster_topics(pool, TopicClusterSpec(n_topics=2), embed)
    assert report["purity_against_given"] == 1.0
    assert [c["problems"] for c in report["clusters"].values()] == [10, 4]


def test_problems_without_distinguishing_words_get_no_topic():
    pool = subject_pool()
    numbers = pd.DataFrame(
        {"problem_id": ["zz0", "zz1"], "problem": ["12 + 7 = ?", "3 * 4"], "trace": "t", "topic": "arithmetic"}
    )
    topics, report = cluster_topics(pd.concat([pool, numbers]), TopicClusterSpec(n_topics=3), embed)
    assert topics[-2:] == [None, None] and None not in topics[:-2]
    assert report["without_topic"] == 2 and report["without_topic_example"] == "12 + 7 = ?"
    assert report["purity_against_given"] == 1.0  # the subjects are still recovered
    with pytest.raises(ValueError, match="only 0 of 2 problems have an embedding that tells them apart"):
        cluster_topics(numbers, TopicClusterSpec(n_topics=2), embed)
