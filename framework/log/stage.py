"""The `log` stage: one cell's results into MLflow, as a child run of the sweep's parent run.

Layout in MLflow: one experiment per spec (`tracking.experiment`, default the spec name); in it one parent run
per sweep (tag `ablate.sweep`, `ablate.role=sweep`) and one nested child run per cell (`ablate.role=cell`,
`ablate.cell_key`). Everything is read from the store, so the store stays the source of truth and MLflow a view
of it that can be rebuilt at any time: re-running a log stage finds the cell's run and brings it up to date.

Idempotence. A child run is identified by (sweep, cell key, results key), the results key hashing the stage
jobs the run reports (the cell's training and evaluation keys). Logging the same results again updates that run:
params are immutable in MLflow but unchanged, metrics carry the timestamp of the stage that produced them, so an
identical point is deduplicated by the store instead of appended, and artifacts overwrite their paths. When the
cell's results change (a new learning rate gives new train and eval keys) the old run no longer describes them:
a new run is created and the old one tagged `ablate.superseded_by`.

Availability. An unreachable tracking server raises `TrackingUnavailable` within ~20 s (a bounded probe, and
MLflow's own HTTP retries turned down for the stage); `ablate exec` exits 75 (EX_TEMPFAIL) for it so a launcher
defers the stage to its next run instead of failing the sweep.

Secrets never reach MLflow. Params and tags are redacted as they are gathered, and every artifact (the cell's
files here, the report in `log_report`) is uploaded by `framework.redaction.log_artifacts`, which copies each
file redacted by its kind before it leaves: a new artifact cannot skip it. Redaction is by name (a value under a
key or assignment that names a secret: `*_KEY`, `*_TOKEN`, `*PASSWORD*`, `Authorization`, `--api-key`, ...,
whatever the value looks like) and by shape (hf_..., sk-..., ghp_..., AKIA..., URL passwords); the environment
snapshot holds only the variables of an explicit list of names. See `framework.redaction`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import posixpath
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framework.errors import UserError
from framework.grading.metrics import pass_at_k_from_samples
from framework.hashing import content_key
from framework.log.mlflow_client import (
    MAX_PARAM_LEN,
    MAX_TAG_LEN,
    as_unavailable,
    child_run,
    connect,
    experiment_id,
    fast_failure,
    find_or_create_run,
    find_sweep_run,
    log_batched,
    mark_current_runs,
    sqlite_path,
    tagged_runs,
)
from framework.redaction import environment_snapshot, log_artifacts, redact, redact_text, write_json, write_yaml
from framework.store import write_json_atomic
from framework.sweep.execute import results_base
from framework.sweep.plan import tracking_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from framework.spec import AblationSpec, LoadedSpec
    from framework.store import Store
    from framework.sweep.execute import StageContext
    from framework.sweep.grid import Cell
    from framework.sweep.plan import Plan

__all__ = ["eval_counts", "log_cell", "log_report", "metric_key", "run", "ui_command"]

GENERATION_COLUMNS = ("problem_id", "subset", "sample_index", "seed", "finish_reason", "n_tokens", "answer", "correct")


# ----------------------------------------------------------------------------------------------- naming
def metric_key(*parts: str) -> str:
    """An MLflow metric or param key from parts joined by "/": MLflow allows only [A-Za-z0-9_-. :/], so "@" is
    written "_at_" (pass@1 -> pass_at_1) and anything else outside the set becomes "_"."""
    key = "/".join(p.replace("@", "_at_") for p in parts if p != "")
    key = re.sub(r"[^\w.\- :/]", "_", key)
    key = posixpath.normpath(key).lstrip("/") if key else key
    if len(key) > 250:  # cut, with a hash of the whole so that keys differing only at the end stay apart
        key = key[:241].rstrip("/. ") + "-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]
    key = key.rstrip("/ ")
    return "_" if key in ("", ".", "..") else key  # MLflow rejects a key ending in "/" or made of dots


def flatten(obj: Any, prefix: str) -> dict[str, str]:
    """Nested config -> {"prefix.a.b": "value"}: scalars as text, lists as compact JSON."""
    out: dict[str, str] = {}
    if isinstance(obj, Mapping):
        if not obj:
            out[prefix] = "{}"
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list | tuple):
        out[prefix] = json.dumps(obj, separators=(",", ":"), default=str)
    else:
        out[prefix] = str(obj)
    return out


def _timestamp_ms(manifest: Mapping[str, Any] | None) -> int:
    """When a stage finished, in ms: the timestamp its metrics carry, identical on every re-log."""
    try:
        return int(datetime.fromisoformat(str((manifest or {})["finished"])).timestamp() * 1000)
    except (KeyError, ValueError):
        return 0


def _numbers(obj: Any, prefix: str) -> Iterator[tuple[str, float]]:
    """Numeric leaves of a nested dict as (dotted key, value); booleans and None are not metrics."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _numbers(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, int | float) and not isinstance(obj, bool) and math.isfinite(obj):
        yield prefix, float(obj)


