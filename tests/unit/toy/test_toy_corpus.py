"""Toy pretraining corpus: deterministic, free of multi-step problems, and with the intended binding mix."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from framework.toy import make_world, pretraining_documents, vocabulary
from framework.toy.corpus import BINDING, MIX, tagged_documents

N_DOCS = 4000
FN = r"(f|g)"
NUM = r"(\d+)"
# Every way the corpus states a single fact; each match yields (fn, a, b).
FACT_PATTERNS = [
    re.compile(rf"\b{FN} \( {NUM} \) = {NUM} \."),
    re.compile(rf"\b{FN} \( \w \) = \1 \( {NUM} \) = {NUM} \."),
    re.compile(rf"\b{FN} of {NUM} is {NUM} \."),
    re.compile(rf"\b{FN} maps {NUM} to {NUM} \."),
    re.compile(rf"\b{FN} : {NUM} -> {NUM} \."),
    re.compile(rf"the value of {FN} at {NUM} is {NUM} \."),
]
TABLE = re.compile(rf"table of {FN} : ((?:{NUM} -> {NUM}(?: , )?)+) \.")


def facts(doc: str) -> set[tuple[str, int, int]]:
    found = {(m[1], int(m[2]), int(m[3])) for pattern in FACT_PATTERNS for m in pattern.finditer(doc)}
    for m in TABLE.finditer(doc):
        found |= {(m[1], int(a), int(b)) for a, b in re.findall(rf"{NUM} -> {NUM}", m[2])}
    return found


@pytest.fixture(scope="module")
def world():
    return make_world(0)


@pytest.fixture(scope="module")
def tagged(world):
    return list(tagged_documents(world, n_docs=N_DOCS, seed=0))


def test_corpus_is_deterministic_and_prefix_stable(world, tagged):
    docs = [d for _, d in tagged]
    assert list(pretraining_documents(world, n_docs=N_DOCS, seed=0)) == docs
    assert list(pretraining_documents(world, n_docs=50, seed=0)) == docs[:50]
    assert list(pretraining_documents(world, n_docs=50, seed=1)) != docs[:50]
    assert list(pretraining_documents(make_world(1), n_docs=50, seed=0)) != docs[:50]


def test_no_document_holds_a_multi_step_problem_a_trace_or_a_chat_turn(tagged):
    banned = ["Apply", "times", "step 2 of", "step 1 of", "We apply", "<|im_start|>", "user", "assistant", "->  ->"]
    for _, doc in tagged:
        assert not any(b in doc for b in banned), doc
        assert not re.search(r"\d+ -> \d+ -> \d+", doc), doc


def test_no_document_chains_two_facts(world, tagged):
    n_facts = 0
    for family, doc in tagged:
        found = facts(doc)
        n_facts += len(found)
        assert all(world.apply(fn, a) == b for fn, a, b in found), doc
        inputs = {a for _, a, _ in found}
        assert not any(b in inputs for _, _, b in found), (family, doc)
    assert n_facts > 5 * N_DOCS / 2  # the parser does see the facts, so the check above is not vacuous


def test_the_chain_check_catches_a_chain(world):
    a = 9
    b = world.f[a]
    doc = f"f ( {a} ) = {b} . the sky is blue . f of {b} is {world.f[b]} ."
    found = facts(doc)
    assert any(y in {x for _, x, _ in found} for _, _, y in found)


def test_family_shares_match_the_mix(tagged):
    counts = Counter(family for family, _ in tagged)
    assert set(counts) == set(MIX)
    for family, share in MIX.items():
        assert abs(counts[family] / N_DOCS - share) < 0.02, family
    binding = sum(counts[f] for f in BINDING) / N_DOCS
    assert 0.28 <= binding <= 0.36
    # Read from the text alone: exactly the binding documents bind a name with `let`.
    assert all(bool(re.search(r"\blet \w = \d+ \.", doc)) == (family in BINDING) for family, doc in tagged)


def test_binding_documents_practise_every_copy_a_trace_makes(world, tagged):
    docs = [d for family, d in tagged if family in BINDING]
    copies = {
        "start value into the first step": rf"let x = {NUM} \. (?:[^=]*\. )?f \( x \) = f \( \1 \) = \d+ \.",
        "result into let y": rf"f \( {NUM} \) = {NUM} \. (?:[^=]*\. )?let y = \2 \.",
        "newest binding into the next step": rf"let y = \d+ \. (?:.*\. )?let y = {NUM} \. (?:.*\. )?f \( y \) = f \( \1 \)",
        "final value into check and boxed": rf"let y = {NUM} \. (?:.*\. )?check : y is \1 \. the answer is \\boxed {{ \1 }}$",
        "bound count into a stop": rf"let n = {NUM} \. count to n : .* \1 of \1 , so we stop \.$",
        "a count below n into going on": rf"let n = {NUM} \. count to n : 1 of \1 , so we go on \.",
    }
    for name, pattern in copies.items():
        hits = [d for d in docs if re.search(pattern, d)]
        assert len(hits) >= 20, name
    gaps = Counter(len(re.findall(r" \. ", d.split(" f ( ")[0])) for d in docs if d.startswith("let x ="))
    assert len(gaps) >= 4, "bindings and their use are separated by gaps of several lengths"


def test_every_corpus_word_is_in_the_vocabulary(world):
    vocab = set(vocabulary(world))
    for seed in (1, 2):
        for doc in pretraining_documents(world, n_docs=3000, seed=seed):
            assert set(doc.split()) <= vocab, doc
