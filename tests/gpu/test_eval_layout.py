"""The eval stage's layout from the GPUs CUDA shows: their count and memory, and a model that fits one of them
replicated on all."""

from __future__ import annotations

import pytest
import torch

from framework.eval.layout import resolve_layout, visible_gpus
from framework.locations import toy_base_path
from framework.spec.models import EvalSpec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_the_visible_gpus_and_their_memory_decide_the_layout() -> None:
    count, memory = visible_gpus()
    assert count == torch.cuda.device_count() >= 1
    assert memory is not None and 8 < memory < 300  # GiB of a real GPU, not bytes or MiB
    ev, chosen = resolve_layout(EvalSpec(), toy_base_path(), "bfloat16")
    assert (ev.tensor_parallel_size, ev.data_parallel_size) == (chosen.tp, chosen.dp) == (1, count)
    assert f"{memory:.0f} GiB" in chosen.why
