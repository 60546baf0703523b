"""Wall-clock of `ablate exec generate` with an offline vLLM teacher against bare vLLM `LLM.generate` on the
same prompts.

    .venv/bin/python benchmarks/generate_offline.py [--problems 64] [--samples 4] [--max-tokens 128]
                                                    [--repeats 1]

The teacher is the shipped toy base (`toy:base`), sampled `--samples` times on `--problems` distinct toy problems
through its chat template. The stage runs as a launcher's job would: a fresh process and a fresh store each
repeat (a warm request journal would answer everything at once), reading the problems, journaling each
finished request and writing traces.parquet. The bare script, also a fresh process, feeds vLLM the same prompt
token ids (built here by the stage's own code) as the same one-sample requests with the same sampling, stop ids,
max_model_len and in-process engine set-up, and times its import, engine build and `generate` separately.
Prints both wall times, their ratio, and where the stage's time beyond the teacher's goes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script: the tests' spec helper
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.helpers import generation_spec

BARE = r"""
import json, os, sys, time
if __name__ == "__main__":
    t0 = time.perf_counter()
    cfg = json.load(open(sys.argv[1]))
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the stage's CPU set-up: engine core in this process
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    t1 = time.perf_counter()
    llm = LLM(model=cfg["model"], dtype="float32", max_model_len=cfg["max_len"], seed=cfg["seed"],
              enforce_eager=True, distributed_executor_backend="uni")
    t2 = time.perf_counter()
    params = SamplingParams(n=1, temperature=cfg["temperature"], top_p=cfg["top_p"], top_k=cfg["top_k"],
                            max_tokens=cfg["max_tokens"], stop_token_ids=cfg["stop_ids"])
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in cfg["prompts"]], params, use_tqdm=False)
    t3 = time.perf_counter()
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    print(json.dumps({"import_s": t1 - t0, "build_s": t2 - t1, "generate_s": t3 - t2, "tokens": tokens}))
"""


def spec(problems: int, samples: int, max_tokens: int) -> dict:
    generated = {
        "problems": {"preset": "toy", "limit": 4 * problems},  # 4 traces per toy problem
        "teacher": {"model": "toy:base"},
        "prompt": "{problem}",
        "samples": samples,
        "sampling": {"temperature": 0.8, "top_p": 0.95, "max_tokens": max_tokens},
        "allow_test_problems": True,  # the benchmark measures speed, not a sweep
    }
    return generation_spec("toy-base-teacher", generated, name="bench-gen")


def bare_config(data: dict) -> dict:
    """The prompts the stage sends, built by the stage's own functions, and the engine settings it uses."""
    from framework.engines import generation_stop_ids
    from framework.generate.offline import prompt_tokens
    from framework.generate.requests import render
    from framework.generate.stage import read_problems
    from framework.locations import toy_model_path
    from framework.model_source import ModelSource, load_tokenizer
    from framework.spec import spec_from_dict

    s = spec_from_dict(data)
    gen = s.pool[1].generate
    problems = read_problems(gen.problems, "bench", lambda p: None)
    model_dir = toy_model_path("toy:base")
    tok = load_tokenizer(ModelSource("toy", str(model_dir)))
    prompts = [prompt_tokens(tok, render(gen.prompt, row), gen.chat) for row in problems.to_dict("records")]
    prompts = [p for p in prompts for _ in range(gen.samples)]  # one request per (problem, sample), as the stage
    g = gen.sampling
    return {
        "model": str(model_dir), "prompts": prompts, "max_len": max(map(len, prompts)) + g.max_tokens,
        "seed": g.seed, "temperature": g.temperature, "top_p": g.top_p, "top_k": g.top_k, "max_tokens": g.max_tokens,
        "stop_ids": generation_stop_ids(model_dir, tok),
    }  # fmt: skip


def run(cmd: list[str], cwd: Path) -> tuple[float, str]:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    return time.perf_counter() - t, out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    data = spec(args.problems, args.samples, args.max_tokens)
    cli = [sys.executable, "-m", "framework.cli"]
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    stage, bare, usage, parts = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = bare_config(data)
        (root / "bare.json").write_text(json.dumps(cfg))
        (root / "bare.py").write_text(BARE)
        for k in range(args.repeats):
            cwd = root / f"stage-{k}"  # a fresh store: nothing in the journal yet
            cwd.mkdir()
            (cwd / "spec.yaml").write_text(yaml.safe_dump(data))
            _, out = run([*cli, "plan", "spec.yaml", "--json", "--no-build"], cwd)
            (key,) = {j["key"] for c in json.loads(out)["cells"] for j in c["stages"]["generate"]}
            seconds, out = run([sys.executable, "bare.py", "bare.json"], root)
            bare.append(seconds)
            parts.append(json.loads(out.strip().splitlines()[-1]))
            stage.append(run([*cli, "exec", "generate", key, "--spec", "spec.yaml"], cwd)[0])
            done = cwd / "results" / "bench-gen" / "store" / "generate" / key
            usage.append(json.loads((done / "usage.json").read_text()))
    u, p = usage[-1], parts[-1]
    if u["finished"] != len(cfg["prompts"]):
        sys.exit(f"the stage finished {u['finished']} of {len(cfg['prompts'])} requests")
    st, bt = median(stage), median(bare)
    teacher_s = median([x["seconds"] for x in usage])
    print(
        f"{args.problems} problems x {args.samples} samples = {len(cfg['prompts'])} requests, max_tokens "
        f"{args.max_tokens}, {args.repeats} repeat(s), {os.cpu_count()} cores"
    )
    print(
        f"ablate exec generate: {st:.1f} s  (teacher: vLLM import, engine build, generate, journal "
        f"{teacher_s:.1f} s; {u['completion_tokens']} tokens)"
    )
    print(
        f"bare LLM.generate:    {bt:.1f} s  (import {median([x['import_s'] for x in parts]):.1f} s, engine build "
        f"{median([x['build_s'] for x in parts]):.1f} s, generate {median([x['generate_s'] for x in parts]):.1f} s; "
        f"{p['tokens']} tokens)"
    )
    print(f"ratio stage / bare: {st / bt:.3f}x   stage beyond the teacher: {st - teacher_s:.1f} s")


if __name__ == "__main__":
    main()
