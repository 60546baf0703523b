"""How one evaluation spreads over GPUs: tensor parallel (TP, the GPUs of one vLLM engine) x data parallel (DP,
engines side by side over the prompts).

Decoding long answers is bound by memory bandwidth, and a TP engine pays an all-reduce per layer and per token
that replicas do not: for a model that fits in fewer GPUs than the job has, DP replicas of the narrowest engine
that holds it give more tokens per second. So `eval.tensor_parallel_size: auto` is the fewest GPUs that hold the
weights with room left for the KV cache (and that split the attention heads), and `data_parallel_size: auto`
fills the job's GPUs with replicas of it. A size fixed in the spec wins and the other is derived from it.

Pure functions of a model's size (framework.sweep.model_size) and the GPUs: the eval stage feeds them the visible
GPUs and the checkpoint's files (framework.eval.layout), `ablate plan` the launcher's GPUs and GPU kind
(framework.sweep.cost), and the local launcher asks `eval_gpus` how many GPUs to give an evaluation.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framework.sweep.model_size import ModelSize, model_size

if TYPE_CHECKING:
    from framework.spec.ablation import AblationSpec

# vLLM's default gpu_memory_utilization: the share of each GPU its engine claims, for weights, activations and the
# KV cache together.
VLLM_MEMORY_UTILIZATION = 0.9
# The weights may take at most this share of what vLLM claims; the rest (at least 36% of the card) holds the KV
# cache and the activations. One 32k-token sample of a 32B model (64 layers, 8 KV heads of 128) keeps 8 GiB of KV
# cache: with less room than that, a GPU decodes only a few long samples at once and is bound by reading its
# weights for every one of them, which is what a wider engine or more replicas would have avoided.
WEIGHT_SHARE = 0.6
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
GIB = 2**30


@dataclass(frozen=True)
class EvalLayout:
    """tp GPUs per engine, dp engines; gpus: the GPUs they use (0 on CPU); why: one line for logs and `plan`."""

    tp: int
    dp: int
    gpus: int
    why: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------ choosing
def valid_tp(tp: int, heads: int | None, kv_heads: int | None) -> bool:
    """vLLM shards attention heads over the TP ranks: TP must divide the query heads, and divide the KV heads or be
    a multiple of them (then each KV head is replicated)."""
    if heads is not None and heads % tp:
        return False
    return kv_heads is None or kv_heads % tp == 0 or tp % kv_heads == 0


def tp_choices(gpus: int, heads: int | None, kv_heads: int | None) -> list[int]:
    """1, 2, 4, 8, ... up to `gpus`, those that split the heads (1 always does)."""
    sizes = [2**k for k in range(int(math.log2(max(gpus, 1))) + 1)]
    return [t for t in sizes if valid_tp(t, heads, kv_heads)]


def weight_gib(size: ModelSize, dtype: str) -> float:
    return size.params * DTYPE_BYTES.get(dtype, 2) / GIB


def weight_budget_gib(gpu_memory_gib: float) -> float:
    """The weights one GPU may hold and still leave vLLM room for the KV cache."""
    return gpu_memory_gib * VLLM_MEMORY_UTILIZATION * WEIGHT_SHARE


def pick_layout(
    size: ModelSize | None,
    *,
    gpus: int,
    gpu_memory_gib: float | None,
    dtype: str = "bfloat16",
    tp: int | str = "auto",
    dp: int | str = "auto",
) -> EvalLayout:
    """The layout of one evaluation on `gpus` GPUs of `gpu_memory_gib` each (0 GPUs: CPU). `tp`/`dp`: the spec's
    sizes, an int or "auto"; a fixed one wins and the other is derived from it and the GPUs."""
    fixed_tp = tp if isinstance(tp, int) else None
    fixed_dp = dp if isinstance(dp, int) else None
    if fixed_tp and fixed_dp:
        return EvalLayout(fixed_tp, fixed_dp, fixed_tp * fixed_dp if gpus > 0 else 0, "both sizes fixed in the spec")
    if gpus <= 0:
        why = "on CPU" if not (fixed_tp or fixed_dp) else "on CPU, as the spec fixes"
        return EvalLayout(fixed_tp or 1, fixed_dp or 1, 0, why)
    if fixed_tp:
        d = max(1, gpus // fixed_tp)
        return EvalLayout(fixed_tp, d, fixed_tp * d, f"tensor_parallel_size {tp} fixed: {d} engine(s) on {gpus} GPU(s)")
    heads, kv = (size.heads, size.kv_heads) if size is not None else (None, None)
    per_engine = max(1, gpus // fixed_dp) if fixed_dp else gpus
    choices = tp_choices(per_engine, heads, kv)
    if fixed_dp:  # the engines share the job's GPUs: each takes its share
        t = choices[-1]
        why = f"data_parallel_size {dp} fixed: {per_engine} GPU(s) per engine of {gpus}, TP {t} splits the heads"
        return EvalLayout(t, fixed_dp, t * fixed_dp, why + _fit_note(size, t, gpu_memory_gib, dtype))
    if size is None or gpu_memory_gib is None:
        t = choices[0]
        unknown = "model size" if size is None else "GPU memory"
        return EvalLayout(t, gpus // t, t * (gpus // t), f"{unknown} unknown: TP {t}, {gpus // t} engine(s)")
    need, budget = weight_gib(size, dtype), weight_budget_gib(gpu_memory_gib)
    fits = [t for t in choices if need / t <= budget]
    t = fits[0] if fits else choices[-1]
    d = gpus // t
    heads_note = f", {heads} heads / {kv} KV heads" if heads is not None else ""
    weights = f"{need:.1f} GiB of {dtype} weights ({size.source}{heads_note})"
    if fits:
        why = (
            f"{weights} fit {t} x {gpu_memory_gib:.0f} GiB GPU(s) at {need / t:.1f} GiB each, under "
            f"{WEIGHT_SHARE:.0%} of the {gpu_memory_gib * VLLM_MEMORY_UTILIZATION:.0f} GiB vLLM claims (the rest "
            f"is KV cache); {d} engine(s) on {gpus} GPU(s)"
        )
    else:
        why = (
            f"{weights} do not fit the widest engine here, {t} x {gpu_memory_gib:.0f} GiB GPU(s), with room for the "
            f"KV cache ({need / t:.1f} GiB each, over {budget:.1f}): give the evaluation more GPUs"
        )
    return EvalLayout(t, d, t * d, why)


def _fit_note(size: ModelSize | None, tp: int, gpu_memory_gib: float | None, dtype: str) -> str:
    if size is None or gpu_memory_gib is None:
        return ""
    each, budget = weight_gib(size, dtype) / tp, weight_budget_gib(gpu_memory_gib)
    return (
        "" if each <= budget else f" ({each:.1f} GiB of weights per GPU, over the {budget:.1f} GiB that leave KV room)"
    )


def fixed_gpus(tp: int | str, dp: int | str) -> int:
    """The GPUs an evaluation needs at least, from the spec alone: the fixed sizes' product (auto counts 1)."""
    return (tp if isinstance(tp, int) else 1) * (dp if isinstance(dp, int) else 1)


