"""A model's size: parameters, layers, attention width and heads, from whatever tells them without loading it.

One place for it because two users need the same numbers: the cost of a plan (framework.sweep.cost: FLOPs of
training and decoding) and the layout of an evaluation (framework.sweep.eval_layout: the GPUs that hold the
weights, the tensor-parallel sizes that split the heads). Both import this module and neither imports the other.
Sizes come from a model's config.json (a tiny spec, a local or shipped directory, the hub cache), from a local
checkpoint's safetensors headers, or from a table of known hub models; nothing here downloads or loads weights.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framework.locations import resolve_path, toy_model_path
from framework.spec.models import TOY_MODELS, ModelSpec

DEFAULT_PARAMS = 7.6e9  # a model whose size nothing here tells: stated in the output

# Known hub models: parameters, layers, attention width (heads × head_dim), from their config.json.
KNOWN_MODELS: dict[str, tuple[float, int, int]] = {
    "Qwen/Qwen2.5-0.5B": (0.494e9, 24, 896),
    "Qwen/Qwen2.5-1.5B": (1.54e9, 28, 1536),
    "Qwen/Qwen2.5-7B": (7.62e9, 28, 3584),
    "Qwen/Qwen2.5-14B": (14.8e9, 48, 5120),
    "Qwen/Qwen2.5-32B": (32.8e9, 64, 5120),
    "Qwen/Qwen2.5-72B": (72.7e9, 80, 8192),
    "Qwen/Qwen2.5-Math-7B": (7.62e9, 28, 3584),
    "Qwen/Qwen2.5-Math-72B": (72.7e9, 80, 8192),
    "Qwen/QwQ-32B-Preview": (32.8e9, 64, 5120),
    "Qwen/QwQ-32B": (32.8e9, 64, 5120),
}
# Their attention heads and KV heads (num_attention_heads, num_key_value_heads of config.json).
KNOWN_HEADS: dict[str, tuple[int, int]] = {
    "Qwen/Qwen2.5-0.5B": (14, 2), "Qwen/Qwen2.5-1.5B": (12, 2), "Qwen/Qwen2.5-7B": (28, 4),
    "Qwen/Qwen2.5-14B": (40, 8), "Qwen/Qwen2.5-32B": (40, 8), "Qwen/Qwen2.5-72B": (64, 8),
    "Qwen/Qwen2.5-Math-7B": (28, 4), "Qwen/Qwen2.5-Math-72B": (64, 8), "Qwen/QwQ-32B-Preview": (40, 8),
    "Qwen/QwQ-32B": (40, 8),
}  # fmt: skip
for _name in list(KNOWN_MODELS):  # the instruct checkpoints share their base's shape
    if "QwQ" not in _name:
        KNOWN_MODELS[_name + "-Instruct"] = KNOWN_MODELS[_name]


@dataclass(frozen=True)
class ModelSize:
    """What is known of a model's size; None where nothing says."""

    params: float
    layers: int | None
    attn_width: int | None
    source: str  # where the numbers come from
    heads: int | None = None  # attention heads and KV heads: the tensor-parallel sizes that split them
    kv_heads: int | None = None


# ------------------------------------------------------------------------------------------ config.json
def size_from_config(config: dict[str, Any], source: str) -> ModelSize | None:
    """A decoder's parameters from its config.json (Qwen2/Llama layout: attention with GQA, gated MLP)."""
    cfg = config.get("text_config") or config
    try:
        h, layers, inter, vocab = (int(cfg[k]) for k in ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size"))  # fmt: skip
        heads = int(cfg["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        return None
    head_dim = int(cfg.get("head_dim") or h // heads)
    kv = int(cfg.get("num_key_value_heads") or heads)
    attn = h * heads * head_dim + 2 * h * kv * head_dim + heads * head_dim * h
    per_layer = attn + 3 * h * inter + 2 * h
    embeddings = vocab * h * (1 if cfg.get("tie_word_embeddings", False) else 2)
    return ModelSize(float(layers * per_layer + embeddings + h), layers, heads * head_dim, source, heads, kv)


def heads_from_config(config: dict[str, Any]) -> tuple[int | None, int | None]:
    """(attention heads, KV heads) of a config.json; KV heads default to the heads (no GQA)."""
    cfg = config.get("text_config") or config
    try:
        heads = int(cfg["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        return None, None
    try:
        kv = int(cfg.get("num_key_value_heads") or heads)
    except (TypeError, ValueError):
        kv = heads
    return heads, kv


# ------------------------------------------------------------------------------------------ a model of a spec
def model_size(model: ModelSpec, spec_dir: Path | None) -> ModelSize:
    """From the model's own config (tiny spec, local or shipped directory, the hub cache), else `KNOWN_MODELS`,
    else `DEFAULT_PARAMS`. Never downloads: plan runs offline."""
    name = model.name_or_path or ""
    if model.tiny is not None:
        t = model.tiny
        cfg = {
            "hidden_size": t.hidden_size, "num_hidden_layers": t.num_layers, "intermediate_size": t.intermediate_size,
            "vocab_size": t.vocab_size, "num_attention_heads": t.num_heads, "num_key_value_heads": t.num_kv_heads,
            "tie_word_embeddings": t.tie_word_embeddings,
        }  # fmt: skip
        size = size_from_config(cfg, "the tiny model's spec")
        assert size is not None
        return size
    directory = toy_model_path(name) if name in TOY_MODELS else resolve_path(name, spec_dir) if name else None
    config_file = directory / "config.json" if directory is not None and directory.is_dir() else None
    if config_file is None and name.count("/") == 1:
        config_file = _cached_hub_config(name, model.revision)
    if config_file is not None and config_file.is_file():
        try:
            size = size_from_config(json.loads(config_file.read_text(encoding="utf-8")), f"{name}'s config.json")
        except (OSError, ValueError):
            size = None
        if size is not None:
            return size
    if name in KNOWN_MODELS:
        params, layers, width = KNOWN_MODELS[name]
        heads, kv = KNOWN_HEADS.get(name.removesuffix("-Instruct"), (None, None))
        return ModelSize(params, layers, width, f"{name}: known size", heads, kv)
    return ModelSize(DEFAULT_PARAMS, None, None, f"{name or 'model'}: size unknown, assumed {DEFAULT_PARAMS / 1e9:g}B")


def _cached_hub_config(repo: str, revision: str | None) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of transformers
        return None
    found = try_to_load_from_cache(repo, "config.json", revision=revision)
    return Path(found) if isinstance(found, str) else None


# ------------------------------------------------------------------------------------------ a checkpoint's files
def safetensors_params(directory: Path) -> float | None:
    """Parameters stored in a directory's *.safetensors files, from their headers alone (no tensor is read)."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        try:
            with path.open("rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                if size > 100 * 2**20:  # not a safetensors header: the format caps it at 100 MB
                    return None
                header = json.loads(f.read(size))
        except (OSError, ValueError, struct.error):
            return None
        for name, entry in header.items():
            if name != "__metadata__":
                total += math.prod(entry.get("shape") or [1])
    return float(total)


def size_from_dir(directory: Path) -> ModelSize | None:
    """A local checkpoint's parameters and heads: parameters from its safetensors headers (else from its
    config.json), heads from its config.json. Layers and attention width are left unknown: the layout needs
    neither."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    heads, kv = heads_from_config(config)
    params = safetensors_params(directory)
    source = f"{directory.name}'s safetensors"
    if params is None and config:
        size = size_from_config(config, f"{directory.name}'s config.json")
        params, source = (size.params, size.source) if size is not None else (None, source)
    return ModelSize(params, None, None, source, heads, kv) if params is not None else None
