"""How data-parallel eval ranks split the devices and cores (pure logic; the engines run in test_eval.py)."""

from __future__ import annotations

import pytest

from framework.eval_parallel import rank_cores, rank_devices


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
    with pytest.raises(RuntimeError, match="needs a core per engine"):
        rank_cores(3, [0, 1])
