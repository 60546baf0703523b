"""Where a spec's model lives, and loading it with the checks that must fail before any process is launched.

A model is a hub id (pinned by revision), a local Hugging Face directory, a shipped toy model (`toy:base`,
`toy:teacher`) or a tiny model built by the `model` stage. Everything a multi-hour job would trip over late (a missing path, no chat
template, a sequence length the model cannot take) is a `ModelError`. `preflight` finds these from the
checkpoint's JSON files without importing transformers (seconds of CPU on a small machine), so a stage can refuse
before it launches anything; `check` repeats them on the loaded tokenizer and config, authoritatively.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from framework.errors import UserError
from framework.locations import resolve_path, toy_model_path
from framework.spec.models import TOY_MODELS, ModelSpec

_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
# What a training or evaluation process reads from a hub snapshot (no .bin/.pth duplicates of the weights).
_SNAPSHOT_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken", "*.py"]


class ModelError(UserError):
    """A model that cannot be used as specified; the message says which and what to change."""


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: a directory or hub id plus what loading it needs."""

    kind: Literal["hub", "local", "toy", "tiny"]
    location: str  # local directory, or hub id when kind == "hub"
    revision: str | None = None
    chat_template: str | None = None  # override from the spec; None keeps the tokenizer's own
    trust_remote_code: bool = False
    dtype: str = "auto"

    @property
    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for every `from_pretrained` of this model."""
        kw: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
        if self.kind == "hub" and self.revision and not Path(self.location).is_dir():
            kw["revision"] = self.revision
        return kw

    def describe(self) -> str:
        rev = f"@{self.revision}" if self.kind == "hub" and self.revision else ""
        return f"{self.kind} model {self.location}{rev}"


def resolve(model: ModelSpec, *, model_dir: Path | None = None, spec_dir: Path | None = None) -> ModelSource:
    """Map the spec's model to a location. `model_dir` is the `model` stage's output (tiny models only)."""
    common = {
        "chat_template": model.chat_template,
        "trust_remote_code": model.trust_remote_code,
        "dtype": model.dtype,
    }
    if model.tiny is not None:
        if model_dir is None or not (Path(model_dir) / "config.json").is_file():
            raise ModelError(f"the tiny model has not been built: no config.json in {model_dir} (run its model stage)")
        return ModelSource("tiny", str(model_dir), **common)
    name = model.name_or_path or ""
    if name in TOY_MODELS:
        path = toy_model_path(name)
        if not (path / "config.json").is_file():
            raise ModelError(
                f"the shipped toy {name[4:]} is missing at {path} (run `{TOY_MODELS[name][1]}` to build it)"
            )
        return ModelSource("toy", str(path), **common)
    local = resolve_path(name, spec_dir)
    if local is not None:
        if not local.is_dir():
            raise ModelError(f"model path {name!r} is a file; give the directory of a Hugging Face checkpoint")
        if not (local / "config.json").is_file():
            raise ModelError(f"model directory {str(local)!r} has no config.json: not a Hugging Face checkpoint")
        return ModelSource("local", str(local), **common)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model directory {name!r} does not exist")
    return ModelSource("hub", name, revision=model.revision, **common)


def fetch(source: ModelSource) -> ModelSource:
    """A hub model downloaded (or found in the cache) once, by the launching process, so that the training
    processes of every rank read local files instead of racing each other to the hub."""
    if source.kind != "hub" or Path(source.location).is_dir():
        return source
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(source.location, revision=source.revision, allow_patterns=_SNAPSHOT_FILES)
    except Exception as e:  # offline and not cached, unknown repo, gated, network
        raise ModelError(f"cannot download {source.describe()}: {e}") from None
    if not any(Path(path).glob("*.safetensors")):
        raise ModelError(f"{source.describe()} has no safetensors weights; only safetensors checkpoints are supported")
    return dataclasses.replace(source, location=path)


def load_tokenizer(source: ModelSource) -> Any:
    """The model's tokenizer, with the spec's chat template applied when one is given."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **source.load_kwargs)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load the tokenizer of {source.describe()}: {e}") from None
    if source.chat_template is not None:
        tokenizer.chat_template = source.chat_template
    return tokenizer


