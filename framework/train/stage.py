"""The `train` stage: full fine-tuning of the base model on one cell's training set, with DeepSpeed ZeRO.

Read top to bottom, `run` is the recipe:
  1. resolve the model and check it (chat template, context length) before anything is launched;
  2. lay out the processes and derive gradient accumulation from the global batch;
  3. write the worker's arguments: data, prompt format, Trainer arguments, DeepSpeed config;
  4. pick the checkpoint to resume from, when a previous attempt left one;
  5. launch torchrun (srun + torchrun across Slurm nodes), logging to `train.log`; USR1 or TERM to this process
     (a Slurm time limit or preemption) makes the workers checkpoint and stop, and the stage exit 75 to resume;
  6. keep the consolidated checkpoint, drop the resumable ZeRO state;
  7. write `metrics.json` and copy its key numbers into the manifest.

The workers (`framework.train.worker`) load the tokenizer, encode the examples with `framework.formatting` (the
formatter evaluation uses), train, and save. This process never imports torch or transformers: on a small
machine their import costs more CPU than a short training run, and it would not overlap with anything.

Outputs in the stage directory: `model/` (a Hugging Face checkpoint, with tokenizer and stop tokens, that
transformers and vLLM load), `metrics.json`, `train.log`, `train_args.json`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from framework import model_source as models
from framework.artifacts import TRAIN_FILE
from framework.errors import RetryLater, UserError
from framework.spec.models import TrainSpec
from framework.store import write_json_atomic
from framework.train.config import (
    Layout,
    attn_implementation,
    deepspeed_config,
    layout,
    trainer_arguments,
    use_bf16,
)
from framework.train.launch import (
    launch_command,
    log_tail,
    run_logged,
    visible_gpus,
    worker_env,
)
from framework.train.stop_signals import stop_requests
from framework.train.worker import COMPLETE, STOP_FILE

if TYPE_CHECKING:
    from framework.sweep.execute import StageContext


class TrainError(UserError):
    """Training failed or produced an unusable checkpoint; the message carries the cause from the log."""


class TrainingStopped(RetryLater):
    """The stage was signalled (time limit, preemption) and stopped its workers at a checkpoint; run again, it
    resumes from there (`ablate exec` exits 75, and a Slurm job requeues itself)."""


def run(ctx: StageContext) -> None:
    t0 = time.monotonic()
    spec, (train, searched) = ctx.spec, searched_recipe(ctx)
    out = Path(ctx.out)

    # 1. The model, checked before any process starts.
    spec_dir = ctx.loaded.path.resolve().parent if ctx.loaded.path else None
    source = models.resolve(spec.model, model_dir=next(iter(ctx.inputs("model")), None), spec_dir=spec_dir)
    models.preflight(source, max_seq_len=train.max_seq_len)
    source = models.fetch(source)  # a hub model is downloaded here, once, not by every rank
    data_file = ctx.inputs("data")[0] / TRAIN_FILE
    if not data_file.is_file() or data_file.stat().st_size == 0:
        raise TrainError(f"the data stage left no training examples: {data_file} is missing or empty")

    # 2. Processes and batching.
    lay = layout(train, gpus=visible_gpus())

    # 3. Everything the workers need, in one file kept next to the output.
    dtype = spec.model.dtype if spec.model.dtype != "auto" else "bfloat16" if use_bf16(train, lay) else "float32"
    checkpoints = out / "checkpoints"
    worker_args: dict[str, Any] = {
        "model": asdict(source),
        "dtype": dtype,
        "attn_implementation": attn_implementation(train, lay),
        "data": str(data_file),
        "prompt": spec.prompt.model_dump(mode="json"),
        "max_seq_len": train.max_seq_len,
        "overlong": train.overlong,
        "loss_chunk_tokens": train.loss_chunk_tokens,
        "lean_activations": train.lean_activations,
        "zero3_gather_per_layer": train.zero3_gather_per_layer,
        "sdpa_backends": train.sdpa_backends,
        "model_dir": str(out / "model"),
        "trainer": trainer_arguments(train, lay, output_dir=str(checkpoints), seed=int(ctx.job.config["seed"])),
        "deepspeed": deepspeed_config(train, lay),
        "world_size": lay.world_size,
        "result": str(out / "worker_result.json"),
        "errors_dir": str(out / "errors"),
        "stop_file": str(out / STOP_FILE),
    }

    # 4. A previous attempt that trained and saved but was killed before publication (a time limit during the
    #    final fsync of 64 GB): its worker report and verified checkpoint stand; training again would waste it.
    result_file = Path(worker_args["result"])
    finished = read_result(result_file) if ctx.build.resumed and (out / "model" / "config.json").is_file() else None
    if finished is not None:
        result, rc, resume_from = finished, 0, None
        t_launch = t_done = time.monotonic()
    else:
        result, rc, resume_from, t_launch = _train(out, lay, worker_args, checkpoints, resumed=ctx.build.resumed)
        t_done = time.monotonic()

    # 6. The consolidated checkpoint stays (the worker verified it); the ZeRO shards go.
    shutil.rmtree(checkpoints, ignore_errors=True)
    shutil.rmtree(out / "errors", ignore_errors=True)  # the worker report stays until publication (step 4)

    # 7. Metrics and manifest.
    timings = {
        "prepare_s": t_launch - t0,
        "launch_s": t_done - t_launch,
        **result["timings"],
        "total_s": time.monotonic() - t0,
    }
    metrics = summarize(result, lay, train.epochs, resume_from, timings, rc)
    if searched is not None:  # which parameters this checkpoint was trained with, for the log and the report
        metrics["search"] = searched
    write_json_atomic(out / "metrics.json", metrics)
    ctx.build.manifest["train"] = {
        k: metrics[k] for k in ("final_loss", "steps", "examples", "tokens", "layout", "resumed_from_step")
    } | {k: metrics["timings"][k] for k in ("train_s", "total_s")}
    if searched is not None:
        ctx.build.manifest["search"] = searched


def searched_recipe(ctx: StageContext) -> tuple[TrainSpec, dict[str, Any] | None]:
    """The spec's train settings with a search's parameters applied: a trial's own (`params`), or those its
    study chose (`recipe`: the select job's best.json), validated as the spec's own would be. Also what to record
    of them: the parameters, and for a recipe the study, its best trial and the select job."""
    config = ctx.job.config
    if "params" in config:
        params, record = config["params"], {"params": config["params"]}
    elif "recipe" in config:
        best = json.loads((ctx.input_dir(f"search/{config['recipe']}") / "best.json").read_text(encoding="utf-8"))
        params = best["params"]
        record = {"params": params, "study": best["study"], "trial": best["trial"], "select": config["recipe"]}
    else:
        return ctx.spec.train, None
    try:
        train = TrainSpec.model_validate({**ctx.spec.train.model_dump(exclude_unset=True), **params})
    except ValidationError as e:
        raise TrainError(f"train: the search's parameters {params} are not valid train settings: {e}") from None
    return train, record


# ---------------------------------------------------------------------------------------------- helpers
def _train(
    out: Path, lay: Layout, worker_args: dict[str, Any], checkpoints: Path, *, resumed: bool
) -> tuple[dict[str, Any], int, Path | None, float]:
    """Steps 4-5 of `run`: resume point, a clean slate, launch and wait. Returns the worker's report, the exit
    code, the checkpoint resumed from and when the workers were launched."""
    # Resume from the newest complete checkpoint of a previous attempt (same process layout), if any.
    shards = _shard_layout(lay, worker_args)
    resume_from = resume_point(checkpoints, shards) if resumed else None
    if resume_from is None:
        shutil.rmtree(checkpoints, ignore_errors=True)
    checkpoints.mkdir(exist_ok=True)
    write_json_atomic(checkpoints / "layout.json", shards)
    worker_args["resume_from"] = str(resume_from) if resume_from else None
    for stale in (out / "model", out / "errors"):
        shutil.rmtree(stale, ignore_errors=True)
    (out / "errors").mkdir()
    Path(worker_args["result"]).unlink(missing_ok=True)
    (out / STOP_FILE).unlink(missing_ok=True)
    args_file = out / "train_args.json"
    write_json_atomic(args_file, worker_args)

    # Launch and wait. The worker's report, not the exit code, says whether it finished: a rare abort at
    # interpreter exit after a complete save must not discard the run.
    log = out / "train.log"
    cmd = launch_command(lay, args_file, os.environ, parent_pid=os.getpid())
    t_launch = time.monotonic()
    with stop_requests(out / STOP_FILE) as signals:
        rc = run_logged(cmd, worker_env(lay, os.environ), log)
    result = read_result(Path(worker_args["result"]))
    if result is None and signals:
        newest = resume_point(checkpoints, shards)
        where = (
            f"stopped at step {newest.name.rsplit('-', 1)[1]} with a complete checkpoint ({newest}); running the "
            "stage again resumes from it"
            if newest
            else "no complete checkpoint was written; running the stage again starts over"
        )
        raise TrainingStopped(f"training interrupted by {signals[0]}: {where}")
    if result is None:
        raise TrainError(f"training failed (exit code {rc}): {worker_error(out / 'errors', log)}")
    return result, rc, resume_from, t_launch


def _shard_layout(lay: Layout, worker_args: dict[str, Any]) -> dict[str, Any]:
    """What a ZeRO checkpoint's files depend on: the ranks and the ZeRO settings (stage, offload). Neither is
    part of the key, so an attempt may differ from the one that checkpointed."""
    shards = {"world_size": lay.world_size, "zero": worker_args["deepspeed"].get("zero_optimization")}
    return json.loads(json.dumps(shards))  # as read back from layout.json


def resume_point(checkpoints: Path, shards: dict[str, Any]) -> Path | None:
    """The newest complete checkpoint written with this shard layout; None (start over) after a change of
    ranks or ZeRO settings, which would make every retry fail to load it."""
    try:
        previous = json.loads((checkpoints / "layout.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    # A layout.json from before the ZeRO settings were recorded: its ranks are all it can vouch for.
    compared = [k for k in shards if k in previous or k == "world_size"]
    if any(previous.get(k) != shards[k] for k in compared):
        return None
    done = [p for p in checkpoints.glob("checkpoint-*") if (p / COMPLETE).is_file()]
    return max(done, key=lambda p: int(p.name.rsplit("-", 1)[1]), default=None)


def read_result(path: Path) -> dict[str, Any] | None:
    """The worker's report; present only once training and saving finished."""
    try:
        result = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return result if result.get("status") == "done" else None


def worker_error(errors: Path, log: Path) -> str:
    """The first failing rank's traceback (when a worker could leave one), then the last lines of the log."""
    reports = sorted(errors.glob("rank*.txt"), key=lambda p: p.stat().st_mtime)
    cause = ""
    if reports:
        cause = f"{reports[0].stem}: " + "\n".join(reports[0].read_text().splitlines()[-25:]) + "\n"
    return f"{cause}--- last lines of {log} ---\n{log_tail(log, 15)}"


def summarize(
    result: dict[str, Any],
    lay: Layout,
    epochs: float,
    resume_from: Path | None,
    timings: dict[str, float],
    exit_code: int,
) -> dict[str, Any]:
    """metrics.json: loss curve, example and token counts, process layout, timings."""
    curve = [
        {"step": e["step"], "loss": e["loss"], "lr": e.get("learning_rate"), "grad_norm": e.get("grad_norm")}
        for e in result["log_history"]
        if "loss" in e
    ]
    counts = result["examples"]
    return {
        "loss_curve": curve,
        "final_loss": curve[-1]["loss"] if curve else None,
        # The mean step loss over the whole run: the Trainer's own train_loss covers only the steps since a resume.
        "train_loss": sum(e["loss"] for e in curve) / len(curve) if curve else None,
        "steps": result["global_step"],
        "examples": counts,
        "tokens": {
            "target_per_epoch": counts["target_tokens"],
            "total_per_epoch": counts["total_tokens"],
            "target_trained": round(counts["target_tokens"] * epochs),
            "total_trained": round(counts["total_tokens"] * epochs),
        },
        "layout": lay.to_dict(),
        "sdpa_backends": result.get("sdpa_backends"),
        "resumed_from_step": int(resume_from.name.rsplit("-", 1)[1]) if resume_from else None,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "worker_exit_code": exit_code,
    }
