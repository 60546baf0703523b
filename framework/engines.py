"""The engines that write the samples: vLLM, or transformers where vLLM cannot run. One engine per (backend,
model, dtype) is kept loaded in the process, so the benchmarks of one checkpoint handed to one `ablate exec eval`
share it. Seeds are per sample (`sample_seed`) so that a sample does not depend on batching or on how many
data-parallel ranks share the prompts.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framework import model_source
from framework.formatting import stop_token_ids

if TYPE_CHECKING:
    from framework.spec.models import EvalSpec

_ENGINES: dict[tuple[str, ...], Any] = {}  # (backend, model dir, dtype) -> loaded engine, reused across jobs


def cached_tokenizer(source: Any) -> Any:
    """The model's tokenizer (a `ModelSource`), loaded once per process like its engine."""
    key = ("tok", str(source.location), source.chat_template)
    _ENGINES[key] = _ENGINES.get(key) or model_source.load_tokenizer(source)
    return _ENGINES[key]


def _drop_engine(key: tuple[str, ...]) -> None:
    """Free an engine before loading its replacement: two copies of a 32B model do not fit one GPU."""
    del _ENGINES[key]
    gc.collect()
    if has_cuda():
        import torch

        torch.cuda.empty_cache()


def release_engines() -> None:
    """Free every loaded engine and tokenizer: a process that evaluates checkpoint after checkpoint (a search's
    trials) would otherwise keep each one's engine, and GPU memory, to the end."""
    for key in list(_ENGINES):
        _drop_engine(key)


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass(frozen=True)
class Decoding:
    """What the engines read of a spec besides the prompts; an EvalSpec has these attributes too."""

    sampling: Any  # temperature, top_p, top_k, max_tokens, seed
    samples: int
    tensor_parallel_size: int = 1


