"""Pretraining documents the toy corpus lacks: a counter carried across gaps.

A long chain-of-thought trace numbers its steps (`step 1 of 3 : ... that was step 1 of 3 , so we go on . step 2 of 3
: ...`) with a whole step between two counts. The corpus practises counting with the counts side by side
(`1 of 3 , so we go on . 2 of 3 , ...`), and base models fine-tuned on 20 traces mostly failed by running one step too many
or too few. A gapped count carries the counter over the kind of text a step holds: filler, a single fact, a
binding and its use, a result bound to y. Facts within a document never chain (no fact's output is another's
input), so like the corpus these documents teach a piece of a multi-step solution, never a solution. Meant to move
into `framework.toy.corpus` as a binding family; kept apart here so the corpus stays its owner's.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from framework.toy.core import World
from framework.toy.corpus import FILLER, FNS, VARIABLES, go_or_stop

MAX_COUNT = 6  # traces count to 5 at most; one more keeps "stop" from being tied to the largest count seen


def _unchained_fact(rng: random.Random, world: World, inputs: set[int], outputs: set[int]) -> tuple[str, int, int]:
    while True:
        fn, a = rng.choice(FNS), rng.randrange(world.n_values)
        b = world.apply(fn, a)
        if a not in outputs and b not in inputs:
            inputs.add(a)
            outputs.add(b)
            return fn, a, b


def count_gapped(rng: random.Random, world: World) -> str:
    """`let n = 2 . count to n : 1 of 2 : <body> that was 1 of 2 , so we go on . 2 of 2 : <body> that was 2 of 2 , so we stop .`"""
    m = rng.randint(1, MAX_COUNT)
    inputs: set[int] = set()
    outputs: set[int] = set()

    def filler() -> str:
        return " ".join(rng.choice(FILLER).format(n=rng.randrange(world.n_values)) for _ in range(rng.randint(1, 2)))

    def fact() -> str:
        fn, a, b = _unchained_fact(rng, world, inputs, outputs)
        return f"{fn} ( {a} ) = {b} ."

    def bind_use() -> str:
        (fn, a, b), var = _unchained_fact(rng, world, inputs, outputs), rng.choice(VARIABLES)
        return f"let {var} = {a} . {fn} ( {var} ) = {fn} ( {a} ) = {b} ."

    def result_bind() -> str:
        fn, a, b = _unchained_fact(rng, world, inputs, outputs)
        return f"{fn} ( {a} ) = {b} . let y = {b} ."

    bodies: list[Callable[[], str]] = [filler, fact, bind_use, result_bind]
    parts = [f"let n = {m} . count to n :"]
    for i in range(1, m + 1):
        parts.append(f"{i} of {m} : {rng.choice(bodies)()} that was {i} of {m} , so we {go_or_stop(i, m)} .")
    return " ".join(parts)


BUILDERS: dict[str, Callable[[random.Random, World], str]] = {"count_gapped": count_gapped}
