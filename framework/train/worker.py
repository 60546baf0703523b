"""One training process: `python -m framework.train.worker ARGS.json`, started by torchrun on every rank.

Every rank loads the tokenizer and encodes the same rows with `framework.formatting` (deterministic, so the ranks
agree without talking), trains with the HF Trainer on DeepSpeed, and saves one consolidated checkpoint. The
recipe's decisions (Trainer arguments, DeepSpeed config) arrive in the JSON file written by `framework.train.stage`.

Loss: causal-LM models accept `num_items_in_batch`, and with `average_tokens_across_devices` transformers passes
the number of target tokens of the whole optimizer step (all micro-batches, all ranks). Each micro-batch loss is
sum(token losses) / that count, times the world size that DeepSpeed's gradient averaging divides back out, and
DeepSpeed is told not to rescale by the accumulation steps: a step's gradient is that of the mean over every
target token of the step, however the batch is split. The integration tests check it against a direct computation.

Test hooks (environment): ABLATE_TRAIN_DEBUG_DIR makes each rank record which examples it trained on per step,
and rank 0 dump the final in-memory model's logits on the first example; ABLATE_TRAIN_TEST_PAUSE_AFTER_CHECKPOINT
sleeps that many seconds after the first complete checkpoint, so a test can kill the job at a known point;
ABLATE_TRAIN_TEST_CRASH="RANK:STEP" makes that rank exit abruptly at that step's end, as a crashed process would,
and the other ranks block there, as survivors waiting on it in a collective do.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from framework.formatting import encode_rows, stop_token_ids
from framework.model_source import ModelSource, check, load_config, load_model, load_tokenizer
from framework.spec.models import PromptSpec
from framework.store import fsync_tree, write_json_atomic
from framework.train import chunked_loss, jit_ops, lean_activations
from framework.train.config import sdpa_order
from framework.train.launch import die_with_parent
from framework.train.stop_signals import worker_signals

STOP_FILE = "STOP"  # written by the stage when signalled (preemption, time limit): checkpoint, stop
DEBUG_ENV = "ABLATE_TRAIN_DEBUG_DIR"
PAUSE_ENV = "ABLATE_TRAIN_TEST_PAUSE_AFTER_CHECKPOINT"
CRASH_ENV = "ABLATE_TRAIN_TEST_CRASH"
TRAINING = threading.Event()  # set once the Trainer's loop runs: from then on a step end, or the save, will come
COMPLETE = "COMPLETE"  # written into a checkpoint directory once every rank has finished writing it
IGNORE_INDEX = -100


class Collator:
    """Right-pads a micro-batch. Labels were built before padding, so padding never masks EOS."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(ex["input_ids"]) for ex in batch)

        def pad(key: str, value: int) -> torch.Tensor:
            return torch.tensor([ex[key] + [value] * (width - len(ex[key])) for ex in batch], dtype=torch.long)

        return {
            "input_ids": pad("input_ids", self.pad_token_id),
            "attention_mask": pad("attention_mask", 0),
            "labels": pad("labels", IGNORE_INDEX),
            "sample_index": torch.tensor([ex["sample_index"] for ex in batch], dtype=torch.long),
        }


def check_finite(logs: dict[str, Any], step: int) -> None:
    """Fail a training whose loss or gradient norm stopped being a number. The Trainer would log such a step's
    loss as 0.0 (its NaN filter) and save NaN weights, and the run would look like one that fit its data."""
    bad = {
        k: v for k, v in logs.items() if k in ("loss", "grad_norm") and isinstance(v, float) and not math.isfinite(v)
    }
    if bad:
        raise FloatingPointError(
            f"training diverged at step {step}: {', '.join(f'{k} = {v}' for k, v in bad.items())} "
            "(a lower learning_rate, or a check of the data, may help)"
        )


