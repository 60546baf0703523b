"""vLLM data parallelism for the eval stage: `eval.data_parallel_size` engines side by side over the prompts (with
"auto", as many as the visible GPUs hold: framework.eval.layout).

Each rank is a process of its own with its own engine on its own devices: on GPUs, `tensor_parallel_size` of them
(CUDA_VISIBLE_DEVICES is set before the rank imports torch); on CPU, its share of the cores (vLLM's OpenMP
binding; a binding given in VLLM_CPU_OMP_THREADS_BIND is split between the ranks). Prompts are dealt round-robin,
so long and short problems spread evenly, and the results come back in benchmark order. One rank failing stops
the others and fails the stage with that rank's traceback.

What stays the same as one engine: on GPUs every request is seeded by its place in the benchmark, so the samples do
not depend on how many ranks there are. On CPU vLLM seeds the engine instead (see `framework.engines.vllm_generate`), so a CPU run is
reproducible for a given data_parallel_size, not across sizes (the eval key leaves the size out: a sampled CPU run
is another draw from the same distribution); greedy decoding is identical either way.

The rank processes live for one stage call: an evaluation of several benchmarks of a checkpoint reloads the
engines per benchmark when data_parallel_size > 1.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from framework.eval.layout import resolve_layout
from framework.spec.models import EvalSpec
from framework.sweep.resources import split_evenly


def rank_devices(dp: int, tp: int, visible: str | None, count: int) -> list[str]:
    """CUDA_VISIBLE_DEVICES of each rank: consecutive groups of tp devices among those visible."""
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(count)]
    if len(ids) < dp * tp:
        raise RuntimeError(
            f"eval.data_parallel_size {dp} x tensor_parallel_size {tp} needs {dp * tp} GPUs; "
            f"{len(ids)} are visible here"
        )
    return [",".join(ids[r * tp : (r + 1) * tp]) for r in range(dp)]


def rank_cores(dp: int, cores: list[int], tp: int = 1) -> list[str]:
    """vLLM CPU thread binding of each rank: contiguous, disjoint shares of the cores, each split again into
    one "|"-separated group per tensor-parallel worker."""
    if len(cores) < dp * tp:
        raise RuntimeError(
            f"eval.data_parallel_size {dp} x tensor_parallel_size {tp} needs a core per engine worker; "
            f"{len(cores)} are available here"
        )
    return ["|".join(",".join(map(str, g)) for g in split_evenly(share, tp)) for share in split_evenly(cores, dp)]


def parse_cpu_list(text: str) -> list[int]:
    """ "0-3,8" -> [0, 1, 2, 3, 8] (the format of VLLM_CPU_OMP_THREADS_BIND and taskset)."""
    out: list[int] = []
    for part in text.replace("|", ",").split(","):
        if part.strip():
            lo, _, hi = part.strip().partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def _rank_env(rank: int, devices: list[str] | None, cores: list[str] | None) -> dict[str, str]:
    env = {}
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = devices[rank]
    if cores is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cores[rank]
    return env


def _rank_main(
    conn: Connection,
    env: dict[str, str],
    model_dir: str,
    prompts: list[list[int]],
    indices: list[int],
    ev_json: dict[str, Any],
    dtype: str,
    max_len: int,
    stop_ids: list[int],
) -> None:
    """One rank, in a spawned process, so its device environment is set before torch or vLLM loads. Sends
    ("ok", samples) or ("error", traceback)."""
    try:
        os.environ.update(env)
        # lazy: the rank's device environment, just set, must be in place before anything that may load torch or vLLM
        from framework.engines import vllm_generate

        ev = EvalSpec.model_validate({**ev_json, "data_parallel_size": 1})
        conn.send(("ok", vllm_generate(Path(model_dir), prompts, ev, dtype, max_len, stop_ids, indices=indices)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _stop(proc: Any, conn: Connection, grace_s: float) -> None:
    """Join a rank process, killing it if it has not ended within grace_s."""
    proc.join(grace_s)
    if proc.is_alive():
        proc.kill()
        proc.join()
    conn.close()


def generate_data_parallel(
    model_dir: Path,
    prompts: list[list[int]],
    ev: Any,
    dtype: str,
    max_len: int,
    stop_ids: list[int],
    rank_main: Callable[..., None] | None = None,
) -> list[list[dict]]:
    """Fails as soon as one rank fails (its traceback in the error) and stops the others: a sweep must not wait
    on a shard whose benchmark is already lost. `rank_main` replaces the rank's body (tests)."""
    import torch

    if not (isinstance(ev.tensor_parallel_size, int) and isinstance(ev.data_parallel_size, int)):
        ev = resolve_layout(ev, model_dir, dtype)[0]
    dp = min(ev.data_parallel_size, len(prompts))
    tp = ev.tensor_parallel_size
    if torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices, cores = rank_devices(dp, tp, visible, torch.cuda.device_count()), None
    else:
        given = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto")
        pool = parse_cpu_list(given) if given not in ("auto", "nobind") else sorted(os.sched_getaffinity(0))
        devices, cores = None, rank_cores(dp, pool, tp)
    shards = [list(range(r, len(prompts), dp)) for r in range(dp)]
    where = devices or cores or []
    print(
        f"eval: {dp} vLLM engines side by side, prompts {[len(s) for s in shards]}, "
        f"{'GPUs' if devices else 'cores'} {where}",
        flush=True,
    )
    context = multiprocessing.get_context("spawn")
    ev_json = ev.model_dump(mode="json")
    ranks: dict[Any, tuple[int, Any, Connection]] = {}
    results: list[list[dict] | None] = [None] * len(prompts)
    try:
        for r, shard in enumerate(shards):
            parent, child = context.Pipe(duplex=False)
            args = (child, _rank_env(r, devices, cores), str(model_dir), [prompts[i] for i in shard], shard)
            proc = context.Process(target=rank_main or _rank_main, args=(*args, ev_json, dtype, max_len, stop_ids))
            proc.start()
            child.close()
            ranks[parent] = (r, proc, parent)
        while ranks:
            for conn in wait(list(ranks)):
                r, proc, _ = ranks.pop(conn)  # type: ignore[index]
                try:
                    status, payload = conn.recv()
                except EOFError:
                    status, payload = "died", None
                _stop(proc, conn, grace_s=30)  # it has sent all it will send
                if status == "died":
                    raise RuntimeError(f"eval rank {r} died without a result (exit code {proc.exitcode})")
                if status != "ok":
                    raise RuntimeError(f"eval rank {r} failed:\n{payload}")
                for i, out in zip(shards[r], payload, strict=True):
                    results[i] = out
    finally:
        for _, proc, conn in ranks.values():
            proc.terminate()
            _stop(proc, conn, grace_s=10)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]
