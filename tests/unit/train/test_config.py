"""The training recipe as data (process layout, DeepSpeed config, Trainer arguments) and the launch commands."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from framework.spec.models import TrainSpec
from framework.train.config import (
    TrainConfigError,
    deepspeed_config,
    layout,
    trainer_arguments,
)
from framework.train.jit_ops import extensions_dir
from framework.train.launch import launch_command, local_command, slurm_command, visible_gpus, worker_env

ARGS = Path("/runs/out/train_args.json")


def test_layout_defaults_and_accumulation() -> None:
    assert layout(TrainSpec(global_batch_size=16), gpus=0).procs_per_node == 2  # CPU-only default
    lay = layout(TrainSpec(global_batch_size=16, micro_batch_size=1, nodes=2), gpus=8)
    assert (lay.procs_per_node, lay.world_size, lay.grad_accum, lay.gpu) == (8, 16, 1, True)
    lay = layout(TrainSpec(global_batch_size=64, micro_batch_size=2, processes=4), gpus=8)
    assert (lay.world_size, lay.grad_accum, lay.global_batch_size) == (4, 8, 64)


def test_layout_rejects_a_batch_the_processes_cannot_split() -> None:
    with pytest.raises(TrainConfigError, match="multiple of 16"):  # processes from the GPUs this machine has
        layout(TrainSpec(global_batch_size=24, micro_batch_size=2), gpus=8)
    with pytest.raises(ValueError, match="x processes \\(8\\) x nodes \\(1\\) = 16"):  # set: the spec says so
        TrainSpec(global_batch_size=24, micro_batch_size=2, processes=8)


def test_zero3_config_states_the_batch_and_gathers_weights_on_save() -> None:
    spec = TrainSpec(global_batch_size=16, micro_batch_size=2, max_grad_norm=0.5)
    cfg = deepspeed_config(spec, layout(spec, gpus=0))
    assert cfg["train_batch_size"] == 16
    assert cfg["train_micro_batch_size_per_gpu"] * cfg["gradient_accumulation_steps"] * 2 == 16
    assert cfg["zero_optimization"] == {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True}
    assert cfg["gradient_clipping"] == 0.5 and cfg["bf16"] == {"enabled": False}  # fp32 on CPU
    assert "optimizer" not in cfg  # the Trainer's AdamW and scheduler


def test_bf16_on_gpu_and_offload() -> None:
    spec = TrainSpec(global_batch_size=8, offload_optimizer=True, offload_params=True, extra_args={"adam_beta2": 0.95})
    cfg = deepspeed_config(spec, layout(spec, gpus=8))
    assert cfg["bf16"] == {"enabled": True}
    assert cfg["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert cfg["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert cfg["optimizer"]["type"] == "AdamW" and cfg["optimizer"]["params"]["weight_decay"] == 0.0
    assert cfg["optimizer"]["params"]["betas"] == [0.9, 0.95]  # the Adam settings the Trainer's AdamW would take
    # DeepSpeed's CPU AdamW would decay the norms and biases the default optimizer exempts.
    with pytest.raises(ValueError, match="decays every parameter"):
        TrainSpec(global_batch_size=8, offload_optimizer=True, weight_decay=0.1)
    stage2 = TrainSpec(global_batch_size=8, zero_stage=2)
    assert deepspeed_config(stage2, layout(stage2, gpus=8))["zero_optimization"] == {"stage": 2}


def test_trainer_arguments_follow_the_spec() -> None:
    spec = TrainSpec(
        epochs=5,
        learning_rate=2e-5,
        lr_scheduler="linear",
        warmup_ratio=0.1,
        weight_decay=0.01,
        global_batch_size=8,
        checkpoint_every_steps=50,
        extra_args={"adam_beta2": 0.95},
    )
    lay = layout(spec, gpus=0)
    args = trainer_arguments(spec, lay, output_dir="/ck", seed=7)
    assert args["num_train_epochs"] == 5 and args["learning_rate"] == 2e-5 and args["lr_scheduler_type"] == "linear"
    assert args["warmup_steps"] == 0.1  # below 1: a ratio in transformers 5
    assert args["gradient_accumulation_steps"] == 4 and args["per_device_train_batch_size"] == 1
    assert args["use_cpu"] is True and args["ddp_backend"] == "gloo"  # or every rank reads the same batches
    assert args["save_strategy"] == "steps" and args["save_steps"] == 50
    assert args["seed"] == args["data_seed"] == 7 and args["train_sampling_strategy"] == "sequential"
    assert args["gradient_checkpointing"] is True and args["adam_beta2"] == 0.95
    assert args["logging_nan_inf_filter"] is False  # else a NaN step is logged as a loss of 0.0
    gpu = trainer_arguments(TrainSpec(), layout(TrainSpec(), gpus=8), output_dir="/ck", seed=0)
    shuffled = TrainSpec(shuffle="every_epoch")
    assert trainer_arguments(shuffled, lay, output_dir="/ck", seed=7)["train_sampling_strategy"] == "random"
    assert gpu["use_cpu"] is False and gpu["bf16"] is True and gpu["save_strategy"] == "no"


def test_trainer_arguments_the_layout_owns_cannot_be_overridden() -> None:
    spec = TrainSpec(extra_args={"gradient_accumulation_steps": 3})
    with pytest.raises(TrainConfigError, match="gradient_accumulation_steps"):
        trainer_arguments(spec, layout(spec, gpus=0), output_dir="/ck", seed=0)


def test_every_trainer_argument_is_a_transformers_field(tmp_path: Path) -> None:
    """Every key is a real TrainingArguments field (a renamed field in a new transformers fails here)."""
    import dataclasses

    from transformers import TrainingArguments

    spec = TrainSpec(checkpoint_every_steps=10, extra_args={"adam_beta2": 0.95})
    args = trainer_arguments(spec, layout(spec, gpus=0), output_dir=str(tmp_path), seed=0)
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    assert set(args) <= fields


# ----------------------------------------------------------------------------------------------- launch
def test_local_command_is_torchrun_behind_the_parent_guard() -> None:
    lay = layout(TrainSpec(global_batch_size=4, processes=2), gpus=0)
    cmd = local_command(lay, ARGS, parent_pid=123)
    assert cmd[:6] == [sys.executable, "-m", "framework.train.launch", "--parent", "123", "--"]
    rest = cmd[6:]
    assert rest[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in rest and rest[rest.index("--nproc_per_node") + 1] == "2"
    assert rest[-3:] == ["-m", "framework.train.worker", str(ARGS)]
    assert launch_command(lay, ARGS, {}, parent_pid=123) == cmd


def test_multi_node_command_under_slurm() -> None:
    lay = layout(TrainSpec(global_batch_size=32, nodes=4, processes=8), gpus=8)
    env = {"SLURM_JOB_ID": "4242", "SLURM_NNODES": "4", "SLURM_JOB_NODELIST": "gpu[01-04]"}
    cmd = slurm_command(lay, ARGS, env, master="gpu01")
    assert cmd[:5] == ["srun", "--nodes=4", "--ntasks=4", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    torchrun = cmd[5:]
    assert torchrun[:3] == [sys.executable, "-m", "torch.distributed.run"]

    def opt(name: str) -> str:
        return torchrun[torchrun.index(name) + 1]

    assert (opt("--nnodes"), opt("--nproc_per_node"), opt("--rdzv_backend")) == ("4", "8", "c10d")
    assert opt("--rdzv_endpoint") == f"gpu01:{29500 + 4242 % 2000}" and opt("--rdzv_id") == "4242"
    assert torchrun[-3:] == ["-m", "framework.train.worker", str(ARGS)]


def test_multi_node_needs_a_large_enough_slurm_allocation() -> None:
    lay = layout(TrainSpec(global_batch_size=32, nodes=2, processes=8), gpus=8)
    with pytest.raises(TrainConfigError, match="needs a Slurm allocation"):
        launch_command(lay, ARGS, {}, parent_pid=1)
    with pytest.raises(TrainConfigError, match="has 1 node"):
        launch_command(lay, ARGS, {"SLURM_JOB_ID": "1", "SLURM_NNODES": "1"}, parent_pid=1)


def test_worker_environment_on_cpu() -> None:
    lay = layout(TrainSpec(global_batch_size=4, processes=2), gpus=0)
    env = worker_env(lay, {"PYTHONPATH": "/elsewhere", "OMP_NUM_THREADS": "3"})
    assert env["DS_ACCELERATOR"] == "cpu" and env["TOKENIZERS_PARALLELISM"] == "false"
    assert env["OMP_NUM_THREADS"] == "3"  # an explicit setting wins
    assert env["PYTHONPATH"].endswith(":/elsewhere")
    gpu = worker_env(layout(TrainSpec(), gpus=8), {})
    assert "DS_ACCELERATOR" not in gpu
    cores = len(os.sched_getaffinity(0))
    assert gpu["OMP_NUM_THREADS"] == str(max(1, cores // 8))  # the CPU optimizer's threads, not torchrun's 1
    assert env["TORCH_EXTENSIONS_DIR"] == str(extensions_dir({}))  # this environment's own op builds
    assert worker_env(lay, {"TORCH_EXTENSIONS_DIR": "/mine"})["TORCH_EXTENSIONS_DIR"] == "/mine"


def test_torchrun_gives_signalled_workers_time_to_checkpoint_unless_told_otherwise() -> None:
    lay = layout(TrainSpec(), gpus=8)
    assert int(worker_env(lay, {})["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"]) >= 300  # not torchrun's 30 s
    assert worker_env(lay, {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "45"})["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "45"


def test_visible_gpus_follow_cuda_visible_devices() -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1,2"}) == 3
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == 0
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == 0


def test_sdpa_order_puts_cudnn_first_on_hopper_only_when_nothing_is_asked() -> None:
    from framework.train.config import sdpa_order

    assert sdpa_order(None, (9, 0)) == ["cudnn", "flash", "efficient", "math"]
    assert sdpa_order(None, (8, 0)) is None  # Ampere: PyTorch's own order (flash first) stands
    assert sdpa_order(None, (10, 0)) is None
    assert sdpa_order(None, None) is None  # no GPU


def test_sdpa_order_keeps_the_asked_order_and_appends_the_rest_so_none_is_disabled() -> None:
    from framework.train.config import sdpa_order

    assert sdpa_order(["flash"], (9, 0)) == ["flash", "efficient", "math", "cudnn"]
    assert sdpa_order(["math", "cudnn", "math"], None) == ["math", "cudnn", "flash", "efficient"]


def test_whole_layer_gathers_need_zero3() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="zero3_gather_per_layer needs zero_stage 3"):
        TrainSpec(zero_stage=2, zero3_gather_per_layer=True)
    assert TrainSpec(zero3_gather_per_layer=True).zero3_gather_per_layer
    with pytest.raises(ValidationError, match="zero3_memory_efficient_linear applies to zero_stage 3 only"):
        TrainSpec(zero_stage=0, zero3_memory_efficient_linear=False)


def test_zero3_linear_choice_reaches_the_deepspeed_config() -> None:
    lay = layout(TrainSpec(global_batch_size=4), gpus=1)
    assert "memory_efficient_linear" not in deepspeed_config(TrainSpec(global_batch_size=4), lay)["zero_optimization"]
    plain = TrainSpec(global_batch_size=4, zero3_memory_efficient_linear=False)
    assert deepspeed_config(plain, lay)["zero_optimization"]["memory_efficient_linear"] is False


def test_whole_layer_gathers_mark_exactly_the_decoder_layers() -> None:
    import torch
    from deepspeed.utils import z3_leaf_module
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from framework.train.worker import gather_layers_whole

    config = Qwen2Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1,
    )  # fmt: skip
    model = Qwen2ForCausalLM(config)
    assert gather_layers_whole(model) == 3
    leaves = [name for name, m in model.named_modules() if z3_leaf_module(m)]
    assert leaves == ["model.layers.0", "model.layers.1", "model.layers.2"]
    with pytest.raises(ValueError, match="no decoder-layer class"):
        gather_layers_whole(torch.nn.Sequential(torch.nn.Linear(2, 2)))
