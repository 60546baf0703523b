"""Robustness study of the toy world: does the trace-style ordering survive new pretraining and SFT seeds?

For each pretraining seed, the base is fine-tuned on the same 20 training problems in each arm's style (long_cot,
long_cot_wrong, terse, direct) with several SFT seeds, then every fine-tuned model answers the held-out problems
greedily. One result record per (split, settings, pretraining seed, arm, SFT seed) is cached in the output
directory, so an interrupted study resumes and a report can be rebuilt without retraining. Fine-tuning mirrors the
project's train stage (chat template, loss on the assistant turn and its `<|im_end|>` only, AdamW without weight
decay, gradient clipping at 1, cosine schedule with warm-up), so the study measures the recipe the pipeline runs.

    python -m framework.toy.study --out DIR --split dev --pretrain-seeds 0 --sft-seeds 0   # choose settings
    python -m framework.toy.study --out DIR --split test --report framework/toy/assets/STUDY.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from framework.formatting import encode_example, prompt_ids
from framework.grading.extraction import extract_answer
from framework.spec.models import PromptSpec
from framework.toy.pretrain import pretrain
from framework.toy.world import STYLES, Problem, World, make_world, pool_rows, split_problems

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

ARMS = STYLES
N_TRAIN = 20
SPLIT_SIZES = {"dev": 100, "test": 200}
USER_TEMPLATE = "{problem}"  # the prompt the toy ablations use (ablations/quickstart.yaml)
MAX_SEQ_LEN = 512
EVAL_BATCH = 100
SAMPLES_KEPT = 200  # generations stored per run, for diagnosis


@dataclass(frozen=True)
class SFTSettings:
    epochs: int = 80
    lr: float = 5e-4
    batch: int = 4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    max_new_tokens: int = 256
    threads: int = 1

    @property
    def tag(self) -> str:
        return f"e{self.epochs}-lr{self.lr:g}-b{self.batch}"


def training_rows(world: World, arm: str, n_train: int = N_TRAIN) -> list[dict[str, Any]]:
    """The arm's traces of the first `n_train` training problems: the same problems for every arm and seed."""
    return pool_rows(world, n_problems=n_train, styles=(arm,))


def encode(tokenizer: PreTrainedTokenizerFast, rows: Sequence[dict[str, Any]]) -> list[dict[str, list[int]]]:
    """Chat-formatted examples exactly as the train stage builds them (prompt masked, trace + `<|im_end|>` targets)."""
    prompt = PromptSpec(user_template=USER_TEMPLATE)
    examples = [encode_example(tokenizer, r["problem"], r["trace"], prompt, MAX_SEQ_LEN, "truncate") for r in rows]
    return [e for e in examples if e is not None]


def _collate(examples: Sequence[dict[str, list[int]]], pad: int, device: str = "cpu") -> dict[str, Any]:
    import torch

    width = max(len(e["input_ids"]) for e in examples)
    fill = [width - len(e["input_ids"]) for e in examples]
    return {
        "input_ids": torch.tensor([e["input_ids"] + [pad] * n for e, n in zip(examples, fill)], device=device),
        "labels": torch.tensor([e["labels"] + [-100] * n for e, n in zip(examples, fill)], device=device),
        "attention_mask": torch.tensor([e["attention_mask"] + [0] * n for e, n in zip(examples, fill)], device=device),
    }


def finetune(
    base_dir: Path,
    examples: Sequence[dict[str, list[int]]],
    settings: SFTSettings,
    seed: int,
    pad: int,
    device: str = "cpu",
) -> Qwen2ForCausalLM:
    """Full fine-tuning of the base on `examples`; the seed orders the examples of each epoch."""
    import torch
    from transformers import Qwen2ForCausalLM

    torch.set_num_threads(settings.threads)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32, attn_implementation="sdpa")
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    per_epoch = math.ceil(len(examples) / settings.batch)
    total = per_epoch * settings.epochs
    warmup = math.ceil(settings.warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    rng = random.Random(seed)
    step = 0
    for _ in range(settings.epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order), settings.batch):
            for group in optimizer.param_groups:
                group["lr"] = settings.lr * factor(step)
            batch = _collate([examples[i] for i in order[start : start + settings.batch]], pad, device)
            model(**batch).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
    model.eval()
    return model


