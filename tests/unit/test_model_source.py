"""Model resolution and its early checks (each bad input is a clear ModelError), and the tiny model builder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from framework import model_source as models
from framework.locations import toy_base_path
from framework.model.stage import CHATML_TEMPLATE, build
from framework.model_source import ModelError, ModelSource
from framework.spec.models import ModelSpec, TinyModelSpec

CORPUS = ["we add 3 and 4 . 3 + 4 = 7 . the answer is \\boxed { 7 }", "let x = 12 . apply f to x 2 times ."] * 30
SMALL = TinyModelSpec(hidden_size=64, num_heads=1, num_layers=1, intermediate_size=64, vocab_size=300,
                      max_position_embeddings=128)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    build(SMALL, out, CORPUS)
    return out


def copy_without_template(src: Path, dst: Path) -> Path:
    """The tiny checkpoint, as a base model without a chat template would ship."""
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "chat_template.jinja":
            (dst / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((dst / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg))
    return dst


# --------------------------------------------------------------------------------------------- resolve
def test_local_directory_resolves(tiny_dir: Path) -> None:
    source = models.resolve(ModelSpec(name_or_path=str(tiny_dir)))
    assert source == ModelSource("local", str(tiny_dir))


def test_relative_path_resolves_against_the_spec_directory(tiny_dir: Path) -> None:
    source = models.resolve(ModelSpec(name_or_path=tiny_dir.name), spec_dir=tiny_dir.parent)
    assert source.kind == "local" and Path(source.location) == tiny_dir


def test_hub_id_keeps_its_revision() -> None:
    source = models.resolve(ModelSpec(name_or_path="Qwen/Qwen2.5-0.5B", revision="abc123"))
    assert source.kind == "hub" and source.load_kwargs == {"trust_remote_code": False, "revision": "abc123"}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("./no/such/model", "does not exist"),
        ("/definitely/missing/dir", "does not exist"),
    ],
)
def test_missing_local_path(name: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        models.resolve(ModelSpec(name_or_path=name))


def test_file_or_non_checkpoint_directory(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(ModelError, match="is a file"):
        models.resolve(ModelSpec(name_or_path=str(tmp_path / "weights.bin")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"no config\.json"):
        models.resolve(ModelSpec(name_or_path=str(tmp_path / "empty")))


def test_tiny_model_needs_its_model_stage(tmp_path: Path, tiny_dir: Path) -> None:
    spec = ModelSpec(tiny=SMALL)
    with pytest.raises(ModelError, match="tiny model has not been built"):
        models.resolve(spec)
    with pytest.raises(ModelError, match="tiny model has not been built"):
        models.resolve(spec, model_dir=tmp_path)
    assert models.resolve(spec, model_dir=tiny_dir).kind == "tiny"


def test_toy_base_missing_is_explained() -> None:
    if (toy_base_path() / "config.json").is_file():
        assert models.resolve(ModelSpec(name_or_path="toy:base")).kind == "toy"
    else:
        with pytest.raises(ModelError, match="toy base is missing"):
            models.resolve(ModelSpec(name_or_path="toy:base"))


# ----------------------------------------------------------------------------------------------- checks
def test_preflight_and_check_accept_a_good_model(tiny_dir: Path) -> None:
    source = models.resolve(ModelSpec(name_or_path=str(tiny_dir)))
    models.preflight(source, max_seq_len=128)
    _, tokenizer, config = models.prepare(ModelSpec(name_or_path=str(tiny_dir)), max_seq_len=128)
    assert tokenizer.chat_template == CHATML_TEMPLATE and config.max_position_embeddings == 128


def test_no_chat_template(tiny_dir: Path, tmp_path: Path) -> None:
    bare = copy_without_template(tiny_dir, tmp_path / "bare")
    source = models.resolve(ModelSpec(name_or_path=str(bare)))
    with pytest.raises(ModelError, match=r"no chat template; set model\.chat_template"):
        models.preflight(source)
    with pytest.raises(ModelError, match="no chat template"):
        models.prepare(ModelSpec(name_or_path=str(bare)))


def test_spec_chat_template_fills_in_and_overrides(tiny_dir: Path, tmp_path: Path) -> None:
    bare = copy_without_template(tiny_dir, tmp_path / "bare")
    template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}<|im_end|>{% endfor %}"
    spec = ModelSpec(name_or_path=str(bare), chat_template=template)
    models.preflight(models.resolve(spec))
    _, tokenizer, _ = models.prepare(spec)
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "[user] hi<|im_end|>"
    _, overridden, _ = models.prepare(ModelSpec(name_or_path=str(tiny_dir), chat_template=template))
    assert overridden.chat_template == template


def test_sequence_longer_than_the_model(tiny_dir: Path) -> None:
    spec = ModelSpec(name_or_path=str(tiny_dir))
    with pytest.raises(ModelError, match=r"max_seq_len 4096 exceeds the model's max_position_embeddings 128"):
        models.preflight(models.resolve(spec), max_seq_len=4096)
    with pytest.raises(ModelError, match="exceeds the model's max_position_embeddings 128"):
        models.prepare(spec, max_seq_len=4096)


def test_every_problem_is_reported_at_once(tiny_dir: Path, tmp_path: Path) -> None:
    bare = copy_without_template(tiny_dir, tmp_path / "bare")
    with pytest.raises(ModelError) as info:
        models.preflight(models.resolve(ModelSpec(name_or_path=str(bare))), max_seq_len=4096)
    assert len(info.value.problems) == 2


def test_unreachable_hub_model_is_a_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = models.resolve(ModelSpec(name_or_path="ablate-tests/no-such-model"))
    with pytest.raises(ModelError, match=r"cannot fetch config\.json"):
        models.preflight(source)
    with pytest.raises(ModelError, match="cannot download hub model ablate-tests/no-such-model"):
        models.fetch(source)


def test_fetch_leaves_local_models_alone(tiny_dir: Path) -> None:
    source = models.resolve(ModelSpec(name_or_path=str(tiny_dir)))
    assert models.fetch(source) is source


# ------------------------------------------------------------------------------------------------- tiny
def digests(path: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir())}


def test_tiny_build_is_deterministic(tiny_dir: Path, tmp_path: Path) -> None:
    build(SMALL, tmp_path / "again", CORPUS)
    assert digests(tmp_path / "again") == digests(tiny_dir)
    build(SMALL.model_copy(update={"init_seed": 1}), tmp_path / "other", CORPUS)
    other = digests(tmp_path / "other")
    assert other["tokenizer.json"] == digests(tiny_dir)["tokenizer.json"]
    assert other["model.safetensors"] != digests(tiny_dir)["model.safetensors"]


def test_tiny_checkpoint_loads_as_built(tiny_dir: Path) -> None:
    """Reloaded through AutoTokenizer (which picks Qwen2Tokenizer for a qwen2 config) it encodes identically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from framework.model.stage import build_tokenizer

    loaded: Any = AutoTokenizer.from_pretrained(tiny_dir)
    built = build_tokenizer(CORPUS, SMALL.vocab_size, SMALL.max_position_embeddings)
    for text in [*CORPUS[:2], "Solve: x^2 = 4 ?\n\n héllo", "<|im_start|>user\nhi<|im_end|>\n"]:
        assert loaded(text, add_special_tokens=False)["input_ids"] == built(text, add_special_tokens=False)["input_ids"]
    assert loaded.eos_token == "<|im_end|>" and loaded.pad_token == "<|endoftext|>"
    assert loaded.pad_token_id != loaded.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert model.config.vocab_size == len(loaded) and model.config.hidden_size == 64
    ids = loaded.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert model.generation_config.eos_token_id == ids and model.generation_config.pad_token_id == ids[1]