# ------------------------------------------------------------------------------------------ what to log
@dataclass
class CellRecord:
    """Everything logged for one cell, gathered from the plan and the store before MLflow is touched."""

    params: dict[str, str]
    tags: dict[str, str]
    metrics: list[tuple[str, float, int, int]]  # key, value, timestamp ms, step
    files: dict[str, Path]  # artifact path -> local file (staged, or in the store); uploaded redacted
    eval_warnings: list[str]
    built: str  # when the train and eval results were built (see results_built)


def _git(path: Path) -> dict[str, str]:
    """Commit (and whether the tree is dirty) of the repository holding `path`, if any."""
    return dict(_git_cached(str(path.resolve())))


@functools.lru_cache(maxsize=8)
def _git_cached(path: str) -> tuple[tuple[str, str], ...]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", path, *args], capture_output=True, text=True, timeout=10, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        return out.strip()

    commit = git("rev-parse", "HEAD")
    if not commit:
        return ()
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return (("mlflow.source.git.commit", commit), ("ablate.git_dirty", str(bool(dirty)).lower()))


def _generations(samples: Path, how: str, n: int, dst: Path) -> Path | None:
    """All generations (the stored parquet itself: the upload redacts it batch by batch, an eval of a 32B model
    can hold GBs of text), or a sample of n: one response per problem first, problems in a stable hashed order,
    so the sample is spread over the benchmark and the same on every re-log."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if how == "none" or not samples.is_file():
        return None
    if how == "all":
        return samples
    dst.parent.mkdir(parents=True, exist_ok=True)
    source = pq.ParquetFile(samples)
    keys = source.read(columns=["problem_id", "sample_index"]).to_pandas()
    rank = keys["problem_id"].astype(str).map(lambda s: hashlib.sha1(s.encode()).hexdigest())
    chosen = keys.assign(_rank=rank).sort_values(["sample_index", "_rank"], kind="mergesort").index[:n]
    cols = [c for c in ("text", *GENERATION_COLUMNS) if c in source.schema_arrow.names]
    position = {int(i): k for k, i in enumerate(chosen)}  # row -> its place in the sample
    rows: list[Any] = [None] * len(position)
    start = 0
    for batch in source.iter_batches(batch_size=1024, columns=cols):  # never all the text at once
        local = [i - start for i in range(start, start + batch.num_rows) if i in position]
        for i, row in zip(local, batch.take(pa.array(local, type=pa.int64())).to_pylist()):
            rows[position[start + i]] = row
        start += batch.num_rows
    dst.write_text("".join(json.dumps(redact(r), default=str) + "\n" for r in rows), encoding="utf-8")
    return dst


def _staged_name(bench: str) -> str:
    """A file name for a benchmark's staged sample: its name where that is one, else its name made safe plus a
    hash (`pkg.mod:a` and `pkg.mod:b` must not share a file, as Path.with_suffix would have them)."""
    safe = re.sub(r"[^\w.-]", "_", bench)
    return f"{safe}.jsonl" if safe == bench else f"{safe}-{hashlib.sha1(bench.encode()).hexdigest()[:8]}.jsonl"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def study_result(store: Store, select_key: str) -> dict[str, Any]:
    """A finished study's best.json (its select job's output: the search stage's contract), or {} until it is done."""
    if not store.is_done("search", select_key):
        return {}
    return _read_json(store.path("search", select_key) / "best.json")


