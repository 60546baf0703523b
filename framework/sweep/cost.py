"""What the jobs of a plan not yet done will cost, in GPU-hours, before anything is launched.

Every estimate is model FLOPs over an effective FLOP rate per GPU, so GPU-hours do not depend on how many GPUs a
job spreads over (only its wall time does):
- training: (6·N + 6·L·s·d) FLOPs per token (N parameters, L layers, d attention width, s the mean example
  length: causal attention over an average context of s/2, as `benchmarks/train_gpu.py` counts MFU) × tokens of
  the cell's training set × epochs;
- evaluation and generation: 2·N FLOPs per generated token × problems × samples × expected tokens.

The rate comes from `GPU_TABLE` (a kind chosen by `ablate plan --gpu`) until a job of that kind has finished in
this sweep's store: then what the store measured on this cluster (model FLOP/s per GPU of the finished jobs)
replaces it, and the output says which source each estimate used. Measured rates are kept as FLOP/s, not
tokens/s, so a rate measured on one model carries over to another (a baseline of another size). A model's size
(N, L, d) comes from framework.sweep.model_size, an eval job's GPUs from framework.sweep.eval_layout.
"""

from __future__ import annotations

import contextlib
import json
import math
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from framework.errors import UserError
from framework.locations import resolve_path
from framework.spec.ablation import AblationSpec
from framework.spec.models import BenchmarkSpec, ModelSpec, SampleBudget
from framework.store import Store
from framework.sweep.eval_layout import EvalLayout, evaluated_sizes, local_gpu_count, local_gpu_memory_gib, pick_layout
from framework.sweep.eval_layout import eval_gpus as local_eval_gpus
from framework.sweep.model_size import ModelSize, model_size
from framework.sweep.plan import Job, Plan
from framework.sweep.resources import stage_resources


@dataclass(frozen=True)
class GpuKind:
    """Effective rates of one GPU kind: dense bf16 peak × the fraction of it each stage kind achieves."""

    name: str
    peak_tflops: float  # dense bf16
    train_mfu: float  # gradient checkpointing on
    train_mfu_no_checkpointing: float
    generate_tflops: float  # effective 2·N FLOP/s of batched vLLM decoding
    source: str
    memory_gib: float  # per GPU: how many hold an evaluated model's weights (framework.sweep.eval_layout)

    def train_flops(self, gradient_checkpointing: bool) -> float:
        mfu = self.train_mfu if gradient_checkpointing else self.train_mfu_no_checkpointing
        return self.peak_tflops * 1e12 * mfu


# Decoding long answers is bound by memory bandwidth and the KV cache: assumed 10% of an H100's dense bf16 peak in
# 2·N FLOPs per generated token (about 1,500 tokens/s per GPU for a 32B model), scaled by memory bandwidth for the
# others (H100 3.35 TB/s, H200 4.8, A100 80GB 2.0).
_GEN_H100 = 0.10 * 989.0
GPU_TABLE: dict[str, GpuKind] = {
    "h100": GpuKind(
        "h100", 989.0, 0.241, 0.359, _GEN_H100,
        "H100 default: training MFU measured by benchmarks/train_gpu.py (1.5B, 16k tokens, one GPU: 24.1% with "
        "gradient checkpointing, 35.9% without); generation assumed", 80,
    ),
    "h200": GpuKind(
        "h200", 989.0, 0.266, 0.325, _GEN_H100 * 4.8 / 3.35,
        "H200 default: training MFU measured by benchmarks/train_gpu.py (1.5B, 16k tokens, one GPU: 26.6% with "
        "gradient checkpointing, 32.5% without); generation assumed", 141,
    ),
    "a100": GpuKind(
        "a100", 312.0, 0.241, 0.359, _GEN_H100 * 2.0 / 3.35,
        "A100 default: assumed, the H100's measured MFU at the A100's 312 TFLOP/s peak; generation assumed", 80,
    ),
}  # fmt: skip
DEFAULT_GPU = "h100"

