"""What a warm engine saves an evaluation: per checkpoint, loading its weights into the live vLLM engine against
building a new engine for it (goal: <= 0.1x), measured side by side in one process; and, with `--sweep`, the
quickstart's wall time and eval time run three ways, one after another on this machine.

    .venv/bin/python benchmarks/eval_reuse.py [--checkpoints 6] [--dir /tmp/eval-reuse]
    .venv/bin/python benchmarks/eval_reuse.py --sweep [--baseline-repo PATH]

1. Engine cost per checkpoint. `--checkpoints` copies of the toy base with perturbed weights (same files
   otherwise: what a sweep's trained cells are) are evaluated in turn in one process, first each by a new engine
   (the previous one freed first, as the eval stage does for a model it cannot reuse), then each by the one warm
   engine. Timed: the engine's readiness for the checkpoint (build, or load + reseed + prefix cache reset); and,
   for both, one generation of 16 prompts x 4 samples, whose outputs must be identical (the warm engine samples
   what a fresh one does). The ratio printed is median warm / median cold.
2. `--sweep`: `ablate run ablations/quickstart.yaml` from an empty results directory, three ways:
   - `before`: the code at `--baseline-repo` (a checkout of the version before warm engines and core allotment),
     with the quickstart's spec as it is there (3 CPU slots, no pinning, one process per evaluation);
   - `one process per eval`: this code, `eval.reuse_engine: false`;
   - `warm + allotted`: this code as shipped (warm evaluation processes, each job on its own cores).
   Printed per way: the sweep's wall time, and its eval time (the sum of the eval tasks' durations, as the
   launcher reports them, and their mean).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]

ENGINE = r"""
import json, sys, time
from pathlib import Path
from transformers import AutoTokenizer
from framework import engines
from framework.engines import Decoding, start_job, vllm_engine, vllm_generate
from framework.locations import toy_base_path
from framework.spec.models import SamplingSpec
from tests.helpers import perturbed_toy_copy

out, n = Path(sys.argv[1]), int(sys.argv[2])
base = toy_base_path()
dirs = [d if (d := out / f"ckpt{i}").exists() else perturbed_toy_copy(d, i) for i in range(n)]
tok = AutoTokenizer.from_pretrained(base)
prompts = [tok(f"What is {i} + {2 * i}?")["input_ids"] for i in range(16)]
ev = Decoding(SamplingSpec(temperature=0.6, top_p=0.95, max_tokens=48, seed=0), samples=4)

def ready_and_generate(d, fresh):
    if fresh:
        engines.release_engines()
    start_job()  # each checkpoint's evaluation is a job of its own
    t = time.perf_counter()
    vllm_engine(d, ev, "float32", 256)
    ready = time.perf_counter() - t
    t = time.perf_counter()
    out = vllm_generate(d, prompts, ev, "float32", 256, [tok.eos_token_id])
    return ready, time.perf_counter() - t, [[s["text"] for s in row] for row in out]

ready_and_generate(dirs[0], True)  # imports, kernels and the first engine: paid by both ways alike
cold = [ready_and_generate(d, True) for d in dirs]
warm = [ready_and_generate(d, False) for d in dirs]
print("RESULT " + json.dumps({
    "cold": [c[:2] for c in cold], "warm": [w[:2] for w in warm],
    "identical": [c[2] == w[2] for c, w in zip(cold, warm)],
    "distinct": len({json.dumps(c[2]) for c in cold}),
}))
"""


def engine_cost(n: int, workdir: Path) -> None:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", ENGINE, str(workdir), str(n)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if out.returncode:
        sys.exit(out.stderr[-4000:])
    r = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    cold_ready = float(np.median([c[0] for c in r["cold"]]))
    warm_ready = float(np.median([w[0] for w in r["warm"]]))
    print(f"engine for a checkpoint ({n} checkpoints, one process, median):")
    print(
        f"  cold (a new engine)        {cold_ready:8.3f} s   generate {float(np.median([c[1] for c in r['cold']])):.3f} s"
    )
    print(
        f"  warm (weights loaded)      {warm_ready:8.3f} s   generate {float(np.median([w[1] for w in r['warm']])):.3f} s"
    )
    print(f"  ratio warm / cold          {warm_ready / cold_ready:8.4f}   (goal <= 0.1)")
    print(f"  samples identical: {sum(r['identical'])}/{n}; distinct checkpoints' outputs: {r['distinct']}/{n}")


def run_sweep(repo: Path, python: Path, spec: dict, results: Path) -> dict[str, float]:
    """`ablate run` of the spec from an empty results directory; its wall time and the eval tasks' durations."""
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    spec_path = results / "quickstart.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))  # factors apply in their order
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{results / 'mlflow.db'}"
    t = time.perf_counter()
    out = subprocess.run(
        [str(python), "-m", "framework.cli", "run", str(spec_path), "--results-dir", str(results)],
        cwd=repo, env=env, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - t
    if out.returncode:
        sys.exit(f"{repo}: exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    evals = [float(s) for s in re.findall(r"^done\s+eval/\S+\s+(\d+)s", out.stdout, re.M)]
    return {"wall": wall, "eval_sum": sum(evals), "eval_mean": float(np.mean(evals)), "eval_tasks": len(evals)}


def sweeps(baseline: Path) -> None:
    here = yaml.safe_load((ROOT / "ablations" / "quickstart.yaml").read_text())
    before = yaml.safe_load((baseline / "ablations" / "quickstart.yaml").read_text())
    cold = json.loads(json.dumps(here))
    cold.setdefault("eval", {})["reuse_engine"] = False
    python = Path(sys.executable)
    ways = [("before", baseline, before), ("one process per eval", ROOT, cold), ("warm + allotted", ROOT, here)]
    rows = {}
    with tempfile.TemporaryDirectory(prefix="eval-reuse-") as tmp:
        for name, repo, spec in ways:
            rows[name] = run_sweep(repo, python, spec, Path(tmp) / name.replace(" ", "-"))
            print(f"  {name}: {json.dumps({k: round(v, 1) for k, v in rows[name].items()})}", flush=True)
    ref = rows["before"]
    print("quickstart sweep (this machine, one after another):")
    print(f"  {'way':24s} {'wall s':>8s} {'x before':>9s} {'eval s (sum)':>13s} {'x before':>9s} {'tasks':>6s}")
    for name, r in rows.items():
        print(
            f"  {name:24s} {r['wall']:8.0f} {r['wall'] / ref['wall']:9.2f} {r['eval_sum']:13.0f} "
            f"{r['eval_sum'] / ref['eval_sum']:9.2f} {r['eval_tasks']:6.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=int, default=6)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "eval-reuse")
    parser.add_argument("--sweep", action="store_true", help="also run the quickstart three ways")
    parser.add_argument("--baseline-repo", type=Path, help="a checkout of the version to compare with")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    engine_cost(args.checkpoints, args.dir)
    if args.sweep:
        if args.baseline_repo is None:
            sys.exit("--sweep needs --baseline-repo: a checkout of the version before warm engines")
        sweeps(args.baseline_repo)


if __name__ == "__main__":
    main()