def vllm_generate(
    model_dir: Path,
    prompts: list[list[int]],
    ev: EvalSpec | Decoding,
    dtype: str,
    max_len: int,
    stop_ids: list[int],
    indices: list[int] | None = None,
    *,
    seeds: list[int] | None = None,
    max_tokens: list[int] | None = None,
) -> list[list[dict]]:
    """Samples per prompt from this process's vLLM engine, each ending at the first of `stop_ids`. `indices`: the
    prompts' places in the whole benchmark (they seed the requests), when this process generates one data-parallel
    shard of it (framework.eval.parallel). `seeds`: each request's own seed instead (a generation's requests are
    content-addressed and seeded by their id); `max_tokens`: each request's own limit (what fits its context)."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    key = ("vllm", str(model_dir), dtype)
    if key in _ENGINES and _ENGINES[key].llm_engine.model_config.max_model_len < max_len:
        _drop_engine(key)  # loaded for a benchmark with shorter prompts or answers: too short for this one
    if key not in _ENGINES:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        extra: dict[str, Any] = {}
        if not has_cuda() and ev.tensor_parallel_size == 1:
            # On CPU the engine core and its worker each start in a process of their own, re-importing torch and
            # vLLM: about 30 of the 50 seconds an evaluation of a tiny model takes. In this process they cost none.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            extra["distributed_executor_backend"] = "uni"
        _ENGINES[key] = LLM(
            model=str(model_dir),
            dtype=dtype,
            max_model_len=max_len,
            seed=ev.sampling.seed,
            tensor_parallel_size=ev.tensor_parallel_size,
            enforce_eager=not has_cuda(),
            **extra,
        )
    llm = _ENGINES[key]
    s = ev.sampling
    # Per-request seeds make each problem's samples independent of batching, but vLLM's CPU build cannot
    # rewind a CPU generator after a chunked prefill ("CPU Generator does not use offset"): on CPU the engine
    # seed fixed at load makes the run reproducible instead.
    per_request = has_cuda()
    where = indices if indices is not None else list(range(len(prompts)))
    params = [
        SamplingParams(
            n=ev.samples,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            max_tokens=max_tokens[k] if max_tokens is not None else s.max_tokens,
            seed=(seeds[k] if seeds is not None else sample_seed(s.seed, i, 0, ev.samples)) if per_request else None,
            stop_token_ids=stop_ids,
        )
        for k, i in enumerate(where)
    ]
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    return [
        [
            {
                "text": o.text,
                "n_tokens": len(o.token_ids),
                "finish_reason": finish_reason(o.finish_reason),
                "seed": _seed_of(s.seed, i, k, o.index, ev.samples, seeds) if per_request else s.seed,
            }
            for o in out.outputs
        ]
        for k, (i, out) in enumerate(zip(where, outputs, strict=True))
    ]


def _seed_of(seed: int, problem: int, k: int, sample: int, n: int, seeds: list[int] | None) -> int:
    return seeds[k] + sample if seeds is not None else sample_seed(seed, problem, sample, n)


def sample_seed(seed: int, problem: int, sample: int, n: int) -> int:
    """The seed of one sample. vLLM seeds the k-th of a request's n samples with the request's seed + k, so
    requests are n seeds apart: with seed + problem, sample k + 1 of one problem and sample k of the next drew the
    same random numbers at every step, and samples of neighbouring problems were not independent."""
    return seed + problem * n + sample


def finish_reason(reason: str | None) -> str:
    """stop or length; a request the engine aborted or failed has no answer to grade, so the stage fails (and is
    retried) rather than scoring it as a model that stopped."""
    if reason in ("stop", "length"):
        return reason
    raise RuntimeError(f"vLLM ended a request with finish_reason={reason!r}: the evaluation is incomplete")


def generation_stop_ids(model_dir: Path, tokenizer: Any) -> list[int]:
    """Every id that ends a sample: the chat turn end and EOS the prompts were built with, and the model's own
    EOS ids. A base model's generation config often names only its pretraining EOS, so without the turn end it
    writes past its answer into turns of its own (whose last box is then graded)."""
    from transformers import GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(str(model_dir)).eos_token_id
    except OSError:  # no generation_config.json
        eos = None
    own = eos if isinstance(eos, list) else [eos]
    return stop_token_ids(tokenizer, [i for i in own if i is not None])


def generate_hf(
    model_dir: Path, tokenizer: Any, prompts: list[list[int]], ev: EvalSpec, dtype: str, stop_ids: list[int]
) -> list[list[dict]]:
    """transformers `generate`, for where vLLM cannot run; one prompt at a time (no padding effects)."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    key = ("hf", str(model_dir), dtype)
    if key not in _ENGINES:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype))
        _ENGINES[key] = model.to("cuda" if has_cuda() else "cpu").eval()
    model = _ENGINES[key]
    gen = GenerationConfig.from_pretrained(str(model_dir))
    eos = stop_ids
    s = ev.sampling
    results = []
    for i, ids in enumerate(prompts):
        torch.manual_seed(s.seed + i)
        inp = torch.tensor([ids], device=model.device)
        sample = s.temperature > 0
        with torch.no_grad():
            out = model.generate(
                inp,
                attention_mask=torch.ones_like(inp),
                max_new_tokens=s.max_tokens,
                do_sample=sample,
                temperature=s.temperature if sample else None,
                top_p=s.top_p if sample else None,
                top_k=s.top_k if sample and s.top_k > 0 else None,
                num_return_sequences=ev.samples,
                eos_token_id=eos,
                pad_token_id=gen.pad_token_id if gen.pad_token_id is not None else eos[0],
            )
        rows = []
        for seq in out[:, len(ids) :].tolist():
            stop = next((k for k, t in enumerate(seq) if t in eos), None)
            tokens = seq[: stop + 1] if stop is not None else seq
            text_ids = tokens[:-1] if stop is not None else tokens
            rows.append(
                {
                    "text": tokenizer.decode(text_ids, skip_special_tokens=True),
                    "n_tokens": len(tokens),
                    "finish_reason": "stop" if stop is not None else "length",
                    "seed": s.seed + i,
                }
            )
        results.append(rows)
    return results
