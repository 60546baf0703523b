"""The `ablate` command line.

Exit codes: 0 success; 1 a stage failed; 2 a user error (bad spec, missing file, unknown key), reported as one
line per problem without a traceback (`--debug` shows it); 75 (EX_TEMPFAIL) work deferred (`ablate run`
with a stage that exited 75, or waits on one: the next run finishes it); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import re
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framework.errors import RetryLater, UserError
from framework.fetch import add_arguments as add_fetch_arguments
from framework.fetch import cmd_fetch
from framework.locations import toy_base_path
from framework.spec import LoadedSpec, SpecErrors, SpecFileError, load_spec
from framework.spec.docs import render_schema
from framework.store import Store
from framework.sweep.cost import DEFAULT_GPU, GPU_TABLE, estimate_cost
from framework.sweep.cost import render as render_cost
from framework.sweep.execute import Sweep, execute, open_store, prepare, results_root
from framework.sweep.live_runs import live_runs, other_host_runs
from framework.sweep.plan import Plan, PlanError, build_plan, configured_tracking_uri, tracking_uri
from framework.sweep.pruning import is_pruned
from framework.sweep.stages import STAGE_ORDER, STAGES
from launchers.base import LAUNCHERS, launch, launcher_class
from launchers.base import summary as run_summary

USER_ERRORS = (SpecErrors, SpecFileError, UserError)
# A path the user gave (results dir, export file) that cannot be used: not a directory, no permission, read-only.
PATH_ERRNOS = {errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EEXIST}


def _load(
    path: str, *, strict: bool = True, results_dir: str | None = None, check_tracking: bool = False
) -> tuple[LoadedSpec, Plan]:
    """The spec and its plan; `results_dir` is the command's --results-dir, which the plan's checks must see.
    `check_tracking` refuses a sqlite tracking database in a missing directory: for the commands that start a
    sweep (validate, plan, run), never for those that inspect or stop one."""
    loaded = load_spec(path)
    try:
        plan = build_plan(
            loaded.spec, loaded.path, strict=strict, results_base=results_dir, check_tracking=check_tracking
        )
        return loaded, plan
    except PlanError as e:
        raise PlanError([_located(p, loaded) for p in e.problems]) from None


def _open(args: argparse.Namespace, *, check_tracking: bool = False) -> Sweep:
    """The sweep a command acts on, located once: spec, plan, results directory and store."""
    loaded, plan = _load(args.spec, results_dir=args.results_dir, check_tracking=check_tracking)
    return Sweep(loaded, plan, results_root(loaded, args.results_dir), open_store(loaded, args.results_dir))


_SPEC_PATH = re.compile(r"^([A-Za-z_][\w]*(?:\.[A-Za-z_][\w-]*|\[\d+\])*): ")


def _located(problem: str, loaded: LoadedSpec) -> str:
    """A plan problem that starts with a spec path (eval.benchmarks[0].path: ...) gets the file and line that set
    it, as validation errors do: with includes, the field may come from another file."""
    match = _SPEC_PATH.match(problem)
    if not match:
        return problem
    loc = tuple(int(t[1:-1]) if t.startswith("[") else t for t in re.findall(r"\[\d+\]|[^.\[\]]+", match[1]))
    hit = loaded.source.where(loc)
    return f"{hit[0]}:{hit[1]}: {problem}" if hit else problem


# ------------------------------------------------------------------------------------------- validate
def cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.specs:
        try:
            loaded, plan = _load(path, strict=False, check_tracking=True)
        except USER_ERRORS as e:
            failed += 1
            for line in str(e).splitlines():
                located = line.startswith(path) or isinstance(e, (SpecErrors, SpecFileError))
                print(f"error: {line if located else f'{path}: {line}'}", file=sys.stderr)
            continue
        for w in plan.warnings:
            print(f"warning: {path}: {w} (needed before `ablate plan/run`)", file=sys.stderr)
        for n in plan.notes:
            print(f"note: {path}: {n}", file=sys.stderr)
        n_train = len(plan.by_stage("train"))
        print(f"ok  {path}: {loaded.spec.name}, {len(plan.cells)} cells, {n_train} trainings, {len(plan.jobs)} jobs")
    return 2 if failed else 0


# ----------------------------------------------------------------------------------------------- plan
def plan_summary(sweep: Sweep) -> dict[str, Any]:
    """The machine-readable plan (`ablate plan --json`): cells, their stage jobs, and which are done."""
    loaded, plan, store = sweep.loaded, sweep.plan, sweep.store
    done_keys = {s: store.done_keys(s) for s in STAGE_ORDER}  # a listing per stage, not a look-up per job
    done = {jid: j.key in done_keys[j.stage] for jid, j in plan.jobs.items()}
    counts = {
        s: {"jobs": len(plan.by_stage(s)), "done": sum(done[j.id] for j in plan.by_stage(s))} for s in STAGE_ORDER
    }
    return {
        "name": loaded.spec.name,
        "spec_hash": loaded.hash,
        "results": str(sweep.root),
        "cells": [
            {
                "id": c.id,
                "key": c.key,
                "arm": c.arm_id,
                "levels": c.level_map,
                "seed": c.seed,
                "baseline": c.baseline,
                "stages": {
                    s: [{"key": jid.split("/")[1], "done": done[jid]} for jid in plan.stage_jobs(c.id, s)]
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


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout (Python and native code alike) to stderr for a while."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def data_stats(plan: Plan, store: Store) -> dict[str, dict[str, Any]]:
    """Per cell: its training set's statistics (for cells whose data stage is done)."""
    out = {}
    done = store.done_keys("data")
    for cell in plan.cells:
        for jid in plan.cell_jobs[cell.id]["data"]:
            stage, key = jid.split("/")
            if key in done:
                out[cell.id] = json.loads((store.path(stage, key) / "stats.json").read_text())
    return out