def trained_recipe(plan: Plan, store: Store, cell: Cell) -> dict[str, Any] | None:
    """What a searched cell trained with: its recipe ("shared" or "own"), the study that chose it (the select job's
    key), the parameters and the trial they came from. The train job's own record (`search` in its metrics.json) wins
    where it keeps them (it read them when it ran); else the study's best.json, the file the train stage reads. None without a recipe."""
    if cell.recipe is None:
        return None
    out: dict[str, Any] = {"recipe": cell.recipe, "study": None, "params": {}, "trial": None}
    for job in plan.cell_jobs[cell.id]["train"]:
        out["study"] = plan.jobs[job].config.get("recipe")
        stage, key = job.split("/")
        metrics = _read_json(store.path(stage, key) / "metrics.json") if store.is_done(stage, key) else {}
        trained = metrics.get("search")  # the train stage's record: params, study, trial, select
        if isinstance(trained, Mapping) and isinstance(trained.get("params"), Mapping):
            out["params"], out["trial"] = dict(trained["params"]), trained.get("trial")
            return out
    best = study_result(store, out["study"]) if out["study"] else {}
    if isinstance(best.get("params"), Mapping):
        out["params"], out["trial"] = dict(best["params"]), best.get("trial")
    return out


def cell_params(spec: AblationSpec, cell: Cell) -> dict[str, str]:
    """The cell's MLflow params: its levels and their parameters, the recipe, model, prompt and evaluation,
    flattened to dotted keys MLflow accepts, redacted and clipped to MLflow's length limit."""
    params: dict[str, str] = {
        "cell": cell.id,
        "arm": cell.arm_id,
        "seed": "none" if cell.seed is None else str(cell.seed),
        "baseline": cell.baseline or "none",
    }
    if cell.baseline is None:
        for fname, level in cell.levels:
            params[f"factor.{fname}"] = level
            factor_params = next(lv.params for lv in spec.factors[fname].levels if lv.name == level)
            params.update(flatten(factor_params, f"factor.{fname}.params") if factor_params else {})
        params["n_examples"] = str(spec.n_examples)
        params["resample_per_seed"] = str(spec.resample_per_seed)
        params.update(flatten(spec.train.model_dump(mode="json"), "train"))
        model = spec.model
    else:
        b = next(b for b in spec.baselines if b.name == cell.baseline)
        model = b.model or spec.model
    params.update(flatten(model.model_dump(mode="json", exclude_none=True), "model"))
    prompt, ev = spec.evaluation_for(cell.baseline)  # a baseline's own settings, where it sets them
    params.update(flatten(prompt.model_dump(mode="json"), "prompt"))
    params.update(flatten(ev.model_dump(mode="json", exclude={"benchmarks"}), "eval"))
    for bench in spec.eval.benchmarks:
        params.update(
            flatten(bench.model_dump(mode="json", exclude={"name"}, exclude_none=True), f"benchmark.{bench.name}")
        )
    params["eval.benchmarks"] = ",".join(b.name for b in spec.eval.benchmarks)
    return {metric_key(k): _clip(str(v), MAX_PARAM_LEN) for k, v in redact(params).items()}


def train_metrics(train: Mapping[str, Any], ts: int) -> list[tuple[str, float, int, int]]:
    """(key, value, timestamp, step) of a training's metrics.json: its loss curve point by point, then its
    scalars at step 0; booleans, NaN and infinities are no metrics."""
    out = []
    for point in train.get("loss_curve") or []:
        step = int(point.get("step", 0))
        for name, value in point.items():
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if name != "step" and numeric and math.isfinite(value):
                out.append((metric_key("train", name), float(value), ts, step))
    scalars = {k: v for k, v in train.items() if k not in ("loss_curve", "search")}  # a search's params are params
    out.extend((metric_key("train", k), v, ts, 0) for k, v in _numbers(scalars, ""))
    return out


