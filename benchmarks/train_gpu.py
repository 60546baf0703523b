"""Training throughput and MFU of the train stage's recipe on one GPU: a random-initialized ≥1B Qwen2 at 16k tokens.

    python benchmarks/train_gpu.py [--size 1.5b] [--seq-len 16384] [--warmup 3] [--steps 5] [--grad-accum 1]
                                   [--no-gradient-checkpointing] [--loss-chunk N] [--lean] [--sdpa auto|cudnn|flash]
                                   [--zero-stage 3] [--gather-per-layer] [--plain-linear] [--size skeleton]
                                   [--profile out.txt] [--peak-tflops 989] [--json out.json]

What runs is the train stage's recipe, not a parallel one: a `TrainSpec` (the spec's own defaults, one process,
one sequence of `--seq-len` tokens per optimizer step) goes through `framework.train.config` (`layout`,
`deepspeed_config` with ZeRO-3, `trainer_arguments`, `attn_implementation`, `use_bf16`), the process environment
through `framework.train.launch.worker_env`, and training through `framework.train.worker`'s Trainer subclass and
collator, built in the worker's order (TrainingArguments with the DeepSpeed config before the model, so ZeRO-3
partitions it as it is built). What differs from `ablate exec train`, which needs a hub or locally built model and
tokenizer, the pool and data stages, and saves a consolidated checkpoint: the model is a `Qwen2Config` built in code
with random weights (`from_config` under ZeRO-3 instead of `from_pretrained`), the examples are random token ids
(every position a target, no padding), there is no tokenizer and no save, the one process is started in-process
(rank 0 of a world of 1) rather than by torchrun, and the step count comes from `--warmup + --steps` through
`train.extra_args` (`max_steps`).

Timing: a Trainer callback synchronizes the GPU at the end of every optimizer step; a step's time is the wall time
between consecutive step ends, so everything the loop does (data, forward, backward, ZeRO-3 gathers, optimizer,
logging) counts. The first `--warmup` steps are not timed.

Model FLOPs per token = 6·N + 6·L·s·d: N parameters in matmuls (all of them with tied embeddings: the LM head is
the embedding matrix; with untied ones the input-embedding lookup is left out), forward + backward (×3 of the
forward's 2 FLOPs per multiply-add); causal attention's QKᵀ and AV over an average context of s/2 (L layers, s
sequence length, d = heads × head_dim). Recomputation under gradient checkpointing is not counted (MFU, not HFU).
MFU = achieved model FLOP/s ÷ the GPU's dense bf16 peak (H100 SXM and H200: 989 TFLOP/s; `--peak-tflops`
overrides; on CPU there is none unless given).

Measured on one H200 (torch 2.11, transformers 5.17, DeepSpeed 0.19.8, SDPA with PyTorch's order, which puts
cuDNN first on Hopper, 1.5b, seq 16384, mean of 8 steps after 3 warm-up): gradient checkpointing off 23.8k
tokens/s, 32.5% MFU, 96 GiB peak allocated; on 19.5k tokens/s, 26.6% MFU, 53 GiB. Off with `--grad-accum 4`:
28.1k tokens/s, 38.3% MFU (about 0.1 s per optimizer step is spread over more tokens).

Measured on one H100 80GB (same versions, 1.5b, seq 16384, gradient checkpointing off unless said; a run's mean of
2 or 3 steps after 1 or 2 warm-up; rows from three machine starts, A to C):

    setting                                                  tokens/s   MFU    peak allocated
    --loss-chunk 4096 without --lean, --grad-accum 8         out of memory (73.5 GiB held, 2.3 more asked)  A
    --loss-chunk 16384 --lean, accum 8                       out of memory (74.0 GiB held, 9.3 more asked)  B
    --loss-chunk 4096 --lean, accum 8                        26.1k     35.6%   62.8 GiB   A
      the same with --sdpa flash                             23.2k     31.7%   62.8 GiB   A
      the same with --grad-accum 16                          26.6k     36.3%   62.8 GiB   A
    + the chunked loss's fused cross-entropy, accum 8        26.3k     35.9%   58.2 GiB   C
      the same with --grad-accum 16                          25.0k     34.1%   58.2 GiB   C
      the same with gradient checkpointing on                17.7k     24.1%   29.6 GiB   C

`--profile` (accum 8) says why the fused cross-entropy saved GPU time but not step time: before it, kernels ran
4.19 s of a 5.16 s step (81% busy; fp32 log-softmax and copies 0.5 s); after, 3.70 s of 6.11 s (61% busy). The GPU
waits on the host, which issues ZeRO-3's per-module gathers and every eager op: at this size on an H100 the step is
host-bound, and the 40% goal is not reached.

That host time can be measured without a GPU: `--size skeleton` keeps 1.5b's 28 layers of modules at tiny widths,
so a step on CPU is mostly Python. Run it with OMP_NUM_THREADS=1: OpenMP's spinning threads on 2 cores otherwise
nearly double a ZeRO-3 step (3.9 s against 2.2 s) and hide what is measured. With `--lean --loss-chunk 4096
--no-gradient-checkpointing --grad-accum 8 --seq-len 32` (a run's median of 5 steps, the median of 3 runs taken
in turn): ZeRO-3 2.39 s a step; with `--gather-per-layer` (each decoder layer gathered by one hook,
`train.zero3_gather_per_layer`) 1.29 s; adding `--plain-linear` (torch's linear instead of DeepSpeed's ZeRO-3
autograd function, `train.zero3_memory_efficient_linear: false`) 1.09 s; ZeRO-0 (no per-module hooks) 0.55 s.
A py-spy profile of the whole-layer run put 11% of the loop in DeepSpeed's linear. `--plain-linear` alone, with
per-module gathers, changes nothing (2.18 s). Their effect on the H100 step is not yet measured;
`benchmarks/train_gpu_compare.py` runs these settings side by side and prints each step as a ratio of ZeRO-3's.
`--device cpu` runs the same path with DeepSpeed's CPU accelerator and gloo (fp32, as the recipe does on CPU), to
check the script on a small model (`--size tiny --seq-len 128`) without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Qwen2.5 shapes (tiny: a quick check on CPU).
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden=64, layers=2, heads=2, kv_heads=1, intermediate=128, vocab=1024, tied=True),
    # 1.5b's modules (28 layers) at tiny widths: a step's time is mostly the host's (hooks, op dispatch).
    "skeleton": dict(hidden=64, layers=28, heads=2, kv_heads=1, intermediate=128, vocab=1024, tied=True),
    "0.5b": dict(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=151936, tied=True),
    "1.5b": dict(hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960, vocab=151936, tied=True),
    "3b": dict(hidden=2048, layers=36, heads=16, kv_heads=2, intermediate=11008, vocab=151936, tied=True),
    "7b": dict(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vocab=152064, tied=False),
}

# Dense bf16 peak (TFLOP/s, no sparsity) by device name; the first match wins, so specific names come first.
PEAK_TFLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200", 989.0),
    ("H100", 989.0),  # SXM ("H100 80GB HBM3")
    ("H800", 989.0),
    ("A100", 312.0),
]

# --sdpa: the train.sdpa_backends value each choice stands for.
SDPA_CHOICES: dict[str, list[str] | None] = {
    "auto": None,
    "cudnn": ["cudnn"],
    "flash": ["flash"],
}

FLOPS_FORMULA = "6*N + 6*L*s*d per token (N: matmul parameters, L: layers, s: sequence length, d: heads*head_dim)"


def peak_tflops(device_name: str) -> float | None:
    for key, peak in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


def model_config(size: str, seq_len: int) -> Any:
    from transformers import Qwen2Config

    s = SIZES[size]
    return Qwen2Config(
        vocab_size=s["vocab"],
        hidden_size=s["hidden"],
        intermediate_size=s["intermediate"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv_heads"],
        max_position_embeddings=max(seq_len, 32768),
        tie_word_embeddings=s["tied"],
        rms_norm_eps=1e-6,
        use_cache=False,
    )


def flops_per_token(matmul_params: int, layers: int, seq_len: int, attn_width: int) -> float:
    return 6.0 * matmul_params + 6.0 * layers * seq_len * attn_width


def parameter_counts(model: Any) -> tuple[int, int]:
    """All parameters (a tied matrix once; `ds_numel` is a ZeRO-3 partitioned one's full size) and those in matmuls."""

    def numel(p: Any) -> int:
        return int(getattr(p, "ds_numel", p.numel()))

    total = sum(numel(p) for p in model.parameters())
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    return total, total if embed is head else total - numel(embed)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flash_usable(heads: int, kv_heads: int, head_dim: int, seq_len: int) -> bool | None:
    """Whether SDPA's flash kernel takes this model's attention (bf16, causal, grouped KV heads)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if not torch.cuda.is_available():
        return None
    q = torch.randn(1, heads, seq_len, head_dim, device="cuda", dtype=torch.bfloat16)
    kv = torch.randn(1, kv_heads, seq_len, head_dim, device="cuda", dtype=torch.bfloat16)
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            torch.nn.functional.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True)
        torch.cuda.synchronize()
        return True
    except RuntimeError:
        return False


def run(opts: argparse.Namespace) -> dict[str, Any]:
    from framework.spec.models import TrainSpec
    from framework.train.config import attn_implementation, deepspeed_config, layout, trainer_arguments, use_bf16
    from framework.train.launch import visible_gpus, worker_env

    gpus = 0 if opts.device == "cpu" else min(1, visible_gpus())
    if opts.device == "cuda" and gpus == 0:
        raise SystemExit("--device cuda: no GPU visible")
    total_steps = opts.warmup + opts.steps
    run_steps = total_steps + (1 if opts.profile else 0)
    train = TrainSpec(
        epochs=1,
        global_batch_size=opts.micro_batch * opts.grad_accum,
        micro_batch_size=opts.micro_batch,
        max_seq_len=opts.seq_len,
        gradient_checkpointing=opts.gradient_checkpointing,
        loss_chunk_tokens=opts.loss_chunk,
        lean_activations=opts.lean,
        attn_implementation=opts.attn,
        sdpa_backends=SDPA_CHOICES[opts.sdpa],
        zero_stage=opts.zero_stage,
        zero3_gather_per_layer=opts.gather_per_layer,
        zero3_memory_efficient_linear=not opts.plain_linear,
        processes=1,
        extra_args={"max_steps": run_steps},
    )
    lay = layout(train, gpus=gpus)
    ds_config = deepspeed_config(train, lay)
    attn = attn_implementation(train, lay)
    dtype_name = "bfloat16" if use_bf16(train, lay) else "float32"

    # One process, rank 0 of 1, with the environment the stage gives its workers (set before torch/DeepSpeed load).
    os.environ.update(worker_env(lay, os.environ))
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))

    import torch
    from transformers import AutoModelForCausalLM, TrainerCallback, TrainingArguments

    from framework.train.worker import Collator, _trainer_classes, adapt_model, sdpa_context

    on_gpu = lay.gpu and torch.cuda.is_available()
    if not on_gpu:
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")  # as the worker does on CPU
    device_name = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    peak = opts.peak_tflops or (peak_tflops(device_name) if on_gpu else None)

    tmp = tempfile.TemporaryDirectory(prefix="bench-train-gpu-")
    targs = TrainingArguments(
        **trainer_arguments(train, lay, output_dir=tmp.name, seed=opts.seed, checkpoint=False), deepspeed=ds_config
    )
    config = model_config(opts.size, opts.seq_len)
    t0 = time.perf_counter()
    torch.manual_seed(opts.seed)  # the same random model every run, so losses compare across settings
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype_name), attn_implementation=attn)
    model.config.use_cache = False
    adapt_model(  # as the worker does
        model,
        loss_chunk_tokens=train.loss_chunk_tokens,
        lean=train.lean_activations,
        gather_per_layer=train.zero3_gather_per_layer,
    )
    attention, sdpa_backends = sdpa_context(train.sdpa_backends)
    build_s = time.perf_counter() - t0
    n_params, n_matmul = parameter_counts(model)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attn_width = config.num_attention_heads * head_dim
    fpt = flops_per_token(n_matmul, config.num_hidden_layers, opts.seq_len, attn_width)

    rng = random.Random(opts.seed)
    n_examples = run_steps * train.global_batch_size
    examples = []
    for i in range(n_examples):
        ids = [rng.randrange(config.vocab_size) for _ in range(opts.seq_len)]
        examples.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": ids, "sample_index": i})

    step_ends: list[float] = []

    profiler = kernel_profiler(on_gpu) if opts.profile else None

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if profiler is not None and state.global_step == total_steps:  # the extra, untimed step
                if on_gpu:
                    torch.cuda.synchronize()
                profiler.start()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if on_gpu:
                torch.cuda.synchronize()
            step_ends.append(time.perf_counter())
            if profiler is not None and state.global_step == total_steps + 1:
                profiler.stop()

    sft_trainer, *_ = _trainer_classes()
    trainer = sft_trainer(
        model=model, args=targs, train_dataset=examples, data_collator=Collator(0), callbacks=[StepTimer()]
    )
    trainer.seen = []
    flash = flash_usable(config.num_attention_heads, config.num_key_value_heads, head_dim, opts.seq_len)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    t_train = time.perf_counter()
    with attention:
        trainer.train()
    train_s = time.perf_counter() - t_train

    if len(step_ends) != run_steps:
        raise RuntimeError(f"expected {run_steps} steps, the Trainer ran {len(step_ends)}")
    # Step i runs from the end of step i-1 (the first from the call to train(), DeepSpeed's setup included).
    starts = [t_train, *step_ends]
    timed = [step_ends[i] - starts[i] for i in range(opts.warmup, total_steps)]
    tokens_per_step = train.global_batch_size * opts.seq_len
    step_s = statistics.mean(timed)
    tokens_per_s = tokens_per_step / step_s
    tflops = fpt * tokens_per_s / 1e12
    gc_on = bool(model.is_gradient_checkpointing)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    profile = None
    if profiler is not None:
        profile = kernel_summary(profiler, step_ends[-1] - step_ends[-2], opts.profile)
    result: dict[str, Any] = {
        "device": device_name,
        "size": opts.size,
        "parameters": n_params,
        "matmul_parameters": n_matmul,
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "attention_width": attn_width,
        "vocab_size": config.vocab_size,
        "tied_embeddings": bool(config.tie_word_embeddings),
        "seq_len": opts.seq_len,
        "micro_batch_size": lay.micro_batch_size,
        "grad_accum": lay.grad_accum,
        "tokens_per_step": tokens_per_step,
        "dtype": dtype_name,
        "attn_implementation": attn,
        "sdpa_flash_usable": flash,
        "zero_stage": ds_config["zero_optimization"]["stage"],
        "gradient_checkpointing": gc_on,
        "loss_chunk_tokens": train.loss_chunk_tokens,
        "lean_activations": train.lean_activations,
        "zero3_gather_per_layer": train.zero3_gather_per_layer,
        "zero3_memory_efficient_linear": train.zero3_memory_efficient_linear,
        "sdpa_backends": sdpa_backends or "pytorch's order",
        "warmup_steps": opts.warmup,
        "timed_steps": opts.steps,
        "step_times_s": [round(t, 4) for t in timed],
        "step_s_mean": step_s,
        "step_s_median": statistics.median(timed),
        "tokens_per_s": tokens_per_s,
        "flops_formula": FLOPS_FORMULA,
        "flops_per_token": fpt,
        "achieved_tflops": tflops,
        "peak_tflops": peak,
        "mfu": tflops / peak if peak else None,
        "peak_memory_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None,
        "peak_memory_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if on_gpu else None,
        "device_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if on_gpu else None,
        "losses": losses,
        "model_build_s": build_s,
        "train_s": train_s,
        "versions": {"torch": torch.__version__, **_versions()},
        "profile": profile,
    }
    tmp.cleanup()
    return result


# Kernel families by name, for the profile's breakdown (first match wins).
KERNEL_FAMILIES = [
    ("attention", ("cudnn_generated", "fmha", "flash", "sdpa")),
    ("matmul", ("gemm", "nvjet", "xmma", "cutlass", "cublas")),
    ("fused (compiled)", ("triton",)),
    ("copy", ("memcpy", "memset", "copy")),
]


def kernel_profiler(on_gpu: bool) -> Any:
    from torch.profiler import ProfilerActivity, profile

    return profile(activities=[ProfilerActivity.CUDA if on_gpu else ProfilerActivity.CPU])


def kernel_summary(profiler: Any, step_s: float, path: Path) -> dict[str, Any]:
    """Where one optimizer step's GPU time went: kernel time by family, busy fraction, the top kernels."""
    kernels: dict[str, float] = {}
    for e in profiler.events():
        if str(e.device_type).endswith("CUDA"):
            kernels[e.name] = kernels.get(e.name, 0.0) + e.time_range.elapsed_us() / 1e6
    families: dict[str, float] = {}
    for name, seconds in kernels.items():
        family = next((f for f, keys in KERNEL_FAMILIES if any(k in name.lower() for k in keys)), "other")
        families[family] = families.get(family, 0.0) + seconds
    busy = sum(kernels.values())
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:40]
    lines = [f"profiled step {step_s:.4f} s, kernels {busy:.4f} s ({busy / step_s:.1%} busy)"]
    lines += [f"  {f:18s} {t:8.4f} s {t / step_s:6.1%}" for f, t in sorted(families.items(), key=lambda kv: -kv[1])]
    lines += [f"{t:8.4f} s  {n[:150]}" for n, t in top]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[: 2 + len(families) + 15]), flush=True)
    return {"step_s": step_s, "kernel_s": busy, "families_s": families}


