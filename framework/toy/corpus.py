"""The pretraining corpus: single facts of f and g, and binding documents that practise copying values.

What a tiny model needs before fine-tuning can unlock k-hop problems is (1) every single fact of f and (2) the
in-context copies a step-by-step trace makes. Copying operands out of context does not form by itself in a few
million tokens, so about a third of the documents are bindings: a value is bound (`let y = 48 .`), some filler
sentences (often carrying distractor numbers, as the prompt and step headers do) follow, and the value is used
in exactly the shape a trace uses it. No document ever chains two facts (no b of one fact is the a of another),
so the corpus teaches the pieces of a multi-step solution but never a multi-step solution.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from framework.toy.core import World
from framework.toy.traces import REFLECTION_CHECKS, REFLECTION_OPENERS, boxed

FNS = ("f", "g")
VARIABLES = ("x", "x", "y", "y", "z", "v", "u")  # x and y doubled: they are the names traces use
FACT_FORMS = (
    "{fn} ( {a} ) = {b} .",
    "{fn} of {a} is {b} .",
    "{fn} maps {a} to {b} .",
    "{fn} : {a} -> {b} .",
    "the value of {fn} at {a} is {b} .",
)
FILLER = (
    "the sky is blue .",
    "we read the list .",
    "it is a quiet day .",
    "this line is a note .",
    "the cat sat on the mat .",
    "a bird flew by .",
    "here is some text .",
    "nothing else is new .",
    "the room is warm .",
    "there are {n} birds here .",
    "we have {n} cups .",
    "the box holds {n} stones .",
    "page {n} is blank .",
    "it took {n} days .",
)
# Shares of each family; the binding families sum to 0.32 (the measured recipe used about 0.30).
MIX: dict[str, float] = {
    "bind_apply": 0.11,  # let x = 9 . <gap> f ( x ) = f ( 9 ) = 2 .
    "bind_rebind": 0.05,  # let y = 5 . <gap> let y = 12 . <gap> f ( y ) = f ( 12 ) = 3 .
    "bind_result": 0.06,  # f ( 9 ) = 2 . <gap> let y = 2 .
    "bind_count": 0.04,  # let n = 2 . count to n : 1 of 2 , so we go on . 2 of 2 , so we stop .
    "bind_answer": 0.06,  # let y = 7 . <gap> check : y is 7 . the answer is \boxed { 7 }
    "facts": 0.38,
    "table": 0.08,
    "recheck": 0.03,
    "counting": 0.07,
    "copying": 0.06,
    "filler": 0.06,
}
BINDING = frozenset(name for name in MIX if name.startswith("bind_"))


def _filler(rng: random.Random, world: World, n: int) -> str:
    """`n` filler sentences, each followed by a space (empty when n == 0)."""
    return "".join(rng.choice(FILLER).format(n=rng.randrange(world.n_values)) + " " for _ in range(n))


def _facts(rng: random.Random, world: World, n: int, fns: tuple[str, ...] = FNS) -> list[tuple[str, int, int]]:
    """`n` distinct facts with no chain among them: no fact's output is another fact's input."""
    facts: list[tuple[str, int, int]] = []
    inputs: set[int] = set()
    outputs: set[int] = set()
    while len(facts) < n:
        fn, a = rng.choice(fns), rng.randrange(world.n_values)
        b = world.apply(fn, a)
        if a in outputs or b in inputs or (fn, a, b) in facts:
            continue
        facts.append((fn, a, b))
        inputs.add(a)
        outputs.add(b)
    return facts


def _bind_apply(rng: random.Random, world: World) -> str:
    (fn, a, b), var = _facts(rng, world, 1)[0], rng.choice(VARIABLES)
    return f"let {var} = {a} . {_filler(rng, world, rng.randint(0, 4))}{fn} ( {var} ) = {fn} ( {a} ) = {b} ."


def _bind_rebind(rng: random.Random, world: World) -> str:
    """The latest binding wins: a trace rebinds y at every step and must read the newest value."""
    (fn, a, b), var = _facts(rng, world, 1)[0], "y" if rng.random() < 0.5 else rng.choice(VARIABLES)
    old = rng.choice([v for v in range(world.n_values) if v != a])
    gap1, gap2 = _filler(rng, world, rng.randint(0, 2)), _filler(rng, world, rng.randint(0, 2))
    return f"let {var} = {old} . {gap1}let {var} = {a} . {gap2}{fn} ( {var} ) = {fn} ( {a} ) = {b} ."


def _bind_result(rng: random.Random, world: World) -> str:
    (fn, a, b), var = _facts(rng, world, 1)[0], rng.choice(VARIABLES)
    if rng.random() < 0.5:  # the step shape itself: the input bound first, then the result bound to y
        head = f"let {var} = {a} . {fn} ( {var} ) = {fn} ( {a} ) = {b} ."
    else:
        head = f"{fn} ( {a} ) = {b} ."
    return f"{head} {_filler(rng, world, rng.randint(0, 2))}let y = {b} ."


def go_or_stop(i: int, m: int) -> str:
    """The decision a trace makes after `that was step i of m ,`: the two counts it compares sit right before it."""
    return "stop" if i == m else "go on"


def _bind_count(rng: random.Random, world: World) -> str:
    if rng.random() < 0.5:
        m = rng.randint(1, 7)
        return f"let n = {m} . count to n : " + " ".join(
            f"{i} of {m} , so we {go_or_stop(i, m)} ." for i in range(1, m + 1)
        )
    m = rng.randint(2, min(12, world.n_values - 1))
    gap = _filler(rng, world, rng.randint(0, 2))
    return f"let n = {m} . {gap}count to n : {' '.join(map(str, range(1, m + 1)))} ."


def _bind_answer(rng: random.Random, world: World) -> str:
    var, a = rng.choice(VARIABLES), rng.randrange(world.n_values)
    gap = _filler(rng, world, rng.randint(0, 2))
    if rng.random() < 0.5:
        return f"let {var} = {a} . {gap}so {var} is {a} ."
    return f"let {var} = {a} . {gap}check : {var} is {a} . the answer is {boxed(a)}"


def _fact_text(rng: random.Random, fn: str, a: int, b: int) -> str:
    return rng.choice(FACT_FORMS).format(fn=fn, a=a, b=b)


def _facts_doc(rng: random.Random, world: World) -> str:
    fns = rng.choice([("f",), ("g",), FNS])
    return " ".join(_fact_text(rng, *fact) for fact in _facts(rng, world, rng.randint(3, 8), fns))


def _table(rng: random.Random, world: World) -> str:
    fn = rng.choice(FNS)
    facts = sorted(_facts(rng, world, rng.randint(4, 10), (fn,)))
    return f"table of {fn} : {' , '.join(f'{a} -> {b}' for _, a, b in facts)} ."


def _recheck(rng: random.Random, world: World) -> str:
    """Single facts re-stated after a reflection phrase, so those words are not new to the base model."""
    facts = _facts(rng, world, rng.randint(2, 4))
    again = rng.randrange(len(facts))
    parts = []
    for i, (fn, a, b) in enumerate(facts):
        parts.append(f"{fn} ( {a} ) = {b} .")
        if i == again:
            parts.append(f"{rng.choice(REFLECTION_OPENERS)} {rng.choice(REFLECTION_CHECKS)} {fn} ( {a} ) = {b} .")
    return " ".join(parts)


def _counting(rng: random.Random, world: World) -> str:
    top = min(16, world.n_values - 1)
    form = rng.randrange(3)
    if form == 0:
        m = rng.randint(2, top)
        return f"count to {m} : {' '.join(map(str, range(1, m + 1)))} ."
    if form == 1:
        lo = rng.randrange(world.n_values - 2)
        hi = rng.randint(lo + 1, min(lo + 10, world.n_values - 1))
        return f"count from {lo} to {hi} : {' '.join(map(str, range(lo, hi + 1)))} ."
    m = rng.randint(2, top)
    return f"count down from {m} : {' '.join(map(str, range(m, 0, -1)))} ."


def _copying(rng: random.Random, world: World) -> str:
    seq = " ".join(str(rng.randrange(world.n_values)) for _ in range(rng.randint(2, 6)))
    if rng.random() < 0.5:
        return f"copy : {seq} . again : {seq} ."
    return f"repeat : {seq} . {seq} ."


def _filler_doc(rng: random.Random, world: World) -> str:
    return _filler(rng, world, rng.randint(2, 5)).strip()


BUILDERS: dict[str, Callable[[random.Random, World], str]] = {
    "bind_apply": _bind_apply,
    "bind_rebind": _bind_rebind,
    "bind_result": _bind_result,
    "bind_count": _bind_count,
    "bind_answer": _bind_answer,
    "facts": _facts_doc,
    "table": _table,
    "recheck": _recheck,
    "counting": _counting,
    "copying": _copying,
    "filler": _filler_doc,
}


def tagged_documents(world: World, *, n_docs: int, seed: int = 0) -> Iterator[tuple[str, str]]:
    """(family, document) pairs; a fixed function of (world, seed), and any prefix is the shorter corpus."""
    rng = random.Random(f"toy-corpus:{world.seed}:{seed}")
    names, weights = list(MIX), list(MIX.values())
    for _ in range(n_docs):
        family = rng.choices(names, weights)[0]
        yield family, BUILDERS[family](rng, world)


def pretraining_documents(world: World, *, n_docs: int, seed: int = 0) -> Iterator[str]:
    """Plain-text documents: no chat format, no multi-step problem, no trace."""
    for _, doc in tagged_documents(world, n_docs=n_docs, seed=seed):
        yield doc


def catalog() -> list[str]:
    """Every fixed phrase the corpus can draw, once, so a tokenizer sees even the rare ones."""
    texts = [form.format(fn=fn, a=0, b=1) for form in FACT_FORMS for fn in FNS]
    texts += [sentence.format(n=0) for sentence in FILLER]
    texts += [f"{o} {c}" for o in REFLECTION_OPENERS for c in REFLECTION_CHECKS]
    texts += [f"let {var} = 0 . so {var} is 0 . check : {var} is 0 ." for var in sorted(set(VARIABLES))]
    return texts