# Tokens per training example until the pool or the cell's training set is built: a long chain-of-thought trace.
DEFAULT_EXAMPLE_TOKENS = 4096
# An optimizer step in CPU memory (train.offload_optimizer): DeepSpeed's CPU Adam and the transfers, assumed to
# update 3e9 parameters a second on a GPU node's CPUs while the GPUs wait (not measured here).
OFFLOAD_PARAMS_PER_S = 3e9
# Problems of the built-in benchmarks (before `limit` / `problem_ids`), when no file or finished eval says.
KNOWN_BENCHMARK_SIZES = {
    "comp-math-24-25": 256, "aime24": 30, "aime25": 30, "hmmt-feb-2025": 30, "hmmt-24-25": 60, "math-500": 500,
    "gpqa-diamond": 198,
}  # fmt: skip


@dataclass
class StageCost:
    """One stage kind's jobs not yet done: their GPU-hours and where the rate and the sizes came from."""

    stage: str
    jobs: int  # planned
    todo: int  # not done yet
    gpu_hours: float
    gpus_per_job: int | None
    rate: str  # the rate's source: a GPU_TABLE default or this store's measurement
    notes: list[str] = field(default_factory=list)  # assumed sizes, counts and token lengths
    unknown: int = 0  # jobs left out of gpu_hours: nothing tells their size

    @property
    def wall_hours_per_job(self) -> float | None:
        if not self.gpus_per_job or not self.todo:
            return None
        return self.gpu_hours / self.todo / self.gpus_per_job