def load_config(source: ModelSource) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source.location, **source.load_kwargs)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load the config of {source.describe()}: {e}") from None


def max_positions(config: Any) -> int | None:
    """The longest sequence the model's position encoding was built for, when its config says."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in _POSITION_KEYS:
        value = getattr(text, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _checkpoint_file(source: ModelSource, name: str) -> Path | None:
    """A file of the checkpoint: local, or from the hub cache/download; None when the checkpoint has no such file."""
    if source.kind != "hub":
        path = Path(source.location) / name
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(source.location, name, revision=source.revision))
    except LocalEntryNotFoundError as e:  # offline (HF_HUB_OFFLINE) and not in the local cache
        if name == "config.json":
            raise ModelError(f"cannot fetch {name} of {source.describe()} (offline, not cached): {e}") from None
        return None
    except EntryNotFoundError:
        return None
    except Exception as e:  # unknown repo, gated, network: the message says which
        if name == "config.json":
            raise ModelError(f"cannot fetch {name} of {source.describe()}: {e}") from None
        return None


def _read_json(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {path}: {e}") from None
    return data if isinstance(data, dict) else {}


def preflight(source: ModelSource, *, max_seq_len: int | None = None) -> None:
    """The checks of `check`, from config.json and the tokenizer files alone (cheap, before any launch)."""
    config_file = _checkpoint_file(source, "config.json")
    if config_file is None:
        raise ModelError(f"{source.describe()} has no config.json: not a Hugging Face checkpoint")
    config = _read_json(config_file)
    tok_config = _read_json(_checkpoint_file(source, "tokenizer_config.json"))
    problems = []
    has_template = (
        source.chat_template is not None
        or bool(tok_config.get("chat_template"))
        or _checkpoint_file(source, "chat_template.jinja") is not None
        or bool(_read_json(_checkpoint_file(source, "chat_template.json")).get("chat_template"))
    )
    if not has_template:
        problems.append(_no_template(source))
    scopes = [config, config.get("text_config") or {}]
    limit = next((s[k] for s in scopes for k in _POSITION_KEYS if isinstance(s.get(k), int) and s[k] > 0), None)
    if max_seq_len is not None and limit is not None and max_seq_len > limit:
        problems.append(_too_long(source, max_seq_len, limit))
    if problems:
        raise ModelError(problems)


def _no_template(source: ModelSource) -> str:
    return (
        f"{source.describe()}: the tokenizer has no chat template; set model.chat_template in the spec "
        "(e.g. a ChatML template) so training and evaluation format prompts the same way"
    )


def _too_long(source: ModelSource, max_seq_len: int, limit: int) -> str:
    return (
        f"{source.describe()}: train.max_seq_len {max_seq_len} exceeds the model's max_position_embeddings "
        f"{limit}; lower train.max_seq_len"
    )


def check(source: ModelSource, tokenizer: Any, config: Any, *, max_seq_len: int | None = None) -> None:
    """Raise one ModelError listing every problem that would make training or evaluation fail later."""
    problems = []
    if not getattr(tokenizer, "chat_template", None):
        problems.append(_no_template(source))
    if tokenizer.eos_token_id is None:
        problems.append(f"{source.describe()}: the tokenizer has no EOS token, so a model could never learn to stop")
    limit = max_positions(config)
    if max_seq_len is not None and limit is not None and max_seq_len > limit:
        problems.append(_too_long(source, max_seq_len, limit))
    if problems:
        raise ModelError(problems)


def prepare(
    model: ModelSpec,
    *,
    max_seq_len: int | None = None,
    model_dir: Path | None = None,
    spec_dir: Path | None = None,
) -> tuple[ModelSource, Any, Any]:
    """Resolve, load tokenizer and config, and check them: the cheap part of loading a model."""
    source = resolve(model, model_dir=model_dir, spec_dir=spec_dir)
    tokenizer = load_tokenizer(source)
    config = load_config(source)
    check(source, tokenizer, config, max_seq_len=max_seq_len)
    return source, tokenizer, config


def torch_dtype(name: str, *, on_gpu: bool) -> Any:
    """The weights dtype for a spec's `dtype`/`precision` value; auto is bfloat16 on GPU, float32 on CPU."""
    import torch

    if name in ("auto", None):
        return torch.bfloat16 if on_gpu else torch.float32
    return {"bf16": torch.bfloat16, "fp32": torch.float32}.get(name) or getattr(torch, name)