def _trainer_classes() -> tuple[type, type, type]:
    """Trainer and callback subclasses, defined lazily so importing this module stays cheap."""
    import torch.distributed as dist
    from transformers import Trainer, TrainerCallback

    class SFTTrainer(Trainer):
        """Keeps example ids out of the model's inputs and records them per step (for the debug report)."""

        seen: list[list[int]]

        def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            index = inputs.pop("sample_index", None)
            if index is not None and model.training:
                self.seen.append([self.state.global_step, *index.tolist()])
            return super().compute_loss(model, inputs, *args, **kwargs)

        def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
            # A periodic checkpoint resumes from DeepSpeed's own files, written beside it; gathering the full
            # weights for it too would cost a 64 GB gather and write per checkpoint of a 32B model.
            if _internal_call and self.is_deepspeed_enabled:
                return
            super().save_model(output_dir, _internal_call)

    class CheckpointMarker(TrainerCallback):
        """Marks a checkpoint complete once all ranks wrote it, then drops the older ones."""

        def __init__(self) -> None:
            self.paused = False

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            root = Path(args.output_dir)
            current = root / f"checkpoint-{state.global_step}"
            # On disk before COMPLETE vouches for it: after a node crash, a marked checkpoint whose shards were
            # still in a page cache would fail every retry that loads it. One process per node flushes what that
            # node wrote (another node's files are clean in its cache).
            if state.is_local_process_zero and current.is_dir():
                fsync_tree(current)
            if dist.is_initialized():
                dist.barrier()
            if state.is_world_process_zero:
                write_json_atomic(current / COMPLETE, state.global_step)
                for old in root.glob("checkpoint-*"):
                    if old != current and (old / COMPLETE).exists():
                        (old / COMPLETE).unlink()
                        shutil.rmtree(old, ignore_errors=True)
            pause = float(os.environ.get(PAUSE_ENV) or 0)
            if pause and not self.paused:
                self.paused = True
                time.sleep(pause)

    class StopOnRequest(TrainerCallback):
        """At a step end after the stage asked (STOP_FILE), save a checkpoint and stop. The ranks agree on the
        step through a one-element all-reduce: saving is collective under ZeRO-3, so one rank stopping a step
        later than another would hang both. A logged loss or gradient norm that is not finite fails the run."""

        def __init__(self, stop_file: Path) -> None:
            self.stop_file = stop_file
            self.stopped = False

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            TRAINING.set()

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            check_finite(logs or {}, state.global_step)  # every rank logs the same reduced values, so all stop

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            import torch

            crash_rank, _, crash_step = os.environ.get(CRASH_ENV, "").partition(":")
            if crash_step == str(state.global_step):
                if crash_rank == os.environ.get("RANK", "0"):
                    os._exit(3)
                time.sleep(3600)  # as if stuck in a collective with the dead rank (gloo would notice; NCCL need not)
            asked = self.stop_file.exists()
            if dist.is_initialized() and dist.get_world_size() > 1:
                device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
                flag = torch.tensor([int(asked)], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                asked = bool(flag.item())
            if asked:
                self.stopped = True
                control.should_save = True
                control.should_training_stop = True

    return SFTTrainer, CheckpointMarker, StopOnRequest


def encode(args: dict[str, Any], tokenizer: Any) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The data stage's rows, in order, as training examples."""
    with open(args["data"], encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    prompt = PromptSpec.model_validate(args["prompt"])
    examples, counts = encode_rows(tokenizer, rows, prompt, args["max_seq_len"], args["overlong"])
    if not examples:
        raise ValueError(f"no training example fits train.max_seq_len {args['max_seq_len']}: {counts}")
    return examples, counts


def pad_for_ranks(examples: list[dict[str, Any]], multiple: int) -> list[dict[str, Any]]:
    """`examples` filled up to a multiple of (processes × micro-batch) with copies that train nothing.

    The data loader gives every rank the same number of micro-batches; when the examples do not divide evenly it
    fills the last ones by starting over from the first examples, which then count twice per epoch (and more so
    on more GPUs). Copies of the shortest example with every label ignored fill them instead: they add 0 to the
    loss and to its token count, so the step is the token mean over the real examples.
    """
    short = -len(examples) % multiple
    if not short:
        return examples
    base = min(examples, key=lambda ex: len(ex["input_ids"]))
    filler = {**base, "labels": [IGNORE_INDEX] * len(base["labels"]), "sample_index": -1}
    return examples + [dict(filler) for _ in range(short)]


def set_stop_tokens(model: Any, tokenizer: Any) -> None:
    """Generation stops on the chat turn end and EOS, as well as on whatever the base model stopped on."""
    gen = model.generation_config
    base = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    gen.eos_token_id = stop_token_ids(tokenizer, [i for i in base if i is not None])
    if tokenizer.pad_token_id is not None:
        gen.pad_token_id = tokenizer.pad_token_id


def verify_saved(model_dir: Path, model: Any) -> None:
    """Fail on the classic ZeRO-3 save bugs (empty or partial tensors, missing weights) before reporting success.

    Expected shapes come from the in-memory parameters (`ds_shape` is a ZeRO-3 partitioned one's full shape).
    """
    from safetensors import safe_open

    saved: dict[str, tuple[int, ...]] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                saved[name] = tuple(f.get_slice(name).get_shape())
    expected = {n: tuple(getattr(p, "ds_shape", p.shape)) for n, p in model.named_parameters()}
    problems = [f"{n}: empty tensor {s}" for n, s in saved.items() if not s or 0 in s]
    problems += [f"{n}: saved {saved[n]}, expected {s}" for n, s in expected.items() if n in saved and saved[n] != s]
    n_saved = sum(_numel(s) for s in saved.values())
    n_expected = sum(_numel(s) for s in expected.values())
    if n_saved < n_expected:
        problems.append(f"{n_saved} parameters saved, the model has {n_expected}")
    if problems:
        raise RuntimeError(f"the consolidated checkpoint in {model_dir} is incomplete: " + "; ".join(problems[:10]))


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _dump_logits(model: Any, input_ids: list[int], path: Path, rank: int) -> None:
    """Logits of the in-memory final model (every rank runs the forward: ZeRO-3 gathers weights collectively)."""
    import torch

    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([input_ids])).logits.float()
    if rank == 0:
        torch.save({"input_ids": input_ids, "logits": logits}, path)


def adapt_model(model: Any, *, loss_chunk_tokens: int | None, lean: bool, gather_per_layer: bool = False) -> None:
    """The spec's memory and speed options, applied to a built model as the worker does (the GPU benchmark calls
    this too); before the Trainer exists, since DeepSpeed places its ZeRO-3 hooks when the Trainer starts."""
    if loss_chunk_tokens:
        chunked_loss.install(model, loss_chunk_tokens)
    if lean:
        lean_activations.install(model)
    if gather_per_layer:
        gather_layers_whole(model)


def gather_layers_whole(model: Any) -> int:
    """Make each decoder layer a ZeRO-3 leaf module: its weights are gathered (and released) together by one hook
    on the layer, not by hooks on each of its norms and projections, whose Python cost per call, not the GPU, set
    the pace of a long-sequence step. Layers are the classes the model names as never to be split."""
    from deepspeed.utils import set_z3_leaf_modules

    names = set(getattr(model, "_no_split_modules", None) or [])
    classes = list({type(m) for m in model.modules() if type(m).__name__ in names})
    if not classes:
        raise ValueError(
            f"train.zero3_gather_per_layer: {type(model).__name__} names no decoder-layer class "
            "(_no_split_modules); leave zero3_gather_per_layer off for this model"
        )
    return len(set_z3_leaf_modules(model, classes))


def sdpa_context(requested: list[str] | None) -> tuple[Any, list[str] | None]:
    """A context that makes SDPA try its kernels in `train.sdpa_backends`' order (or the default for this GPU),
    and that order; a no-op context and None where PyTorch's own order stands. The setting is process-wide, so
    the backward pass and recomputation under gradient checkpointing (on autograd's threads) follow it too."""
    import torch

    capability = torch.cuda.get_device_capability() if torch.cuda.is_available() else None
    order = sdpa_order(requested, capability)
    if order is None:
        return contextlib.nullcontext(), None
    from torch.nn.attention import SDPBackend, sdpa_kernel

    names = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "math": SDPBackend.MATH,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
    }
    return sdpa_kernel([names[b] for b in order], set_priority=True), order


