"""The `ablate` command line.

Exit codes: 0 success; 1 a stage failed; 2 a user error (bad spec, missing file, unknown key), reported as one
line per problem without a traceback (`--debug` shows it); 3 a stage that is not implemented yet; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from framework.execute import ExecError, StageNotImplemented, execute, open_store, results_root
from framework.hashing import content_key
from framework.plan import Plan, PlanError, build_plan
from framework.spec import LoadedSpec, SpecErrors, SpecFileError, load_spec
from framework.stages import STAGE_ORDER, STAGES

USER_ERRORS = (SpecErrors, SpecFileError, PlanError, ExecError)


def _load(path: str, *, strict: bool = True) -> tuple[LoadedSpec, Plan]:
    loaded = load_spec(path)
    return loaded, build_plan(loaded.spec, loaded.path, strict=strict)


def spec_hash(loaded: LoadedSpec) -> str:
    return content_key(loaded.spec.model_dump(mode="json", exclude={"launcher"}))


# ------------------------------------------------------------------------------------------- validate
def cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.specs:
        try:
            loaded, plan = _load(path, strict=False)
        except USER_ERRORS as e:
            failed += 1
            for line in str(e).splitlines():
                print(f"error: {line}", file=sys.stderr)
            continue
        for w in plan.warnings:
            print(f"warning: {path}: {w} (needed before `ablate plan/run`)", file=sys.stderr)
        n_train = len(plan.by_stage("train"))
        print(f"ok  {path}: {loaded.spec.name}, {len(plan.cells)} cells, {n_train} trainings, {len(plan.jobs)} jobs")
    return 2 if failed else 0


# ----------------------------------------------------------------------------------------------- plan
def plan_summary(loaded: LoadedSpec, plan: Plan, results_dir: str | None) -> dict[str, Any]:
    """The machine-readable plan (`ablate plan --json`): cells, their stage jobs, and which are done."""
    store = open_store(loaded, results_dir)
    done = {jid: store.is_done(j.stage, j.key) for jid, j in plan.jobs.items()}
    counts = {
        s: {"jobs": len(plan.by_stage(s)), "done": sum(done[j.id] for j in plan.by_stage(s))} for s in STAGE_ORDER
    }
    return {
        "name": loaded.spec.name,
        "spec_hash": spec_hash(loaded),
        "results": str(results_root(loaded, results_dir)),
        "cells": [
            {
                "id": c.id,
                "key": c.key,
                "arm": c.arm_id,
                "levels": c.level_map,
                "seed": c.seed,
                "baseline": c.baseline,
                "stages": {
                    s: [{"key": jid.split("/")[1], "done": done[jid]} for jid in plan.cell_jobs[c.id][s]]
                    for s in STAGE_ORDER
                },
            }
            for c in plan.cells
        ],
        "jobs": [
            {"id": j.id, "stage": j.stage, "key": j.key, "deps": j.deps, "cells": j.cells, "done": done[j.id]}
            for j in plan.jobs.values()
        ],
        "counts": counts,
    }


def cmd_plan(args: argparse.Namespace) -> int:
    loaded, plan = _load(args.spec)
    summary = plan_summary(loaded, plan, args.results_dir)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    spec = loaded.spec
    console.print(f"[bold]{spec.name}[/bold] — {spec.description or 'no description'}")
    console.print(f"results: {summary['results']}")
    table = Table("cell", "key", *[s for s in STAGE_ORDER], title=f"{len(plan.cells)} cells")
    for c in summary["cells"]:
        row = []
        for s in STAGE_ORDER:
            jobs = c["stages"][s]
            row.append(" ".join(("✓" if j["done"] else "·") + j["key"][:6] for j in jobs) if jobs else "—")
        table.add_row(c["id"], c["key"][:8], *row)
    console.print(table)
    counts = ", ".join(f"{s} {v['done']}/{v['jobs']}" for s, v in summary["counts"].items() if v["jobs"])
    console.print(f"stage jobs done/total (shared jobs counted once): {counts}")
    return 0


# --------------------------------------------------------------------------------------------- status
def cmd_status(args: argparse.Namespace) -> int:
    loaded, plan = _load(args.spec)
    store = open_store(loaded, args.results_dir)
    rows = []
    for cell in plan.cells:
        for stage in STAGE_ORDER:
            for jid in plan.cell_jobs[cell.id][stage]:
                st = store.status(stage, jid.split("/")[1])
                rows.append(
                    {
                        "cell": cell.id,
                        "stage": stage,
                        "key": jid.split("/")[1],
                        "state": st.state,
                        "detail": st.detail,
                        "log": str(store.log_path(stage, jid.split("/")[1])),
                    }
                )
    if args.json:
        print(json.dumps({"name": loaded.spec.name, "stages": rows}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("cell", "stage", "key", "state", "detail", title=loaded.spec.name)
    colors = {"done": "green", "running": "cyan", "failed": "red", "pending": "dim"}
    for r in rows:
        table.add_row(r["cell"], r["stage"], r["key"][:8], f"[{colors[r['state']]}]{r['state']}[/]", r["detail"])
    Console().print(table)
    return 0


# ----------------------------------------------------------------------------------------------- exec
def cmd_exec(args: argparse.Namespace) -> int:
    loaded, plan = _load(args.spec)
    store = open_store(loaded, args.results_dir)
    for key in args.keys:
        ran = execute(loaded, plan, store, args.stage, key, force=args.force)
        print(f"{args.stage}/{key}: {'done' if ran else 'already done'} -> {store.path(args.stage, key)}")
    return 0


# --------------------------------------------------------------------------------------------- schema
def cmd_schema(args: argparse.Namespace) -> int:
    from framework.spec.docs import render_schema

    print(render_schema(args.section))
    return 0


# ----------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ablate", description="Data-ablation experiments on LLM reasoning.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(fn=fn)
        return p

    p = command("validate", cmd_validate, "check spec files (schema, names, files) without running anything")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    for name, fn, text in (
        ("plan", cmd_plan, "expand a spec into cells and stage jobs, and show which are done"),
        ("status", cmd_status, "per cell and stage: done, running, failed (with reason) or pending"),
    ):
        p = command(name, fn, text)
        p.add_argument("spec", metavar="SPEC")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--results-dir", help="override the results root (default: the spec's results_dir)")
    p = command("exec", cmd_exec, "run stage jobs idempotently (what launchers call)")
    p.add_argument("stage", choices=list(STAGES))
    p.add_argument("keys", nargs="+", metavar="KEY")
    p.add_argument("--spec", required=True)
    p.add_argument("--force", action="store_true", help="rebuild even if done")
    p.add_argument("--results-dir")
    p = command("schema", cmd_schema, "print the spec format: every field with its type, default and meaning")
    p.add_argument("section", nargs="?", help="a section such as train, eval.sampling, factors.keywords")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except USER_ERRORS as e:
        if args.debug:
            traceback.print_exc()
        for line in str(e).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    except StageNotImplemented as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