def gather(
    loaded: LoadedSpec, plan: Plan, store: Store, cell: Cell, tracking: Mapping[str, Any], staging: Path
) -> CellRecord:
    """Params, tags, metrics and staged artifact files of a cell, read from its finished stages."""
    spec = loaded.spec
    stages = plan.cell_jobs[cell.id]
    train_jobs, eval_jobs, data_jobs = stages["train"], stages["eval"], stages["data"]

    params = cell_params(spec, cell)
    bench_of = {j: plan.jobs[j].config["benchmark"]["name"] for j in eval_jobs}
    tags = {
        "ablate.cell": cell.id,
        "ablate.arm": cell.arm_id,
        "ablate.train_key": ",".join(j.split("/")[1] for j in train_jobs),
        "ablate.data_key": ",".join(j.split("/")[1] for j in data_jobs),
        "ablate.eval_keys": ",".join(f"{bench_of[j]}:{j.split('/')[1]}" for j in eval_jobs),
        "ablate.spec_hash": loaded.hash,
        "mlflow.note.content": _note(spec.description, cell),
    }
    tags.update(_git(loaded.path.parent if loaded.path else Path.cwd()))
    used = trained_recipe(plan, store, cell)
    if used is not None:  # the values it trained with, not the spec's train section's
        tags["ablate.recipe"] = used["recipe"]
        tags["ablate.study"] = used["study"] or ""
        if used["trial"] is not None:
            tags["ablate.trial"] = str(used["trial"])
        params["recipe"] = used["recipe"]
        trained = {metric_key(f"train.{k}"): str(v) for k, v in flatten(used["params"], "").items()}
        params.update({k: _clip(redact_text(v), MAX_PARAM_LEN) for k, v in trained.items()})

    metrics: list[tuple[str, float, int, int]] = []
    manifests: dict[str, dict[str, Any] | None] = {}  # train and eval jobs, read once for timestamps and built
    files: dict[str, Path] = {}
    # Files are staged or named in the store as they are: log_artifacts redacts each on its way to MLflow.
    files["spec.yaml"] = write_yaml(staging / "spec.yaml", spec.model_dump(mode="json"))
    files["env.json"] = write_json(staging / "env.json", environment_snapshot())
    files["cell.json"] = write_json(
        staging / "cell.json",
        {"id": cell.id, "key": cell.key, "levels": cell.level_map, "seed": cell.seed, "baseline": cell.baseline}
        | {"jobs": {s: js for s, js in stages.items() if js}},
    )

    for job in data_jobs:
        d = store.path(*job.split("/"))
        for name in ("train.jsonl", "stats.json"):
            if (d / name).is_file():
                files[f"data/{name}"] = d / name

    for job in train_jobs:
        d = store.path(*job.split("/"))
        train = _read_json(d / "metrics.json")
        manifests[job] = store.manifest(*job.split("/"))
        metrics.extend(train_metrics(train, _timestamp_ms(manifests[job])))
        if train:
            files["train/metrics.json"] = d / "metrics.json"

    warnings: list[str] = []
    how, n_gen = tracking["log_generations"], int(tracking["generation_sample"])
    for job in eval_jobs:
        bench = bench_of[job]
        d = store.path(*job.split("/"))
        result = _read_json(d / "metrics.json")
        manifests[job] = store.manifest(*job.split("/"))
        ts = _timestamp_ms(manifests[job])
        values = dict(_numbers(result.get("metrics", {}), ""))
        values |= pass_at_k_from_samples(d / "samples.parquet", tracking.get("pass_k", ()), values)
        values |= {k: float(v) for k, v in eval_counts(result).items() if v is not None}
        metrics.extend((metric_key(bench, name), value, ts, 0) for name, value in values.items())
        warnings.extend(f"{bench}: {w}" for w in result.get("warnings", []))
        if result:
            files[f"eval/{bench}/metrics.json"] = d / "metrics.json"
        gen = _generations(d / "samples.parquet", how, n_gen, staging / "generations" / _staged_name(bench))
        if gen is not None:
            files[f"generations/{bench}{gen.suffix}"] = gen
    if warnings:
        tags["ablate.eval_warnings"] = _clip("\n".join(redact_text(w) for w in warnings), MAX_TAG_LEN)
    tags = {k: _clip(redact_text(v), MAX_TAG_LEN) for k, v in tags.items()}
    return CellRecord(params, tags, metrics, files, warnings, results_built(manifests))


def eval_counts(result: Mapping[str, Any]) -> dict[str, float | None]:
    """n_problems, n_samples (graded responses in all) and samples_per_problem of an eval metrics.json.

    The eval stage writes the per-problem sample count at the top level ("n_samples": n) and the totals inside
    "metrics"; a file without the inner totals gets n_samples = n_problems x samples per problem.
    """
    inner = result.get("metrics") or {}
    n_problems = inner.get("n_problems", result.get("n_problems"))
    per_problem = result.get("n_samples") if "n_samples" in inner else None
    total = inner.get("n_samples")
    if total is None and result.get("n_samples") is not None:
        per_problem = result["n_samples"]
        total = per_problem * n_problems if n_problems is not None else None
    if per_problem is None and total is not None and n_problems:
        per_problem = total / n_problems
    return {"n_problems": n_problems, "n_samples": total, "samples_per_problem": per_problem}


