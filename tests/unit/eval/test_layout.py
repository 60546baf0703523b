"""The layout of an evaluation on GPUs: tensor parallel x data parallel, picked from the model and the GPUs."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from framework.eval.layout import resolve_layout
from framework.spec import spec_from_dict
from framework.spec.models import EvalSpec
from framework.sweep.eval_layout import eval_gpus, pick_layout, tp_choices, valid_tp
from framework.sweep.model_size import ModelSize, safetensors_params, size_from_dir

# Parameters and (heads, KV heads) of Qwen2.5 models, from their config.json.
QWEN = {
    "0.5B": ModelSize(0.494e9, None, None, "0.5B", heads=14, kv_heads=2),
    "7B": ModelSize(7.62e9, None, None, "7B", heads=28, kv_heads=4),
    "32B": ModelSize(32.8e9, None, None, "32B", heads=40, kv_heads=8),
    "72B": ModelSize(72.7e9, None, None, "72B", heads=64, kv_heads=8),
}

# (model, GiB per GPU) -> (TP, DP) on 1, 2, 4 and 8 GPUs. bf16 weights may take 60% of the 90% vLLM claims:
# 43.2 GiB of an 80 GiB GPU, 76.1 GiB of a 141 GiB one. 32B = 61.1 GiB, 72B = 135.4 GiB.
EXPECTED = {
    ("0.5B", 80): [(1, 1), (1, 2), (1, 4), (1, 8)],
    ("7B", 80): [(1, 1), (1, 2), (1, 4), (1, 8)],
    ("32B", 80): [(1, 1), (2, 1), (2, 2), (2, 4)],  # on one GPU it does not fit: the why says so
    ("72B", 80): [(1, 1), (2, 1), (4, 1), (4, 2)],
    ("0.5B", 141): [(1, 1), (1, 2), (1, 4), (1, 8)],
    ("7B", 141): [(1, 1), (1, 2), (1, 4), (1, 8)],
    ("32B", 141): [(1, 1), (1, 2), (1, 4), (1, 8)],
    ("72B", 141): [(1, 1), (2, 1), (2, 2), (2, 4)],
}


@pytest.mark.parametrize(("model", "memory"), list(EXPECTED))
def test_the_fewest_gpus_that_hold_the_weights_and_replicas_on_the_rest(model: str, memory: int):
    for gpus, want in zip((1, 2, 4, 8), EXPECTED[(model, memory)], strict=True):
        chosen = pick_layout(QWEN[model], gpus=gpus, gpu_memory_gib=memory)
        assert (chosen.tp, chosen.dp) == want, (model, memory, gpus, chosen.why)
        assert chosen.gpus == chosen.tp * chosen.dp <= gpus


def test_the_why_says_what_was_weighed_and_when_it_does_not_fit():
    fits = pick_layout(QWEN["32B"], gpus=8, gpu_memory_gib=80)
    assert "61.1 GiB of bfloat16 weights (32B, 40 heads / 8 KV heads)" in fits.why
    assert "30.5 GiB each" in fits.why and "4 engine(s) on 8 GPU(s)" in fits.why
    short = pick_layout(QWEN["72B"], gpus=2, gpu_memory_gib=80)
    assert (short.tp, short.dp) == (2, 1) and "do not fit" in short.why and "more GPUs" in short.why
    fp32 = pick_layout(QWEN["7B"], gpus=8, gpu_memory_gib=80, dtype="float32")  # 28.4 GiB: still one GPU
    assert fp32.tp == 1 and "float32" in fp32.why


def test_tensor_parallel_sizes_must_split_the_heads():
    assert valid_tp(4, 28, 4) and not valid_tp(8, 28, 4)  # 28 heads: no 8-way split
    assert valid_tp(16, 64, 8)  # more ranks than KV heads: each KV head is replicated, a multiple of 8 works
    assert not valid_tp(8, 24, 3)  # 3 KV heads neither divide into 8 nor 8 into them
    assert tp_choices(8, 14, 2) == [1, 2]  # 0.5B: 14 heads
    assert tp_choices(6, None, None) == [1, 2, 4]  # powers of two up to the GPUs
    # a 7B-headed model too big for 4 GPUs cannot take 8: the widest split of its heads, and the why says so
    big = ModelSize(100e9, None, None, "28 heads", heads=28, kv_heads=4)  # 186 GiB: 46.6 GiB on each of 4
    chosen = pick_layout(big, gpus=8, gpu_memory_gib=80)
    assert (chosen.tp, chosen.dp) == (4, 2) and "do not fit" in chosen.why


def test_a_fixed_size_wins_and_the_other_is_derived_from_it():
    tp = pick_layout(QWEN["0.5B"], gpus=8, gpu_memory_gib=80, tp=4)
    assert (tp.tp, tp.dp, tp.gpus) == (4, 2, 8) and "tensor_parallel_size 4 fixed" in tp.why
    dp = pick_layout(QWEN["7B"], gpus=8, gpu_memory_gib=80, dp=2)
    assert (dp.tp, dp.dp) == (4, 2)  # each engine takes its share of the job's GPUs
    headed = pick_layout(QWEN["0.5B"], gpus=8, gpu_memory_gib=80, dp=2)  # 4 GPUs each, but 14 heads: TP 2
    assert (headed.tp, headed.dp) == (2, 2)
    crowded = pick_layout(QWEN["32B"], gpus=8, gpu_memory_gib=80, dp=8)
    assert (crowded.tp, crowded.dp) == (1, 8) and "over the 43.2 GiB" in crowded.why
    both = pick_layout(QWEN["72B"], gpus=8, gpu_memory_gib=80, tp=8, dp=1)
    assert (both.tp, both.dp, both.gpus) == (8, 1, 8) and "fixed" in both.why


def test_on_cpu_one_engine_unless_the_spec_fixes_sizes():
    cpu = pick_layout(QWEN["72B"], gpus=0, gpu_memory_gib=None)
    assert (cpu.tp, cpu.dp, cpu.gpus) == (1, 1, 0) and cpu.why == "on CPU"
    assert (pick_layout(None, gpus=0, gpu_memory_gib=None, dp=2).dp, pick_layout(None, gpus=0, gpu_memory_gib=None, tp=2).tp) == (2, 2)  # fmt: skip


def test_unknown_gpu_memory_or_model_size_takes_one_gpu_per_engine():
    chosen = pick_layout(QWEN["72B"], gpus=8, gpu_memory_gib=None)
    assert (chosen.tp, chosen.dp) == (1, 8) and "GPU memory unknown" in chosen.why


def write_safetensors(path: Path, shapes: dict[str, list[int]]) -> None:
    """A safetensors file's header (the tensors' bytes are never read for a count)."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 2 * math.prod(shape)
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps({"__metadata__": {"format": "pt"}, **header}).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def test_the_checkpoint_s_files_give_its_parameters_and_heads(tmp_path: Path):
    (tmp_path / "config.json").write_text(json.dumps({"num_attention_heads": 2, "num_key_value_heads": 2}))
    write_safetensors(tmp_path / "model-00001-of-00002.safetensors", {"a": [10, 4], "b": [4]})
    write_safetensors(tmp_path / "model-00002-of-00002.safetensors", {"c": [3, 3, 3]})
    assert safetensors_params(tmp_path) == 44 + 27
    size = size_from_dir(tmp_path)
    assert size is not None and (size.params, size.heads, size.kv_heads) == (71, 2, 2)
    # no GPU memory holds it "with room" at 1e-9 GiB: the widest split of 2 heads on 4 GPUs, 2 replicas
    ev, chosen = resolve_layout(EvalSpec(), tmp_path, "bfloat16", gpus=(4, 1e-9))
    assert (ev.tensor_parallel_size, ev.data_parallel_size) == (chosen.tp, chosen.dp) == (2, 2)
    ev, chosen = resolve_layout(EvalSpec(), tmp_path, "bfloat16", gpus=(4, 80.0))
    assert (ev.tensor_parallel_size, ev.data_parallel_size) == (1, 4)
    ev, chosen = resolve_layout(EvalSpec(), tmp_path, "float32", gpus=(0, None))
    assert (ev.tensor_parallel_size, ev.data_parallel_size, chosen.why) == (1, 1, "on CPU")