def load_model(source: ModelSource, *, dtype: Any, attn_implementation: str | None = None) -> Any:
    """The causal LM itself. Under an active DeepSpeed ZeRO-3 config the weights load already partitioned."""
    from transformers import AutoModelForCausalLM

    kw = dict(source.load_kwargs)
    if attn_implementation:
        kw["attn_implementation"] = attn_implementation
    return AutoModelForCausalLM.from_pretrained(source.location, dtype=dtype, **kw)


def context_length(config: dict[str, Any]) -> int | None:
    """The longest sequence a model takes, as vLLM derives it from config.json: the smallest position limit it
    declares (top level or its text config's), stretched by a rope scaling factor (YaRN from its original length)."""
    scopes = [config, config.get("text_config") or {}]
    limits = [s[k] for s in scopes for k in _POSITION_KEYS if isinstance(s.get(k), int) and s[k] > 0]
    if not limits:
        return None
    limit = min(limits)
    scaling = next((s.get(k) for s in scopes for k in ("rope_scaling", "rope_parameters") if s.get(k)), None)
    if isinstance(scaling, dict) and isinstance(scaling.get("factor"), int | float):
        kind = scaling.get("rope_type") or scaling.get("type")
        if kind not in ("su", "longrope", "llama3", "default"):
            original = scaling.get("original_max_position_embeddings") if kind == "yarn" else None
            limit = int((original if isinstance(original, int) else limit) * scaling["factor"])
    return limit


def known_context_length(source: ModelSource) -> int | None:
    """A model's context length from its config.json where that is on this machine (a local checkpoint, or a hub
    model in the local Hugging Face cache) without downloading anything; None when it cannot be read."""
    if source.kind != "hub" or Path(source.location).is_dir():  # a hub model once fetched is a local directory
        path: Any = Path(source.location) / "config.json"
    else:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(source.location, "config.json", revision=source.revision)
    if not isinstance(path, str | Path) or not Path(path).is_file():
        return None
    try:
        return context_length(_read_json(Path(path)))
    except ModelError:
        return None


def budget_problem(
    describe: str, limit: int, max_tokens: int, *, prompt: int | None, max_model_len: int | None, where: str
) -> str | None:
    """Why a generation budget does not fit a model's context of `limit` tokens, or None. `prompt` is the longest
    prompt's token count (None at plan time, when at least one prompt token is needed); `where` names the spec's
    settings (e.g. `baselines[1]` or `eval`) in the fix."""
    if max_model_len is not None and max_model_len > limit:
        return (
            f"{where}.max_model_len {max_model_len} exceeds the context of {describe} ({limit} tokens, from its "
            f"config.json); lower it to at most {limit}"
        )
    if max_model_len is not None:  # the engine's context, chosen by the spec: it stops generations at its end
        return None
    need = (prompt or 1) + max_tokens
    if need <= limit:
        return None
    longest = f"the longest prompt ({prompt} tokens)" if prompt is not None else "a prompt"
    room = f"at most {limit - prompt}" if prompt is not None else f"below {limit} minus the prompt"
    return (
        f"{where}: {longest} + max_tokens {max_tokens} does not fit the context of {describe} ({limit} tokens, from "
        f"its config.json); set {where}.sampling.max_tokens {room}, or {where}.clip_to_context: true to generate "
        "only what fits"
    )