# ------------------------------------------------------------------------------------------ the sweep's models
def evaluated_sizes(spec: AblationSpec, spec_dir: Path | None = None) -> list[tuple[str, ModelSize, str]]:
    """(name, size, dtype on a GPU) of each distinct model the sweep evaluates: the base model (its fine-tuned
    checkpoints have its size) and each baseline's own."""
    models = [spec.model] if spec.trains else []
    models += [b.model or spec.model for b in spec.baselines]
    out: dict[str, tuple[str, ModelSize, str]] = {}
    for m in models:
        name = m.name_or_path or "the tiny model"
        if name not in out:
            out[name] = (name, model_size(m, spec_dir), "bfloat16" if m.dtype == "auto" else m.dtype)
    return list(out.values())


# ------------------------------------------------------------------------------------------ local machine
def local_gpu_memory_gib() -> float | None:
    """The smallest GPU's memory in GiB as nvidia-smi reports it (without importing torch), None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=30, check=False,
        ).stdout  # fmt: skip
        values = [float(x) for x in out.split() if x.strip()]
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    return min(values) / 1024 if values else None  # MiB


GpuId = int | str  # an index, or an opaque CUDA_VISIBLE_DEVICES entry such as GPU-<uuid> or MIG-<uuid>
_NVIDIA_SMI_GPU = re.compile(r"^GPU (\d+):")
_CUDA_DEVICE = re.compile(r"^(\d+|GPU-\S+|MIG-\S+)$")  # what CUDA accepts in CUDA_VISIBLE_DEVICES


def visible_gpu_ids() -> list[GpuId]:
    """The GPUs visible here: CUDA_VISIBLE_DEVICES, else what nvidia-smi lists (without importing torch).

    CUDA_VISIBLE_DEVICES entries are kept as given (GPU-/MIG- UUIDs too: they are passed on verbatim) up to the
    first one CUDA would not take (negative, or a word such as NoDevFiles, none or all, which mean no GPU), where
    CUDA stops enumerating. nvidia-smi's own index is read from each `GPU n:` line, since MIG devices are listed on
    indented lines between them."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids: list[GpuId] = []
        for entry in (x.strip() for x in env.split(",")):
            if not _CUDA_DEVICE.match(entry):
                break
            ids.append(int(entry) if entry.isdigit() else entry)
        return ids
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [int(m.group(1)) for line in out.splitlines() if (m := _NVIDIA_SMI_GPU.match(line))]


def local_gpu_count() -> int:
    return len(visible_gpu_ids())


def eval_gpus(spec: AblationSpec, available: int, memory_gib: float | None = None, spec_dir: Path | None = None) -> int:
    """The GPUs one eval job takes on a local machine with `available` GPUs. With data_parallel_size auto, one
    engine's (the largest TP any evaluated model needs): when several checkpoints are ready, evaluations side by
    side, each with its own engine, beat one data-parallel job. `memory_gib`: per GPU; default: what nvidia-smi
    reports; `spec_dir`: where a relative model path is found."""
    if available <= 0:
        return 0
    tp, dp = spec.eval.tensor_parallel_size, spec.eval.data_parallel_size
    if isinstance(tp, int):
        return min(available, tp * (dp if isinstance(dp, int) else 1))
    memory = memory_gib if memory_gib is not None else local_gpu_memory_gib()
    per_engine = max(1, available // dp) if isinstance(dp, int) else available
    widest = max(
        (
            pick_layout(s, gpus=per_engine, gpu_memory_gib=memory, dtype=d).tp
            for _, s, d in evaluated_sizes(spec, spec_dir)
        ),
        default=1,
    )
    return min(available, widest * (dp if isinstance(dp, int) else 1))
