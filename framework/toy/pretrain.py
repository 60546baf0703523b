"""Pretraining the toy base model: a ~1M-parameter Qwen2 trained from scratch on the toy world's corpus.

The base must hold the pieces of a multi-step solution (every single fact of f and g, and the in-context copies
a step-by-step trace makes) without ever having seen one, so that fine-tuning on 20 traces has a latent skill to
unlock. A plain torch loop (no Trainer) keeps a 1000-step run at 12-20 minutes on one core of a shared 2-core
machine and makes the run a pure function of (world_seed, seed): the documents, their packing, the initial weights
and the batch order are all drawn from those two numbers, and the per-step losses are recorded so a rebuild can be
checked against them.

    python -m framework.toy.pretrain --world-seed 0 --seed 0 --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framework.toy.corpus import MIX, tagged_documents
from framework.toy.skills import skill_check as run_skill_check
from framework.toy.supplement import BUILDERS as SUPPLEMENT
from framework.toy.tokenizer import IM_END, PAD, build_tokenizer
from framework.toy.world import World, make_world

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

DOC_BLOCK = 4096  # documents tokenized per call: bounds memory, and any prefix of the stream is the shorter stream


# Measured on seed 0 (notes in framework/toy/assets/STUDY.md). The corpus's own mix (a third binding documents,
# 6% copying) left copying at chance after 1000 steps (recall 100%, copy 14%: in-context look-up never formed), so
# the documents that carry copy targets get larger shares: binding shapes 0.32 -> 0.42, plain copying 0.06 -> 0.16,
# taken from single facts and filler (recall reaches 100% well before copying does). Fine-tuned bases then mostly
# failed by counting their steps wrong, so a tenth of the documents carry a counter across gaps (supplement.py).
BASE_MIX: dict[str, float] = {
    "bind_apply": 0.12,
    "bind_rebind": 0.08,
    "bind_result": 0.08,
    "bind_count": 0.06,
    "bind_answer": 0.08,
    "facts": 0.18,
    "table": 0.04,
    "recheck": 0.05,
    "counting": 0.03,
    "copying": 0.16,
    "filler": 0.02,
    "count_gapped": 0.10,
}


@dataclass(frozen=True)
class PretrainSettings:
    """Everything a pretraining run depends on; recorded in the checkpoint so a rebuild can be compared."""

    world_seed: int = 0
    seed: int = 0
    steps: int = 1000
    batch: int = 32
    seq_len: int = 128
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 2  # head_dim 64: vLLM's CPU attention kernels reject smaller heads
    intermediate_size: int = 512
    max_position_embeddings: int = 1024
    # Part of the recipe: float reductions depend on the thread count, so bit-identical losses need the same one.
    # One thread, because on a shared 2-core machine two threads ran a step 4-5x slower than one.
    threads: int = 1
    # Shares of the corpus families (corpus.MIX names); None keeps the corpus's own mix.
    mix: dict[str, float] | None = field(default_factory=lambda: dict(BASE_MIX))

    @property
    def tokens(self) -> int:
        return self.steps * self.batch * self.seq_len


def model_config(settings: PretrainSettings, tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    """The Qwen2 architecture of the toy base: tied embeddings, vocabulary = the word-level tokenizer's."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden_size,
        intermediate_size=settings.intermediate_size,
        num_hidden_layers=settings.num_layers,
        num_attention_heads=settings.num_heads,
        num_key_value_heads=settings.num_heads,
        head_dim=settings.hidden_size // settings.num_heads,
        max_position_embeddings=settings.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
        use_cache=True,
        dtype="float32",
    )


def documents(world: World, settings: PretrainSettings) -> Iterator[str]:
    """The pretraining documents of (world, seed) in the shares of `settings.mix`; endless.

    Corpus families are re-weighted by thinning the corpus's own stream (a document of family f is kept with a
    probability proportional to mix[f] / MIX[f]), which changes the shares without touching how any document is
    written; supplement families (`framework.toy.supplement`) are interleaved with their share. Everything is
    drawn from the seeds, so the stream is a pure function of the settings.
    """
    tagged = tagged_documents(world, n_docs=sys.maxsize, seed=settings.seed)
    if settings.mix is None:
        yield from (doc for _, doc in tagged)
        return
    unknown = set(settings.mix) - set(MIX) - set(SUPPLEMENT)
    if unknown:
        raise ValueError(f"unknown families in mix: {sorted(unknown)}; choose from {sorted({*MIX, *SUPPLEMENT})}")
    ratio = {family: settings.mix.get(family, 0.0) / share for family, share in MIX.items()}
    top = max(ratio.values())
    extra = {family: w for family, w in settings.mix.items() if family in SUPPLEMENT and w > 0}
    extra_share = sum(extra.values()) / sum(settings.mix.values())
    thin = random.Random(f"toy-pretrain-mix:{world.seed}:{settings.seed}")
    pick = random.Random(f"toy-pretrain-supplement:{world.seed}:{settings.seed}")
    kept = (doc for family, doc in tagged if thin.random() < ratio[family] / top)
    while True:
        if extra and pick.random() < extra_share:
            family = pick.choices(list(extra), list(extra.values()))[0]
            yield SUPPLEMENT[family](pick, world)
        else:
            yield next(kept)


