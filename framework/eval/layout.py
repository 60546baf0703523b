"""The eval stage's layout on the GPUs it sees: `eval.tensor_parallel_size` x `data_parallel_size`, with "auto"
resolved from the visible GPUs (count and memory) and the checkpoint's own files (its size:
`framework.sweep.model_size.size_from_dir`). The choice itself is `framework.sweep.eval_layout.pick_layout`, which
`ablate plan` and the local launcher use too.
"""

from __future__ import annotations

from pathlib import Path

from framework.spec.models import EvalSpec
from framework.sweep.eval_layout import GIB, EvalLayout, pick_layout
from framework.sweep.model_size import size_from_dir


def visible_gpus() -> tuple[int, float | None]:
    """(GPUs this process sees, the smallest one's memory in GiB); (0, None) without CUDA."""
    import torch  # lazy: importing framework must not import torch

    if not torch.cuda.is_available():
        return 0, None
    count = torch.cuda.device_count()
    memory = min(torch.cuda.get_device_properties(i).total_memory for i in range(count)) / GIB if count else None
    return count, memory


def resolve_layout(
    ev: EvalSpec, model_dir: Path, dtype: str, gpus: tuple[int, float | None] | None = None
) -> tuple[EvalSpec, EvalLayout]:
    """`ev` with both sizes as ints, and the layout with its reason. `gpus`: (count, GiB each); default: those
    visible here."""
    count, memory = gpus if gpus is not None else visible_gpus()
    tp, dp = ev.tensor_parallel_size, ev.data_parallel_size
    size = None if isinstance(tp, int) else size_from_dir(Path(model_dir))
    chosen = pick_layout(size, gpus=count, gpu_memory_gib=memory, dtype=dtype, tp=tp, dp=dp)
    return ev.model_copy(update={"tensor_parallel_size": chosen.tp, "data_parallel_size": chosen.dp}), chosen