def _note(description: str, cell: Cell) -> str:
    what = f"Baseline `{cell.baseline}`" if cell.baseline else f"Arm `{cell.arm_id}`, seed {cell.seed}"
    return f"{what}.\n\n{description}".strip()


def _clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 14] + "...[truncated]"


# ------------------------------------------------------------------------------------------------ logging
def log_cell(
    client: MlflowClient,
    loaded: LoadedSpec,
    plan: Plan,
    store: Store,
    cell_id: str,
    *,
    uri: str,
    tracking: Mapping[str, Any] | None = None,
    log_key: str | None = None,
) -> dict[str, Any]:
    """Create or update the cell's child run (and the sweep's parent run); returns what run.json records.

    Raises TrackingUnavailable when the server goes away midway; a later call completes the same run.
    """
    from mlflow.entities import Metric, Param, RunTag

    spec = loaded.spec
    tracking = {**spec.tracking.model_dump(mode="json"), **(tracking or {})}
    cell = next((c for c in plan.cells if c.id == cell_id), None)
    if cell is None:
        raise UserError(f"no cell {cell_id!r} in the plan of {spec.name}")
    stages = plan.cell_jobs[cell.id]
    results_key = content_key({"train": stages["train"], "eval": stages["eval"]})
    experiment = tracking.get("experiment") or spec.name
    with tempfile.TemporaryDirectory(prefix="ablate-log-") as tmp:
        record = gather(loaded, plan, store, cell, tracking, Path(tmp))
        try:
            exp_id = experiment_id(client, experiment, uri)
            store_id = store.identity()
            parent = sweep_run(client, exp_id, spec.name, store)
            study = record.tags.get("ablate.study")
            study_run = log_study(client, exp_id, parent, plan, store, study) if study else None
            run, created, superseded = child_run(
                client, exp_id, parent, cell, spec.name, store_id, results_key, record.built
            )
            run_id = run.info.run_id
            existing = run.data.params
            params = [Param(k, v) for k, v in record.params.items() if existing.get(k, v) == v]
            conflicts = sorted(k for k, v in record.params.items() if existing.get(k, v) != v)
            tags = dict(record.tags)
            tags["ablate.log_key"] = log_key or ""
            if study_run is not None:
                tags["ablate.study_run"] = study_run
            if conflicts:  # only possible if the flattening itself changed; MLflow forbids rewriting a param
                tags["ablate.param_conflicts"] = _clip(",".join(conflicts), MAX_TAG_LEN)
            metrics = [Metric(k, v, ts, step) for k, v, ts, step in record.metrics]
            calls = log_batched(client, run_id, metrics, params, [RunTag(k, v) for k, v in tags.items()])
            log_artifacts(client, run_id, record.files)
            if client.get_run(parent).info.lifecycle_stage != "active":  # deleted by hand meanwhile
                parent = sweep_run(client, exp_id, spec.name, store)
            if run.data.tags.get("mlflow.parentRunId") != parent:  # its old parent was deleted
                client.set_tag(run_id, "mlflow.parentRunId", parent)
            client.set_terminated(run_id, "FINISHED")
        except Exception as e:
            if (down := as_unavailable(e)) is None:
                raise
            raise down from e
    return {
        "tracking_uri": redact_text(uri),
        "experiment": experiment,
        "experiment_id": exp_id,
        "parent_run_id": parent,
        "run_id": run_id,
        "run_name": run.info.run_name,
        "created": created,
        "superseded": superseded,
        "study_run_id": study_run,
        "results_key": results_key,
        "n_params": len(params),
        "n_metrics": len(metrics),
        "log_batch_calls": calls,
        "artifacts": sorted(record.files),
        "warnings": record.eval_warnings,
        "url": _run_url(uri, exp_id, run_id),
    }


def results_built(manifests: Mapping[str, Mapping[str, Any] | None]) -> str:
    """When each of the cell's train and eval results (job -> manifest) was built. A forced re-run keeps its keys
    but makes new results (new timestamps, maybe new values): they get a run of their own rather than a second
    metric history in the old one."""
    return content_key({job: (m or {}).get("finished") for job, m in manifests.items()})


def _run_url(uri: str, exp_id: str, run_id: str) -> str | None:
    if uri.startswith(("http://", "https://")):
        return f"{redact_text(uri.rstrip('/'))}/#/experiments/{exp_id}/runs/{run_id}"
    return None