def _versions() -> dict[str, str]:
    import deepspeed
    import transformers

    return {"transformers": transformers.__version__, "deepspeed": deepspeed.__version__}


def report(r: dict[str, Any]) -> str:
    def fmt(x: float | None, spec: str) -> str:
        return "n/a" if x is None else format(x, spec)

    attn_term = 6.0 * r["layers"] * r["seq_len"] * r["attention_width"]
    lines = [
        f"device                {r['device']}",
        f"model                 Qwen2 {r['size']} (random init): {r['parameters']:,} parameters, "
        f"{r['layers']} layers, hidden {r['hidden_size']}, vocab {r['vocab_size']}, "
        f"tied embeddings {r['tied_embeddings']}",
        f"recipe                ZeRO-{r['zero_stage']}"
        + (" gathering whole layers" if r.get("zero3_gather_per_layer") else "")
        + (" with torch's linear" if r.get("zero3_memory_efficient_linear") is False else "")
        + f", {r['dtype']}, attention {r['attn_implementation']} "
        f"(SDPA flash kernel usable: {r['sdpa_flash_usable']}), gradient checkpointing "
        f"{'ON' if r['gradient_checkpointing'] else 'OFF'}, loss "
        + (f"chunked by {r['loss_chunk_tokens']} tokens" if r.get("loss_chunk_tokens") else "the model's own")
        + f", lean activations {'ON' if r['lean_activations'] else 'OFF'}, SDPA order {r['sdpa_backends']}",
        f"tokens/step           {r['tokens_per_step']} (seq {r['seq_len']} x micro-batch {r['micro_batch_size']} "
        f"x accumulation {r['grad_accum']})",
        f"step times (s)        {r['step_times_s']} after {r['warmup_steps']} warm-up steps; "
        f"mean {r['step_s_mean']:.4f}, median {r['step_s_median']:.4f}",
        f"tokens/s              {r['tokens_per_s']:.0f}",
        f"FLOPs/token           {r['flops_per_token']:.4e} = 6*N {6.0 * r['matmul_parameters']:.4e} "
        f"+ 6*L*s*d {attn_term:.4e}   [{r['flops_formula']}; N = {r['matmul_parameters']}]",
        f"achieved              {r['achieved_tflops']:.1f} TFLOP/s (model FLOPs, recomputation not counted)",
        f"MFU                   {fmt(r['mfu'], '.1%')} of {fmt(r['peak_tflops'], '.0f')} TFLOP/s dense bf16 peak",
        f"peak memory           allocated {fmt(r['peak_memory_allocated_gib'], '.1f')} GiB, reserved "
        f"{fmt(r['peak_memory_reserved_gib'], '.1f')} GiB of {fmt(r['device_memory_gib'], '.1f')} GiB",
        f"losses                {[round(x, 4) for x in r['losses']]}",
        f"timings               model build {r['model_build_s']:.1f} s, trainer.train {r['train_s']:.1f} s",
        f"versions              {r['versions']}",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="1.5b", help="Qwen2.5 model shape (default 1.5b)")
    p.add_argument("--seq-len", type=int, default=16384, help="tokens per sequence (default 16384)")
    p.add_argument("--steps", type=int, default=5, help="timed optimizer steps (default 5)")
    p.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps first (default 3)")
    p.add_argument("--micro-batch", type=int, default=1, help="sequences per forward pass (default 1)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    p.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="recompute activations in backward (the spec's default: on)",
    )
    p.add_argument(
        "--loss-chunk",
        type=int,
        default=None,
        help="train.loss_chunk_tokens: LM head + loss over this many tokens at a time (default: the model's loss)",
    )
    p.add_argument(
        "--zero-stage", type=int, choices=[0, 1, 2, 3], default=3, help="train.zero_stage (default 3, the spec's)"
    )
    p.add_argument(
        "--gather-per-layer",
        action="store_true",
        help="train.zero3_gather_per_layer: ZeRO-3 gathers each decoder layer as one unit (default off)",
    )
    p.add_argument(
        "--plain-linear",
        action="store_true",
        help="train.zero3_memory_efficient_linear false: torch's linear instead of DeepSpeed's ZeRO-3 one",
    )
    p.add_argument(
        "--lean",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="train.lean_activations: RMSNorm and SwiGLU keep only their inputs, fused on GPU (default off)",
    )
    p.add_argument("--attn", choices=["auto", "sdpa", "eager", "flash_attention_2"], default="auto")
    p.add_argument(
        "--sdpa",
        choices=sorted(SDPA_CHOICES),
        default="auto",
        help="train.sdpa_backends: auto = the stage's default (cuDNN first on Hopper), or this kernel first",
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak for MFU (default: by GPU name)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto", help="cpu: check the script")
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="run one more step under the profiler and write its kernel breakdown here (not in the timings)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    opts = p.parse_args(argv)
    if opts.steps < 1 or opts.warmup < 0 or opts.seq_len < 16:
        p.error("need --steps >= 1, --warmup >= 0, --seq-len >= 16")
    return opts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    opts = parse_args(argv)
    try:
        result = run(opts)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    print("\n" + report(result), flush=True)
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
