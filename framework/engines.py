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
    """The model's tokenizer (a `ModelSource`), loaded once per process like its engine, and shared by checkpoints
    whose files (`checkpoint_signature`) are the same: a sweep's trained cells all carry their base's tokenizer."""
    where = Path(str(source.location))
    signature = checkpoint_signature(where) if where.is_dir() else None
    key = ("tok", signature or str(source.location), source.chat_template)
    _ENGINES[key] = _ENGINES.get(key) or model_source.load_tokenizer(source)
    return _ENGINES[key]


def _drop_engine(key: tuple[str, ...]) -> None:
    """Free an engine before loading its replacement: two copies of a 32B model do not fit one GPU."""
    del _ENGINES[key]
    _SIGNATURES.pop(key, None)
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


# Fields of a checkpoint's JSON files that only record where, or by what version, a file was written.
_PROVENANCE_FIELDS = ("_name_or_path", "name_or_path", "transformers_version", "is_local", "local_files_only")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def checkpoint_signature(model_dir: Path) -> str | None:
    """A digest of every file of a checkpoint directory but its weights (config, tokenizer, generation config,
    templates, custom code: whatever an engine reads when it is built), JSON files without their provenance
    fields. Two checkpoints with one signature can share an engine: the next one's weights are loaded into it. None
    where that cannot be judged: not a local model directory, or weights in a format other than safetensors."""
    import hashlib
    import json

    if not (model_dir / "config.json").is_file():
        return None
    files = sorted(
        f
        for f in model_dir.rglob("*")
        if f.is_file() and not any(p.startswith(".") for p in f.relative_to(model_dir).parts)
    )
    if sorted({f.suffix for f in files if f.suffix in _WEIGHT_SUFFIXES}) != [".safetensors"]:
        return None
    digest = hashlib.sha256()
    for path in (f for f in files if f.suffix != ".safetensors"):
        data = path.read_bytes()
        if path.suffix == ".json":
            try:
                parsed = json.loads(data)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                kept = {k: v for k, v in parsed.items() if k not in _PROVENANCE_FIELDS}
                data = json.dumps(kept, sort_keys=True).encode()
        name = path.relative_to(model_dir).as_posix()
        digest.update(f"\0{name}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()


class WeightReload:
    """Mixed into vLLM's worker (`worker_extension_cls`), in whichever process the worker runs: loads another
    checkpoint's weights into the live engine, with the same check a fresh load makes (vLLM's in-place reload only
    logs the parameters a checkpoint lacked, which would leave the previous model's weights in place)."""

    def load_checkpoint(self, path: str) -> None:
        # lazy: vLLM's layers, in the worker's process, which has imported vLLM already
        from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

        runner: Any = self.model_runner  # type: ignore[attr-defined]
        model = runner.get_model()
        expected = {name for name, _ in model.named_parameters()}
        loaded: set[str] = set()
        original = model.load_weights

        def recording(weights: Any) -> Any:
            got = original(weights)
            loaded.update(got or ())
            return got

        model.load_weights = recording
        try:
            self.reload_weights(weights_path=path)  # type: ignore[attr-defined]
        finally:
            del model.load_weights
        if expected - loaded:
            missing = sorted(expected - loaded)
            raise RuntimeError(f"{path} lacks {len(missing)} of the engine's weights: {', '.join(missing[:5])}")
        # The CPU build prepacks each linear layer's GEMM when it loads; a tied lm_head is not in the checkpoint, so
        # the reload never repacks it and it would keep the previous model's embedding. Repack it from the (shared,
        # already reloaded) weight; on GPUs this is a no-op.
        for module in model.modules():
            if isinstance(module, ParallelLMHead):
                module.quant_method.process_weights_after_loading(module)

    def reseed(self, seed: int) -> None:
        """Put the worker's random state where a new engine built with `seed` starts (vLLM seeds it again after its
        warm-up), so a reused engine samples as a fresh one would."""
        # lazy: vLLM's own seeding, in the worker's process
        from vllm.utils.torch_utils import set_random_seed

        set_random_seed(seed)


_SIGNATURES: dict[tuple[str, ...], str | None] = {}  # engine key -> checkpoint_signature of what it was built from
_NEW_JOB = [True]  # the next generation starts a job: its random state is a fresh engine's (start_job)


def start_job() -> None:
    """Mark the start of an evaluation job. On CPU, where vLLM seeds the engine rather than each request, the job's
    first generation then starts from the random state a new engine seeded for it would have, so a job samples the
    same whether its process built the engine or reused one, whatever ran in the process before it."""
    _NEW_JOB[0] = True


def vllm_engine(model_dir: Path, ev: Any, dtype: str, max_len: int) -> Any:
    """This process's vLLM engine for the checkpoint: the one already loaded; else, when `ev.reuse_engine` and a
    live engine was built from a checkpoint of the same files, long enough context and the same parallelism, that
    engine with these weights loaded into it (milliseconds instead of seconds, minutes for a large model); else a new
    one, built after every other engine is freed (two large models do not fit one GPU)."""
    key = ("vllm", str(model_dir), dtype)
    if key in _ENGINES and _ENGINES[key].llm_engine.model_config.max_model_len < max_len:
        _drop_engine(key)  # loaded for a benchmark with shorter prompts or answers: too short for this one
    if key in _ENGINES:
        return _ENGINES[key]
    signature = checkpoint_signature(model_dir)
    live = [k for k in _ENGINES if k[0] == "vllm"]
    for other in live:
        if getattr(ev, "reuse_engine", True) and _reusable(other, signature, ev, dtype, max_len):
            llm = _ENGINES[other]
            try:
                llm.collective_rpc("load_checkpoint", args=(str(model_dir),))
            except Exception as e:  # half-loaded weights are no model: build a fresh engine instead
                print(f"eval: could not load {model_dir} into the running engine ({e}); building a new one")
                break
            if not llm.reset_prefix_cache():  # cached KV blocks were computed by the previous weights
                print(f"eval: the engine's prefix cache could not be reset; building a new one for {model_dir}")
                break
            _ENGINES[key] = _ENGINES.pop(other)
            _SIGNATURES[key] = _SIGNATURES.pop(other)
            _NEW_JOB[0] = True  # its next generation starts where a new engine's would
            print(f"eval: loaded {model_dir} into the engine built for {other[1]}", flush=True)
            return _ENGINES[key]
    for other in live:
        _drop_engine(other)
    _ENGINES[key] = _build_vllm(model_dir, ev, dtype, max_len)
    _SIGNATURES[key] = signature
    return _ENGINES[key]


def _reusable(key: tuple[str, ...], signature: str | None, ev: Any, dtype: str, max_len: int) -> bool:
    """Whether the engine under `key` can take a checkpoint with this signature: same files, dtype and tensor
    parallelism, and a context at least as long."""
    config = _ENGINES[key].llm_engine.vllm_config
    return (
        signature is not None
        and _SIGNATURES.get(key) == signature
        and key[2] == dtype
        and config.model_config.max_model_len >= max_len
        and config.parallel_config.tensor_parallel_size == ev.tensor_parallel_size
    )


def _build_vllm(model_dir: Path, ev: Any, dtype: str, max_len: int) -> Any:
    from vllm import LLM

    if not isinstance(ev.tensor_parallel_size, int):  # "auto" needs the GPUs and the checkpoint: the caller's job
        raise ValueError("a vLLM engine takes a resolved tensor_parallel_size (framework.eval.layout), not 'auto'")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    extra: dict[str, Any] = {}
    if not has_cuda() and ev.tensor_parallel_size == 1:
        # On CPU the engine core and its worker each start in a process of their own, re-importing torch and
        # vLLM: about 30 of the 50 seconds an evaluation of a tiny model takes. In this process they cost none.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        extra["distributed_executor_backend"] = "uni"
    return LLM(
        model=str(model_dir),
        dtype=dtype,
        max_model_len=max_len,
        seed=ev.sampling.seed,
        tensor_parallel_size=ev.tensor_parallel_size,
        enforce_eager=not has_cuda(),
        worker_extension_cls=f"{__name__}.{WeightReload.__qualname__}",
        **extra,
    )


@dataclass(frozen=True)
class Decoding:
    """What the engines read of a spec besides the prompts; an EvalSpec has these attributes too."""

    sampling: Any  # temperature, top_p, top_k, max_tokens, seed
    samples: int
    tensor_parallel_size: int = 1  # an EvalSpec's may say "auto": the eval stage resolves it before an engine loads


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
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    llm = vllm_engine(model_dir, ev, dtype, max_len)
    s = ev.sampling
    # Per-request seeds make each problem's samples independent of batching, but vLLM's CPU build cannot
    # rewind a CPU generator after a chunked prefill ("CPU Generator does not use offset"): on CPU the engine
    # seed fixed at load makes the run reproducible instead.
    per_request = has_cuda()
    if not per_request and _NEW_JOB[0]:  # the engine's own random state: where a fresh engine's would start
        llm.collective_rpc("reseed", args=(s.seed,))
    _NEW_JOB[0] = False
    where = indices if indices is not None else list(range(len(prompts)))
    params = [
        SamplingParams(
            n=ev.samples,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            # At most what the context asked for leaves: an engine reused from a longer one would go on past it.
            max_tokens=min(max_tokens[k] if max_tokens is not None else s.max_tokens, max_len - len(prompts[k])),
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
        for other in [k for k in _ENGINES if k[0] == "hf"]:  # one model at a time: a process may evaluate many
            _drop_engine(other)
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
