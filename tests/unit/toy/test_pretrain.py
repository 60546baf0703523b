"""Toy base pretraining: the word-level tokenizer and its chat template, the packed data stream, the schedule."""

from __future__ import annotations

import json

import pytest

from framework.formatting import completion_end_ids, turn_end_ids
from framework.toy import make_world, tokenizer_corpus
from framework.toy.pretrain import PretrainSettings, batches, lr_at, model_config, pretrain
from framework.toy.tokenizer import IM_END, IM_START, PAD, UNK, build_tokenizer

SMALL = {"steps": 3, "batch": 2, "seq_len": 32}


@pytest.fixture(scope="module")
def world():
    return make_world(0)


@pytest.fixture(scope="module")
def tokenizer(world):
    return build_tokenizer(world)


def test_every_toy_text_round_trips_without_unknowns(world, tokenizer):
    texts = tokenizer_corpus(world)
    unk = tokenizer.convert_tokens_to_ids(UNK)
    for text in texts[:: max(1, len(texts) // 3000)]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert unk not in ids
        assert len(ids) == len(text.split())  # one id per word: a value is a single token the model can copy
        assert tokenizer.decode(ids) == " ".join(text.split())


def test_specials_pad_is_not_eos(tokenizer):
    assert tokenizer.eos_token == IM_END
    assert tokenizer.pad_token == PAD
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert [tokenizer.convert_tokens_to_ids(t) for t in (PAD, IM_START, IM_END, UNK)] == [0, 1, 2, 3]
    assert tokenizer("hello world", add_special_tokens=False)["input_ids"] == [3, 3]


def test_chat_template_is_chatml(tokenizer):
    messages = [{"role": "system", "content": "we read the list ."}, {"role": "user", "content": "let x = 9 ."}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nwe read the list .<|im_end|>\n<|im_start|>user\nlet x = 9 .<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids[-2:]) == [IM_START, "assistant"]
    assert tokenizer.unk_token_id not in ids
    # The train stage's targets end with exactly the turn end, which is EOS.
    assert turn_end_ids(tokenizer) == completion_end_ids(tokenizer) == [tokenizer.eos_token_id]
    response = tokenizer("\\boxed { 7 }", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert tokenizer.decode(response, skip_special_tokens=True) == "\\boxed { 7 }"


def test_saved_tokenizer_reloads_identically_beside_a_qwen2_config(tmp_path, tokenizer):
    """A qwen2 config.json makes AutoTokenizer rebuild Qwen2's byte-level BPE unless the tokenizer names its class;
    the reload must stay word level through a save/load cycle, as fine-tuned checkpoints go through one."""
    from transformers import AutoTokenizer

    text = tokenizer.apply_chat_template([{"role": "user", "content": "f ( 37 ) = 54 ."}], tokenize=False)
    expected = tokenizer(text, add_special_tokens=False)["input_ids"]
    first, second = tmp_path / "base", tmp_path / "tuned"
    for where in (first, second):
        model_config(PretrainSettings(), tokenizer).save_pretrained(str(where))
    tokenizer.save_pretrained(str(first))
    again = AutoTokenizer.from_pretrained(str(first))
    again.save_pretrained(str(second))
    for loaded in (again, AutoTokenizer.from_pretrained(str(second))):
        assert loaded(text, add_special_tokens=False)["input_ids"] == expected
        assert loaded.convert_ids_to_tokens(expected)[-3:] == ["54", ".", IM_END]
        assert (loaded.eos_token_id, loaded.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)
        assert loaded.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False) == (
            "<|im_start|>user\nx<|im_end|>\n"
        )


def test_packed_stream_is_deterministic_and_prefix_stable(tokenizer):
    settings = PretrainSettings(steps=4, batch=3, seq_len=40)
    first = [b.tolist() for b in batches(tokenizer, settings)]
    assert first == [b.tolist() for b in batches(tokenizer, settings)]
    assert [len(b) for b in first] == [3] * 4 and all(len(row) == 40 for b in first for row in b)
    assert first[0][0][0] == tokenizer.convert_tokens_to_ids(PAD)  # every document opens with the separator
    longer = [b.tolist() for b in batches(tokenizer, PretrainSettings(steps=6, batch=3, seq_len=40))]
    assert longer[:4] == first
    other_seed = [b.tolist() for b in batches(tokenizer, PretrainSettings(seed=1, steps=4, batch=3, seq_len=40))]
    assert other_seed != first
    flat = [i for b in first for row in b for i in row]
    assert tokenizer.unk_token_id not in flat


def test_schedule_warms_up_then_decays_to_zero():
    s = PretrainSettings(steps=100, warmup_steps=10, lr=1.0)
    assert lr_at(0, s) == pytest.approx(0.1)
    assert lr_at(9, s) == pytest.approx(1.0)
    assert lr_at(10, s) == pytest.approx(1.0)
    assert lr_at(99, s) < 0.001
    assert all(lr_at(i, s) >= lr_at(i + 1, s) for i in range(10, 99))


def test_model_config_meets_the_serving_constraints(tokenizer):
    config = model_config(PretrainSettings(), tokenizer)
    assert config.hidden_size // config.num_attention_heads == 64  # vLLM's CPU attention kernels
    assert config.head_dim == 64
    assert config.tie_word_embeddings
    assert config.vocab_size == len(tokenizer)
    assert (config.eos_token_id, config.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)


def test_pretrain_writes_a_loadable_deterministic_checkpoint(tmp_path, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    one = pretrain(0, 0, tmp_path / "a", skill_check=False, **SMALL)
    two = pretrain(0, 0, tmp_path / "b", skill_check=False, **SMALL)
    assert one["losses"] == two["losses"]
    assert len(one["losses"]) == SMALL["steps"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "pretrain.json"):
        assert (tmp_path / "a" / name).exists(), name
    assert not (tmp_path / "a" / "skills.json").exists()
    gen = GenerationConfig.from_pretrained(str(tmp_path / "a"))
    assert gen.eos_token_id == [tokenizer.eos_token_id, tokenizer.pad_token_id]
    assert gen.pad_token_id == tokenizer.pad_token_id
    a = AutoModelForCausalLM.from_pretrained(str(tmp_path / "a"))
    b = AutoModelForCausalLM.from_pretrained(str(tmp_path / "b"))
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    recorded = json.loads((tmp_path / "a" / "pretrain.json").read_text())
    assert recorded["settings"]["steps"] == SMALL["steps"]
