"""Time `ablate plan --no-build` and `ablate status` on a 10,000-cell spec, as a user runs them (goal: <= 5 s each
on 2 cores), beside the library alone (validate + plan) and their --json output.

    .venv/bin/python benchmarks/cli_views.py [--cells-per-factor 10] [--seeds 10] [--done 500] [--failed 10]

Every command is the real CLI in a subprocess, in a scratch directory whose store holds `--done` finished and
`--failed` failed data jobs, drawing for an 80-column terminal (FORCE_COLOR, COLUMNS=80). Prints each time, its
ratio to the library baseline and to the --json path, and the share of the goal used.
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

sys.path.insert(0, str(Path(__file__).parent))
from plan import big_spec  # benchmarks/plan.py: the same 10,000-cell spec

GOAL_S = 5.0
LIBRARY = (
    "import sys; from framework.spec import load_spec; from framework.sweep.plan import build_plan; "
    "loaded = load_spec(sys.argv[1]); build_plan(loaded.spec, loaded.path)"
)


def fill_store(spec_path: Path, done: int, failed: int) -> None:
    """Finish `done` data jobs and fail `failed` more, through the store's own build, so status has states to show."""
    from framework.spec import load_spec
    from framework.sweep.execute import open_store
    from framework.sweep.plan import build_plan

    loaded = load_spec(spec_path)
    plan = build_plan(loaded.spec, loaded.path)
    store = open_store(loaded, None)
    jobs = plan.by_stage("data")
    stats = {
        "examples": 20,
        "tokens": {"mean": 812.0, "total": 16240},
        "keyword_rate": 0.4,
        "correct_rate": 1.0,
        "source_mix": {"s0": 20},
        "topic_mix": {"algebra": 12, "geometry": 8},
    }
    for job in jobs[:done]:
        with store.build("data", job.key) as build:
            (build.dir / "stats.json").write_text(json.dumps(stats))
    for job in jobs[done : done + failed]:
        try:
            with store.build("data", job.key):
                raise RuntimeError("a failure the benchmark made")
        except RuntimeError:
            pass


def timed(argv: list[str], cwd: Path, repeat: int) -> float:
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "80", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        best = min(best, time.perf_counter() - t0)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {out.returncode}:\n{out.stderr}")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells-per-factor", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--done", type=int, default=500, help="data jobs to finish in the store first")
    parser.add_argument("--failed", type=int, default=10, help="data jobs to fail in the store first")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each command; the fastest counts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        spec = cwd / "bench.yaml"
        spec.write_text(yaml.safe_dump(big_spec(args.cells_per_factor, args.seeds), sort_keys=False))
        os.chdir(cwd)
        fill_store(spec, args.done, args.failed)
        cli = [sys.executable, "-m", "framework.cli"]
        library = timed([sys.executable, "-c", LIBRARY, str(spec)], cwd, args.repeat)
        print(f"library (python start, validate + plan): {library:.2f} s")
        for command, extra in (("plan", ["--no-build"]), ("status", [])):
            json_s = timed([*cli, command, str(spec), *extra, "--json"], cwd, args.repeat)
            for flag in ("--json", None, "--wide"):
                took = (
                    json_s
                    if flag == "--json"
                    else timed([*cli, command, str(spec), *extra, *filter(None, [flag])], cwd, args.repeat)
                )
                name = " ".join([command, *extra, *filter(None, [flag])])
                print(
                    f"{name:28s} {took:6.2f} s  = {took / library:4.2f}x library, {took / json_s:4.2f}x --json, "
                    f"{took / GOAL_S:4.2f}x of the {GOAL_S:.0f} s goal"
                )


if __name__ == "__main__":
    main()
