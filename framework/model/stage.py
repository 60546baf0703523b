"""The `model` stage: a tiny Qwen2 and its tokenizer, built locally so the whole pipeline runs without a hub.

The tokenizer is a byte-level BPE trained on the toy world's corpus (any text encodes, nothing maps to an
unknown token), with a ChatML template whose turn end `<|im_end|>` is also EOS, and `<|endoftext|>` as padding:
padding then never hides the token a model must learn to stop on. Weights are drawn from `init_seed`, so the same
spec always builds byte-identical files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framework.model_source import ModelError
from framework.spec.models import DEFAULT_USER_TEMPLATE, TinyModelSpec
from framework.toy import make_world, tokenizer_corpus

if TYPE_CHECKING:
    from framework.sweep.execute import StageContext

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (PAD, IM_START, IM_END)
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
_BYTE_ALPHABET = 256
TOY_WORLD_SEED = 0  # the toy pool's default world; its corpus covers the words every world uses


def build_tokenizer(corpus: list[str], vocab_size: int, max_length: int) -> Any:
    """Train a byte-level BPE on `corpus` and wrap it as a Qwen2 tokenizer with a ChatML template.

    transformers 5 loads any checkpoint whose config says `qwen2` with `Qwen2Tokenizer`, which rebuilds the
    normalizer and pre-tokenizer itself (ignoring tokenizer.json's). Training with that very pipeline makes the
    tokenizer we save the one every later stage (and vLLM) loads.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    if vocab_size < _BYTE_ALPHABET + len(SPECIAL_TOKENS):
        raise ModelError(
            f"model.tiny.vocab_size {vocab_size} is too small for a byte-level tokenizer: it needs at least "
            f"{_BYTE_ALPHABET + len(SPECIAL_TOKENS)} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)"
        )
    if not corpus:
        raise ModelError("the tokenizer corpus is empty")
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    bpe = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in bpe["merges"]]
    return Qwen2Tokenizer(
        vocab=bpe["vocab"],
        merges=merges,
        unk_token=None,
        eos_token=IM_END,
        pad_token=PAD,
        extra_special_tokens=[IM_START],
        chat_template=CHATML_TEMPLATE,
        model_max_length=max_length,
    )


def build_model(spec: TinyModelSpec, tokenizer: Any) -> Any:
    """A randomly initialized Qwen2ForCausalLM; the global RNG is left as it was."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads or spec.num_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.init_seed)
        model = Qwen2ForCausalLM(config)
    return model.to(torch.float32)


def generation_config(tokenizer: Any) -> Any:
    """Stop on the turn end and on `<|endoftext|>`, so vLLM and `generate` end where training taught."""
    from transformers import GenerationConfig

    stops = list(dict.fromkeys([tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(PAD)]))
    return GenerationConfig(eos_token_id=stops, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)


def build(spec: TinyModelSpec, out: Path, corpus: list[str]) -> dict[str, Any]:
    """Write tokenizer, weights (safetensors), config and generation config into `out`; return a summary."""
    tokenizer = build_tokenizer(corpus, spec.vocab_size, spec.max_position_embeddings)
    model = build_model(spec, tokenizer)
    model.generation_config = generation_config(tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    model.save_pretrained(str(out))
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "eos_token_ids": model.generation_config.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def toy_corpus() -> list[str]:
    """Text of the default toy world and the default prompt: what the tiny tokenizer must encode compactly."""
    return [*tokenizer_corpus(make_world(TOY_WORLD_SEED)), DEFAULT_USER_TEMPLATE, "system user assistant"]


def run(ctx: StageContext) -> None:
    """Build the tiny model named in the job config into the stage's output directory."""
    spec = TinyModelSpec.model_validate(ctx.job.config["model"]["tiny"])
    summary = build(spec, ctx.out, toy_corpus())
    ctx.build.manifest["model"] = {"kind": "tiny", **summary}
