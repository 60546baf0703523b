"""Prompt rendering and example encoding: the loss mask, EOS as a target, overlong handling, and token identity
with what evaluation feeds the engine."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import pytest

from framework.formatting import (
    IGNORE_INDEX,
    completion_end_ids,
    encode_example,
    encode_rows,
    prompt_ids,
    render_prompt,
    stop_token_ids,
    turn_end_ids,
)
from framework.spec.models import PromptSpec
from framework.train.worker import Collator

CORPUS = [
    "Solve the following math problem. Make sure to put the answer inside \\boxed{}.",
    "we add 3 and 4 . 3 + 4 = 7 . the answer is \\boxed { 7 }",
    "let x = 12 . apply f to x 2 times . wait , let me check .",
] * 20
PROBLEM = "let x = 12 . apply f to x 2 times ."
TRACE = "f ( 12 ) = 30 . f ( 30 ) = 7 . the answer is \\boxed { 7 }"


@pytest.fixture(scope="module")
def chatml() -> Any:
    """A ChatML tokenizer like the tiny model's: EOS is the turn end `<|im_end|>`, padding `<|endoftext|>`."""
    from framework.model.stage import build_tokenizer

    return build_tokenizer(CORPUS, 320, 512)


@pytest.fixture(scope="module")
def base_style(chatml: Any) -> Any:
    """Like a base model's tokenizer: EOS `<|endoftext|>` differs from the turn end, and pads with EOS."""
    tok = copy.deepcopy(chatml)
    tok.eos_token = "<|endoftext|>"
    tok.pad_token = "<|endoftext|>"
    return tok


def test_render_prompt_uses_the_chat_template_with_system_and_generation_prompt(chatml: Any) -> None:
    prompt = PromptSpec(system="Be brief.", user_template="Q: {problem}")
    text = render_prompt(chatml, "2 + 2 {x}", prompt)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ: 2 + 2 {x}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert render_prompt(chatml, "p", PromptSpec(user_template="{problem}")).startswith("<|im_start|>user\np")


@pytest.mark.parametrize("system", [None, "You are a careful mathematician."])
def test_prompt_tokens_are_exactly_what_evaluation_feeds(chatml: Any, system: str | None) -> None:
    prompt = PromptSpec(system=system)
    eval_ids = chatml(render_prompt(chatml, PROBLEM, prompt), add_special_tokens=False)["input_ids"]
    ex = encode_example(chatml, PROBLEM, TRACE, prompt, 4096, "truncate")
    assert ex is not None
    n = len(eval_ids)
    assert ex["input_ids"][:n] == eval_ids == prompt_ids(chatml, PROBLEM, prompt)
    assert ex["labels"][:n] == [IGNORE_INDEX] * n  # the prompt is context, never a target
    assert IGNORE_INDEX not in ex["labels"][n:]


def test_trace_turn_end_and_eos_are_the_targets(chatml: Any) -> None:
    ex = encode_example(chatml, PROBLEM, TRACE, PromptSpec(), 4096, "truncate")
    assert ex is not None
    targets = [t for t in ex["labels"] if t != IGNORE_INDEX]
    im_end = chatml.convert_tokens_to_ids("<|im_end|>")
    assert targets == chatml(TRACE, add_special_tokens=False)["input_ids"] + [im_end]
    assert chatml.eos_token_id == im_end and targets[-1] == chatml.eos_token_id
    assert ex["attention_mask"] == [1] * len(ex["input_ids"]) and len(ex["labels"]) == len(ex["input_ids"])


def test_a_separate_eos_follows_the_turn_end(base_style: Any) -> None:
    im_end, eot = base_style.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert turn_end_ids(base_style) == [im_end]
    assert completion_end_ids(base_style) == [im_end, eot]
    assert stop_token_ids(base_style, [eot, 99]) == [im_end, eot, 99]
    ex = encode_example(base_style, PROBLEM, TRACE, PromptSpec(), 4096, "truncate")
    assert ex is not None and ex["labels"][-2:] == [im_end, eot]


