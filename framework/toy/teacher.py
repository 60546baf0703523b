"""The toy teacher: the toy base fine-tuned on long chain-of-thought traces, a reasoning model to sample from.

The paper's traces came from a reasoning model sampled several times per problem, which also gave the wrong-answer
traces its correctness ablation used. The toy world's counterpart is this checkpoint: `toy:base` fine-tuned on
long-CoT traces of problems that are neither test problems nor among the first training problems the toy sweeps
draw their pools from, so a sweep sampling it gets traces it has to write, not recall. Sampled at a temperature
above zero it still errs now and then, which is where its wrong-answer traces come from. Fine-tuning is the toy
study's (framework.toy.study: the train stage's recipe in a plain torch loop), seeded, so the build is a pure
function of its settings; the measured skill is written beside the weights.

    python -m framework.toy.teacher [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framework.toy.core import Problem, World, all_problems, make_world, split_problems
from framework.toy.pretrain import generation_config
from framework.toy.study import SFTSettings, encode, finetune, generate, grade
from framework.toy.traces import render_trace

ASSETS = Path(__file__).parent / "assets"
BASE_DIR = ASSETS / "base"
TEACHER_DIR = ASSETS / "teacher"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


@dataclass(frozen=True)
class TeacherSettings:
    """Everything the teacher's build depends on; recorded in `teacher.json`."""

    world_seed: int = 0
    seed: int = 0  # orders the examples of each epoch and draws the traces' reflection steps
    style: str = "long_cot"
    # Problems held out of the teacher's training: the first `held_out_train` training problems (every shipped toy
    # spec draws its pool, and so its generated traces, from these: toy-paper.yaml reads 128) and the test split.
    held_out_train: int = 128
    held_out_test: int = 200
    epochs: int = 8
    lr: float = 5e-4
    batch: int = 4
    max_new_tokens: int = 256
    # Skill measurement: greedy, and `samples` draws per problem at each temperature (pure temperature sampling;
    # ablations/toy-generated.yaml samples at 1.0, where the teacher errs often enough to give wrong-answer traces).
    temperatures: tuple[float, ...] = (0.7, 1.0)
    samples: int = 4


def teacher_problems(world: World, settings: TeacherSettings) -> list[Problem]:
    """The problems the teacher learns from: all of the world's but the held-out training and test problems."""
    held = split_problems(world, n_train=settings.held_out_train, n_dev=0, n_test=settings.held_out_test)
    taken = {p.problem_id for split in held.values() for p in split}
    problems = [p for p in all_problems(world) if p.problem_id not in taken]
    random.Random(f"toy-teacher:{world.seed}:{settings.seed}").shuffle(problems)
    return problems


def training_rows(world: World, problems: Sequence[Problem], settings: TeacherSettings) -> list[dict[str, Any]]:
    rows = []
    for p in problems:
        rng = random.Random(f"toy-teacher-trace:{world.seed}:{settings.seed}:{p.problem_id}")
        rows.append({"problem": p.text, "trace": render_trace(world, p, settings.style, rng=rng)[0]})
    return rows


def accuracy(model: Any, tokenizer: Any, problems: Sequence[Problem], settings: TeacherSettings) -> dict[str, Any]:
    """Greedy accuracy, and accuracy of `samples` draws per problem at each temperature (seeded), overall and per
    hop count."""
    import torch

    def by_k(problems: Sequence[Problem], correct: Sequence[bool]) -> dict[str, float]:
        ks = sorted({p.k for p in problems})
        return {
            f"k={k}": round(sum(c for p, c in zip(problems, correct) if p.k == k) / sum(p.k == k for p in problems), 4)
            for k in ks
        }

    greedy = grade(problems, generate(model, tokenizer, problems, settings.max_new_tokens))
    out: dict[str, Any] = {
        "problems": len(problems),
        "greedy": round(sum(greedy) / len(greedy), 4),
        "greedy_by_k": by_k(problems, greedy),
    }
    repeated = [p for p in problems for _ in range(settings.samples)]
    for t in settings.temperatures:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            sampled = grade(repeated, generate(model, tokenizer, repeated, settings.max_new_tokens, temperature=t))
        out[f"t{t:g}"] = round(sum(sampled) / len(sampled), 4)
        out[f"t{t:g}_by_k"] = by_k(repeated, sampled)
    return out


