"""One vLLM engine serves checkpoint after checkpoint (framework.engines.vllm_engine): the next checkpoint's weights
are loaded into the live engine, and what it samples is what a fresh engine of that checkpoint samples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import json, shutil, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer
from framework import engines
from framework.engines import Decoding, checkpoint_signature, release_engines, start_job, vllm_generate
from framework.locations import toy_base_path
from framework.spec.models import SamplingSpec
from tests.helpers import perturbed_toy_copy

tmp = Path(sys.argv[1])
base = toy_base_path()
first_dir, other, partial = tmp / "first", tmp / "other", tmp / "partial"
perturbed_toy_copy(first_dir, 1)  # two fine-tunes of one base: only their weights differ
perturbed_toy_copy(other, 2)
shutil.copytree(other, partial)
custom = tmp / "custom"
shutil.copytree(other, custom)
(custom / "modeling_custom.py").write_text("# code of its own: an engine built for the others is not this model's")
weights = load_file(partial / "model.safetensors")
weights.pop("model.norm.weight")
save_file(weights, partial / "model.safetensors", metadata={"format": "pt"})

tok = AutoTokenizer.from_pretrained(base)
prompts = [tok(t)["input_ids"] for t in ["What is 3 + 4?", "Name the capital of Vel.", "Count to five:"]]
ev = Decoding(SamplingSpec(temperature=0.8, top_p=0.95, max_tokens=24, seed=3), samples=2)

def run(d):  # one evaluation job
    start_job()
    return [[s["text"] for s in row] for row in vllm_generate(d, prompts, ev, "float32", 128, [tok.eos_token_id])]


sig = checkpoint_signature
result = {"same_signature": sig(first_dir) == sig(other), "custom_differs": sig(custom) != sig(other)}
first = run(first_dir)
engine = next(iter(engines._ENGINES.values()))
reused = run(other)
result["one_engine"] = [id(e) for e in engines._ENGINES.values()] == [id(engine)]
result["again"] = run(other) == reused  # the same checkpoint in a new job samples the same draws
back = run(first_dir)
try:
    engine.collective_rpc("load_checkpoint", args=(str(partial),))
    result["partial"] = "loaded"
except Exception as e:
    result["partial"] = str(e)
release_engines()
fresh = run(other)
result.update(reused_equals_fresh=reused == fresh, differs=fresh != first, back_equals_first=back == first)
print("RESULT " + json.dumps(result))
"""


def test_a_reused_engine_samples_what_a_fresh_engine_of_the_checkpoint_samples(tmp_path: Path):
    env = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, env=env, cwd=Path.cwd()
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["same_signature"] and result["custom_differs"]
    assert result["one_engine"]
    assert result["again"]
    assert result["differs"]  # the checkpoints sample differently: equality below is not trivially true
    assert result["reused_equals_fresh"]
    assert result["back_equals_first"]
    assert "lacks 1 of the engine's weights: model.norm.weight" in result["partial"]