def topic_clusters(plan: Plan, store: Store) -> dict[str, Any]:
    """The clusters each built pool made into topics (`annotate.topics: cluster`), by pool key."""
    out = {}
    for job in plan.by_stage("pool"):
        stats = store.path("pool", job.key) / "stats.json"
        if store.is_done("pool", job.key) and stats.exists():
            clusters = json.loads(stats.read_text()).get("topic_clusters")
            if clusters:
                out[job.key] = clusters
    return out


def cmd_plan(args: argparse.Namespace) -> int:
    sweep = _open(args, check_tracking=True)
    loaded, plan, store = sweep.loaded, sweep.plan, sweep.store
    if args.build:
        with _stdout_to_stderr():  # stage output must not corrupt `--json`
            prepare(loaded, plan, store, on_job=lambda j: print(f"building {j.id} ...", file=sys.stderr))
    summary = plan_summary(sweep)
    summary["data"] = data_stats(plan, store)
    summary["topic_clusters"] = topic_clusters(plan, store)
    summary["notes"] = list(plan.notes)
    summary["generation"] = generation_estimates(sweep)
    spec_dir = loaded.path.resolve().parent if loaded.path else None
    summary["cost"] = estimate_cost(plan, store, spec_dir, gpu=args.gpu, generation=summary["generation"]).to_dict()
    # What the launcher will ask its backend for (a Slurm bundle's time limit): beside the stage's cost, in the table.
    for stage, lines in launcher_class(loaded.spec.launcher.kind).plan_notes(plan, store).items():
        cost_row = next((c for c in summary["cost"]["stages"] if c["stage"] == stage), None)
        (cost_row["notes"] if cost_row is not None else summary["notes"]).extend(lines)
    from framework.sweep import power  # lazy: pandas and scipy cost every other command's start

    summary["power"] = [row.to_dict() for row in power.estimate_power(plan, store, spec_dir)]
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    states = {j["id"]: "done" if j["done"] else "pending" for j in summary["jobs"]}
    # lazy: rich and the views cost every stage job's process (`ablate exec`, which draws nothing) ~40 ms
    from rich.table import Table
    from rich.text import Text

    from framework.sweep import view as sweep_view  # lazy: as rich, above

    console = _console(args)
    spec = loaded.spec
    console.print(Text.assemble((spec.name, "bold"), f" — {spec.description or 'no description'}"))
    console.print(f"results: {summary['results']}", highlight=False)
    if args.wide:
        console.print(sweep_view.summary_text(plan, states))
        _print_lines(sweep_view.wide_plan_lines(plan, states))
    else:
        console.print(sweep_view.sweep_view(plan, states, width=console.width))
    for report in summary["topic_clusters"].values():
        purity = report.get("purity_against_given")
        tt = Table(
            "topic",
            "problems",
            "typical terms",
            "example",
            title=f"topics: {report['n_topics']} clusters of {report['problems']} problems ({report['embedder']})"
            + (f", purity against the pool's own topics {purity:.2f}" if purity is not None else ""),
        )
        for name, c in report["clusters"].items():
            tt.add_row(name, str(c["problems"]), " ".join(c["top_terms"]), c["example"][:80])
        console.print(tt)
    if summary["generation"]:
        print("generation (what `ablate run` will ask the teachers):")
        _print_lines([f"  {e['line']}" for e in summary["generation"]])
    _print_lines(render_cost(summary["cost"]))
    _print_lines(power.render(summary["power"]))
    if summary["data"]:
        rows = len(summary["data"]) if args.wide else sweep_view.MAX_ROWS
        console.print(*sweep_view.data_table(plan, summary["data"], max_rows=rows))
    for n in summary["notes"]:
        print(f"note: {n}", file=sys.stderr)
    return 0


