"""The train stage's ZeRO-3 speed settings side by side: each variant's step time as a ratio of the baseline's.

    python benchmarks/train_gpu_compare.py [--rounds 1] [--timeout 300] [--variants a,b,...] [--out DIR]
                                           -- [flags every run shares, passed to benchmarks/train_gpu.py]

Each variant is one run of `benchmarks/train_gpu.py` in a process of its own (DeepSpeed's state does not reset
within one), with the shared flags plus its own. With `--rounds` above 1 the variants run in turn, round after
round, so that a machine's drift (clocks, caches, a neighbour) falls on all of them alike; a variant's step is the
median of its runs' median steps. The baseline is the first variant: ZeRO-3 as the spec's defaults have it.

    variant        flags                             what it removes from a step
    zero3          (none)                            nothing: the default recipe
    whole-layer    --gather-per-layer                ZeRO-3's hooks on each norm and projection (one per layer)
    plain-linear   --gather-per-layer --plain-linear  and DeepSpeed's Python autograd function around each linear
    zero0          --zero-stage 0                    every ZeRO hook: the ceiling of this recipe on one device

The host time of these hooks shows without a GPU (`--size skeleton`: 1.5b's 28 layers at tiny widths):

    OMP_NUM_THREADS=1 python benchmarks/train_gpu_compare.py --rounds 3 -- --size skeleton --device cpu \\
        --lean --loss-chunk 4096 --no-gradient-checkpointing --grad-accum 8 --seq-len 32 --steps 5 --warmup 2

and on a GPU, the check that says whether they lift a 16k-token step of a 1.5B model to 40% MFU:

    python benchmarks/train_gpu_compare.py -- --lean --loss-chunk 4096 --no-gradient-checkpointing \\
        --grad-accum 8 --warmup 1 --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "train_gpu.py"

VARIANTS: dict[str, list[str]] = {
    "zero3": [],
    "whole-layer": ["--gather-per-layer"],
    "plain-linear": ["--gather-per-layer", "--plain-linear"],
    "zero0": ["--zero-stage", "0"],
}


def run_variant(name: str, shared: list[str], out_dir: Path, round_no: int, timeout_s: float) -> dict[str, Any]:
    """One run of the benchmark; its JSON result, or {"error": ...} with the tail of its output."""
    out = out_dir / f"{name}.{round_no}.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, str(BENCH), *shared, *VARIANTS[name], "--json", str(out)]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    (out_dir / f"{name}.{round_no}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
    return json.loads(out.read_text())


def summarize(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per variant: the median of its runs' median steps, and its ratio to the first variant's."""
    rows = []
    for name, results in runs.items():
        ok = [r for r in results if "error" not in r]
        row: dict[str, Any] = {
            "variant": name,
            "runs": len(ok),
            "errors": [r["error"] for r in results if "error" in r],
        }
        if ok:
            row["step_s"] = statistics.median(r["step_s_median"] for r in ok)
            row["tokens_per_s"] = ok[0]["tokens_per_step"] / row["step_s"]
            mfus = [r["mfu"] for r in ok if r.get("mfu") is not None]
            row["mfu"] = statistics.median(mfus) if mfus else None
            peaks = [r["peak_memory_allocated_gib"] for r in ok if r.get("peak_memory_allocated_gib") is not None]
            row["peak_gib"] = max(peaks) if peaks else None
        rows.append(row)
    base = rows[0].get("step_s") if rows else None
    for row in rows:
        row["vs_baseline"] = row["step_s"] / base if base and row.get("step_s") else None
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    columns = [  # header, row key, format; right-aligned to the header's width
        ("runs", "runs", "d"),
        ("   step s", "step_s", ".4f"),
        ("  tokens/s", "tokens_per_s", ".0f"),
        ("   MFU", "mfu", ".1%"),
        ("peak GiB", "peak_gib", ".1f"),
        ("step ÷ base", "vs_baseline", ".3f"),
    ]
    lines = [f"{'variant':14s} " + " ".join(h for h, _, _ in columns)]
    for r in rows:
        cells = ["n/a" if r.get(k) is None else format(r[k], f) for _, k, f in columns]
        lines.append(f"{r['variant']:14s} " + " ".join(c.rjust(len(h)) for c, (h, _, _) in zip(cells, columns)))
        lines += [f"  {r['variant']}: {e}" for e in r["errors"]]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    shared = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=1, help="runs of each variant, taken in turn (default 1)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds one run may take (default 300)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, baseline first: {list(VARIANTS)}")
    p.add_argument("--out", type=Path, default=None, help="keep each run's JSON and log here (default: a temp dir)")
    opts = p.parse_args(own)
    opts.variants = [v.strip() for v in opts.variants.split(",") if v.strip()]
    unknown = [v for v in opts.variants if v not in VARIANTS]
    if unknown or not opts.variants:
        p.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    if opts.rounds < 1:
        p.error("need --rounds >= 1")
    if "--json" in shared:
        p.error("--json is set per run; use --out to keep the results")
    return opts, shared


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    opts, shared = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="train_gpu_compare_") as tmp:
        out_dir = opts.out or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in opts.variants}
        for round_no in range(opts.rounds):
            for name in opts.variants:
                result = run_variant(name, shared, out_dir, round_no, opts.timeout)
                runs[name].append(result)
                step = result.get("step_s_median")
                print(f"round {round_no + 1} {name}: " + (f"{step:.4f} s" if step else result["error"]), flush=True)
    rows = summarize(runs)
    print(f"\nshared flags: {' '.join(shared) or '(none)'}\n" + table(rows), flush=True)
    if opts.out:
        (opts.out / "summary.json").write_text(json.dumps({"shared": shared, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