def document_ids(tokenizer: PreTrainedTokenizerFast, settings: PretrainSettings) -> Iterator[list[int]]:
    """Token ids of the pretraining documents, each preceded by `<|endoftext|>`; endless.

    The separator is the token the skill check and a chat prompt start from, so "a new text starts here" means the
    same thing in pretraining and afterwards.
    """
    sep = tokenizer.convert_tokens_to_ids(PAD)
    docs = documents(make_world(settings.world_seed), settings)
    backend = tokenizer.backend_tokenizer
    while True:
        block = [doc for _, doc in zip(range(DOC_BLOCK), docs)]
        for encoding in backend.encode_batch(block, add_special_tokens=False):
            yield [sep, *encoding.ids]


def packed_rows(tokenizer: PreTrainedTokenizerFast, settings: PretrainSettings) -> Iterator[list[int]]:
    """Consecutive `seq_len` windows of the concatenated documents (no padding, documents cross window edges).

    Cutting documents at arbitrary offsets puts every kind of document at every position below `seq_len`, which
    is what lets fine-tuned traces place a copy anywhere in the window.
    """
    buffer: list[int] = []
    for ids in document_ids(tokenizer, settings):
        buffer.extend(ids)
        while len(buffer) >= settings.seq_len:
            yield buffer[: settings.seq_len]
            del buffer[: settings.seq_len]


def batches(tokenizer: PreTrainedTokenizerFast, settings: PretrainSettings) -> Iterator[torch.Tensor]:
    """`steps` batches of shape (batch, seq_len), a pure function of the settings."""
    import torch

    rows = packed_rows(tokenizer, settings)
    for _ in range(settings.steps):
        yield torch.tensor([next(rows) for _ in range(settings.batch)], dtype=torch.long)


def lr_at(step: int, settings: PretrainSettings) -> float:
    """Linear warm-up, then cosine decay to zero at the last step."""
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return settings.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def init_model(settings: PretrainSettings, tokenizer: PreTrainedTokenizerFast) -> Qwen2ForCausalLM:
    """Fresh weights drawn from `seed`; the global RNG is left as it was."""
    import torch
    from transformers import Qwen2ForCausalLM

    config = model_config(settings, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = Qwen2ForCausalLM._from_config(config, attn_implementation="sdpa")
    return model.to(torch.float32)


def train(
    settings: PretrainSettings,
    tokenizer: PreTrainedTokenizerFast,
    *,
    stop_after: int | None = None,
    log_every: int = 0,
    probe_every: int = 0,
) -> tuple[Qwen2ForCausalLM, list[float], list[dict[str, Any]]]:
    """Run the pretraining loop; returns the model, the loss of every step and the skill curve.

    `stop_after` ends the run early on the full run's schedule, so its losses are a prefix of the full run's: a
    rebuild can be checked without paying for all of it. `probe_every` runs the skill check every that many steps
    (copying appears abruptly, so its curve says whether a run stopped just short of it).
    """
    import torch

    torch.set_num_threads(settings.threads)
    model = init_model(settings, tokenizer)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embed" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr,
        betas=settings.betas,
        foreach=True,
    )
    model.train()
    losses: list[float] = []
    curve: list[dict[str, Any]] = []
    world = make_world(settings.world_seed)
    start = time.perf_counter()
    for step, ids in enumerate(batches(tokenizer, settings)):
        if stop_after is not None and step >= stop_after:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, settings)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            print(
                f"step {step + 1}/{settings.steps} loss {losses[-1]:.4f} {time.perf_counter() - start:.0f}s", flush=True
            )
        if probe_every and (step + 1) % probe_every == 0 and step + 1 < settings.steps:
            model.eval()
            skills = run_skill_check(model, tokenizer, world)
            model.train()
            curve.append({"step": step + 1, "recall": skills["recall"], "copy": skills["copy"]})
            if log_every:
                print(
                    f"  skills at step {step + 1}: {skills['recall']} {skills['copy']} {skills['families']}", flush=True
                )
    model.eval()
    return model, losses, curve


def generation_config(tokenizer: PreTrainedTokenizerFast) -> Any:
    """Stop on the turn end and on `<|endoftext|>`, so vLLM and `generate` end where fine-tuning taught."""
    from transformers import GenerationConfig

    stops = [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(PAD)]
    return GenerationConfig(eos_token_id=stops, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)