def run(ctx: StageContext) -> None:
    """The `log` stage: log the cell to MLflow and write run.json (uri, experiment, run ids) into the store."""
    config = ctx.job.config
    tracking = config["tracking"]
    uri = tracking_uri(tracking["uri"], results_base(ctx.store))
    with fast_failure():
        client = connect(uri)
        result = log_cell(
            client, ctx.loaded, ctx.plan, ctx.store, config["cell"], uri=uri, tracking=tracking, log_key=ctx.job.key
        )
    write_json_atomic(ctx.out / "run.json", result)
    ctx.build.manifest["mlflow"] = {k: result[k] for k in ("experiment_id", "parent_run_id", "run_id")}


def sweep_run(client: MlflowClient, exp_id: str, sweep: str, store: Store) -> str:
    """The sweep's parent run, found or created by one process at a time (the store's election lock, shared by
    every host that writes to the store): concurrent log stages of a sweep are the normal case on a cluster."""
    lock = "mlflow-parent-" + hashlib.sha256(f"{exp_id}\0{sweep}".encode()).hexdigest()[:16]
    with store.mutex(lock):
        parent = find_sweep_run(client, exp_id, sweep, store.identity())
    assert parent is not None
    return parent


# ------------------------------------------------------------------------------------------------- studies
_RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def log_study(client: MlflowClient, exp_id: str, parent: str, plan: Plan, store: Store, select_key: str) -> str | None:
    """A finished study's run under the sweep's parent run, with a run per trial under it; returns the study run's
    id (None until the study is done). Found by tags or created, by one process at a time for a study (the cells
    of a study log at once on a cluster), so a rerun updates the runs instead of adding any."""
    from mlflow.entities import Metric, Param, RunTag

    best = study_result(store, select_key)
    job = plan.find("search", select_key)
    if not best or job is None:
        return None
    sweep = plan.spec.name
    ts = _timestamp_ms(store.manifest("search", select_key))
    identity = {"ablate.sweep": sweep, "ablate.store": store.identity(), "ablate.study": select_key}
    levels = {f: lv for f, _kind, lv, _params in job.config["study"]["arm"]}
    arm = ",".join(f"{f}={levels[f]}" for f in plan.spec.factors if f in levels) or "all"
    metric = str(best.get("metric") or "objective")
    tags = {
        "ablate.arm": arm,
        "ablate.optuna_study": str(best.get("study", "")),
        "ablate.storage": str(best.get("storage", "")),
        "ablate.metric": metric,
        "ablate.direction": str(best.get("direction", "")),
        "ablate.trial": str(best.get("trial", "")),
        **{metric_key(f"ablate.best.{k}"): str(v) for k, v in flatten(best.get("params") or {}, "").items()},
    }
    params = {metric_key(k): v for k, v in flatten(job.config["study"]["search"], "search").items()}
    metrics = [(metric_key("best", metric), best.get("value"))]
    metrics += [(metric_key("trials", k), v) for k, v in (best.get("counts") or {}).items()]
    metrics += [(metric_key("importance", k), v) for k, v in (best.get("importances") or {}).items()]
    lock = "mlflow-study-" + hashlib.sha256(f"{exp_id}\0{sweep}\0{select_key}".encode()).hexdigest()[:16]
    with store.mutex(lock):
        run, _ = find_or_create_run(
            client, exp_id, {**identity, "ablate.role": "study"}, name=f"study {arm}", parent=parent
        )
        run_id = run.info.run_id
        log_batched(
            client,
            run_id,
            [Metric(k, float(v), ts, 0) for k, v in metrics if _finite(v)],
            [
                Param(k, _clip(redact_text(v), MAX_PARAM_LEN))
                for k, v in params.items()
                if v and k not in run.data.params
            ],
            [RunTag(k, _clip(redact_text(v), MAX_TAG_LEN)) for k, v in tags.items()],
        )
        d = store.path("search", select_key)
        log_artifacts(client, run_id, {n: d / n for n in ARTIFACTS_OF_STUDY if (d / n).is_file()})
        client.set_terminated(run_id, "FINISHED")
        _log_trials(client, exp_id, run_id, identity, d / "trials.csv", metric, ts)
    return run_id


