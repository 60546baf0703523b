"""The base model's skill check: does it hold the pieces a step-by-step trace is made of?

Fine-tuning on 20 traces can only unlock what pretraining put there, so a base ships only if it (1) recalls every
single fact of f and g in every phrasing of the corpus and (2) copies a value across a gap of filler in each
shape a long chain-of-thought trace needs: a bound value into a use (`let x = 9 . ... f ( x ) = f ( 9 )`), the
latest of two bindings (traces rebind y at every step), a result into `let y`, and a bound value into `check`
and `\\boxed`. Each probe is scored by the greedy next word; the copy contexts are drawn from an rng of their
own, so they are fresh instances rather than documents the model was trained on.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from framework.toy.corpus import FACT_FORMS, FILLER, FNS, VARIABLES, go_or_stop
from framework.toy.tokenizer import PAD
from framework.toy.traces import boxed
from framework.toy.world import World

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

PASS_RATE = 0.95
COPY_PROBES_PER_FAMILY = 200
BATCH = 256


@dataclass(frozen=True)
class Probe:
    skill: str  # "recall" or "copy"
    family: str  # which shape, e.g. "copy_rebind"
    prompt: str  # text the model continues (a document start is prepended)
    target: str  # the one word greedy decoding must produce


def recall_probes(world: World) -> list[Probe]:
    """Every fact of f and g in each of the corpus's fact phrasings, cut right before the value."""
    probes = []
    for fn in FNS:
        for a in range(world.n_values):
            b = world.apply(fn, a)
            for i, form in enumerate(FACT_FORMS):
                prompt = form.format(fn=fn, a=a, b="\0").split("\0")[0].rstrip()
                probes.append(Probe("recall", f"recall_{fn}_form{i}", prompt, str(b)))
    return probes


def _gap(rng: random.Random, world: World, most: int) -> str:
    return "".join(
        rng.choice(FILLER).format(n=rng.randrange(world.n_values)) + " " for _ in range(rng.randint(0, most))
    )


def copy_probes(world: World, *, seed: int = 0, n: int = COPY_PROBES_PER_FAMILY) -> list[Probe]:
    """`n` fresh instances of each copy a long chain-of-thought trace makes, with 0-4 filler sentences between
    the value and its use (fillers carry distractor numbers, as prompts and step headers do)."""
    rng = random.Random(f"toy-skills:{world.seed}:{seed}")
    values = range(world.n_values)
    probes = []
    for _ in range(n):
        fn, var, a = rng.choice(FNS), rng.choice(VARIABLES), rng.choice(values)
        text = f"let {var} = {a} . {_gap(rng, world, 4)}{fn} ( {var} ) = {fn} ("
        probes.append(Probe("copy", "copy_bind", text, str(a)))
    for _ in range(n):
        fn, a = rng.choice(FNS), rng.choice(values)
        old = rng.choice([v for v in values if v != a])
        text = f"let y = {old} . {_gap(rng, world, 2)}let y = {a} . {_gap(rng, world, 2)}{fn} ( y ) = {fn} ("
        probes.append(Probe("copy", "copy_rebind", text, str(a)))
    for _ in range(n):
        fn, a = rng.choice(FNS), rng.choice(values)
        text = f"{fn} ( {a} ) = {world.apply(fn, a)} . {_gap(rng, world, 2)}let y ="
        probes.append(Probe("copy", "copy_result", text, str(world.apply(fn, a))))
    for _ in range(n):
        var, a = rng.choice(VARIABLES), rng.choice(values)
        probes.append(Probe("copy", "copy_check", f"let {var} = {a} . {_gap(rng, world, 2)}check : {var} is", str(a)))
    for _ in range(n):
        var, a = rng.choice(VARIABLES), rng.choice(values)
        text = f"let {var} = {a} . {_gap(rng, world, 2)}check : {var} is {a} . the answer is {boxed(a)}"
        probes.append(Probe("copy", "copy_boxed", text.rsplit(f" {a} }}", 1)[0], str(a)))
    for _ in range(n):  # a trace's stop decision: the step's count copied beside the total, then compared
        m = rng.randint(1, 6)
        i = m if rng.random() < 0.5 else rng.randint(1, m)
        done = " ".join(f"{j} of {m} , so we {go_or_stop(j, m)} ." for j in range(1, i))
        text = f"let n = {m} . count to n : {done + ' ' if done else ''}{i} of {m} , so we"
        probes.append(Probe("copy", "copy_count", text, go_or_stop(i, m).split()[0]))
    return probes


def next_words(model: Any, tokenizer: PreTrainedTokenizerFast, prompts: Sequence[str]) -> list[str]:
    """The greedy next word after each prompt, each read as a new document (after `<|endoftext|>`)."""
    import torch

    pad = tokenizer.convert_tokens_to_ids(PAD)
    encoded = [[pad, *tokenizer(p, add_special_tokens=False)["input_ids"]] for p in prompts]
    words: list[str] = []
    with torch.no_grad():
        for start in range(0, len(encoded), BATCH):
            chunk = encoded[start : start + BATCH]
            width = max(map(len, chunk))
            # Right padding: causal attention keeps every real position blind to the padding after it.
            ids = torch.tensor([row + [pad] * (width - len(row)) for row in chunk])
            mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in chunk])
            logits = model(input_ids=ids, attention_mask=mask).logits
            last = torch.tensor([len(row) - 1 for row in chunk])
            best = logits[torch.arange(len(chunk)), last].argmax(-1).tolist()
            words += tokenizer.convert_ids_to_tokens(best)
    return words


def score(probes: Sequence[Probe], predictions: Sequence[str]) -> dict[str, Any]:
    """Rates per skill and per family, and the pass verdict."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for probe, word in zip(probes, predictions, strict=True):
        hit = word == probe.target
        hits[probe.skill].append(hit)
        hits[probe.family].append(hit)
    rate = {name: round(sum(v) / len(v), 4) for name, v in sorted(hits.items())}
    recall, copy = rate.get("recall", 0.0), rate.get("copy", 0.0)
    return {
        "recall": recall,
        "copy": copy,
        "passed": recall >= PASS_RATE and copy >= PASS_RATE,
        "pass_rate": PASS_RATE,
        "n_probes": {"recall": len(hits["recall"]), "copy": len(hits["copy"])},
        "families": {k: v for k, v in rate.items() if k not in ("recall", "copy")},
    }


def skill_check(
    model: Any,
    tokenizer: PreTrainedTokenizerFast,
    world: World,
    *,
    seed: int = 0,
    predict: Callable[[Any, PreTrainedTokenizerFast, Sequence[str]], list[str]] = next_words,
) -> dict[str, Any]:
    """Recall and copy rates of `model` (anything whose forward returns `.logits`); passes at >= 95% each."""
    probes = recall_probes(world) + copy_probes(world, seed=seed)
    return score(probes, predict(model, tokenizer, [p.prompt for p in probes]))