def generate(
    model: Qwen2ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    problems: Sequence[Problem],
    max_new_tokens: int,
    device: str = "cpu",
    temperature: float = 0.0,
) -> list[str]:
    """Responses to the chat-formatted problems (greedy, or sampled at `temperature` from torch's global RNG),
    decoded without special tokens."""
    import torch

    prompt = PromptSpec(user_template=USER_TEMPLATE)
    pad = tokenizer.pad_token_id
    stops = [tokenizer.eos_token_id, pad]
    texts: list[str] = []
    with torch.no_grad():
        for start in range(0, len(problems), EVAL_BATCH):
            chunk = [prompt_ids(tokenizer, p.text, prompt) for p in problems[start : start + EVAL_BATCH]]
            width = max(map(len, chunk))
            ids = torch.tensor([[pad] * (width - len(c)) + c for c in chunk], device=device)  # left padding
            mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chunk], device=device)
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                **(
                    {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0}
                    if temperature > 0
                    else {"do_sample": False}
                ),
                eos_token_id=stops,
                pad_token_id=pad,
            )
            texts += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return texts


def grade(problems: Sequence[Problem], texts: Sequence[str]) -> list[bool]:
    """Correct when the last `\\boxed { N }` (the pipeline's extraction, no fallbacks) is the true answer."""
    return [extract_answer(t, fallbacks=False)[0] == str(p.answer) for p, t in zip(problems, texts, strict=True)]


def failure_modes(problems: Sequence[Problem], texts: Sequence[str], world: World) -> dict[str, int]:
    """Coarse reasons for wrong answers, to tell a broken copy from a broken chain or a missing answer."""
    modes = {"correct": 0, "no_box": 0, "boxed_an_intermediate": 0, "boxed_other": 0}
    for p, t in zip(problems, texts, strict=True):
        answer = extract_answer(t, fallbacks=False)[0]
        if answer == str(p.answer):
            modes["correct"] += 1
        elif answer is None:
            modes["no_box"] += 1
        elif answer in {str(world.apply(p.fn, p.x, i)) for i in range(p.k + 2)}:
            modes["boxed_an_intermediate"] += 1
        else:
            modes["boxed_other"] += 1
    return modes


def base_dir_for(out: Path, world_seed: int, seed: int) -> Path:
    return out / "bases" / f"w{world_seed}-s{seed}"


def ensure_base(out: Path, world_seed: int, seed: int, pretrain_kwargs: dict[str, Any]) -> Path:
    """The pretrained base of (world_seed, seed), trained once and cached."""
    path = base_dir_for(out, world_seed, seed)
    if not (path / "skills.json").exists():
        summary = pretrain(world_seed, seed, path, log_every=100, probe_every=200, **pretrain_kwargs)
        print(f"pretrained w{world_seed}-s{seed} in {summary['wall_s']}s: skills {summary['skills']}", flush=True)
    return path


