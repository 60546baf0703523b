"""Wall-clock of `ablate exec eval` against a bare vLLM script doing the same work (goal: <= 1.05x).

    .venv/bin/python benchmarks/eval.py [--problems 100] [--samples 4] [--max-tokens 128] [--repeats 1]

Both sides start a fresh process, load the same tiny checkpoint into vLLM, generate for the same prompt token
ids with the same sampling settings, extract the last boxed answer and grade it with math-verify; the stage also
writes its Parquet/JSON outputs and manifest. Both timings include interpreter and engine start-up, as a
launcher's job would. The bare script runs twice: with vLLM's defaults (what a user would write), and with the
engine core in-process as the stage sets it up on CPU (the like-for-like ratio). Also prints grading throughput
(answers/s per core) of the stage's grader.
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

BARE = r"""
import json, sys, time
if __name__ == "__main__":
    cfg = json.load(open(sys.argv[1]))
    import os
    extra = {}
    if cfg["in_process"]:  # the stage's own CPU set-up: engine core and worker in this process
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        extra["distributed_executor_backend"] = "uni"
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from math_verify import parse, verify
    from framework.grading.extraction import extract_answer
    llm = LLM(model=cfg["model"], dtype="float32", max_model_len=cfg["max_len"], seed=0, enforce_eager=True, **extra)
    params = SamplingParams(n=cfg["samples"], temperature=0.6, top_p=0.95, max_tokens=cfg["max_tokens"])
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in cfg["prompts"]], params, use_tqdm=False)
    correct = 0
    for out, gold in zip(outs, cfg["answers"]):
        for o in out.outputs:
            a = extract_answer(o.text)[0]
            correct += bool(a is not None and verify(parse("\\boxed{" + gold + "}"), parse("\\boxed{" + a + "}")))
    print(json.dumps({"correct": correct}))
"""


def run(cmd: list[str], cwd: Path) -> float:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "VLLM_CPU_KVCACHE_SPACE": "1"}
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    spec = {
        "name": "bench-eval",
        "model": {
            "tiny": {
                "hidden_size": 128,
                "num_layers": 2,
                "num_heads": 2,
                "intermediate_size": 256,
                "max_position_embeddings": 512,
            }
        },
        "pool": [{"preset": "toy"}],
        "baselines": ["base"],
        "prompt": {"user_template": "{problem}"},
        "eval": {
            "benchmarks": [{"name": "toy", "limit": args.problems}],
            "samples": args.samples,
            "sampling": {"temperature": 0.6, "top_p": 0.95, "max_tokens": args.max_tokens},
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "spec.yaml").write_text(yaml.safe_dump(spec))
        cli = [sys.executable, "-m", "framework.cli"]
        plan = json.loads(
            subprocess.run(
                [*cli, "plan", "spec.yaml", "--json"], cwd=cwd, capture_output=True, text=True, check=True
            ).stdout
        )
        base = next(c for c in plan["cells"] if c["baseline"] == "base")
        model_dir = cwd / "results" / "bench-eval" / "store" / "model" / base["stages"]["model"][0]["key"]
        eval_key = base["stages"]["eval"][0]["key"]

        from framework.benchmarks.loading import load_benchmark
        from framework.formatting import prompt_ids
        from framework.model_source import ModelSource, load_tokenizer
        from framework.spec import spec_from_dict

        s = spec_from_dict(spec)
        problems = load_benchmark(s.eval.benchmarks[0], lambda p: None)
        tok = load_tokenizer(ModelSource("tiny", str(model_dir)))
        prompts = [prompt_ids(tok, p, s.prompt) for p in problems["problem"]]
        cfg = {
            "model": str(model_dir),
            "prompts": prompts,
            "answers": list(problems["expected_answer"]),
            "samples": args.samples,
            "max_tokens": args.max_tokens,
            "max_len": max(map(len, prompts)) + args.max_tokens,
        }
        (cwd / "bare.json").write_text(json.dumps({**cfg, "in_process": False}))
        (cwd / "bare_inproc.json").write_text(json.dumps({**cfg, "in_process": True}))
        (cwd / "bare.py").write_text(BARE)

        stage_times, bare_times, inproc_times = [], [], []
        for _ in range(args.repeats):
            bare_times.append(run([sys.executable, "bare.py", "bare.json"], cwd))
            inproc_times.append(run([sys.executable, "bare.py", "bare_inproc.json"], cwd))
            stage_times.append(run([*cli, "exec", "eval", eval_key, "--spec", "spec.yaml", "--force"], cwd))
        metrics = json.loads(
            (cwd / "results" / "bench-eval" / "store" / "eval" / eval_key / "metrics.json").read_text()
        )
    n = args.problems * args.samples
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    st, bt, it = median(stage_times), median(bare_times), median(inproc_times)
    print(f"{args.problems} problems x {args.samples} samples, max_tokens {args.max_tokens}, {args.repeats} repeat(s)")
    print(f"ablate exec eval: {st:.1f} s")
    print(f"bare LLM.generate + grading, vLLM defaults: {bt:.1f} s   ratio {st / bt:.3f}x")
    print(f"bare LLM.generate + grading, engine in-process like the stage: {it:.1f} s   ratio {st / it:.3f}x")
    grade_s = metrics["timings"]["grade_s"]
    print(
        f"stage grading: {n} answers in {grade_s:.2f} s = {n / grade_s:.0f} answers/s "
        f"({(os.cpu_count() or 1)} cores, {n / grade_s / (os.cpu_count() or 1):.0f} per core)"
    )


if __name__ == "__main__":
    main()