def train(args: dict[str, Any]) -> None:
    t_start = time.monotonic()
    # Data first: a problem with the tokenizer or the examples surfaces before any distributed setup.
    source = ModelSource(**args["model"])
    tokenizer = load_tokenizer(source)
    check(source, tokenizer, load_config(source), max_seq_len=args["max_seq_len"])
    examples, counts = encode(args, tokenizer)

    import torch
    from transformers import TrainingArguments

    offload = "offload_optimizer" in args["deepspeed"].get("zero_optimization", {})
    jit_ops.prepare(
        jit_ops.needed_ops(gpu=torch.cuda.is_available(), offload_optimizer=offload),
        jit_ops.extensions_dir(os.environ),
    )
    if not torch.cuda.is_available():
        # On CPU transformers sets up gloo without DeepSpeed's communication layer, and ZeRO-3's partitioned
        # model loading would then see a world of one; initializing through DeepSpeed serves both.
        import deepspeed

        deepspeed.init_distributed(dist_backend=args["trainer"]["ddp_backend"])
    targs = TrainingArguments(**args["trainer"], deepspeed=args["deepspeed"])  # before the model: ZeRO-3 init
    rank = targs.process_index
    if targs.world_size != args["world_size"]:
        raise RuntimeError(f"expected {args['world_size']} training processes, transformers sees {targs.world_size}")
    model = load_model(source, dtype=getattr(torch, args["dtype"]), attn_implementation=args["attn_implementation"])
    model.config.use_cache = False
    adapt_model(
        model,
        loss_chunk_tokens=args.get("loss_chunk_tokens"),
        lean=bool(args.get("lean_activations")),
        gather_per_layer=bool(args.get("zero3_gather_per_layer")),
    )
    attention, sdpa_backends = sdpa_context(args.get("sdpa_backends"))
    pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
    sft_trainer, marker, stop_on_request = _trainer_classes()
    stopper = stop_on_request(Path(args["stop_file"]))
    trainer = sft_trainer(
        model=model,
        args=targs,
        train_dataset=pad_for_ranks(examples, targs.world_size * targs.per_device_train_batch_size),
        data_collator=Collator(pad_id),
        callbacks=[marker(), stopper],
    )
    trainer.seen = []

    t_train = time.monotonic()
    with attention:
        output = trainer.train(resume_from_checkpoint=args["resume_from"])
    if stopper.stopped:  # no result: the stage finds the checkpoint just written and reports it
        return
    t_save = time.monotonic()
    model.config.use_cache = True
    set_stop_tokens(model, tokenizer)
    trainer.save_model(args["model_dir"])  # collective under ZeRO-3: every rank gathers its shards
    if rank == 0:
        tokenizer.save_pretrained(args["model_dir"])
        Path(args["model_dir"], "training_args.bin").unlink(missing_ok=True)  # a pickle no loader needs
        verify_saved(Path(args["model_dir"]), model)
    saved = time.monotonic()

    debug = os.environ.get(DEBUG_ENV)
    if debug:
        Path(debug).mkdir(parents=True, exist_ok=True)
        (Path(debug) / f"samples_rank{rank}.json").write_text(json.dumps(trainer.seen))
        _dump_logits(trainer.model, examples[0]["input_ids"], Path(debug) / "logits.pt", rank)
    if rank == 0:
        report = {
            "status": "done",
            "log_history": trainer.state.log_history,
            "global_step": trainer.state.global_step,
            "train_metrics": output.metrics,
            "examples": counts,
            "world_size": targs.world_size,
            "sdpa_backends": sdpa_backends,
            "timings": {"setup_s": t_train - t_start, "train_s": t_save - t_train, "save_s": saved - t_save},
        }
        # The report says "the model is complete": the model must be on disk before it, and it before its name
        # (a node crash would otherwise leave a report vouching for shards lost with a page cache).
        fsync_tree(Path(args["model_dir"]))
        write_json_atomic(Path(args["result"]), report)


def main(argv: list[str]) -> None:
    die_with_parent(signal.SIGKILL)  # torchrun's workers live in sessions of their own: never outlive it
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    args = json.loads(Path(argv[0]).read_text())
    try:
        # Slurm preempts a job by sending TERM to every one of its processes, these included, and torchrun forwards
        # the TERM it gets: with the stage's STOP file that is a checkpointed stop; alone, torchrun ending the job.
        with worker_signals(Path(args["stop_file"]), TRAINING):
            train(args)
    except BaseException:
        # torchrun's own report hides the cause; leave it where the stage can quote it.
        Path(args["errors_dir"], f"rank{os.environ.get('RANK', '0')}.txt").write_text(traceback.format_exc())
        raise
    finally:
        import torch.distributed as dist

        # A clean teardown avoids the rare abort at interpreter exit seen after a finished run.
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