def run_one(
    out: Path,
    base: Path,
    world: World,
    split: str,
    arm: str,
    sft_seed: int,
    settings: SFTSettings,
    tag: str,
    device: str = "cpu",
) -> dict[str, Any]:
    """Fine-tune one arm with one seed and evaluate it; cached as JSON under `out/runs`."""
    from transformers import AutoTokenizer

    path = out / "runs" / split / settings.tag / f"{tag}-{arm}-sft{sft_seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    problems = split_problems(world, n_train=N_TRAIN, n_dev=SPLIT_SIZES["dev"], n_test=SPLIT_SIZES["test"])[split]
    start = time.perf_counter()
    if arm == "base":
        from transformers import Qwen2ForCausalLM

        model = Qwen2ForCausalLM.from_pretrained(str(base), attn_implementation="sdpa").to(device).eval()
    else:
        examples = encode(tokenizer, training_rows(world, arm))
        model = finetune(base, examples, settings, sft_seed, tokenizer.pad_token_id, device)
    sft_s = time.perf_counter() - start
    texts = generate(model, tokenizer, problems, settings.max_new_tokens, device)
    correct = grade(problems, texts)
    record = {
        "split": split,
        "base": tag,
        "arm": arm,
        "sft_seed": sft_seed,
        "settings": dataclasses.asdict(settings),
        "accuracy": sum(correct) / len(correct),
        "by_k": {
            f"k={k}": round(float(np.mean([c for c, p in zip(correct, problems) if p.k == k])), 4)
            for k in sorted({p.k for p in problems})
        },
        "modes": failure_modes(problems, texts, world),
        "correct": [int(c) for c in correct],
        "problem_ids": [p.problem_id for p in problems],
        "samples": [{"problem": p.text, "answer": p.answer, "response": t} for p, t in zip(problems, texts)][
            :SAMPLES_KEPT
        ],
        "device": device,
        "sft_s": round(sft_s, 1),
        "eval_s": round(time.perf_counter() - start - sft_s, 1),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record


# ------------------------------------------------------------------------------------------------- statistics


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, *, n_boot: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean of a - b and its percentile interval; a and b are correctness arrays shaped (..., sft seeds, problems).

    Problems are resampled once per replicate and shared by both arms (the comparison is paired on problems);
    SFT seeds are resampled independently per arm, since arm A's seed 0 and arm B's seed 0 are unrelated runs. A
    leading pretraining-seed axis, when present, is resampled as well (one draw shared by both arms: the arms of
    one base are paired on it).
    """
    rng = np.random.default_rng(seed)
    a3, b3 = (np.asarray(x, dtype=float).reshape((-1, *np.shape(x)[-2:])) for x in (a, b))
    n_base, n_seed, n_prob = a3.shape
    stats = np.empty(n_boot)
    for i in range(n_boot):
        bases = rng.integers(0, n_base, n_base) if n_base > 1 else np.zeros(1, dtype=int)
        probs = rng.integers(0, n_prob, n_prob)
        sa = rng.integers(0, n_seed, (n_base, n_seed))
        sb = rng.integers(0, n_seed, (n_base, n_seed))
        ra = a3[bases[:, None], sa][:, :, probs]
        rb = b3[bases[:, None], sb][:, :, probs]
        stats[i] = ra.mean() - rb.mean()
    tail = (1 - level) / 2
    lo, hi = np.quantile(stats, [tail, 1 - tail])
    return float(a3.mean() - b3.mean()), float(lo), float(hi)


# ---------------------------------------------------------------------------------------------------- reports


def _matrix(records: Sequence[dict[str, Any]], base: str, arm: str, seeds: Sequence[int]) -> np.ndarray:
    by_seed = {r["sft_seed"]: r for r in records if r["base"] == base and r["arm"] == arm}
    return np.array([by_seed[s]["correct"] for s in seeds])


def summarize(records: Sequence[dict[str, Any]], bases: Sequence[str], sft_seeds: Sequence[int]) -> dict[str, Any]:
    """Per-base arm means, the required orderings, and long_cot - direct intervals per base and pooled."""
    summary: dict[str, Any] = {"bases": {}}
    for base in bases:
        means = {arm: float(_matrix(records, base, arm, sft_seeds).mean()) for arm in ARMS}
        diff = paired_bootstrap(
            _matrix(records, base, "long_cot", sft_seeds), _matrix(records, base, "direct", sft_seeds)
        )
        summary["bases"][base] = {
            "means": means,
            "ordering": means["long_cot"] > means["terse"] > means["direct"],
            "wrong_beats_direct": means["long_cot_wrong"] > means["direct"],
            "long_cot_minus_direct": diff,
        }
    stack = {arm: np.stack([_matrix(records, b, arm, sft_seeds) for b in bases]) for arm in ("long_cot", "direct")}
    summary["pooled_long_cot_minus_direct"] = paired_bootstrap(stack["long_cot"], stack["direct"])
    summary["all_orderings_hold"] = all(
        s["ordering"] and s["wrong_beats_direct"] and s["long_cot_minus_direct"][1] > 0
        for s in summary["bases"].values()
    )
    return summary


def report(
    records: Sequence[dict[str, Any]],
    bases: Sequence[str],
    sft_seeds: Sequence[int],
    settings: SFTSettings,
    pretrain_info: dict[str, dict[str, Any]],
    split: str,
    wall_s: float,
) -> str:
    """STUDY.md: every number of the study, the settings, and the wall times."""
    summary = summarize(records, bases, sft_seeds)
    lines = [
        f"# Toy world robustness study ({split} split)",
        "",
        f"{len(bases)} pretraining seeds x {len(ARMS)} arms x {len(sft_seeds)} SFT seeds; each fine-tuned on the same "
        f"{N_TRAIN} training problems, graded greedily on the {SPLIT_SIZES[split]} {split} problems (the last "
        "`\\boxed { N }` of the response, no fallbacks). Regenerate with "
        f"`python -m framework.toy.study --split {split} --report ...`.",
        "",
        "## Settings",
        "",
        f"- SFT: {json.dumps(dataclasses.asdict(settings))}; prompt `{USER_TEMPLATE}` in the ChatML template, loss on "
        "the assistant turn and its `<|im_end|>` only; the SFT seed orders the examples of each epoch.",
    ]
    for base in bases:
        info = pretrain_info[base]
        lines.append(
            f"- base {base}: {json.dumps(info['settings'])}; {info['parameters']:,} parameters; final loss "
            f"{info['final_loss']:.4f}; pretraining {info['wall_s']:.0f} s; skills recall {info['skills']['recall']:.3f} "
            f"copy {info['skills']['copy']:.3f}"
        )
    lines += ["", "## Accuracy per pretraining seed, arm and SFT seed", ""]
    header = "| base | arm | " + " | ".join(f"SFT seed {s}" for s in sft_seeds) + " | mean | by k (mean) |"
    lines += [header, "|" + "---|" * (len(sft_seeds) + 4)]
    for base in bases:
        for arm in ("base", *ARMS):
            rows = sorted((r for r in records if r["base"] == base and r["arm"] == arm), key=lambda r: r["sft_seed"])
            if not rows:
                continue
            accs = [f"{r['accuracy']:.3f}" for r in rows]
            if arm == "base":
                accs += ["-"] * (len(sft_seeds) - len(accs))
            by_k = {k: np.mean([r["by_k"][k] for r in rows]) for k in rows[0]["by_k"]}
            k_text = " ".join(f"{k}:{v:.2f}" for k, v in by_k.items())
            mean = np.mean([r["accuracy"] for r in rows])
            lines.append(f"| {base} | {arm} | " + " | ".join(accs) + f" | {mean:.3f} | {k_text} |")
    lines += ["", "## Orderings and intervals", ""]
    lines += [
        "| base | long_cot > terse > direct | long_cot_wrong > direct | long_cot - direct [95% CI] |",
        "|---|---|---|---|",
    ]
    for base, s in summary["bases"].items():
        d, lo, hi = s["long_cot_minus_direct"]
        lines.append(f"| {base} | {s['ordering']} | {s['wrong_beats_direct']} | {d:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
    d, lo, hi = summary["pooled_long_cot_minus_direct"]
    lines += [
        "",
        f"Pooled over pretraining seeds: long_cot - direct = {d:+.3f} [{lo:+.3f}, {hi:+.3f}] (bootstrap over "
        "pretraining seeds, SFT seeds and problems, 10,000 replicates; per base: SFT seeds and problems).",
        f"All required orderings hold: {summary['all_orderings_hold']}.",
        "",
        "## Failure modes (summed over SFT seeds)",
        "",
        "| base | arm | correct | no box | boxed an intermediate value | boxed another value |",
        "|---|---|---|---|---|---|",
    ]
    for base in bases:
        for arm in ("base", *ARMS):
            rows = [r for r in records if r["base"] == base and r["arm"] == arm]
            if rows:
                m = {k: sum(r["modes"][k] for r in rows) for k in rows[0]["modes"]}
                lines.append(
                    f"| {base} | {arm} | {m['correct']} | {m['no_box']} | {m['boxed_an_intermediate']} | {m['boxed_other']} |"
                )
    sft_s = [r["sft_s"] for r in records if r["arm"] != "base"]
    eval_s = [r["eval_s"] for r in records]
    lines += [
        "",
        f"## Wall times (fine-tuning and evaluation on {', '.join(sorted({r.get('device', 'cpu') for r in records}))}; "
        f"{settings.threads} CPU thread(s) per run; several runs may share the machine)",
        "",
        f"- SFT per run: median {np.median(sft_s):.0f} s (range {min(sft_s):.0f}-{max(sft_s):.0f} s); greedy "
        f"evaluation per run: median {np.median(eval_s):.0f} s (range {min(eval_s):.0f}-{max(eval_s):.0f} s).",
        f"- This command: {wall_s / 60:.1f} min (runs and bases already cached are read, not redone).",
        "",
    ]
    return "\n".join(lines)


def selection_table(records: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """Dev accuracy per SFT setting and arm, and the setting with the best mean over all arms.

    The mean over arms, not the long-CoT arm alone, picks the setting: choosing by the arm the study hopes wins
    would tilt the comparison towards it.
    """
    tags = sorted({r["settings_tag"] for r in records})
    lines = ["| SFT setting | " + " | ".join(ARMS) + " | mean over arms |", "|---" * (len(ARMS) + 2) + "|"]
    means = {}
    for tag in tags:
        accs = [np.mean([r["accuracy"] for r in records if r["settings_tag"] == tag and r["arm"] == a]) for a in ARMS]
        means[tag] = float(np.mean(accs))
        lines.append(f"| {tag} | " + " | ".join(f"{a:.3f}" for a in accs) + f" | {means[tag]:.3f} |")
    return "\n".join(lines), max(means, key=lambda t: means[t])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m framework.toy.study", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="cache of bases and run records")
    parser.add_argument("--split", choices=sorted(SPLIT_SIZES), default="test")
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--pretrain-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sft-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=["base", *ARMS])
    parser.add_argument("--epochs", type=int, nargs="+", default=[SFTSettings.epochs], help="several: a grid")
    parser.add_argument("--lr", type=float, nargs="+", default=[SFTSettings.lr], help="several: a grid")
    parser.add_argument("--pretrain-steps", type=int, default=None)
    parser.add_argument("--report", type=Path, default=None, help="write the study's markdown report here")
    parser.add_argument("--device", default="cpu", help="torch device for fine-tuning and evaluation (cpu, cuda)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    grid = [SFTSettings(epochs=e, lr=lr) for e in args.epochs for lr in args.lr]
    pretrain_kwargs = {} if args.pretrain_steps is None else {"steps": args.pretrain_steps}
    world = make_world(args.world_seed)
    start = time.perf_counter()
    records, info = [], {}
    for seed in args.pretrain_seeds:
        base = ensure_base(args.out, args.world_seed, seed, pretrain_kwargs)
        tag = base.name
        info[tag] = json.loads((base / "pretrain.json").read_text()) | {
            "skills": json.loads((base / "skills.json").read_text())
        }
        for settings in grid:
            for arm in args.arms:
                for sft_seed in [0] if arm == "base" else args.sft_seeds:
                    r = run_one(args.out, base, world, args.split, arm, sft_seed, settings, tag, args.device)
                    records.append(r | {"settings_tag": settings.tag})
                    print(
                        f"{tag} {settings.tag} {arm} sft{sft_seed}: {r['accuracy']:.3f} {r['modes']} "
                        f"({r['sft_s']}+{r['eval_s']} s)",
                        flush=True,
                    )
    if len(grid) > 1:
        table, best = selection_table(records)
        print(table + f"\nchosen: {best}")
        if args.report:
            args.report.write_text(f"# SFT setting selection ({args.split} split)\n\n{table}\n\nChosen: {best}.\n")
    elif set(ARMS) <= set(args.arms):
        bases = list(info)
        print(json.dumps(summarize(records, bases, args.sft_seeds), indent=1))
        if args.report:
            text = report(records, bases, args.sft_seeds, grid[0], info, args.split, time.perf_counter() - start)
            args.report.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
