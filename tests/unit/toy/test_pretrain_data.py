"""The toy base's pretraining stream: the re-weighted mix and the gapped-count supplement."""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter

import pytest

from framework.toy import make_world
from framework.toy.corpus import MIX
from framework.toy.pretrain import BASE_MIX, PretrainSettings, documents
from framework.toy.supplement import MAX_COUNT, count_gapped
from framework.toy.tokenizer import build_tokenizer

FACT = re.compile(r"\b([fg]) \( (\d+) \) = (\d+) \.")


@pytest.fixture(scope="module")
def world():
    return make_world(0)


def test_gapped_counts_count_and_stop_without_chaining(world):
    rng = random.Random(0)
    tokenizer = build_tokenizer(world)
    seen = Counter()
    for _ in range(500):
        doc = count_gapped(rng, world)
        m = int(re.match(r"let n = (\d+) \. count to n :", doc)[1])
        seen[m] += 1
        assert re.findall(r"\b(\d+) of (\d+) :", doc) == [(str(i), str(m)) for i in range(1, m + 1)]
        assert doc.endswith(f"that was {m} of {m} , so we stop .")
        facts = {(fn, int(a), int(b)) for fn, a, b in FACT.findall(doc)}
        assert all(world.apply(fn, a) == b for fn, a, b in facts)
        assert not {a for _, a, _ in facts} & {b for _, _, b in facts}  # no fact feeds another
        assert tokenizer.unk_token_id not in tokenizer(doc)["input_ids"]
    assert set(seen) == set(range(1, MAX_COUNT + 1))


def test_mix_is_a_distribution_over_known_families():
    assert sum(BASE_MIX.values()) == pytest.approx(1.0)
    assert set(BASE_MIX) <= {*MIX, "count_gapped"}


def test_stream_follows_the_mix_and_is_deterministic(world):
    settings = PretrainSettings()
    first = list(itertools.islice(documents(world, settings), 3000))
    assert first == list(itertools.islice(documents(world, settings), 3000))
    gapped = sum(bool(re.match(r"let n = \d+ \. count to n : 1 of", d)) for d in first) / len(first)
    copying = sum(d.startswith(("copy :", "repeat :")) for d in first) / len(first)
    assert gapped == pytest.approx(BASE_MIX["count_gapped"], abs=0.025)
    assert copying == pytest.approx(BASE_MIX["copying"], abs=0.03)


def test_corpus_mix_and_unknown_families(world):
    from framework.toy.corpus import pretraining_documents

    plain = list(itertools.islice(documents(world, PretrainSettings(mix=None, seed=3)), 50))
    assert plain == list(pretraining_documents(world, n_docs=50, seed=3))
    with pytest.raises(ValueError, match="unknown families"):
        next(documents(world, PretrainSettings(mix={"facts": 0.5, "recipes": 0.5})))