@dataclass
class CostEstimate:
    gpu: str
    stages: list[StageCost]
    eval_layout: list[dict[str, Any]] = field(default_factory=list)  # per evaluated model: `eval_layouts`

    @property
    def total_gpu_hours(self) -> float:
        return sum(s.gpu_hours for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        stages = [{**asdict(s), "wall_hours_per_job": s.wall_hours_per_job} for s in self.stages]
        return {
            "gpu": self.gpu, "stages": stages, "total_gpu_hours": self.total_gpu_hours, "eval_layout": self.eval_layout
        }  # fmt: skip


# ----------------------------------------------------------------------------------------------- FLOPs
def train_flops_per_token(size: ModelSize, seq_len: float) -> float:
    """6·N plus causal attention over an average context of seq_len/2, when the shape is known."""
    attention = 6 * size.layers * seq_len * size.attn_width if size.layers and size.attn_width else 0.0
    return 6 * size.params + attention


# --------------------------------------------------------------------------------------- measurements
@dataclass(frozen=True)
class Rate:
    flops_per_gpu_s: float
    source: str


def _manifest(store: Store, job: Job) -> dict[str, Any] | None:
    try:
        return store.manifest(job.stage, job.key)
    except (OSError, ValueError):
        return None


def measured_train_rate(plan: Plan, store: Store, done: set[str], size: ModelSize) -> Rate | None:
    """Model FLOP/s per device of the sweep's finished trainings, from their manifests (tokens, layout, train_s)."""
    flops = device_s = 0.0
    jobs, devices = 0, set()
    for job in plan.by_stage("train"):
        m = _manifest(store, job) if job.key in done else None
        train = (m or {}).get("train") or {}
        try:
            tokens, per_epoch = float(train["tokens"]["total_trained"]), float(train["tokens"]["total_per_epoch"])
            examples = float(train["examples"].get("kept") or train["examples"]["examples"])
            world, seconds = int(train["layout"]["world_size"]), float(train["train_s"])
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        if seconds <= 0 or world <= 0 or examples <= 0:
            continue
        flops += train_flops_per_token(size, per_epoch / examples) * tokens
        device_s += seconds * world
        jobs += 1
        devices.add("GPU" if train["layout"].get("gpu") else "CPU process")
    if not jobs:
        return None
    return Rate(flops / device_s, f"measured: {jobs} finished training(s) in this store ({', '.join(sorted(devices))})")


def measured_eval(plan: Plan, store: Store, done: set[str], sizes: dict[str, ModelSize], gpus: int = 1) -> tuple[Rate | None, float | None]:  # fmt: skip
    """Model FLOP/s per GPU of the sweep's finished evaluations and their mean tokens per sample (read from
    samples.parquet), or None where none has finished. `gpus`: what an eval job of this sweep uses."""
    flops = gpu_s = tokens_all = samples_all = 0.0
    jobs = 0
    for job in plan.by_stage("eval"):
        if job.key not in done:
            continue
        out = store.path(job.stage, job.key)
        try:
            seconds = float(json.loads((out / "metrics.json").read_text())["timings"]["generate_s"])
            # a budget's second round times its own samples only, but stores both rounds'
            tokens = _column_sum(out / "samples.parquet", "n_tokens", only_round=2 if job.config.get("round") else None)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if tokens is None or seconds <= 0:
            continue
        flops += 2 * sizes[job.id].params * tokens[0]
        gpu_s += seconds * gpus
        tokens_all, samples_all, jobs = tokens_all + tokens[0], samples_all + tokens[1], jobs + 1
    if not jobs:
        return None, None
    rate = Rate(flops / gpu_s, f"measured: {jobs} finished evaluation(s) in this store")
    return rate, tokens_all / samples_all if samples_all else None


def _column_sum(path: Path, column: str, only_round: int | None = None) -> tuple[float, int] | None:
    """(sum, rows) of one column of a Parquet file; of the rows of one sampling round only, if given (None when
    there are none: a second round that drew nothing measured nothing)."""
    import pyarrow.parquet as pq  # lazy: only a store with finished evaluations needs it

    table = pq.read_table(path, columns=[column] + (["round"] if only_round is not None else []))
    values = table.column(column).to_pylist()
    if only_round is not None:
        values = [v for v, r in zip(values, table.column("round").to_pylist(), strict=True) if r == only_round]
    values = [v for v in values if v is not None]
    return (float(sum(values)), len(values)) if values else None


# ---------------------------------------------------------------------------------------- estimating
def estimate_cost(
    plan: Plan,
    store: Store,
    spec_dir: Path | None,
    *,
    gpu: str = DEFAULT_GPU,
    generation: list[dict[str, Any]] | None = None,
) -> CostEstimate:
    """GPU-hours of the jobs not done yet, per stage kind. `generation`: the generate stage's own estimates
    (`framework.generate.estimate`, as dicts), which the CLI computes; the core does not import that stage."""
    kind = GPU_TABLE[gpu]
    done = {s: store.done_keys(s) for s in ("generate", "pool", "data", "search", "train", "eval")}
    layouts = eval_layouts(plan.spec, spec_dir, kind) if plan.by_stage("eval") else []
    stages = [
        s
        for s in (
            generation_cost(plan, spec_dir, kind, done["generate"], generation or []),
            search_cost(plan, store, spec_dir, kind, done),
            train_cost(plan, store, spec_dir, kind, done),
            eval_cost(plan, store, spec_dir, kind, done["eval"], layouts),
        )
        if s is not None
    ]
    if plan.spec.launcher.kind == "slurm":
        for stage in stages:
            stage.notes += time_limit_notes(plan.spec, stage)
    return CostEstimate(gpu, stages, layouts)


def slurm_hours(limit: str | None) -> float | None:
    """A Slurm time limit (the forms sbatch's -t takes) in hours; None when unset or unlimited."""
    if limit is None or limit in ("UNLIMITED", "INFINITE"):
        return None
    days, _, clock = limit.rpartition("-")
    parts = [int(x) for x in clock.split(":")]
    if days:  # D-HH, D-HH:MM, D-HH:MM:SS
        h, m, sec = [*parts, 0, 0][:3]
    elif len(parts) == 1:  # minutes
        h, m, sec = 0, parts[0], 0
    elif len(parts) == 2:  # MM:SS
        h, m, sec = 0, parts[0], parts[1]
    else:
        h, m, sec = parts
    hours = int(days or 0) * 24 + h + m / 60 + sec / 3600
    return hours or None  # sbatch reads a limit of 0 as none


def time_limit_notes(spec: AblationSpec, stage: StageCost) -> list[str]:
    """A warning when a stage's estimated hours per job exceed its Slurm time limit: a training is stopped at a
    checkpoint and requeued (each requeue waits in the queue again), anything else starts over."""
    override = spec.launcher.slurm.stages.get(stage.stage)
    own = override is not None and "time" in override.model_fields_set
    wall, where = stage.wall_hours_per_job, f"launcher.slurm.{f'stages.{stage.stage}.' if own else ''}time"
    limit_text = stage_resources(spec, stage.stage).time
    limit = slurm_hours(limit_text)
    if wall is None or limit is None or wall <= limit:
        return []
    if stage.stage == "train":
        return [
            f"about {wall:.1f} h per job on average against the Slurm time limit {limit_text} ({where}): each "
            f"training stops at a checkpoint and requeues about {math.ceil(wall / limit) - 1} time(s) (at most "
            f"launcher.slurm.max_requeues = {spec.launcher.slurm.max_requeues}), waiting in the queue each time"
        ]
    return [
        f"about {wall:.1f} h per job on average against the Slurm time limit {limit_text} ({where}): a "
        f"{stage.stage} job cut at "
        "the limit starts over when requeued and may never finish; raise the limit (the estimate is an upper bound "
        "until a job of this sweep has finished)"
    ]


def train_cost(plan: Plan, store: Store, spec_dir: Path | None, kind: GpuKind, done: dict[str, set[str]]) -> StageCost | None:  # fmt: skip
    jobs = plan.by_stage("train")
    if not jobs:
        return None
    spec = plan.spec
    size = model_size(spec.model, spec_dir)
    measured = measured_train_rate(plan, store, done["train"], size)
    rate = measured or Rate(kind.train_flops(spec.train.gradient_checkpointing), kind.source)
    pool_mean = _pool_mean_tokens(plan, store, done["pool"])
    flops, sources = 0.0, set()
    todo = [j for j in jobs if j.key not in done["train"]]
    for job in todo:
        data = next((d for d in job.deps if d.startswith("data/")), None)
        per_epoch, examples, how = _training_tokens(spec, store, data, done["data"], pool_mean)
        sources.add(how)
        flops += train_flops_per_token(size, per_epoch / examples) * per_epoch * spec.train.epochs
    gpus = _train_gpus(spec)
    notes = [f"parameters: {size.params / 1e9:.3g}B ({size.source})", *sorted(sources)]
    hours = flops / rate.flops_per_gpu_s / 3600
    if spec.train.offload_optimizer and measured is None and todo:  # a measured rate already holds it
        steps = math.ceil(spec.n_examples / spec.train.global_batch_size) * spec.train.epochs
        step_s = size.params / OFFLOAD_PARAMS_PER_S
        hours += len(todo) * steps * step_s * (gpus or 1) / 3600
        notes.append(f"offload_optimizer: + {step_s:.0f} s per optimizer step on the CPU (assumed), GPUs idle")
    return StageCost("train", len(jobs), len(todo), hours, gpus, rate.source, notes)


def search_cost(plan: Plan, store: Store, spec_dir: Path | None, kind: GpuKind, done: dict[str, set[str]]) -> StageCost | None:  # fmt: skip
    """A search's trials: each a training at the search's seed (priced at the mean of each searched range: epochs
    scale it) and its validation evaluation. A study counts whole until its select job is done."""
    spec, search = plan.spec, plan.spec.search
    selects = [j for j in plan.by_stage("search") if j.config["role"] == "select"]
    if search is None or not selects:
        return None
    size = model_size(spec.model, spec_dir)
    train_rate = measured_train_rate(plan, store, done["train"], size) or Rate(
        kind.train_flops(spec.train.gradient_checkpointing), kind.source
    )
    eval_rate = Rate(kind.generate_tflops * 1e12, kind.source)
    epochs = _mean_value(search.params.get("epochs"), spec.train.epochs)
    objective = search.objective
    problems = benchmark_problems(objective.benchmark, spec_dir)
    samples = objective.samples or job_samples(selects[0], spec.eval.samples)
    todo = [j for j in selects if j.key not in done["search"]]
    pool_mean, sources = _pool_mean_tokens(plan, store, done["pool"]), set()
    studies = f"{len(selects)} stud{'y' if len(selects) == 1 else 'ies'}"
    hours, notes = 0.0, [f"{studies} of {search.n_trials} trials (a job here is a study); each trains and validates"]
    for job in todo:
        data = next((d for d in job.deps if d.startswith("data/")), None)
        per_epoch, examples, how = _training_tokens(spec, store, data, done["data"], pool_mean)
        sources.add(how)
        hours += (
            search.n_trials
            * train_flops_per_token(size, per_epoch / examples)
            * per_epoch
            * epochs
            / train_rate.flops_per_gpu_s
            / 3600
        )
        if problems is not None:
            gen = 2 * size.params * problems * samples * spec.eval.sampling.max_tokens
            hours += search.n_trials * gen / eval_rate.flops_per_gpu_s / 3600
    notes.append(
        f"epochs per trial: {epochs:g} (the mean of the searched range)"
        if "epochs" in search.params
        else f"epochs per trial: {epochs:g}"
    )
    if problems is None:
        notes.append(f"validation left out: {objective.benchmark.name}'s problem count is unknown here")
    else:
        notes.append(
            f"validation: {problems} problems x {samples} samples x at most {spec.eval.sampling.max_tokens} tokens"
        )
    if search.pruner.kind != "none":
        notes.append("pruned trials evaluate fewer problems: an upper bound")
    notes += sorted(sources)
    per_job = _train_gpus(spec)
    # wall time per job: a worker runs its share of every study's trials
    return StageCost("search", len(selects), len(todo), hours, per_job, train_rate.source, notes)


def _mean_value(param: Any, default: float) -> float:
    """The mean of a searched range (the mean choice of a numeric categorical), else the spec's value."""
    if param is None:
        return default
    if param.type == "categorical":
        numbers = [float(c) for c in param.choices if isinstance(c, int | float) and not isinstance(c, bool)]
        return sum(numbers) / len(numbers) if numbers else default
    if param.log:
        return math.exp((math.log(param.low) + math.log(param.high)) / 2)
    return (param.low + param.high) / 2


def _training_tokens(
    spec: AblationSpec, store: Store, data: str | None, data_done: set[str], pool_mean: float | None
) -> tuple[float, float, str]:
    """(tokens per epoch, examples, how they were found) of one training."""
    if data is not None and data.split("/")[1] in data_done:
        try:
            stats = json.loads((store.path("data", data.split("/")[1]) / "stats.json").read_text())
            return float(stats["tokens"]["total"]), float(stats["examples"]), "tokens: the cells' training sets"
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if pool_mean is not None:
        mean = min(pool_mean, spec.train.max_seq_len)
        return mean * spec.n_examples, float(spec.n_examples), f"tokens: n_examples × the pool's mean {mean:.0f}"
    mean = min(DEFAULT_EXAMPLE_TOKENS, spec.train.max_seq_len)
    return mean * spec.n_examples, float(spec.n_examples), f"tokens: assumed {mean} per example until the pool is built"


def _pool_mean_tokens(plan: Plan, store: Store, pool_done: set[str]) -> float | None:
    for job in plan.by_stage("pool"):
        if job.key in pool_done:
            try:
                stats = json.loads((store.path("pool", job.key) / "stats.json").read_text())
                return float(stats["tokens"]["mean"])
            except (OSError, ValueError, KeyError, TypeError):
                return None
    return None


def _train_gpus(spec: AblationSpec) -> int | None:
    """GPUs of one training: train.processes, else the Slurm train job's or the local launcher's GPUs."""
    per_node = spec.train.processes
    if per_node is None and spec.launcher.kind == "slurm":
        per_node = stage_resources(spec, "train").gpus_per_node or None
    if per_node is None and isinstance(spec.launcher.local.gpus, list):
        per_node = len(spec.launcher.local.gpus) or None
    return spec.train.nodes * per_node if per_node else None


def eval_cost(plan: Plan, store: Store, spec_dir: Path | None, kind: GpuKind, done: set[str], layouts: list[dict[str, Any]] | None = None) -> StageCost | None:  # fmt: skip
    """`layouts`: `eval_layouts`; the GPUs an eval job uses are their tp x dp (one GPU on CPU, or where models
    differ in it: then None, as the table's '?')."""
    jobs = plan.by_stage("eval")
    if not jobs:
        return None
    spec = plan.spec
    sizes = {j.id: _eval_model_size(plan, j, spec_dir) for j in jobs}
    used = {max(1, entry["gpus"]) for entry in layouts or []} or {1}
    gpus = next(iter(used)) if len(used) == 1 else None
    measured, mean_tokens = measured_eval(plan, store, done, sizes, max(used))  # mixed: the most, a lower rate
    rate = measured or Rate(kind.generate_tflops * 1e12, kind.source)
    benches = {b.name: b for b in spec.eval.benchmarks}
    counted = _benchmark_problems(plan, store, spec_dir, done)
    flops, unknown, notes = 0.0, 0, set()
    todo = [j for j in jobs if j.key not in done]
    for job in todo:
        bench = benches[job.config["benchmark"]["name"]]
        problems = counted.get(bench.name)
        if problems is None:
            unknown += 1
            continue
        ev = _job_eval(plan, job)  # a baseline with its own sampling is priced at its own budget
        own = ev.sampling.max_tokens != spec.eval.sampling.max_tokens
        per_sample = ev.sampling.max_tokens if own else (mean_tokens or ev.sampling.max_tokens)
        if own:
            notes.add(f"a baseline with its own max_tokens ({ev.sampling.max_tokens}) is priced at it")
        flops += 2 * sizes[job.id].params * problems * job_samples(job, ev.samples_for(bench)) * per_sample
    notes.add(
        f"tokens per sample: {mean_tokens:.0f}, the mean of finished evaluations"
        if mean_tokens
        else f"tokens per sample: at most eval.sampling.max_tokens = {spec.eval.sampling.max_tokens} (an upper bound)"
    )
    notes |= {f"parameters: {s.params / 1e9:.3g}B ({s.source})" for j, s in sizes.items() if plan.jobs[j] in todo}
    if unknown:
        notes.add(f"{unknown} job(s) left out: their benchmark's problem count is unknown here")
    hours = flops / rate.flops_per_gpu_s / 3600
    return StageCost("eval", len(jobs), len(todo), hours, gpus, rate.source, sorted(notes), unknown)


def job_samples(job: Job, setting: int | SampleBudget) -> int:
    """Samples per problem one eval job draws: the fixed count; under a budget, the first round, or for the second
    round the rest of the budget (all of it: a target half-width reached earlier spends less)."""
    if not isinstance(setting, SampleBudget):
        return setting
    return setting.budget - setting.first_round if job.config.get("round") == 2 else setting.first_round


def _job_eval(plan: Plan, job: Job) -> Any:
    """The evaluation settings a job runs with: its baseline's own over the spec's (a checkpoint: the spec's)."""
    if "checkpoint" in job.config or not job.cells:
        return plan.spec.eval
    cell = next((c for c in plan.cells if c.id == job.cells[0]), None)
    return plan.spec.evaluation_for(cell.baseline if cell is not None else None)[1]


def _eval_model_size(plan: Plan, job: Job, spec_dir: Path | None) -> ModelSize:
    """A checkpoint is the base model fine-tuned; otherwise the model of the baseline the job evaluates."""
    spec = plan.spec
    if "checkpoint" in job.config or not job.cells:
        return model_size(spec.model, spec_dir)
    cell = next((c for c in plan.cells if c.id == job.cells[0]), None)
    baseline = next((b for b in spec.baselines if cell is not None and b.name == cell.baseline), None)
    return model_size(baseline.model if baseline is not None and baseline.model else spec.model, spec_dir)


def eval_layouts(spec: AblationSpec, spec_dir: Path | None, kind: GpuKind) -> list[dict[str, Any]]:
    """The layout of an eval job per evaluated model, with a line for `plan`: on Slurm from the eval job's GPUs per
    node and the GPU kind's memory; locally from the GPUs the local launcher gives an eval job here."""
    tp, dp = spec.eval.tensor_parallel_size, spec.eval.data_parallel_size
    memory: float | None = kind.memory_gib
    mem_note = f"{kind.name.upper()}, {kind.memory_gib:g} GiB"
    if spec.launcher.kind == "slurm":
        try:
            gpus = stage_resources(spec, "eval").gpus_per_node
        except UserError:  # reported by the plan's launch problems
            return []
        where = f"per Slurm eval job of {gpus} GPU(s) ({mem_note})"
    else:
        local = spec.launcher.local.gpus
        visible = len(local) if isinstance(local, list) else local_gpu_count()
        found = local_gpu_memory_gib() if visible else None
        memory = found or memory
        mem_note = f"{found:.0f} GiB" if found else f"{mem_note} assumed"
        gpus = local_eval_gpus(spec, visible, memory, spec_dir)
        where = f"per local eval job of {gpus} of the {visible} GPU(s) here ({mem_note})"
    out = []
    for name, size, dtype in evaluated_sizes(spec, spec_dir):
        chosen: EvalLayout = pick_layout(size, gpus=gpus, gpu_memory_gib=memory, dtype=dtype, tp=tp, dp=dp)
        line = (
            f"{name}: {chosen.tp} x {chosen.dp} on CPU"
            if not gpus
            else f"{name}: {chosen.tp} x {chosen.dp} (tensor x data parallel) {where}: {chosen.why}"
        )
        out.append({"model": name, **chosen.to_dict(), "line": line})
    return out


def _benchmark_problems(plan: Plan, store: Store, spec_dir: Path | None, done: set[str]) -> dict[str, int | None]:
    """Problems per benchmark: a finished evaluation's count, else the local file's rows, else the known size;
    cut by `limit` and `problem_ids`."""
    out: dict[str, int | None] = {}
    for job in plan.by_stage("eval"):
        name = job.config["benchmark"]["name"]
        if job.key in done and name not in out:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                out[name] = int(json.loads((store.path("eval", job.key) / "metrics.json").read_text())["n_problems"])
    for b in plan.spec.eval.benchmarks:
        if b.name not in out:
            out[b.name] = benchmark_problems(b, spec_dir)
    return out


def benchmark_problems(b: BenchmarkSpec, spec_dir: Path | None) -> int | None:
    """A benchmark's problems from its local file's rows, else its known size; cut by `limit` and `problem_ids`."""
    n = _file_rows(resolve_path(b.path, spec_dir)) if b.path else None
    n = n if n is not None else KNOWN_BENCHMARK_SIZES.get(b.name)
    if n is None and b.name in ("toy", "toy-dev"):
        from framework.toy import benchmark_rows, make_world  # lazy: only the toy benchmark needs it

        n = len(benchmark_rows(make_world(0), split="dev" if b.name == "toy-dev" else "test"))
    if n is not None and b.problem_ids is not None:
        n = min(n, len(b.problem_ids))
    return min(n, b.limit) if n is not None and b.limit else n


def _file_rows(path: Path | None) -> int | None:
    if path is None or not path.is_file():
        return None
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # lazy: as in _column_sum

        return int(pq.ParquetFile(path).metadata.num_rows)
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def generation_cost(
    plan: Plan, spec_dir: Path | None, kind: GpuKind, done: set[str], estimates: list[dict[str, Any]]
) -> StageCost | None:
    """The generate jobs' GPU-hours from their expected (else at most) generated tokens; a teacher behind an
    endpoint uses no GPU of this cluster."""
    jobs = plan.by_stage("generate")
    if not jobs:
        return None
    by_job = {e["job"]: e for e in estimates}
    flops, unknown, notes = 0.0, 0, set()
    todo = [j for j in jobs if j.key not in done]
    index_of = {jid: i for i, jid in plan.generated.items()}
    gpus = set()
    for job in todo:
        teacher = plan.spec.pool[index_of[job.id]].generate.teacher  # type: ignore[union-attr]
        if teacher.endpoint is not None:
            notes.add(f"{teacher.name}: an endpoint, no GPU here")
            continue
        e = by_job.get(job.id, {})
        tokens = e.get("expected_output_tokens") or e.get("max_output_tokens")
        if tokens is None:
            unknown += 1
            continue
        notes.add("tokens: the journal's mean" if e.get("expected_output_tokens") else "tokens: at most max_tokens")
        size = model_size(ModelSpec(name_or_path=teacher.model, revision=teacher.revision), spec_dir)
        notes.add(f"parameters: {size.params / 1e9:.3g}B ({size.source})")
        flops += 2 * size.params * float(tokens)
        gpus.add(job.gpus or 1)
    if unknown:
        notes.add(f"{unknown} job(s) left out: their request count is not known yet")
    rate = Rate(kind.generate_tflops * 1e12, kind.source)
    per_job = gpus.pop() if len(gpus) == 1 else None
    return StageCost("generate", len(jobs), len(todo), flops / rate.flops_per_gpu_s / 3600, per_job, rate.source, sorted(notes), unknown)  # fmt: skip


def render(cost: dict[str, Any]) -> list[str]:
    """The cost table `ablate plan` prints, from `CostEstimate.to_dict()` (what --json carries)."""
    lines = [f"cost of the jobs not done yet (GPU-hours; rates for {cost['gpu'].upper()} unless measured here):"]
    lines.append(f"  {'stage':<9} {'to run':>8} {'GPUs/job':>8} {'GPU-h':>10} {'h/job':>8}  rate from")
    for s in cost["stages"]:
        wall = s["wall_hours_per_job"]
        todo = f"{s['todo']}/{s['jobs']}"
        lines.append(
            f"  {s['stage']:<9} {todo:>8} {s['gpus_per_job'] or '?':>8} {_hours(s['gpu_hours']):>10} "
            f"{f'{wall:.2f}' if wall is not None else '?':>8}  {s['rate'].split(':')[0]}"
        )
        lines += [
            line
            for n in s["notes"]
            for line in textwrap.wrap(n, 78, initial_indent="    - ", subsequent_indent="      ")
        ]
    lines.append(f"  {'total':<9} {'':>8} {'':>8} {_hours(cost['total_gpu_hours']):>10}")
    if cost.get("eval_layout"):
        lines.append("evaluation layout (eval.tensor_parallel_size x data_parallel_size):")
        lines += [
            line
            for entry in cost["eval_layout"]
            for line in textwrap.wrap(entry["line"], 110, initial_indent="  ", subsequent_indent="    ")
        ]
    return lines


def _hours(h: float) -> str:
    return f"{h:,.1f}" if h >= 0.1 or h == 0 else f"{h:.2g}"