ARTIFACTS_OF_STUDY = ("best.json", "trials.csv", "history.png", "importance.png")


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _log_trials(
    client: MlflowClient, exp_id: str, study_run: str, identity: Mapping[str, str], trials_csv: Path, metric: str,
    ts: int,
) -> None:  # fmt: skip
    """A run per trial of trials.csv under the study's run: its parameters, objective value, intermediate values
    (a metric history by rung), duration and state. A trial is one (number, train key): a run already logged for
    it in the same state is left alone."""
    import pandas as pd
    from mlflow.entities import Metric, Param, RunTag

    if not trials_csv.is_file():
        return
    trials = pd.read_csv(trials_csv)
    tags = {**identity, "ablate.role": "trial"}
    logged = {
        (r.data.tags.get("ablate.trial"), r.data.tags.get("ablate.train_key")): r
        for r in tagged_runs(client, exp_id, tags)
    }
    for _, t in trials.iterrows():
        number, train_key, state = str(int(t["number"])), _cell_text(t.get("train_key")), _cell_text(t.get("state"))
        old = logged.get((number, train_key))
        if old is not None and old.data.tags.get("ablate.state") == state:
            continue
        trial_tags = {**tags, "ablate.trial": number, "ablate.train_key": train_key}
        run = old or client.create_run(
            exp_id, run_name=f"trial {number}", tags={"mlflow.parentRunId": study_run, **trial_tags}
        )
        params = {metric_key(c[len("params.") :]): _cell_text(t[c]) for c in trials.columns if c.startswith("params.")}
        metrics = [Metric(metric_key(metric), float(t["value"]), ts, 0)] if _finite(t.get("value")) else []
        if _finite(t.get("duration_s")):
            metrics.append(Metric("duration_s", float(t["duration_s"]), ts, 0))
        intermediate = json.loads(_cell_text(t.get("intermediate")) or "{}")
        for rung, value in intermediate.items():
            if _finite(value):
                metrics.append(Metric(metric_key("intermediate", metric), float(value), ts, int(rung)))
        extra = {
            "ablate.state": state,
            "ablate.retried_from": _cell_text(t.get("retried_from")),
            "ablate.eval_keys": _cell_text(t.get("eval_keys")),
        }
        log_batched(
            client,
            run.info.run_id,
            metrics,
            [
                Param(k, _clip(redact_text(v), MAX_PARAM_LEN))
                for k, v in params.items()
                if v and k not in run.data.params
            ],
            [RunTag(k, _clip(redact_text(v), MAX_TAG_LEN)) for k, v in extra.items()],
        )
        client.set_terminated(run.info.run_id, _RUN_STATUS.get(state, "FINISHED"))


def _cell_text(v: Any) -> str:
    """A trials.csv cell as text: '' for a missing one, an integral float (pandas' reading of an int column with
    gaps) without its '.0'."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def log_report(
    uri: str,
    experiment: str,
    sweep: str,
    store: Store,
    root: Path,
    files: Iterable[Path],
    current: Mapping[str, str] | None = None,
) -> str:
    """Attach report files to the sweep's parent run (created if the sweep has none yet) under `report/`, keeping
    their layout below `root`, and make the runs the store points at (`current`: cell key -> run id) the current
    ones of their cells; returns the parent run id. Raises TrackingUnavailable when tracking cannot be reached."""
    with fast_failure():
        client = connect(uri)
        try:
            exp_id = experiment_id(client, experiment, uri)
            parent = sweep_run(client, exp_id, sweep, store)
            if current:
                mark_current_runs(client, exp_id, sweep, store.identity(), current)
            log_artifacts(client, parent, {f"report/{Path(f).relative_to(root).as_posix()}": Path(f) for f in files})
        except Exception as e:
            if (down := as_unavailable(e)) is None:
                raise
            raise down from e
    return parent


# ---------------------------------------------------------------------------------------------------- ui
def ui_command(uri: str, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The `mlflow server` command that serves a local tracking store (sqlite, file, database URL) with its UI.

    A tracking server (http[s]://) serves its own UI: open the URI instead. Artifacts of experiments created
    through the UI land beside the sqlite file, as the log stage puts them.
    """
    if uri.startswith(("http://", "https://")):
        raise UserError(f"{redact_text(uri)} is a tracking server with its own UI: open it in a browser")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    db = sqlite_path(uri)
    if db is not None:
        cmd += ["--artifacts-destination", str(db.parent.resolve() / "mlartifacts")]
    return cmd
