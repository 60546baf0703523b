"""The toy world's facts and problems: two random permutations and k-fold application problems.

A problem asks for f applied k times to a start value. The base model only ever sees single applications of f
and g during pretraining, so solving a k-hop problem needs a skill that fine-tuning has to unlock: carrying each
intermediate value forward. Splits are stratified by (fn, k) and carved so that the test split never moves when
the training pool grows, which keeps pool and benchmark disjoint across every sweep that shares a seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

MIN_VALUES = 8  # the largest hop count (5) and the counting documents need a few values as words


@dataclass(frozen=True)
class World:
    seed: int
    n_values: int
    f: tuple[int, ...]  # the task's permutation
    g: tuple[int, ...]  # a distractor permutation, disagreeing with f everywhere

    def apply(self, fn: str, value: int, times: int = 1) -> int:
        """`fn` applied `times` times to `value`."""
        table = self.table(fn)
        for _ in range(times):
            value = table[value]
        return value

    def table(self, fn: str) -> tuple[int, ...]:
        if fn == "f":
            return self.f
        if fn == "g":
            return self.g
        raise ValueError(f"unknown function {fn!r}; the toy world has 'f' and 'g'")


def _derangement(rng: random.Random, n: int, avoid: Sequence[int] | None = None) -> tuple[int, ...]:
    """A uniform permutation with no fixed point (and no agreement with `avoid`), by rejection.

    Fixed points would make some facts their own chain (f(f(a)) = f(a) = a) and let "copy the input" pass as an
    answer; agreement with f would make the distractor indistinguishable on that input.
    """
    values = list(range(n))
    while True:
        rng.shuffle(values)
        if all(v != i for i, v in enumerate(values)) and (avoid is None or all(v != a for v, a in zip(values, avoid))):
            return tuple(values)


def make_world(seed: int = 0, n_values: int = 64) -> World:
    """The world is a pure function of `seed` (random.Random), so every process and machine agrees on it."""
    if n_values < MIN_VALUES:
        raise ValueError(f"n_values must be at least {MIN_VALUES}, got {n_values}")
    rng = random.Random(seed)
    f = _derangement(rng, n_values)
    g = _derangement(rng, n_values, avoid=f)
    return World(seed=seed, n_values=n_values, f=f, g=g)


@dataclass(frozen=True)
class Problem:
    problem_id: str  # "f-x9-k3"
    fn: str  # "f" or "g": the topic
    x: int
    k: int  # hops: the difficulty
    text: str
    answer: int


def make_problem(world: World, fn: str, x: int, k: int) -> Problem:
    return Problem(
        problem_id=f"{fn}-x{x}-k{k}",
        fn=fn,
        x=x,
        k=k,
        text=f"let x = {x} . Apply {fn} to x {k} times .",
        answer=world.apply(fn, x, k),
    )


def all_problems(world: World, fns: Sequence[str] = ("f", "g"), ks: Sequence[int] = (2, 3, 4, 5)) -> list[Problem]:
    return [make_problem(world, fn, x, k) for fn in fns for k in ks for x in range(world.n_values)]


def _allocate(n: int, strata: list[tuple[str, int]], rng: random.Random) -> dict[tuple[str, int], int]:
    """n spread as evenly as possible; which strata get the remainder is drawn, so no stratum is always short."""
    base, extra = divmod(n, len(strata))
    lucky = set(rng.sample(strata, extra))
    return {s: base + (s in lucky) for s in strata}


def split_problems(
    world: World,
    *,
    seed: int = 0,
    n_train: int = 64,
    n_dev: int = 100,
    n_test: int = 200,
    fns: Sequence[str] = ("f", "g"),
    ks: Sequence[int] = (2, 3, 4, 5),
) -> dict[str, list[Problem]]:
    """Disjoint train/dev/test splits, stratified by (fn, k).

    Each stratum's start values are shuffled by a seed of their own (independent of the other strata and of the
    world), train is taken from the front, test from the back and dev just before test. Growing the training
    pool therefore never moves a test problem. Each split is interleaved across strata, so any prefix of it
    (a `limit`) stays balanced.
    """
    strata = [(fn, k) for fn in fns for k in ks]
    if not strata:
        raise ValueError("split_problems needs at least one fn and one k")
    sizes = {
        name: _allocate(n, strata, random.Random(f"toy-alloc:{seed}:{name}"))
        for name, n in (("train", n_train), ("dev", n_dev), ("test", n_test))
    }
    per_stratum: dict[str, list[list[Problem]]] = {"train": [], "dev": [], "test": []}
    for stratum in strata:
        fn, k = stratum
        order = list(range(world.n_values))
        random.Random(f"toy-split:{seed}:{fn}:{k}").shuffle(order)
        n_tr, n_dv, n_te = (sizes[name][stratum] for name in ("train", "dev", "test"))
        if n_tr + n_dv + n_te > len(order):
            raise ValueError(
                f"stratum {fn}, k={k} has {len(order)} problems but the splits ask for {n_tr}+{n_dv}+{n_te}; "
                "lower n_train/n_dev/n_test or add fns/ks"
            )
        end = len(order)
        picks = {"train": order[:n_tr], "dev": order[end - n_te - n_dv : end - n_te], "test": order[end - n_te :]}
        for name, xs in picks.items():
            per_stratum[name].append([make_problem(world, fn, x, k) for x in xs])
    return {name: _interleave(lists) for name, lists in per_stratum.items()}


def _interleave(lists: list[list[Problem]]) -> list[Problem]:
    longest = max((len(lst) for lst in lists), default=0)
    return [lst[i] for i in range(longest) for lst in lists if i < len(lst)]