def test_tiny_vocabulary_too_small_for_bytes() -> None:
    from framework.model.stage import build_tokenizer

    with pytest.raises(ModelError, match="too small for a byte-level tokenizer"):
        build_tokenizer(CORPUS, 200, 128)


def test_model_stage_builds_the_spec_tiny_model(tmp_path: Path) -> None:
    from framework.spec import LoadedSpec, spec_from_dict
    from framework.spec.yamlsrc import Source
    from framework.store import Store
    from framework.sweep.execute import execute
    from framework.sweep.plan import build_plan

    data = {"name": "tiny", "model": {"tiny": SMALL.model_dump()}, "pool": [{"preset": "toy"}]}
    spec = spec_from_dict(data)
    plan, store = build_plan(spec), Store(tmp_path)
    key = plan.by_stage("model")[0].key
    assert execute(LoadedSpec(spec, None, Source(data=data)), plan, store, "model", key)
    out = store.path("model", key)
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["model_type"]) == (64, 1, "qwen2")
    manifest = store.manifest("model", key)
    assert manifest is not None and manifest["model"]["vocab_size"] == config["vocab_size"] <= SMALL.vocab_size
    source = models.resolve(spec.model, model_dir=out)
    models.preflight(source, max_seq_len=SMALL.max_position_embeddings)
