"""Topics for pools that carry no topic label: clusters of problem embeddings.

The diversity factor needs a topic per trace. Many pools have none, so the pool stage can make one: every distinct
problem is embedded and the embeddings clustered with spherical k-means (cosine similarity, k-means++ seeding,
several restarts, the best kept). A topic is a property of the problem, so all traces of a problem share it.

Embedders:
* `tfidf` (default): TF-IDF over word tokens, no model needed; good at separating subject vocabularies
  (geometry vs. probability vs. number theory).
* a hub id or local directory of a transformers encoder (e.g. a sentence-embedding model): mean-pooled last
  hidden states over the attention mask.
* `base`: the same, with the base model being fine-tuned.

Reproducible: problems are clustered in problem-id order (not pool order), and seeding comes from the spec, so the
same pool and settings give the same topics in any process. Topic names are `cluster-<i>`, numbered by size
(largest first); the pool's stats describe each cluster by its size, its most typical terms and an example
problem, and, when the pool also gave topics, how well the clusters agree with them. A problem whose embedding is
zero (TF-IDF: no word that is not in nearly every problem) gets no topic; the stats count them.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

    from framework.spec.pool import TopicClusterSpec

_WORD = re.compile(r"[^\W\d_]\w*")  # words, not numbers: the numbers in a problem say nothing of its subject
MAX_TERMS = 50_000  # TF-IDF vocabulary cap (most frequent terms by document frequency)
MOVES_PER_ROUND = 50  # single-point moves between two batch k-means passes (a chain, as in first variation)
MAX_DF = 0.9  # terms in (nearly) every problem ("find", "the") separate nothing; rarer ones may name a big topic


# ------------------------------------------------------------------------------------------- embeddings
def tfidf(texts: Sequence[str], max_terms: int = MAX_TERMS) -> tuple[csr_matrix, list[str]]:
    """L2-normalized TF-IDF rows (sublinear term frequency, smooth idf) over words in at most 90% of the texts, and
    the vocabulary."""
    from scipy.sparse import csr_matrix

    docs = [Counter(_WORD.findall(t.lower())) for t in texts]
    df = Counter(term for doc in docs for term in doc)
    common = MAX_DF * len(docs) if len(docs) > 2 else len(docs)
    ranked = sorted(((t, n) for t, n in df.items() if n <= common), key=lambda kv: (-kv[1], kv[0]))
    keep = [t for t, _ in ranked[:max_terms]]
    index = {t: i for i, t in enumerate(keep)}
    idf = np.array([math.log((1 + len(docs)) / (1 + df[t])) + 1.0 for t in keep])
    rows, cols, vals = [], [], []
    for r, doc in enumerate(docs):
        for term, n in doc.items():
            if (c := index.get(term)) is not None:
                rows.append(r)
                cols.append(c)
                vals.append((1.0 + math.log(n)) * idf[c])
    matrix = csr_matrix((vals, (rows, cols)), shape=(len(docs), len(keep)), dtype=np.float64)
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return csr_matrix(matrix.multiply(1.0 / norms[:, None])), keep


def model_embeddings(texts: Sequence[str], model: str, *, batch_size: int, max_length: int) -> np.ndarray:
    """Mean-pooled, L2-normalized last hidden states of a transformers model (GPU when there is one)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    net = AutoModel.from_pretrained(model).float().to(device).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(
                list(texts[i : i + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(device)
            hidden = net(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 0))


# ------------------------------------------------------------------------------------------- clustering
def _plus_plus(x: Any, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on cosine distance (1 - similarity) of unit rows."""
    n = x.shape[0]
    chosen = [int(rng.integers(n))]
    dist = np.maximum(1.0 - np.asarray(x @ _row(x, chosen[0]).T).ravel(), 0.0)
    for _ in range(1, k):
        total = dist.sum()
        nxt = int(rng.choice(n, p=dist / total)) if total > 0 else int(rng.integers(n))
        chosen.append(nxt)
        dist = np.minimum(dist, np.maximum(1.0 - np.asarray(x @ _row(x, nxt).T).ravel(), 0.0))
    return np.vstack([_row(x, i) for i in chosen])


def _row(x: Any, i: int) -> np.ndarray:
    row = x[i]
    return np.asarray(row.toarray() if hasattr(row, "toarray") else row, dtype=np.float64).reshape(1, -1)


def _unit(centers: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(centers, axis=1, keepdims=True)
    return centers / np.where(norms == 0, 1.0, norms)


def _row_norms(x: Any) -> np.ndarray:
    squared = x.multiply(x).sum(axis=1) if hasattr(x, "multiply") else (np.asarray(x) ** 2).sum(axis=1)
    return np.sqrt(np.asarray(squared, dtype=np.float64).ravel())


def _cluster_sums(x: Any, labels: np.ndarray, k: int) -> np.ndarray:
    """(k, d): the sum of each cluster's rows."""
    onehot = np.zeros((k, x.shape[0]))
    onehot[labels, np.arange(x.shape[0])] = 1.0
    return np.asarray(onehot @ x)


def _lloyd(x: Any, labels: np.ndarray, k: int, max_iter: int) -> np.ndarray:
    """Batch reassignment to the nearest centroid until stable. An emptied cluster is re-seeded with the point
    least similar to its own centroid, so exactly k clusters remain."""
    n = x.shape[0]
    for _ in range(max_iter):
        sims = np.asarray(x @ _unit(_cluster_sums(x, labels, k)).T)
        new = sims.argmax(axis=1)
        counts = np.bincount(new, minlength=k)
        farthest = iter(np.argsort(sims[np.arange(n), new], kind="stable"))
        for empty in np.flatnonzero(counts == 0):
            i = next(j for j in farthest if counts[new[j]] > 1)
            counts[new[i]] -= 1
            counts[empty] = 1
            new[i] = empty
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


def _first_variation(x: Any, rows: np.ndarray, labels: np.ndarray, k: int, max_moves: int) -> np.ndarray:
    """Single-point moves that raise the objective sum_c |s_c| (s_c: sum of the cluster's unit rows), best move
    first. Batch k-means stalls in poor local optima on sparse text vectors; these moves get it out (Dhillon, Guan
    and Kogan, 2002). `rows`: |x_i|^2 (1 for unit rows; a zero row would otherwise look like a gain)."""
    n = x.shape[0]
    labels = labels.copy()
    sums = _cluster_sums(x, labels, k)
    dots = np.asarray(x @ sums.T)  # dots[i, c] = x_i . s_c
    sq = (sums * sums).sum(axis=1)
    for _ in range(max_moves):
        norms = np.sqrt(np.maximum(sq, 0.0))
        own = dots[np.arange(n), labels]
        leave = np.sqrt(np.maximum(sq[labels] - 2 * own + rows, 0.0)) - norms[labels]
        join = np.sqrt(np.maximum(sq[None, :] + 2 * dots + rows[:, None], 0.0)) - norms[None, :]
        gain = join + leave[:, None]
        gain[np.arange(n), labels] = -np.inf
        gain[np.bincount(labels, minlength=k)[labels] == 1] = -np.inf  # never empty a cluster
        i, b = np.unravel_index(int(np.argmax(gain)), gain.shape)
        if gain[i, b] <= 1e-9:
            break
        a = labels[i]
        xi = _row(x, int(i))
        col = np.asarray(x @ xi.T).ravel()
        dots[:, a] -= col
        dots[:, b] += col
        sums[a] -= xi.ravel()
        sums[b] += xi.ravel()
        sq = (sums * sums).sum(axis=1)
        labels[i] = b
    return labels


def spherical_kmeans(
    x: Any, k: int, *, seed: int, restarts: int = 4, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray, float]:
    """(labels, unit centroids, mean cosine similarity to the assigned centroid) of the best of `restarts` runs.

    `x`: unit rows, dense or scipy-sparse. Each run: k-means++ seeding, batch k-means, then single-point moves
    and batch k-means again until neither changes anything."""
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    rows = _row_norms(x) ** 2
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for _ in range(restarts):
        labels = np.asarray(x @ _plus_plus(x, k, rng).T).argmax(axis=1)
        for _ in range(max_iter):
            before = labels
            labels = _first_variation(x, rows, _lloyd(x, labels, k, max_iter), k, max_moves=MOVES_PER_ROUND)
            if np.array_equal(labels, before):
                break
        sums = _cluster_sums(x, labels, k)
        score = float(np.linalg.norm(sums, axis=1).sum() / n)  # = mean cosine of a row to its unit centroid
        if best is None or score > best[2] + 1e-12:
            best = (labels, _unit(sums), score)
    assert best is not None
    return best


def _renumber(labels: np.ndarray, ids: Sequence[str], k: int) -> np.ndarray:
    """Clusters numbered by size, largest first (ties: the smaller first problem id), so names do not depend on
    which restart won."""
    first = {c: min(ids[i] for i in np.flatnonzero(labels == c)) for c in range(k)}
    order = sorted(range(k), key=lambda c: (-int((labels == c).sum()), first[c]))
    rank = np.empty(k, dtype=int)
    rank[order] = np.arange(k)
    return rank[labels]


# ------------------------------------------------------------------------------------------------- stage
def purity(found: Sequence[str], given: Sequence[str]) -> float:
    """Share of problems whose cluster's most common given topic is their own (1.0 = clusters refine the labels)."""
    frame = pd.DataFrame({"found": found, "given": given})
    return float(frame.groupby("found")["given"].agg(lambda s: s.value_counts().iloc[0]).sum() / len(frame))


def describe(labels: np.ndarray, names: list[str], texts: Sequence[str], n_terms: int = 8) -> dict[str, Any]:
    """Per cluster: size, the terms most over-represented in it (by TF-IDF mass) and its first problem."""
    matrix, vocab = tfidf(texts, max_terms=20_000)
    overall = np.asarray(matrix.mean(axis=0)).ravel()
    out = {}
    for c, name in enumerate(names):
        rows = np.flatnonzero(labels == c)
        mass = np.asarray(matrix[rows].mean(axis=0)).ravel() - overall
        top = [vocab[i] for i in np.argsort(-mass, kind="stable")[:n_terms] if mass[i] > 0]
        out[name] = {"problems": len(rows), "top_terms": top, "example": texts[rows[0]][:200]}
    return out


def cluster_topics(
    pool: pd.DataFrame,
    spec: TopicClusterSpec,
    embed: Callable[[Sequence[str]], Any],
) -> tuple[list[str | None], dict[str, Any]]:
    """A topic per pool row, and a report for the pool's stats. `embed` maps problem texts to unit rows.

    A problem whose embedding is zero (TF-IDF of a problem with no distinguishing word, e.g. "12 + 7 = ?") is
    like every cluster and none: it gets no topic (the report counts such problems) rather than an arbitrary one."""
    first = pool.drop_duplicates("problem_id").sort_values("problem_id", kind="stable")
    ids = first["problem_id"].astype(str).tolist()
    texts = first["problem"].astype(str).tolist()
    k = spec.n_topics
    if k > len(ids):
        raise ValueError(f"annotate.topic_clusters.n_topics is {k} but the pool has {len(ids)} problems")
    x = embed(texts)
    placed = np.flatnonzero(_row_norms(x) > 1e-12)
    if len(placed) < k:
        raise ValueError(
            f"annotate.topic_clusters.n_topics is {k} but only {len(placed)} of {len(ids)} problems have an "
            "embedding that tells them apart (with tfidf: words other than those in nearly every problem)"
        )
    x = x[placed] if len(placed) < len(ids) else x
    placed_ids = [ids[i] for i in placed]
    placed_texts = [texts[i] for i in placed]
    labels, _, cohesion = spherical_kmeans(x, k, seed=spec.seed, restarts=spec.restarts)
    labels = _renumber(labels, placed_ids, k)
    width = len(str(k - 1))
    names = [f"cluster-{c:0{width}d}" for c in range(k)]
    by_problem: dict[str, str | None] = dict.fromkeys(ids)
    by_problem.update(zip(placed_ids, (names[c] for c in labels), strict=True))
    unplaced = [t for pid, t in zip(ids, texts, strict=True) if by_problem[pid] is None]
    report: dict[str, Any] = {
        "embedder": spec.embedder,
        "n_topics": k,
        "problems": len(ids),
        "without_topic": len(unplaced),
        "without_topic_example": unplaced[0][:200] if unplaced else None,
        "mean_cosine_to_centroid": round(cohesion, 6),
        "clusters": describe(labels, names, placed_texts),
    }
    given = first["topic"].iloc[placed] if "topic" in first else None
    if given is not None and given.notna().all():
        report["purity_against_given"] = round(purity([names[c] for c in labels], given.astype(str)), 6)
    return [by_problem[str(p)] for p in pool["problem_id"]], report
