"""A teacher run here with vLLM: the requests in batches, each batch's outcomes handed over when it finishes (so
a kill loses at most one batch), on the engine the eval stage uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framework.engines import Decoding, generation_stop_ids, has_cuda, vllm_generate
from framework.errors import DataError
from framework.generate.client import Outcome
from framework.generate.requests import Request
from framework.spec.pool import GenerateSpec


@dataclass
class Sampling:
    """The teacher's sampling in the shape the engine reads (`top_k` and the seed of the engine)."""

    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    seed: int


def prompt_tokens(tokenizer: Any, text: str, chat: bool) -> list[int]:
    if not chat:
        return list(tokenizer(text)["input_ids"])
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            "generate.chat is true but the teacher's tokenizer has no chat template: set teacher.chat_template, "
            "or chat: false for a base model"
        )
    # The template's text tokenized without added specials, as the eval stage builds its prompts.
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])


def generate(
    model_dir: Path,
    tokenizer: Any,
    requests: list[Request],
    gen: GenerateSpec,
    on_result: Callable[[Outcome], None],
    context: int | None = None,
) -> None:
    """Answer the requests in batches. A request whose prompt and max_tokens do not fit the teacher's `context`
    is answered within what fits (its outcome says the limit it had), and one whose prompt alone fills it fails;
    each request's limit depends on its own prompt only, so a journaled answer means the same in every job."""
    teacher = gen.teacher
    dtype = ("bfloat16" if has_cuda() else "float32") if teacher.dtype == "auto" else teacher.dtype
    stop_ids = generation_stop_ids(model_dir, tokenizer)
    s = gen.sampling
    ids = {r.request_id: prompt_tokens(tokenizer, r.prompt, gen.chat) for r in requests}
    limit = {rid: s.max_tokens if context is None else min(s.max_tokens, context - len(p)) for rid, p in ids.items()}
    for r in requests:
        if limit[r.request_id] < 1:
            on_result(Outcome(r.request_id, False, error=f"the prompt's {len(ids[r.request_id])} tokens fill the "
                              f"teacher's context of {context}", attempts=1))  # fmt: skip
    todo = [r for r in requests if limit[r.request_id] >= 1]
    if not todo:
        return
    decoding = Decoding(
        Sampling(s.temperature, s.top_p, s.top_k, s.max_tokens, s.seed), 1, teacher.tensor_parallel_size
    )
    max_len = max(len(ids[r.request_id]) + limit[r.request_id] for r in todo)
    for start in range(0, len(todo), teacher.batch_size):
        batch = todo[start : start + teacher.batch_size]
        outs = vllm_generate(
            model_dir, [ids[r.request_id] for r in batch], decoding, dtype, max_len, stop_ids,
            seeds=[r.seed for r in batch], max_tokens=[limit[r.request_id] for r in batch],
        )  # fmt: skip
        for r, (sample,) in zip(batch, outs, strict=True):
            capped = limit[r.request_id] if limit[r.request_id] < s.max_tokens else None
            on_result(
                Outcome(
                    r.request_id, True, sample["text"], sample["finish_reason"], prompt_tokens=len(ids[r.request_id]),
                    completion_tokens=sample["n_tokens"], attempts=1, max_tokens=capped,
                )
            )  # fmt: skip
