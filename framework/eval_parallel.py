"""vLLM data parallelism for the eval stage: `eval.data_parallel_size` engines side by side over the prompts.

Each rank is a process of its own with its own engine on its own devices: on GPUs, `tensor_parallel_size` of them
(CUDA_VISIBLE_DEVICES is set before the rank imports torch); on CPU, its share of the cores (vLLM's OpenMP
binding). Prompts are dealt round-robin, so long and short problems spread evenly, and the results come back in
benchmark order.

What stays the same as one engine: on GPUs every request is seeded by its place in the benchmark, so the samples do
not depend on how many ranks there are. On CPU vLLM seeds the engine instead (see `generate_vllm`), so a CPU run is
reproducible for a given data_parallel_size, not across sizes; greedy decoding is identical either way.

The rank processes live for one stage call: an evaluation of several benchmarks of a checkpoint reloads the
engines per benchmark when data_parallel_size > 1.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any


def rank_devices(dp: int, tp: int, visible: str | None, count: int) -> list[str]:
    """CUDA_VISIBLE_DEVICES of each rank: consecutive groups of tp devices among those visible."""
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(count)]
    if len(ids) < dp * tp:
        raise RuntimeError(
            f"eval.data_parallel_size {dp} x tensor_parallel_size {tp} needs {dp * tp} GPUs; "
            f"{len(ids)} are visible here"
        )
    return [",".join(ids[r * tp : (r + 1) * tp]) for r in range(dp)]


def rank_cores(dp: int, cores: list[int]) -> list[str]:
    """vLLM CPU thread binding of each rank: contiguous, disjoint shares of this process's cores."""
    if len(cores) < dp:
        raise RuntimeError(f"eval.data_parallel_size {dp} needs a core per engine; {len(cores)} are available here")
    per, extra = divmod(len(cores), dp)
    out, start = [], 0
    for r in range(dp):
        n = per + (r < extra)
        out.append(",".join(map(str, cores[start : start + n])))
        start += n
    return out


def _rank_env(rank: int, devices: list[str] | None, cores: list[str] | None) -> dict[str, str]:
    env = {}
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = devices[rank]
    if cores is not None and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cores[rank]
    return env


def _run_rank(
    env: dict[str, str],
    model_dir: str,
    prompts: list[list[int]],
    indices: list[int],
    ev_json: dict[str, Any],
    dtype: str,
    max_len: int,
) -> list[list[dict]]:
    """One rank: a fresh process (spawned), so the device environment is set before torch or vLLM loads."""
    os.environ.update(env)
    from framework.evaluate import generate_vllm
    from framework.spec.models import EvalSpec

    ev = EvalSpec.model_validate({**ev_json, "data_parallel_size": 1})
    return generate_vllm(Path(model_dir), prompts, ev, dtype, max_len, indices=indices)


def generate_data_parallel(
    model_dir: Path, prompts: list[list[int]], ev: Any, dtype: str, max_len: int
) -> list[list[dict]]:
    import torch

    dp = min(ev.data_parallel_size, len(prompts))
    if torch.cuda.is_available():
        devices = rank_devices(
            dp, ev.tensor_parallel_size, os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.device_count()
        )
        cores = None
    else:
        devices, cores = None, rank_cores(dp, sorted(os.sched_getaffinity(0)))
    shards = [list(range(r, len(prompts), dp)) for r in range(dp)]
    where = devices or cores or []
    print(
        f"eval: {dp} vLLM engines side by side, prompts {[len(s) for s in shards]}, "
        f"{'GPUs' if devices else 'cores'} {where}",
        flush=True,
    )
    ev_json = ev.model_dump(mode="json")
    context = multiprocessing.get_context("spawn")
    pools = [ProcessPoolExecutor(max_workers=1, mp_context=context) for _ in range(dp)]
    try:
        futures = [
            pool.submit(
                _run_rank,
                _rank_env(r, devices, cores),
                str(model_dir),
                [prompts[i] for i in shard],
                shard,
                ev_json,
                dtype,
                max_len,
            )
            for r, (pool, shard) in enumerate(zip(pools, shards, strict=True))
        ]
        results: list[list[dict] | None] = [None] * len(prompts)
        for shard, future in zip(shards, futures, strict=True):
            for i, out in zip(shard, future.result(), strict=True):
                results[i] = out
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]
