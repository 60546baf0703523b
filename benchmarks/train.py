"""Wall-clock cost of the train stage against a bare HF Trainer + DeepSpeed script (goal: <= 1.05x).

    .venv/bin/python benchmarks/train.py [--epochs 10] [--repeats 2] [--processes 2]

Both sides train the same tiny Qwen2 on the same 20 toy traces with the same Trainer arguments and DeepSpeed
config (ZeRO-3, 2 CPU processes by default), each as a fresh command: `ablate exec train`'s code path (a process
that runs `framework.sweep.execute.execute`, which launches torchrun) versus `torchrun bare.py`. What the stage adds:
its guard process, store bookkeeping, prompt formatting, the saved tokenizer and stop tokens, and the checkpoint
verification. Runs alternate (bare, stage, bare, ...) and the medians are compared, since a shared machine's
load drifts; CPU seconds (all descendant processes) are printed too, as the steadier measure there. Prints each
run, the medians, the ratios and both final losses (equal: same data, tokens and recipe).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GOAL = 1.05

BARE = """
import json, sys, torch, deepspeed
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

cfg = json.load(open(sys.argv[1]))
deepspeed.init_distributed(dist_backend="gloo")  # on CPU, or ZeRO-3 loading sees a world of one
args = TrainingArguments(**cfg["trainer"], deepspeed=cfg["deepspeed"])
tok = AutoTokenizer.from_pretrained(cfg["model"])

def encode(row):
    messages = [{"role": "user", "content": row["problem"]}]
    prompt = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False)["input_ids"]
    target = tok(row["trace"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return {"input_ids": prompt + target, "labels": [-100] * len(prompt) + target,
            "attention_mask": [1] * (len(prompt) + len(target))}

data = [encode(json.loads(line)) for line in open(cfg["data"])]
model = AutoModelForCausalLM.from_pretrained(cfg["model"], dtype=torch.float32)
trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorForSeq2Seq(tok, padding=True))
trainer.train()
trainer.save_model(cfg["out"])
if args.process_index == 0:
    print("FINAL_LOSS", [e["loss"] for e in trainer.state.log_history if "loss" in e][-1])
torch.distributed.destroy_process_group()
"""

STAGE = """
import json, sys
from framework.sweep.execute import execute
from framework.sweep.plan import build_plan
from framework.spec import LoadedSpec, spec_from_dict
from framework.spec.yamlsrc import Source
from framework.store import Store
data = json.loads(sys.argv[2])
spec = spec_from_dict(data)
plan = build_plan(spec)
execute(LoadedSpec(spec, None, Source(data=data)), plan, Store(sys.argv[1]), "train", plan.by_stage("train")[0].key)
"""


def spec_data(epochs: float, processes: int) -> dict[str, Any]:
    return {
        "name": "bench-train",
        "model": {"tiny": {"hidden_size": 128, "num_layers": 4, "num_heads": 2, "intermediate_size": 512}},
        "pool": [{"preset": "toy"}],
        "prompt": {"user_template": "{problem}"},
        "train": {
            "epochs": epochs,
            "learning_rate": 5.0e-4,
            "warmup_ratio": 0.1,
            "global_batch_size": 4,
            "max_seq_len": 512,
            "gradient_checkpointing": False,
            "processes": processes,
        },
    }


def training_rows() -> list[dict[str, Any]]:
    from framework.toy import make_world, pool_rows

    return [r for r in pool_rows(make_world(0)) if r["source"] == "long_cot"][:20]


def publish_inputs(root: Path, data: dict[str, Any], model_dir: Path, rows_file: Path) -> None:
    """The model and data stages' outputs, as those stages would leave them."""
    from framework.spec import spec_from_dict
    from framework.store import Store
    from framework.sweep.plan import build_plan

    plan, store = build_plan(spec_from_dict(data)), Store(root)
    with store.build("model", plan.by_stage("model")[0].key) as b:
        if b is not None:
            shutil.copytree(model_dir, b.dir, dirs_exist_ok=True)
    with store.build("data", plan.by_stage("data")[0].key) as b:
        if b is not None:
            shutil.copy(rows_file, b.dir / "train.jsonl")


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall-clock and CPU seconds (all descendants) of a command; CPU time is steadier on a shared machine."""
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{argv[:4]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return elapsed, cpu, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()

    from framework.model.stage import build, toy_corpus
    from framework.spec.models import TinyModelSpec, TrainSpec
    from framework.train.config import deepspeed_config, layout, trainer_arguments
    from framework.train.launch import worker_env

    data = spec_data(args.epochs, args.processes)
    train = TrainSpec.model_validate(data["train"])
    lay = layout(train, gpus=0)
    env = worker_env(lay, {**os.environ, "HF_HUB_OFFLINE": "1"})
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        model_dir, rows_file = work / "tiny", work / "train.jsonl"
        build(TinyModelSpec.model_validate(data["model"]["tiny"]), model_dir, toy_corpus())
        rows_file.write_text("".join(json.dumps(r) + "\n" for r in training_rows()))
        (work / "bare.py").write_text(BARE)

        times: dict[str, list[float]] = {"bare": [], "stage": []}
        cpu: dict[str, list[float]] = {"bare": [], "stage": []}
        losses: dict[str, float] = {}
        for i in range(args.repeats):
            bare_cfg = {
                "model": str(model_dir),
                "data": str(rows_file),
                "out": str(work / f"bare-{i}"),
                "trainer": trainer_arguments(train, lay, output_dir=str(work / f"bare-ck-{i}"), seed=0),
                "deepspeed": deepspeed_config(train, lay),
            }
            (work / "bare.json").write_text(json.dumps(bare_cfg))
            torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
            elapsed, seconds, out = timed(
                [*torchrun, str(lay.procs_per_node), str(work / "bare.py"), str(work / "bare.json")], env
            )
            times["bare"].append(elapsed)
            cpu["bare"].append(seconds)
            losses["bare"] = float(next(line for line in out.splitlines() if line.startswith("FINAL_LOSS")).split()[1])

            root = work / f"store-{i}"
            publish_inputs(root, data, model_dir, rows_file)
            elapsed, seconds, _ = timed([sys.executable, "-c", STAGE, str(root), json.dumps(data)], env)
            times["stage"].append(elapsed)
            cpu["stage"].append(seconds)
            metrics = json.loads(next((root / "train").glob("*/metrics.json")).read_text())
            losses["stage"] = metrics["final_loss"]
            print(
                f"run {i}: bare {times['bare'][-1]:.1f} s ({cpu['bare'][-1]:.1f} CPU-s)   "
                f"stage {times['stage'][-1]:.1f} s ({cpu['stage'][-1]:.1f} CPU-s)",
                flush=True,
            )

    bare, stage = statistics.median(times["bare"]), statistics.median(times["stage"])
    bare_cpu, stage_cpu = statistics.median(cpu["bare"]), statistics.median(cpu["stage"])
    print(f"steps: {metrics['steps']}  processes: {lay.world_size}  epochs: {args.epochs}")
    print(f"median wall-clock: bare {bare:.1f} s   stage {stage:.1f} s")
    print(f"ratio stage / bare: {stage / bare:.3f}  (goal <= {GOAL})")
    print(f"median CPU time: bare {bare_cpu:.1f} s   stage {stage_cpu:.1f} s   ratio {stage_cpu / bare_cpu:.3f}")
    print(f"final loss: bare {losses['bare']:.5f}   stage {losses['stage']:.5f}")


if __name__ == "__main__":
    main()
