"""How data-parallel eval ranks split devices and cores, and how a failing rank ends the stage (the rank bodies
here are stand-ins; the real engines run in tests/integration/test_eval.py)."""

from __future__ import annotations

import multiprocessing
import os
import time
from types import SimpleNamespace

import pytest

from framework.eval.parallel import generate_data_parallel, parse_cpu_list, rank_cores, rank_devices


def test_ranks_get_consecutive_groups_of_the_visible_gpus():
    assert rank_devices(2, 2, None, 4) == ["0,1", "2,3"]
    assert rank_devices(2, 1, "4,6,7", 8) == ["4", "6"]  # CUDA_VISIBLE_DEVICES is respected, spares stay idle
    assert rank_devices(1, 8, None, 8) == ["0,1,2,3,4,5,6,7"]


def test_too_few_gpus_is_a_clear_error():
    with pytest.raises(RuntimeError, match="data_parallel_size 4 x tensor_parallel_size 2 needs 8 GPUs; 6 are"):
        rank_devices(4, 2, None, 6)


def test_ranks_get_disjoint_shares_of_the_cores():
    assert rank_cores(2, [0, 1]) == ["0", "1"]
    assert rank_cores(3, [0, 1, 2, 3, 4, 5, 6]) == ["0,1,2", "3,4", "5,6"]
    assert rank_cores(2, [0, 1, 2, 3, 4, 5, 6, 7], tp=2) == ["0,1|2,3", "4,5|6,7"]  # a group per TP worker
    with pytest.raises(RuntimeError, match="needs a core per engine worker"):
        rank_cores(3, [0, 1])


def test_cpu_lists_parse_like_vllm_and_taskset():
    assert parse_cpu_list("0-3,8") == [0, 1, 2, 3, 8]
    assert parse_cpu_list("4|5-6") == [4, 5, 6]


EV = SimpleNamespace(data_parallel_size=2, tensor_parallel_size=1, model_dump=lambda mode: {})


def echo_rank(conn, env, model_dir, prompts, indices, ev_json, dtype, max_len, stop_ids) -> None:
    pid, bind = os.getpid(), env.get("VLLM_CPU_OMP_THREADS_BIND")
    conn.send(
        (
            "ok",
            [
                [{"index": i, "prompt": p, "stops": stop_ids, "pid": pid, "bind": bind}]
                for i, p in zip(indices, prompts)
            ],
        )
    )


def failing_rank(conn, env, model_dir, prompts, indices, ev_json, dtype, max_len, stop_ids) -> None:
    if indices[0] == 1:
        conn.send(("error", "Traceback: ValueError: rank one broke"))
    else:
        time.sleep(600)  # a stuck rank: must be stopped, not waited for


def test_results_come_back_in_benchmark_order_from_separate_processes(monkeypatch):
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    prompts = [[10 + i, i] for i in range(5)]
    out = generate_data_parallel("m", prompts, EV, "float32", 64, [7, 9], rank_main=echo_rank)
    assert [o[0]["index"] for o in out] == [0, 1, 2, 3, 4]
    assert [o[0]["prompt"] for o in out] == prompts  # each rank got its own prompts, with their places
    assert all(o[0]["stops"] == [7, 9] for o in out)
    assert {o[0]["pid"] for o in out[0::2]} != {o[0]["pid"] for o in out[1::2]}
    assert [o[0]["bind"] for o in out[:2]] == ["0,1", "2,3"]


def test_a_failing_rank_fails_the_stage_at_once_and_stops_the_others():
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"eval rank 1 failed:\n.*rank one broke"):
        generate_data_parallel("m", [[1]] * 4, EV, "float32", 64, [7], rank_main=failing_rank)
    assert time.monotonic() - start < 60
    assert multiprocessing.active_children() == []  # the stuck rank was stopped


def test_samples_of_different_problems_never_share_a_seed():
    from framework.engines import sample_seed

    n_problems, n = 60, 64  # vLLM seeds sample k of a request with the request's seed + k
    seeds = [sample_seed(1234, i, k, n) for i in range(n_problems) for k in range(n)]
    assert len(set(seeds)) == n_problems * n
    assert [sample_seed(1234, i, 0, n) + k for i in range(3) for k in range(n)] == seeds[: 3 * n]


def test_an_aborted_or_failed_request_fails_the_stage_rather_than_scoring_as_a_stop():
    from framework.engines import finish_reason

    assert [finish_reason("stop"), finish_reason("length")] == ["stop", "length"]
    for reason in ("abort", "error", None):
        with pytest.raises(RuntimeError, match="evaluation is incomplete"):
            finish_reason(reason)