def pretrain(
    world_seed: int,
    seed: int,
    out_dir: str | Path,
    steps: int = 1000,
    batch: int = 32,
    seq_len: int = 128,
    lr: float = 3e-3,
    *,
    skill_check: bool = True,
    stop_after: int | None = None,
    log_every: int = 0,
    probe_every: int = 0,
    **overrides: Any,
) -> dict[str, Any]:
    """Pretrain the toy base for (world_seed, seed) and save it as a Hugging Face checkpoint in `out_dir`.

    Writes config, safetensors weights, tokenizer, generation config, `pretrain.json` (settings, per-step losses,
    wall time) and `skills.json` (the skill check); returns the summary that `pretrain.json` holds. `stop_after`
    saves the run after that many steps of the full schedule (for checking a rebuild against recorded losses).
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    settings = PretrainSettings(
        world_seed=world_seed, seed=seed, steps=steps, batch=batch, seq_len=seq_len, lr=lr, **overrides
    )
    tokenizer = build_tokenizer(make_world(world_seed))
    start = time.perf_counter()
    model, losses, curve = train(
        settings, tokenizer, stop_after=stop_after, log_every=log_every, probe_every=probe_every
    )
    wall = time.perf_counter() - start
    model.generation_config = generation_config(tokenizer)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    model.save_pretrained(str(out))
    summary: dict[str, Any] = {
        "settings": dataclasses.asdict(settings),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "tokens": settings.tokens,
        "steps_run": len(losses),
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "wall_s": round(wall, 1),
        "skill_curve": curve,
        "losses": losses,
    }
    (out / "pretrain.json").write_text(json.dumps(summary, indent=1) + "\n")
    if skill_check:
        skills = run_skill_check(model, tokenizer, make_world(world_seed))
        (out / "skills.json").write_text(json.dumps(skills, indent=2) + "\n")
        summary["skills"] = skills
    (out / "README.md").write_text(model_card(summary))
    return summary


def model_card(summary: dict[str, Any]) -> str:
    """The checkpoint's README: what it is, how it was built, what it can and cannot do."""
    s = summary["settings"]
    lines = [
        "# Toy base model",
        "",
        f"A {summary['parameters']:,}-parameter Qwen2 (hidden {s['hidden_size']}, {s['num_layers']} layers, "
        f"{s['num_heads']} heads of {s['hidden_size'] // s['num_heads']}, FFN {s['intermediate_size']}, tied "
        f"embeddings) pretrained from scratch on the toy world's corpus (world seed {s['world_seed']}, seed "
        f"{s['seed']}): {s['steps']} steps of {s['batch']} x {s['seq_len']} tokens ({summary['tokens']:,} tokens), "
        f"AdamW lr {s['lr']:g} with {s['warmup_steps']} warm-up steps and cosine decay, weight decay "
        f"{s['weight_decay']:g}, {s['threads']} CPU thread(s). Final loss {summary['final_loss']:.4f}.",
        "",
        f"Tokenizer: word level ({summary['vocab_size']} tokens), ChatML template; EOS `<|im_end|>`, padding and "
        "document separator `<|endoftext|>`. The toy ablations prompt it with the bare problem "
        '(`user_template: "{problem}"`): words outside the toy world map to `<unk>`.',
        "",
        "It has seen single facts of f and g, binding and copying documents and counts carried across gaps (the "
        "family shares are `mix` in pretrain.json), never a multi-step problem, a trace or a chat turn: fine-tuning "
        "on a few traces has to unlock the k-hop skill. The tokenizer config names its class (`auto_map`), because "
        "transformers 5 otherwise loads the tokenizer of any qwen2 checkpoint as Qwen2's byte-level BPE.",
        "",
    ]
    if "skills" in summary:
        k = summary["skills"]
        lines += [
            f"Skill check (greedy next word; pass at >= {k['pass_rate']:.0%} each): recall {k['recall']:.3f} "
            f"({k['n_probes']['recall']} probes), copy {k['copy']:.3f} ({k['n_probes']['copy']} probes); "
            f"passed: {k['passed']}. Per family: "
            + ", ".join(f"{name} {rate:.3f}" for name, rate in k["families"].items() if name.startswith("copy"))
            + ".",
            "",
        ]
    lines += [
        f"Rebuild: `python -m framework.toy.pretrain --world-seed {s['world_seed']} --seed {s['seed']} --out DIR`. "
        "`pretrain.json` holds the settings and the loss of every step; `framework/toy/assets/STUDY.md` the "
        "fine-tuning study run on this recipe.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m framework.toy.pretrain", description=__doc__.split("\n")[0])
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    defaults = PretrainSettings()
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--seq-len", type=int, default=defaults.seq_len)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--probe-every", type=int, default=200, help="skill check every N steps (0: only at the end)")
    args = parser.parse_args(argv)
    summary = pretrain(
        args.world_seed,
        args.seed,
        args.out,
        args.steps,
        args.batch,
        args.seq_len,
        args.lr,
        log_every=args.log_every,
        probe_every=args.probe_every,
    )
    skills = summary.get("skills", {})
    print(json.dumps({k: v for k, v in summary.items() if k != "losses"} | {"skills": skills}, indent=2))
    return 0 if skills.get("passed", True) else 1


if __name__ == "__main__":
    raise SystemExit(main())