def generation_estimates(sweep: Sweep) -> list[dict[str, Any]]:
    """Each generated source's requests, tokens and cost before anything is spent (empty without one)."""
    if not sweep.plan.generated:
        return []
    # lazy: the generate stage imports the HTTP client, which only a spec with generated sources needs
    from framework.generate.estimate import estimate, render

    spec_dir = sweep.loaded.path.resolve().parent if sweep.loaded.path else None
    estimates = estimate(sweep.plan, spec_dir, sweep.store)
    sweep_lines = render(estimates)
    out = [e.to_dict() for e in estimates]
    for entry, line in zip(out, sweep_lines):
        entry["line"] = line.strip()
    return out


def _console(args: argparse.Namespace) -> Any:
    """A terminal's console; under --wide one that never cuts a line (the terminal wraps it instead)."""
    # lazy: rich and the views cost every stage job's process (`ablate exec`, which draws nothing) ~40 ms
    from rich.console import Console

    return Console(soft_wrap=True) if args.wide else Console()


def _print_lines(lines: list[str]) -> None:
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------- status
def cmd_status(args: argparse.Namespace) -> int:
    # lazy: rich and the views cost every stage job's process (`ablate exec`, which draws nothing) ~40 ms
    from framework.sweep import view as sweep_view

    sweep = _open(args)
    loaded, plan, store = sweep.loaded, sweep.plan, sweep.store
    launchers = [launcher_class(kind) for kind in LAUNCHERS]
    queued: dict[tuple[str, str], dict[str, Any]] = {}  # what a launcher knows of a job beyond the store
    for launcher in launchers:
        queued.update(launcher.live_jobs(plan, store))
    # One listing per stage: looking up each job's files made a 10,000-cell status take most of a minute.
    found = {s: store.statuses(s, [j.key for j in plan.by_stage(s)]) for s in STAGE_ORDER}
    logs = {s: str(store.root / s) for s in STAGE_ORDER}
    rows = []
    for cell in plan.cells:
        for stage in STAGE_ORDER:
            for jid in plan.stage_jobs(cell.id, stage):
                key = jid.split("/")[1]
                st = found[stage][key]
                state, detail = st.state, st.detail
                if state == "running":  # whose job: a live run's, or one left by a run that is gone
                    for launcher in launchers:
                        detail = launcher.running_detail(store, stage, key, detail)
                if stage == "train" and state == "done" and is_pruned(store, key):
                    detail = "checkpoint deleted after its evaluations (keep_checkpoint: false)"
                slurm = queued.get((stage, key))
                if slurm and state in ("pending", "failed", "deferred") and slurm["state"] != "done":
                    state, detail = slurm["state"], f"job {slurm['job_id']}: {slurm.get('detail', '')}"
                rows.append(
                    {
                        "cell": cell.id,
                        "stage": stage,
                        "key": key,
                        "state": state,
                        "detail": detail,
                        "log": f"{logs[stage]}/{key}.log",  # store.log_path(stage, key), without a Path per row
                        "slurm_job": slurm["job_id"] if slurm else None,
                    }
                )
    if args.json:
        print(json.dumps({"name": loaded.spec.name, "stages": rows}, indent=2))
        return 0
    if args.wide:
        _print_lines(sweep_view.wide_status_lines(plan, rows))
        return 0
    states = {f"{r['stage']}/{r['key']}": r["state"] for r in rows}
    details = {f"{r['stage']}/{r['key']}": f"{r['detail']} (log: {r['log']})".lstrip() for r in rows if r["detail"]}
    console = _console(args)
    console.print(sweep_view.sweep_view(plan, states, details=details, width=console.width))
    return 0


