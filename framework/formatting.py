"""How a problem and its trace become tokens: the single source of truth for training and evaluation prompts.

Evaluation renders a prompt with `render_prompt` and tokenizes it with `add_special_tokens=False`; training uses
exactly those ids as the (masked) prefix of every example, so a fine-tuned model is scored on the very token
sequence it was trained to continue. The target is the trace followed by the chat template's turn-end token and
the tokenizer's EOS: that is what teaches a model to stop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from framework.spec.models import PromptSpec

IGNORE_INDEX = -100  # label value the causal-LM loss skips
# A string no chat template rewrites and no tokenizer merges with its neighbours, to find what follows a turn.
_SENTINEL = "\u2063ablate-turn-sentinel\u2063"


def messages_for(problem: str, prompt: PromptSpec) -> list[dict[str, str]]:
    """The chat messages of a problem: an optional system message, then the user message."""
    messages = [] if prompt.system is None else [{"role": "system", "content": prompt.system}]
    messages.append({"role": "user", "content": prompt.user_template.format(problem=problem)})
    return messages


def render_prompt(tokenizer: Any, problem: str, prompt: PromptSpec) -> str:
    """The prompt text the model continues, rendered by the tokenizer's chat template with the assistant header."""
    return tokenizer.apply_chat_template(messages_for(problem, prompt), tokenize=False, add_generation_prompt=True)


def prompt_ids(tokenizer: Any, problem: str, prompt: PromptSpec) -> list[int]:
    """Token ids of the rendered prompt, tokenized exactly as the evaluation stage does."""
    return list(tokenizer(render_prompt(tokenizer, problem, prompt), add_special_tokens=False)["input_ids"])


def _special_ids(tokenizer: Any) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    ids.update(i for i, tok in getattr(tokenizer, "added_tokens_decoder", {}).items() if tok.special)
    return ids


def turn_end_ids(tokenizer: Any) -> list[int]:
    """The special tokens the chat template writes right after an assistant message (ChatML: `<|im_end|>`).

    Found by rendering a conversation, so it works for any template; formatting after them (a newline) is not
    part of what the model must emit.
    """
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": _SENTINEL}], tokenize=False
    )
    if _SENTINEL not in text:
        return []
    tail = tokenizer(text.split(_SENTINEL, 1)[1], add_special_tokens=False)["input_ids"]
    special = _special_ids(tokenizer)
    ends: list[int] = []
    for i in tail:
        if i not in special:
            break
        ends.append(i)
    return ends


def completion_end_ids(tokenizer: Any) -> list[int]:
    """Targets appended after the trace: the turn-end token(s), then EOS unless the turn end already is EOS."""
    ends = turn_end_ids(tokenizer)
    eos = tokenizer.eos_token_id
    if eos is not None and eos not in ends:
        ends.append(eos)
    return ends


def stop_token_ids(tokenizer: Any, extra: Iterable[int] = ()) -> list[int]:
    """Every id that ends a generation: turn end, EOS and `extra` (e.g. the base model's own EOS ids)."""
    return list(dict.fromkeys([*completion_end_ids(tokenizer), *extra]))


def encode_example(
    tokenizer: Any,
    problem: str,
    trace: str,
    prompt: PromptSpec,
    max_seq_len: int,
    overlong: Literal["truncate", "drop"],
    counts: Counter[str] | None = None,
) -> dict[str, list[int]] | None:
    """One supervised example: prompt ids (masked) + trace + turn end + EOS (targets).

    Labels are built before any padding, so EOS stays a target even when a tokenizer pads with its EOS id.
    An example longer than `max_seq_len` is cut inside the trace ("truncate") or left out ("drop"); one whose
    prompt alone does not fit is always left out (it would have no target). `counts` tallies what happened.
    """
    counts = counts if counts is not None else Counter()
    prefix = prompt_ids(tokenizer, problem, prompt)
    target = list(tokenizer(trace, add_special_tokens=False)["input_ids"]) + completion_end_ids(tokenizer)
    if len(prefix) + len(target) > max_seq_len:
        if overlong == "drop" or len(prefix) >= max_seq_len:
            counts["dropped"] += 1
            counts["dropped_prompt_too_long" if len(prefix) >= max_seq_len else "dropped_overlong"] += 1
            return None
        counts["truncated"] += 1
        counts["truncated_tokens"] += len(prefix) + len(target) - max_seq_len
        target = target[: max_seq_len - len(prefix)]
    counts["kept"] += 1
    counts["target_tokens"] += len(target)
    counts["total_tokens"] += len(prefix) + len(target)
    return {
        "input_ids": prefix + target,
        "labels": [IGNORE_INDEX] * len(prefix) + target,
        "attention_mask": [1] * (len(prefix) + len(target)),
    }


def encode_rows(
    tokenizer: Any,
    rows: Iterable[Mapping[str, Any]],
    prompt: PromptSpec,
    max_seq_len: int,
    overlong: Literal["truncate", "drop"],
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Encode training rows in order; each kept example carries its row index and problem id for tracing."""
    counts: Counter[str] = Counter()
    examples = []
    for index, row in enumerate(rows):
        counts["examples"] += 1
        encoded = encode_example(tokenizer, row["problem"], row["trace"], prompt, max_seq_len, overlong, counts)
        if encoded is not None:
            examples.append({"sample_index": index, "problem_id": str(row.get("problem_id", index)), **encoded})
    keys = (
        "examples",
        "kept",
        "truncated",
        "truncated_tokens",
        "dropped",
        "dropped_overlong",
        "dropped_prompt_too_long",
        "target_tokens",
        "total_tokens",
    )
    return examples, {k: int(counts[k]) for k in keys}