def test_a_checkpoint_without_safetensors_is_counted_from_its_config(tmp_path: Path):
    config = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
              "intermediate_size": 128, "vocab_size": 1000, "tie_word_embeddings": True}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    size = size_from_dir(tmp_path)
    assert size is not None and size.params == 138_048 and (size.heads, size.kv_heads) == (2, 1)


def test_the_spec_takes_auto_or_a_size():
    assert (EvalSpec().tensor_parallel_size, EvalSpec().data_parallel_size) == ("auto", "auto")
    assert EvalSpec(tensor_parallel_size=2).tensor_parallel_size == 2
    for bad in (0, "all"):
        with pytest.raises(ValueError):
            EvalSpec(data_parallel_size=bad)


def test_a_local_eval_job_takes_one_engine_s_gpus(minimal):
    """With data_parallel_size auto, the local launcher gives an evaluation the GPUs of one engine (the widest any
    evaluated model needs): several checkpoints are evaluated at once, each with its own engine."""
    minimal["model"] = {"name_or_path": "Qwen/Qwen2.5-72B"}  # known size: 135 GiB of bf16 weights
    spec = spec_from_dict(minimal)
    assert eval_gpus(spec, 8, memory_gib=80) == 4 and eval_gpus(spec, 8, memory_gib=141) == 2
    assert eval_gpus(spec, 2, memory_gib=80) == 2  # all there are (the eval's why says it does not fit)
    assert eval_gpus(spec, 0) == 0
    minimal["baselines"] = [{"name": "small", "model": {"name_or_path": "Qwen/Qwen2.5-0.5B"}}]
    assert eval_gpus(spec_from_dict(minimal), 8, memory_gib=80) == 4  # the widest model decides
    minimal["eval"]["tensor_parallel_size"] = 2
    assert eval_gpus(spec_from_dict(minimal), 8) == 2
    minimal["eval"]["data_parallel_size"] = 3
    assert eval_gpus(spec_from_dict(minimal), 8) == 6 and eval_gpus(spec_from_dict(minimal), 4) == 4
    minimal["eval"]["tensor_parallel_size"] = "auto"
    minimal["eval"]["data_parallel_size"] = 2  # each of 2 engines takes 4 of 8 GPUs for the 72B model
    assert eval_gpus(spec_from_dict(minimal), 8, memory_gib=80) == 8


def test_the_shipped_toy_base_is_counted_as_the_safetensors_library_reads_it():
    safetensors = pytest.importorskip("safetensors")
    from framework.locations import toy_base_path

    base = toy_base_path()
    expected = 0
    for path in base.glob("*.safetensors"):
        with safetensors.safe_open(str(path), "np") as f:
            expected += sum(f.get_tensor(k).size for k in f.keys())  # noqa: SIM118 - safe_open has no iterator
    size = size_from_dir(base)
    assert size is not None and size.params == expected > 0 and (size.heads, size.kv_heads) == (2, 2)