# ----------------------------------------------------------------------------------------------- exec
def _full_key(plan: Plan, stage: str, key: str) -> str:
    """A key as given, or the one key of `stage` it begins (the plan and status tables show keys cut short)."""
    if plan.find(stage, key) is not None:
        return key
    matches = [j.key for j in plan.by_stage(stage) if key and j.key.startswith(key)]
    if len(matches) > 1:
        raise UserError(f"{stage} key {key!r} is the start of {len(matches)} keys ({', '.join(matches)}); give more")
    return matches[0] if matches else key  # no match: `execute` says which keys there are


def cmd_exec(args: argparse.Namespace) -> int:
    sweep = _open(args)
    loaded, plan, store = sweep.loaded, sweep.plan, sweep.store
    failures: list[Exception] = []
    for key in [_full_key(plan, args.stage, k) for k in args.keys]:
        try:  # one job's failure must not keep the others of a grouped task (a checkpoint's benchmarks) from running
            ran = execute(loaded, plan, store, args.stage, key, force=args.force)
        except Exception as e:
            if len(args.keys) == 1:
                raise
            failures.append(e)
            print(f"{args.stage}/{key}: not done: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        print(f"{args.stage}/{key}: {'done' if ran else 'already done'} -> {store.path(args.stage, key)}")
    if not failures:
        return 0
    print(f"{len(failures)} of {len(args.keys)} {args.stage} jobs not done (above)", file=sys.stderr)
    # The worst outcome decides the exit code: a failure, else a user error, else retry later.
    if any(not isinstance(e, (RetryLater, *USER_ERRORS)) for e in failures):
        return 1
    return 2 if any(isinstance(e, USER_ERRORS) for e in failures) else RetryLater.exit_code


def cmd_cancel(args: argparse.Namespace) -> int:
    """Stop the sweep wherever it runs: this host's local runs and the stage jobs left by runs that are gone (each
    waited for, a training given time to checkpoint), then its queued and running Slurm jobs."""
    sweep = _open(args)
    stopped = False
    for kind in LAUNCHERS:
        if said := launcher_class(kind).stop_sweep(sweep.plan, sweep.store):
            print(said)
            stopped = True
    if not stopped:
        print("nothing queued or running")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from framework.report import write_report  # pandas and matplotlib, about a second: only a report needs them

    sweep = _open(args)
    loaded, plan, store = sweep.loaded, sweep.plan, sweep.store
    if not any(store.is_done(*job.split("/")) for cell in plan.cells for job in plan.cell_jobs[cell.id]["eval"]):
        raise UserError(
            f"nothing to report for {loaded.spec.name}: no cell has been evaluated in {store.root} yet "
            f"(`ablate run {args.spec}` runs the sweep; `ablate status {args.spec}` shows where it stands)"
        )
    path = write_report(loaded, plan, store, sweep.root)
    print(f"report: {path}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from framework.log.stage import ui_command  # the log stage imports pandas, which no other command here needs

    loaded = load_spec(args.spec)
    uri = tracking_uri(configured_tracking_uri(loaded.spec), results_root(loaded, args.results_dir).parent)
    cmd = ui_command(uri, args.host, args.port)
    print(f"MLflow UI for {loaded.spec.name}: http://{args.host}:{args.port}  (runs list: choose 'Model training')")
    return subprocess.call(cmd)


def cmd_toy(args: argparse.Namespace) -> int:
    if args.action == "teacher":  # fine-tunes the shipped base; its world is the base's
        out = ["--out", args.out] if args.out else []
        return subprocess.call([sys.executable, "-m", "framework.toy.teacher", "--seed", str(args.seed), *out])
    cmd = [
        sys.executable,
        "-m",
        "framework.toy.pretrain",
        "--world-seed",
        str(args.world_seed),
        "--seed",
        str(args.seed),
        "--out",
        args.out or str(toy_base_path()),
    ]
    return subprocess.call(cmd)


# ------------------------------------------------------------------------------------------------ run
RUN_EXIT_CODES = (
    "exit status: 0 every stage job done; 1 a stage job failed (its dependents were skipped); 2 a user error; "
    "75 deferred: a stage could not run now (the tracking server is down, a training stopped at a checkpoint) "
    "and the next `ablate run` finishes it; 130 interrupted"
)


def cmd_run(args: argparse.Namespace) -> int:
    """validate -> plan -> launch every job not done (in dependency order) -> report."""
    sweep = _open(args, check_tracking=True)
    loaded, plan, store = sweep.loaded, sweep.plan, sweep.store
    kind = args.launcher or loaded.spec.launcher.kind
    tasks = launcher_class(kind).pending(plan, store)  # Slurm bundles evaluations (eval.bundle)
    code = 0
    print(
        f"{loaded.spec.name}: {len(plan.cells)} cells, {len(plan.jobs)} stage jobs, {len(tasks)} tasks to run ({kind})"
    )
    if refused := launcher_class(kind).refusals(plan, store):
        raise UserError(refused)
    for n in [*plan.notes, *(n for lines in launcher_class(kind).plan_notes(plan, store).values() for n in lines)]:
        print(f"note: {n}", file=sys.stderr)
    if tasks:
        launcher = launch(kind, loaded.spec, args.spec, store, tasks, args.results_dir, wait=not args.no_wait)
        if args.no_wait and not launcher.always_waits:  # a local run is this process: it always waits
            print("submitted; follow with `ablate status` (and `ablate cancel` to stop)")
            return 0
        code, lines = run_summary(tasks, launcher)
        print("\n".join(lines))
        if code == 1:
            return 1
    if not args.no_report:
        from framework.report import write_report  # pandas and matplotlib: imported once the stage jobs are over

        out = write_report(loaded, plan, store, sweep.root)
        print(f"report: {out}")
    if code == RetryLater.exit_code:
        print(f"incomplete: deferred work remains; exit {code} (the next `ablate run` finishes it)", file=sys.stderr)
        return code
    return 0


# ----------------------------------------------------------------------------------------------- data
EXPORT_FORMATS = ("jsonl", "csv", "parquet")


def cmd_data(args: argparse.Namespace) -> int:
    from framework.artifacts import read_training_set  # pandas (0.3 s), which only this command reads with

    sweep = _open(args)
    loaded, plan, store = sweep.loaded, sweep.plan, sweep.store
    cell = next((c for c in plan.cells if c.id == args.cell or (args.cell and c.key.startswith(args.cell))), None)
    if cell is None:
        raise UserError(f"no cell {args.cell!r}; cells: {', '.join(c.id for c in plan.cells)}")
    jobs = plan.cell_jobs[cell.id]["data"]
    if not jobs:
        raise UserError(f"{cell.id} is a baseline: it has no training set")
    suffix = (args.export or "").rsplit(".", 1)[-1].lower()
    if args.export and suffix not in EXPORT_FORMATS:
        raise UserError(f"--export {args.export}: name a .jsonl, .csv or .parquet file")
    if args.export and not os.path.isdir(os.path.dirname(os.path.abspath(args.export))):
        raise UserError(f"--export {args.export}: no directory {os.path.dirname(os.path.abspath(args.export))}")
    for jid in plan.cell_jobs[cell.id]["model"] + plan.cell_jobs[cell.id]["pool"] + jobs:
        execute(loaded, plan, store, *jid.split("/"))
    stage_dir = store.path(*jobs[0].split("/"))
    rows = read_training_set(stage_dir)
    if args.export:
        import pandas as pd  # only an export writes a table (see read_training_set above)

        frame = pd.DataFrame(rows)
        if suffix == "csv":
            frame.to_csv(args.export, index=False)
        elif suffix == "parquet":
            frame.to_parquet(args.export, index=False)
        else:
            frame.to_json(args.export, orient="records", lines=True, force_ascii=False)
        print(f"{len(rows)} examples -> {args.export}")
        return 0
    stats = json.loads((stage_dir / "stats.json").read_text())
    print(
        f"{cell.id}: {stats['examples']} examples, {stats['tokens']['total']} tokens, data key {jobs[0].split('/')[1]}"
    )
    for r in rows[: args.show]:
        print(
            f"\n--- #{r['example_index']} {r['problem_id']} source={r['source']} tokens={r['n_tokens']} correct={r['correct']}"
        )
        print(f"problem: {r['problem']}")
        print(f"trace:   {r['trace']}")
    return 0


# --------------------------------------------------------------------------------------------- schema
def cmd_schema(args: argparse.Namespace) -> int:
    print(render_schema(args.section))
    return 0


# ----------------------------------------------------------------------------------------------- main
def _port(text: str) -> int:
    port = int(text) if text.isdigit() else -1
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return port


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (0, 1, 2, ...)")
    return int(text)


def cmd_clean(args: argparse.Namespace) -> int:
    """Leftovers of stage keys that this spec's plan no longer has (the spec was edited since they failed or
    died): work dirs, failure records, logs, temporaries. Done results are kept; a dry run unless --yes."""
    # Only a plan that builds says which keys are still needed.
    sweep = _open(args)
    loaded, plan, store = sweep.loaded, sweep.plan, sweep.store
    if args.yes:
        _refuse_while_running(store, args.spec, force=args.force)
    listed, kept = store.clean_unplanned(set(plan.jobs), delete=False, force=args.force)
    sizes = {p: _disk_usage(p) for p in listed}  # measured before anything goes
    if args.yes:
        found, kept = store.clean_unplanned(set(plan.jobs), delete=True, force=args.force)
    else:
        found = listed
    verb = "removed" if args.yes else "would remove"
    for p in found:
        print(f"{verb}  {p}" + (f"  ({_human(sizes[p])})" if p in sizes else ""))
    for job, why in kept.items():
        print(f"kept    {job}: {why}")
    freed = _human(sum(sizes.get(p, 0) for p in found))
    print(f"{verb} {len(found)} leftover(s) of keys not in the plan of {loaded.spec.name}: {freed}")
    if found and not args.yes:
        print(f"`ablate clean {args.spec} --yes` deletes them")
    return 0


def _refuse_while_running(store: Store, spec: str, *, force: bool) -> None:
    """A run of any spec sharing this store may be about to build a key this plan lacks: its job writes the log
    first and takes the lock only once it has loaded the spec, and a deferred job resumes from a work dir. Runs on
    this host are known to be going; one recorded by another host may have been killed there (--force)."""
    problems = [
        f"a local run of this sweep is going (pid {pid}, {r.get('spec', '?')}, since {r.get('started', '?')}): "
        f"clean once it has ended (`ablate cancel {spec}` stops it)"
        for pid, r in live_runs(store).items()
    ]
    if not force:
        problems += [
            f"a run of this sweep on host {r.get('host', '?')} (pid {r['pid']}, since {r.get('started', '?')}) is "
            "recorded and may still be going: clean once it has ended, or with --force if it has"
            for r in other_host_runs(store)
        ]
    if problems:
        raise UserError([f"ablate clean --yes: {p}" for p in problems])


def _disk_usage(path: os.PathLike[str] | str) -> int:
    """Bytes under `path`, links not followed; what vanishes meanwhile (a build's temporaries) counts as 0."""

    def size(p: Path) -> int:
        with contextlib.suppress(OSError):
            return p.lstat().st_size if p.is_file() or p.is_symlink() else 0
        return 0

    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return size(path)
    total = 0
    with contextlib.suppress(OSError):  # the directory itself gone
        for p in path.rglob("*"):
            total += size(p)
    return total


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# ------------------------------------------------------------------------------------------------- parser
def _validate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", nargs="+", metavar="SPEC")


def _status_arguments(p: argparse.ArgumentParser) -> None:
    """A spec to look at, as `status` and `plan` both take it."""
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--results-dir", help="override the results root (default: the spec's results_dir)")
    p.add_argument("--wide", action="store_true", help="every cell (and job) in full, however many")


def _plan_arguments(p: argparse.ArgumentParser) -> None:
    _status_arguments(p)
    p.add_argument(
        "--no-build",
        dest="build",
        action="store_false",
        help="do not build the cheap CPU stages (tiny model, pool, data)",
    )
    p.add_argument(
        "--gpu",
        choices=sorted(GPU_TABLE),
        default=DEFAULT_GPU,
        help="the GPU kind whose default rates price the cost table until this store has measured its own",
    )


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--launcher", choices=["local", "slurm"], help="override the spec's launcher.kind")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    p.add_argument("--no-wait", action="store_true", help="slurm: return after submitting")
    p.add_argument("--results-dir")


def _sweep_arguments(p: argparse.ArgumentParser) -> None:
    """A sweep, by its spec and the results root it ran with: all `report` and `cancel` take."""
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--results-dir")


def _ui_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=5000)
    p.add_argument("--results-dir", help="the results root the sweep ran with (default: the spec's results_dir)")


def _toy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["pretrain", "teacher"])
    p.add_argument("--world-seed", type=int, default=0, help="pretrain only (the teacher uses the base's world)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="where to write it (default: the shipped toy:base or toy:teacher, in the package)")


def _clean_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--yes", action="store_true", help="delete them (default: only list them and their size)")
    p.add_argument(
        "--force",
        action="store_true",
        help="also the leftovers of keys a Slurm job was submitted for or a deferred job resumes from, and despite "
        "runs recorded by other hosts (never while a run on this host goes, nor under a live lock)",
    )
    p.add_argument("--results-dir")


def _data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("cell", metavar="CELL", help="a cell id as `ablate plan` shows it")
    p.add_argument("--export", metavar="FILE", help="write the traces to FILE (.jsonl, .csv or .parquet)")
    p.add_argument("--show", type=_count, default=3, help="how many traces to print in full")
    p.add_argument("--results-dir")


def _exec_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("stage", choices=list(STAGES))
    p.add_argument("keys", nargs="+", metavar="KEY")
    p.add_argument("--spec", required=True)
    p.add_argument("--force", action="store_true", help="rebuild even if done")
    p.add_argument("--results-dir")


def _schema_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("section", nargs="?", help="a section such as train, eval.sampling, factors.keywords")


@dataclass(frozen=True)
class Command:
    """A subcommand: what runs it, its arguments, and its one line of help (also the head of its own --help)."""

    name: str
    fn: Callable[[argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None]
    help: str
    epilog: str | None = None


# In the order `ablate --help` lists them.
COMMANDS = (
    Command("validate", cmd_validate, _validate_arguments,
            "check spec files (schema, names, files) without running anything"),
    Command("plan", cmd_plan, _plan_arguments,
            "expand a spec into cells and stage jobs, build the data variants, show the grid"),
    Command("status", cmd_status, _status_arguments,
            "per cell and stage: done, running, failed (with reason) or pending"),
    Command("run", cmd_run, _run_arguments,
            "run a sweep: every stage job not done yet, in dependency order, then the report", RUN_EXIT_CODES),
    Command("report", cmd_report, _sweep_arguments,
            "write the comparison report (markdown, CSV, plots) from the store"),
    Command("ui", cmd_ui, _ui_arguments,
            "serve the MLflow UI for the spec's tracking store on 127.0.0.1"),
    Command("toy", cmd_toy, _toy_arguments,
            "toy world tools: `ablate toy pretrain` builds the toy base model, `ablate toy teacher` the toy teacher "
            "(the base fine-tuned on long chain-of-thought traces)"),
    Command("cancel", cmd_cancel, _sweep_arguments,
            "stop a sweep: its local runs and stage jobs on this host (waited for), its queued and running Slurm "
            "jobs"),
    Command("clean", cmd_clean, _clean_arguments,
            "list (or with --yes delete) what failed builds of keys no longer planned left"),
    Command("data", cmd_data, _data_arguments,
            "print or export a cell's training set (builds it if needed)"),
    Command("exec", cmd_exec, _exec_arguments,
            "run stage jobs idempotently (what launchers call)"),
    Command("schema", cmd_schema, _schema_arguments,
            "print the spec format: every field with its type, default and meaning"),
    Command("fetch", cmd_fetch, add_fetch_arguments,
            "download benchmarks and pools into the local files specs read (on a machine with network), each with "
            "a record of its source, commit and sha256; no NAME lists them"),
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The `ablate` parser: a subcommand per entry of COMMANDS, each parsed into args.fn and its arguments."""
    parser = argparse.ArgumentParser(prog="ablate", description="Data-ablation experiments on LLM reasoning.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help, epilog=command.epilog)
        p.set_defaults(fn=command.fn)
        command.arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except USER_ERRORS as e:
        return _fail(args, str(e).splitlines(), 2)
    except RetryLater as e:
        print(f"deferred: {e} (the next `ablate run` retries it)", file=sys.stderr)
        return RetryLater.exit_code
    except BrokenPipeError:
        return 0
    except OSError as e:
        if e.filename is not None and e.errno in PATH_ERRNOS:
            return _fail(args, [f"cannot use {e.filename}: {e.strerror}"], 2)
        return _fail(args, [f"{type(e).__name__}: {e}"], 1)
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):  # after a hangup, stderr may be a terminal that is gone
            print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        return _fail(args, [f"{type(e).__name__}: {e}"], 1)


def _fail(args: argparse.Namespace, problems: list[str], code: int) -> int:
    """One `error:` line per problem on stderr (and, under --json, {"errors": [...]} on stdout); the traceback only
    with --debug, and the hint to ask for it only for an unexpected error (code 1)."""
    if args.debug:
        traceback.print_exc()
    hint = " (run with --debug for the traceback)" if code == 1 and not args.debug else ""
    for i, line in enumerate(problems):
        print(f"error: {line}{hint if i == len(problems) - 1 else ''}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"errors": problems, "exit_code": code}))
    return code


if __name__ == "__main__":
    sys.exit(main())