def test_evaluating_a_base_model_stops_at_the_turn_end_its_own_config_does_not_name(base_style, tmp_path) -> None:
    """A base model's generation config names only its pretraining EOS: evaluation must still end each sample at
    the chat turn end the prompt opened, as a fine-tuned checkpoint's config does."""
    from transformers import GenerationConfig

    from framework.eval.stage import generation_stop_ids

    im_end, eot = base_style.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    GenerationConfig(eos_token_id=eot, bos_token_id=eot).save_pretrained(tmp_path)
    assert generation_stop_ids(tmp_path, base_style) == [im_end, eot]
    GenerationConfig(eos_token_id=[eot, 97]).save_pretrained(tmp_path)
    assert generation_stop_ids(tmp_path, base_style) == [im_end, eot, 97]
    assert generation_stop_ids(tmp_path / "no-config", base_style) == [im_end, eot]


def test_padding_with_the_eos_id_keeps_eos_a_target(base_style: Any) -> None:
    assert base_style.pad_token_id == base_style.eos_token_id
    short = encode_example(base_style, "1", "2", PromptSpec(), 4096, "truncate")
    long = encode_example(base_style, PROBLEM, TRACE, PromptSpec(), 4096, "truncate")
    assert short is not None and long is not None
    batch = Collator(base_style.pad_token_id)([{**short, "sample_index": 0}, {**long, "sample_index": 1}])
    n = len(short["input_ids"])
    labels, mask = batch["labels"][0].tolist(), batch["attention_mask"][0].tolist()
    assert labels[n - 1] == base_style.eos_token_id  # the real EOS is still learned
    assert labels[n:] == [IGNORE_INDEX] * (len(labels) - n)  # padding (the same id) is not
    assert mask == [1] * n + [0] * (len(mask) - n)


def test_truncate_keeps_the_prompt_and_cuts_the_trace(chatml: Any) -> None:
    full = encode_example(chatml, PROBLEM, TRACE, PromptSpec(), 4096, "truncate")
    n_prompt = len(prompt_ids(chatml, PROBLEM, PromptSpec()))
    counts: Counter[str] = Counter()
    cut = encode_example(chatml, PROBLEM, TRACE, PromptSpec(), n_prompt + 5, "truncate", counts)
    assert full is not None and cut is not None
    assert cut["input_ids"] == full["input_ids"][: n_prompt + 5]
    assert cut["labels"][n_prompt:] == full["labels"][n_prompt : n_prompt + 5]
    assert counts["truncated"] == 1 and counts["truncated_tokens"] == len(full["input_ids"]) - n_prompt - 5


def test_drop_and_prompt_too_long(chatml: Any) -> None:
    n_prompt = len(prompt_ids(chatml, PROBLEM, PromptSpec()))
    counts: Counter[str] = Counter()
    assert encode_example(chatml, PROBLEM, TRACE, PromptSpec(), n_prompt + 5, "drop", counts) is None
    assert encode_example(chatml, PROBLEM, TRACE, PromptSpec(), n_prompt, "truncate", counts) is None
    assert counts["dropped"] == 2 and counts["dropped_overlong"] == 1 and counts["dropped_prompt_too_long"] == 1


def test_encode_rows_reports_counts_and_keeps_order(chatml: Any) -> None:
    n_prompt = len(prompt_ids(chatml, "p", PromptSpec(user_template="{problem}")))
    rows = [
        {"problem_id": "a", "problem": "p", "trace": "7"},
        {"problem_id": "b", "problem": "p", "trace": TRACE},
        {"problem_id": "c", "problem": "p", "trace": "3 + 4"},
    ]
    prompt = PromptSpec(user_template="{problem}")
    kept, counts = encode_rows(chatml, rows, prompt, n_prompt + 8, "drop")
    assert [(e["sample_index"], e["problem_id"]) for e in kept] == [(0, "a"), (2, "c")]
    assert counts["examples"] == 3 and counts["kept"] == 2 and counts["dropped"] == 1 and counts["truncated"] == 0
    assert counts["target_tokens"] == sum(sum(t != IGNORE_INDEX for t in e["labels"]) for e in kept)
    assert counts["total_tokens"] == sum(len(e["input_ids"]) for e in kept)
    _, truncating = encode_rows(chatml, rows, prompt, n_prompt + 8, "truncate")
    assert truncating["kept"] == 3 and truncating["truncated"] == 1
