"""The training recipe as plain data: process layout, DeepSpeed config and Trainer arguments from a TrainSpec.

Pure functions, so the exact configuration a job will run with is unit-tested and written next to its output.
Batch sizes are stated explicitly in the DeepSpeed config (never "auto"): transformers then cross-checks them
against its own view of the world size and fails loudly if the processes do not see each other, instead of
silently training every rank on the same batches.
"""

from __future__ import annotations

from typing import Any

from framework.spec.models import TrainSpec
from framework.sweep.resources import Layout, TrainConfigError, layout, processes_per_node

__all__ = ["Layout", "TrainConfigError", "layout", "processes_per_node"]


def use_bf16(train: TrainSpec, lay: Layout) -> bool:
    return train.precision == "bf16" or (train.precision == "auto" and lay.gpu)


def deepspeed_config(train: TrainSpec, lay: Layout) -> dict[str, Any]:
    """The DeepSpeed config: ZeRO stage, offload, precision, clipping, and the batch arithmetic spelled out."""
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.zero_stage == 3:
        # Gather the full weights on save: the consolidated checkpoint is a plain HF directory.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
        if not train.zero3_memory_efficient_linear:
            zero["memory_efficient_linear"] = False  # DeepSpeed's default is its own linear
    if train.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": lay.gpu}
    if train.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": lay.gpu}
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": lay.micro_batch_size,
        "gradient_accumulation_steps": lay.grad_accum,
        "train_batch_size": lay.global_batch_size,
        "gradient_clipping": train.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": use_bf16(train, lay)},
        "fp16": {"enabled": False},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if train.offload_optimizer:
        # ZeRO-Offload steps the optimizer on the CPU and insists on DeepSpeed's own CPU Adam.
        extra = train.extra_args  # the Adam settings the default optimizer would have taken from them
        cfg["optimizer"] = {
            "type": "AdamW",
            "params": {
                "lr": train.learning_rate,
                "betas": [extra.get("adam_beta1", 0.9), extra.get("adam_beta2", 0.999)],
                "eps": extra.get("adam_epsilon", 1e-8),
                "weight_decay": train.weight_decay,
            },
        }
    return cfg


def attn_implementation(train: TrainSpec, lay: Layout) -> str:
    """Flash attention when asked, or on GPU when installed; else PyTorch's SDPA."""
    if train.attn_implementation != "auto":
        return train.attn_implementation
    if lay.gpu:
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
    return "sdpa"


SDPA_BACKENDS = ("flash", "efficient", "math", "cudnn")  # PyTorch's own priority order


def sdpa_order(requested: list[str] | None, capability: tuple[int, int] | None) -> list[str] | None:
    """The SDPA kernels in the order to try them, all of them, or None for PyTorch's own order.

    cuDNN goes first on Hopper when nothing is asked. On an H100 (torch 2.11, cuDNN 9.19), at a 1.5B Qwen2's
    attention shape (16k tokens, causal, 12 query and 2 KV heads of 128), its forward + backward ran at 404
    TFLOP/s against flash's 215 (benchmarks/sdpa_gpu.py), and a whole training step was 11% faster
    (benchmarks/train_gpu.py). PyTorch 2.11 itself puts cuDNN first there; older releases put flash first, so the
    order is set rather than left to the release. Shapes cuDNN cannot take fall through to the next kernel.
    """
    if requested is None:
        if capability is None or capability[0] != 9:
            return None
        requested = ["cudnn"]
    order = list(dict.fromkeys(requested))
    return order + [b for b in SDPA_BACKENDS if b not in order]


def trainer_arguments(
    train: TrainSpec,
    lay: Layout,
    *,
    output_dir: str,
    seed: int,
    checkpoint: bool = True,
) -> dict[str, Any]:
    """Keyword arguments for `transformers.TrainingArguments` (without the DeepSpeed config).

    `use_cpu` goes with the DeepSpeed config on CPU-only machines: without it transformers assumes one process
    and ZeRO shards the weights while every rank reads the same batches. `shuffle: once` reads the examples in
    the data stage's order (it shuffled them with the cell's seed); `every_epoch` has accelerate's seedable
    sampler permute them again each epoch (seed + epoch, so a resumed run reads the same order). `warmup_steps`
    below 1 is a ratio in transformers 5.
    """
    every = train.checkpoint_every_steps if checkpoint else None
    args: dict[str, Any] = {
        "output_dir": output_dir,
        "per_device_train_batch_size": lay.micro_batch_size,
        "gradient_accumulation_steps": lay.grad_accum,
        "num_train_epochs": train.epochs,
        "learning_rate": train.learning_rate,
        "lr_scheduler_type": train.lr_scheduler,
        "warmup_steps": train.warmup_ratio,
        "weight_decay": train.weight_decay,
        "max_grad_norm": train.max_grad_norm,
        "bf16": use_bf16(train, lay),
        "gradient_checkpointing": train.gradient_checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False} if train.gradient_checkpointing else None,
        "logging_strategy": "steps",
        "logging_steps": 1,
        "logging_nan_inf_filter": False,  # a NaN step must show as NaN (and fail the run), not as a loss of 0.0
        "save_strategy": "steps" if every else "no",
        "save_steps": every or 500,
        "save_total_limit": None,  # the worker prunes, only after a newer checkpoint is known complete
        "seed": seed,
        "data_seed": seed,
        "train_sampling_strategy": "random" if train.shuffle == "every_epoch" else "sequential",
        "average_tokens_across_devices": True,
        "remove_unused_columns": False,
        "dataloader_num_workers": 0,
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": not lay.gpu,
        "ddp_backend": "nccl" if lay.gpu else "gloo",
    }
    reserved = {"output_dir", "deepspeed", "per_device_train_batch_size", "gradient_accumulation_steps"}
    clash = sorted(reserved & set(train.extra_args))
    if clash:
        raise TrainConfigError(f"train.extra_args may not set {clash}: they follow from the spec's batch and layout")
    args.update(train.extra_args)
    return args