def build(settings: TeacherSettings, out_dir: Path, base_dir: Path = BASE_DIR) -> dict[str, Any]:
    """Fine-tune the base into the teacher, save it as a Hugging Face checkpoint in `out_dir`, measure its skill
    on the toy test problems and on the sweeps' training problems, and write `teacher.json` and `README.md`."""
    from transformers import AutoTokenizer

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    world = make_world(settings.world_seed)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    problems = teacher_problems(world, settings)
    examples = encode(tokenizer, training_rows(world, problems, settings))
    sft = SFTSettings(epochs=settings.epochs, lr=settings.lr, batch=settings.batch)
    start = time.perf_counter()
    model = finetune(base_dir, examples, sft, settings.seed, tokenizer.pad_token_id)
    train_s = time.perf_counter() - start
    held = split_problems(world, n_train=settings.held_out_train, n_dev=0, n_test=settings.held_out_test)
    start = time.perf_counter()
    skill = {
        "test": accuracy(model, tokenizer, held["test"], settings),
        "sweep_training_problems": accuracy(model, tokenizer, held["train"], settings),
    }
    eval_s = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    model.generation_config = generation_config(tokenizer)
    model.save_pretrained(str(out_dir))
    for name in TOKENIZER_FILES:  # the base's tokenizer byte for byte: teacher and base read text the same way
        shutil.copyfile(base_dir / name, out_dir / name)
    summary = {
        "settings": dataclasses.asdict(settings),
        "base": json.loads((base_dir / "pretrain.json").read_text())["settings"],
        "training_problems": len(problems),
        "training_examples": len(examples),
        "steps": -(-len(examples) // settings.batch) * settings.epochs,
        "train_s": round(train_s, 1),
        "eval_s": round(eval_s, 1),
        "skill": skill,
    }
    (out_dir / "teacher.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / "README.md").write_text(model_card(summary))
    return summary


def model_card(summary: dict[str, Any]) -> str:
    """The checkpoint's README: what it is, what it learned from, what it can do."""
    s, test, sweep = summary["settings"], summary["skill"]["test"], summary["skill"]["sweep_training_problems"]
    temps = s["temperatures"]
    return "\n".join(
        [
            "# Toy teacher model",
            "",
            "The toy world's reasoning model: the shipped toy base (`toy:base`, same architecture and tokenizer) "
            f"fine-tuned on {summary['training_examples']} {s['style']} traces, one per problem, for {s['epochs']} "
            f"epochs ({summary['steps']} steps of {s['batch']}, AdamW lr {s['lr']:g}, cosine schedule with 10% "
            f"warm-up, loss on the assistant turn only, seed {s['seed']}; {summary['train_s']:.0f} s on one CPU "
            "thread). Name it `toy:teacher` in a spec's model or a generate source's teacher.",
            "",
            f"Its problems are neither the toy benchmark's {s['held_out_test']} test problems nor the first "
            f"{s['held_out_train']} training problems, which every shipped toy spec draws its pool from: a sweep "
            "that samples it on those problems gets traces it has to work out, not recall.",
            "",
            "Skill, graded by the last `\\boxed { N }` (prompt `{problem}` in the ChatML template):",
            "",
            "| problems | greedy | " + " | ".join(f"temperature {t:g}" for t in temps) + " |",
            "|---|---|" + "---|" * len(temps),
            *(
                f"| {label} ({acc['problems']}) | {acc['greedy']:.3f} | "
                + " | ".join(f"{acc[f't{t:g}']:.3f}" for t in temps)
                + " |"
                for label, acc in (("toy test problems", test), ("first training problems", sweep))
            ),
            "",
            f"Sampled accuracies are over {s['samples']} draws per problem (HF `generate`, pure temperature sampling, "
            f"seed {s['seed']}).",
            "",
            "Per hop count (test, greedy): " + ", ".join(f"{k} {v:.2f}" for k, v in test["greedy_by_k"].items()) + ".",
            "",
            "Rebuild: `ablate toy teacher` (or `python -m framework.toy.teacher --out DIR`); `teacher.json` holds the "
            "settings and every number above.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m framework.toy.teacher", description=__doc__.split("\n")[0])
    defaults = TeacherSettings()
    parser.add_argument("--out", type=Path, default=TEACHER_DIR, help="default: the shipped toy:teacher")
    parser.add_argument("--base", type=Path, default=BASE_DIR, help="the base to fine-tune (default: toy:base)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    args = parser.parse_args(argv)
    world_seed = json.loads((args.base / "pretrain.json").read_text())["settings"]["world_seed"]  # the base's world
    settings = dataclasses.replace(defaults, world_seed=world_seed, seed=args.seed, epochs=args.epochs, lr=args.lr)
    summary = build(settings, args.out, args.base)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
