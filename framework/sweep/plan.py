"""The plan: every stage job of a sweep with its content key and dependencies.

A key hashes exactly what determines the stage's output: its inputs' keys, the slice of the spec that matters
and the stage's code version. So a comment, the launcher section or an added cell never invalidates finished
work, and two cells that need the same output share one job.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framework import model_source
from framework.errors import UserError
from framework.fetch import fetch_hint
from framework.hashing import content_key, file_digest, tree_digest
from framework.locations import resolve_path, searched, toy_model_path
from framework.redaction import lines_with_secrets, redact_text
from framework.registry import BENCHMARKS, FACTORS, POOL_PRESETS
from framework.spec.ablation import AblationSpec
from framework.spec.base import run_only_fields
from framework.spec.generate import TeacherSpec
from framework.spec.launch import tracking_uri_problem
from framework.spec.models import TOY_MODELS, BenchmarkSpec, EvalSpec, ModelSpec, SampleBudget, TrainSpec, first_round
from framework.spec.pool import GenerateSpec, PoolSourceSpec
from framework.spec.search import SearchSpec
from framework.sweep.eval_layout import fixed_gpus
from framework.sweep.grid import Arm, Cell, arm_definition, expand, reference_arm
from framework.sweep.resources import TrainConfigError, layout, stage_resources
from framework.sweep.stages import STAGES


class PlanError(UserError):
    """A problem found while planning (missing file, unresolvable model); one message per problem."""


@dataclass
class Job:
    """One `ablate exec STAGE KEY` command."""

    stage: str
    key: str
    deps: list[str]
    config: dict[str, Any]
    cells: list[str] = field(default_factory=list)
    gpus: int | None = None  # GPUs it needs when its stage does not say (a generation's tensor parallelism); unkeyed

    @property
    def id(self) -> str:
        return f"{self.stage}/{self.key}"


@dataclass
class Plan:
    spec: AblationSpec
    cells: list[Cell]
    jobs: dict[str, Job]  # insertion order is a valid topological order
    cell_jobs: dict[str, dict[str, list[str]]]  # cell id -> stage -> job ids
    warnings: list[str] = field(default_factory=list)  # problems tolerated by a non-strict plan
    notes: list[str] = field(default_factory=list)  # advice that never stops a run (unpinned hub data)
    generated: dict[int, str] = field(default_factory=dict)  # pool index of a generated source -> its job id

    def find(self, stage: str, key: str) -> Job | None:
        return self.jobs.get(f"{stage}/{key}")

    def by_stage(self, stage: str) -> list[Job]:
        return [j for j in self.jobs.values() if j.stage == stage]

    def stage_jobs(self, cell_id: str, stage: str) -> list[str]:
        """Every job of one stage of a cell, for the views: under a sample budget its evaluations' first rounds
        too (a failed or running first round must show). `cell_jobs[cell][stage]` stays what log and report read."""
        jobs = self.cell_jobs[cell_id][stage]
        return [*self.cell_jobs[cell_id].get("eval_first_round", []), *jobs] if stage == "eval" else jobs


# --------------------------------------------------------------------------------------- fingerprints
def model_identity(model: ModelSpec, spec_dir: Path | None, problems: list[str], where: str) -> dict[str, Any]:
    """What identifies a model's weights and tokenizer, cheaply."""
    if model.tiny is not None:
        return {"tiny": model.tiny.model_dump(mode="json"), "chat_template": model.chat_template}
    name = model.name_or_path or ""
    if name in TOY_MODELS:
        path = toy_model_path(name)
        if not path.exists():
            problems.append(f"{where}: the shipped toy {name[4:]} is missing at {path} (run `{TOY_MODELS[name][1]}`)")
            return {"toy": "missing"}
        return {"local": tree_digest(path), "chat_template": model.chat_template}
    local = resolve_path(name, spec_dir)
    if local is not None and local.is_dir():
        return {"local": tree_digest(local), "chat_template": model.chat_template}
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local:
        problems.append(f"{where}: model directory {name!r} does not exist")
        return {"local": "missing"}
    return {"hub": name, "revision": model.revision or "main", "chat_template": model.chat_template}


def factor_versions(definition: list[list]) -> dict[str, str]:
    """{factor: code version} of an arm's factors (its `arm_definition`) past their first version, so first
    versions key nothing."""
    out = {}
    for fname, kind, _level, params in definition:
        version_of = getattr(FACTORS.resolve(kind), "version_of", None)
        version = version_of(params) if version_of is not None else "1"
        if version != "1":
            out[fname] = version
    return out


def token_budget_reference(spec: AblationSpec, definition: list[list]) -> list[Any] | None:
    """[factor, reference level, its params] of a length level (in the arm's `arm_definition`) that matches its
    reference's total tokens."""
    for fname, kind, _level, params in definition:
        if kind == "length" and params.get("match_total_tokens"):
            factor = spec.factors[fname]
            ref = factor.reference_level
            return [fname, ref, next(lv.params for lv in factor.levels if lv.name == ref)]
    return None


def teacher_identity(teacher: TeacherSpec, spec_dir: Path | None, problems: list[str], where: str) -> dict[str, Any]:
    """What identifies a teacher's answers: its weights (as a model's) and dtype, or the served model's name and
    the revision the spec says it serves (the URL, key and client settings only say how to reach it)."""
    if teacher.endpoint is not None:
        return {"endpoint_model": teacher.endpoint.model, "revision": teacher.revision}
    model = ModelSpec(name_or_path=teacher.model, revision=teacher.revision, chat_template=teacher.chat_template)
    return {**model_identity(model, spec_dir, problems, where), "dtype": teacher.dtype}


def generate_config(
    spec: AblationSpec, index: int, spec_dir: Path | None, problems: list[str]
) -> dict[str, Any]:  # fmt: skip
    """What a generated source's job hashes: the teacher, the prompt and sampling, and its problems (a source's
    identity) or, for a refinement, the label it rewrites and the file sources before it (generated ones are deps)."""
    where = f"pool[{index}].generate"
    gen = spec.pool[index].generate
    assert gen is not None
    config: dict[str, Any] = {
        "teacher": teacher_identity(gen.teacher, spec_dir, problems, f"{where}.teacher"),
        "generate": gen.model_dump(
            mode="json", exclude={**run_only_fields(GenerateSpec), "problems": True, "teacher": True, "refine": True}
        ),
    }
    if gen.problems is not None:
        config["problems"] = pool_identity(gen.problems, spec_dir, problems, f"{where}.problems")
    else:
        earlier = [
            pool_identity(src, spec_dir, problems, f"pool[{j}]")
            for j, src in enumerate(spec.pool[:index])
            if src.generate is None
        ]
        config["refine"] = {"label": gen.refine, "sources": earlier}
    return config


def pool_identity(src: PoolSourceSpec, spec_dir: Path | None, problems: list[str], where: str) -> dict[str, Any]:
    if src.generate is not None:  # what it holds is its generate job's output, a dependency of the pool job
        unkeyed = {
            "generate",
            "revision",
            *(["on_missing"] if src.missing_rule() == src.default_missing_rule() else []),
        }
        return {"generated": True, **src.model_dump(mode="json", exclude=unkeyed)}
    default_rule = src.missing_rule() == src.default_missing_rule()
    unset = (("revision",) if src.revision is None else ()) + (("on_missing",) if default_rule else ())
    # the defaults (and no `generate`) keep the keys made before them
    ident = src.model_dump(mode="json", exclude={"path", "generate", *unset})
    ident["split"] = src.split or "train"  # the split read (keys made before it could be left out stay)
    if src.preset is not None:  # the preset's layout is part of what the source means
        preset = POOL_PRESETS.resolve(src.preset)
        ident["preset_columns"] = dict(preset.columns)
        ident["split"] = src.split or preset.split
    if src.path is not None:
        p = resolve_path(src.path, spec_dir)
        if p is None:
            problems.append(
                f"{where}.path: pool file {src.path!r} does not exist{searched(src.path, spec_dir)}"
                f"{fetch_hint(src.path)}"
            )
            ident["content"] = "missing"
        else:
            ident["content"] = tree_digest(p) if p.is_dir() else file_digest(p)
    return ident


def benchmark_identity(b: BenchmarkSpec, spec_dir: Path | None, problems: list[str], where: str) -> dict:
    ident = b.model_dump(mode="json", exclude={"path", *(("revision",) if b.revision is None else ())})
    if b.revision is not None and _benchmark_hub(b) is None:
        problems.append(f"{where}.revision: {b.name} has no hub copy to pin")
    if b.path is not None:
        p = resolve_path(b.path, spec_dir)
        if p is None:
            problems.append(
                f"{where}.path: benchmark file {b.path!r} does not exist{searched(b.path, spec_dir)}"
                f"{fetch_hint(b.path)}"
            )
            ident["content"] = "missing"
        else:
            ident["content"] = tree_digest(p) if p.is_dir() else file_digest(p)
    return ident


def unpinned_hub_data(spec: AblationSpec, models: dict[str, dict[str, Any]]) -> list[str]:
    """Hub datasets and models (`models`: where -> model_identity) the spec reads at their latest revision: a new
    upload would change them under the same keys."""
    hint = "pin `revision:` to a commit so a new upload cannot change it under the same key"
    out = []
    sources = [(f"pool[{i}]", src) for i, src in enumerate(spec.pool)]
    sources += [(f"pool[{i}].generate.problems", s.generate.problems) for i, s in enumerate(spec.pool) if s.generate]
    for where, src in sources:
        if src is None or src.generate is not None:
            continue
        hub = src.hub or (POOL_PRESETS.resolve(src.preset).hub if src.preset and src.path is None else None)
        if hub and src.revision is None:
            out.append(f"{where}: hub dataset {hub!r} is read at its latest revision; {hint}")
    for i, b in enumerate(spec.eval.benchmarks):
        hub = _benchmark_hub(b)
        if hub and b.revision is None:
            out.append(
                f"eval.benchmarks[{i}]: {b.name} is read from hub dataset {hub!r} at its latest revision; {hint}"
            )
    for where, ident in models.items():
        if "hub" in ident and ident["revision"] == "main":
            out.append(f"{where}: hub model {ident['hub']!r} is read at its latest revision; {hint}")
    return out


def _benchmark_hub(b: BenchmarkSpec) -> str | None:
    """The hub dataset a benchmark reads, or None (a local file, the toy world, a benchmark without a hub copy)."""
    if b.path is not None or b.name == "toy":
        return None
    try:
        return getattr(BENCHMARKS.resolve(b.name), "hub", None)
    except Exception:  # an unknown benchmark is reported where the plan resolves it
        return None


def launch_problems(spec: AblationSpec) -> list[str]:
    """What the launcher would refuse only once the earlier stages had run: a Slurm train job whose GPUs cannot
    split the global batch (or whose node count contradicts train.nodes), a Slurm eval job with fewer GPUs than
    vLLM's parallel sizes, or local GPU ids that cannot split the batch."""
    problems: list[str] = []
    if spec.launcher.kind == "slurm":
        try:
            gpus, where = stage_resources(spec, "train").gpus_per_node, "the Slurm train job's GPUs per node"
            ev = stage_resources(spec, "eval")
        except UserError as e:
            return [str(e)]
        need = fixed_gpus(spec.eval.tensor_parallel_size, spec.eval.data_parallel_size)  # an auto size counts 1
        if spec.eval.benchmarks and 0 < ev.nodes * ev.gpus_per_node < need:
            # vLLM would fail for want of GPUs the job does not have, after every training of the sweep (a job
            # with none evaluates on CPU). Whether auto's model fits the job's GPUs, `plan`'s layout lines say.
            problems.append(
                f"eval: tensor_parallel_size x data_parallel_size = {need} GPUs, but the Slurm eval job gets "
                f"{ev.nodes * ev.gpus_per_node} (set launcher.slurm.stages.eval.gpus_per_node)"
            )
    elif isinstance(spec.launcher.local.gpus, list):
        gpus, where = len(spec.launcher.local.gpus), "launcher.local.gpus"
    else:  # the GPUs visible where it runs: checked before any process starts
        return []
    try:
        layout(spec.train, gpus=gpus)
    except TrainConfigError as e:
        problems.append(f"train: {e} ({gpus} from {where})")
    return problems


def configured_tracking_uri(spec: AblationSpec) -> str | None:
    """The spec's URI, then $MLFLOW_TRACKING_URI; None means the default database next to the results."""
    if spec.tracking.uri:
        return spec.tracking.uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        problem = tracking_uri_problem(env)
        if problem:
            raise UserError(f"MLFLOW_TRACKING_URI: {problem}")
        return env
    return None


def tracking_dir_problem(spec: AblationSpec, results_base: str | Path | None = None) -> str | None:
    """A configured sqlite database in a directory that does not exist: a typo there would start a new, empty
    history, so it is refused before anything runs. The results base is exempt (the sweep creates it): the one
    the sweep uses, `results_base` (--results-dir) if given, else $ABLATE_RESULTS_DIR, else the spec's."""
    uri = configured_tracking_uri(spec)
    if uri is None or not uri.startswith("sqlite:///"):
        return None
    folder = Path(uri[len("sqlite:///") :].split("?", 1)[0]).parent
    results = Path(results_base or os.environ.get("ABLATE_RESULTS_DIR") or spec.results_dir)
    if folder.is_dir() or folder.resolve() == results.resolve():
        return None
    where = "tracking.uri" if spec.tracking.uri else "MLFLOW_TRACKING_URI"
    return (
        f"{where}: {redact_text(uri)!r} names a database in {folder}, a directory that does not exist (a mistyped "
        "path would start a new, empty MLflow history); fix the path or create the directory"
    )


def tracking_uri(configured: str | None, results_base: Path) -> str:
    """The URI to log to. The default is `<results base>/mlflow.db` as an absolute path: the base the results
    actually use (--results-dir, $ABLATE_RESULTS_DIR or the spec), whatever directory a stage runs in."""
    return configured or f"sqlite:///{results_base.resolve() / 'mlflow.db'}"


def eval_config(ev: EvalSpec) -> dict[str, Any]:
    """What an eval job hashes of its evaluation settings: all but the benchmarks (each job's own) and run-only
    fields; clip_to_context only when set, so keys made before it existed stay. A sample budget's first round is
    keyed as that many fixed samples (the plan adds the checkpoint's own `seed_offset` to its job)."""
    unkeyed = {
        "benchmarks": True,
        **run_only_fields(EvalSpec),
        **({"clip_to_context": True} if not ev.clip_to_context else {}),
    }
    return {**ev.model_dump(mode="json", exclude=unkeyed), "samples": first_round(ev.samples)}


def search_note(search: SearchSpec) -> str:
    """What `plan` says of a search: its studies, what they vary and score, and which recipes the cells train with."""
    params = ", ".join(f"{name} {_param_range(p)}" for name, p in search.params.items())
    where = "the reference arm" if search.mode == "shared" else "each arm"
    then = (
        "every arm then trains with its best for every seed (recipe=shared)"
        if search.mode == "shared"
        else "every arm then trains for every seed with the reference arm's best (recipe=shared) and its own "
        "(recipe=own), and the report sets each factor's effect under both side by side"
    )
    storage = redact_text(search.storage) if search.storage else "sqlite beside the results"
    return (
        f"search: {search.n_trials} {search.sampler.kind} trials (seed {search.sampler.seed}) on {where}, "
        f"{search.workers} worker(s) a study, varying {params}; each trial trains and scores "
        f"{search.objective.metric} ({search.objective.direction}) on {search.objective.benchmark.name}; {then}; "
        f"storage: {storage}"
    )


def _param_range(p: Any) -> str:
    if p.type == "categorical":
        return "in {" + ", ".join(map(str, p.choices)) + "}"
    scale = " log" if p.log else (f" step {p.step:g}" if p.step else "")
    return f"{p.low:g}..{p.high:g}{scale}"


def objective_problems(spec: AblationSpec) -> list[str]:
    """A pass@k objective the validation's samples cannot give (found now, not after the first trial trained)."""
    assert spec.search is not None
    objective = spec.search.objective
    samples = objective.samples or first_round(spec.eval.samples)
    k = re.fullmatch(r"(?:.+/)?pass@(\d+)", objective.metric)
    if k and int(k[1]) > samples:
        return [
            f"search.objective.metric: {objective.metric} needs at least {k[1]} samples per validation problem, "
            f"which gets {samples} (set search.objective.samples)"
        ]
    if k and int(k[1]) > 1 and int(k[1]) not in spec.eval.pass_k:  # the evaluation reports only those
        return [f"search.objective.metric: {objective.metric} is not computed: add {k[1]} to eval.pass_k"]
    return []


def validation_overlap(spec: AblationSpec, spec_dir: Path | None) -> list[str]:
    """A search's validation problems that are also problems of a test benchmark, by text (case and whitespace
    aside): tuning on them would leak the test set into the recipe. Checked here for benchmarks that load without
    the hub (local files, the toy world); the search stage checks the rest before its first trial."""
    # Imported here: loading a benchmark reads pandas and the toy world, which only a search's plan needs.
    from framework.benchmarks import BenchmarkError
    from framework.benchmarks.loading import load_benchmark, problem_overlap

    assert spec.search is not None
    validation = spec.search.objective.benchmark
    if not _loads_offline(validation):
        return []

    def load(b: BenchmarkSpec) -> Any:
        return load_benchmark(b, lambda p: resolve_path(p, spec_dir))

    try:
        held_out = load(validation)
    except BenchmarkError:  # a missing file is reported where the benchmark's identity is taken
        return []
    problems = []
    for i, bench in enumerate(spec.eval.benchmarks):
        if not _loads_offline(bench):
            continue
        try:
            shared = problem_overlap(held_out, load(bench))
        except BenchmarkError:
            continue
        if shared:
            shown = ", ".join(shared[:5]) + (f" and {len(shared) - 5} more" if len(shared) > 5 else "")
            problems.append(
                f"search.objective.benchmark: {len(shared)} validation problem(s) are also in eval.benchmarks[{i}] "
                f"({bench.name}): {shown}; a recipe tuned on test problems overstates every arm -- validate on "
                "problems the sweep never scores"
            )
    return problems


def _loads_offline(bench: BenchmarkSpec) -> bool:
    return bench.path is not None or (_benchmark_hub(bench) is None and bench.name in ("toy", "toy-dev"))


def first_round_identity(bident: dict[str, Any]) -> dict[str, Any]:
    """A benchmark's identity for its first-round evaluation: a budget of its own keyed as its first round."""
    samples = bident.get("samples")
    return {**bident, "samples": samples["first_round"]} if isinstance(samples, dict) else bident


def budgets(spec: AblationSpec) -> dict[str, SampleBudget]:
    """The benchmarks whose samples are a budget, by name."""
    out = {b.name: spec.eval.samples_for(b) for b in spec.eval.benchmarks}
    return {name: s for name, s in out.items() if isinstance(s, SampleBudget)}


SEED_SLOT = 131072


def seed_offset(config: dict[str, Any]) -> int:
    """Where a checkpoint's sampling seeds start under a sample budget, from its first round's settings: seeds are
    otherwise the same for every checkpoint (problem i, sample k), and two similar models drawing on one random
    stream have correlated outcomes -- the others' first rounds, which set this checkpoint's second, would then
    partly be its own. 16,384 slots 2^17 seeds apart (room for SEED_SLOT = 131,072 samples a checkpoint, which
    the second round checks) below 2^31: two of 20 checkpoints share a slot with probability about 1%, of 100
    about 26%. A baseline with a `sampling.seed` of its own starts from there instead of 0."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    return int(digest[:8], 16) % 16384 * SEED_SLOT


# How many other checkpoints' first rounds set the second round of a checkpoint without other seeds of its own arm.
REFERENCES = 3


def allocation_references(own: str, round1: dict[str, str], arm_of: dict[str, str]) -> list[str]:
    """The first-round jobs whose outcomes set the second round of the cell whose first round is `own`: the other
    seeds of its arm where there are any, else REFERENCES other checkpoints; never its own (framework.eval.budget
    says why). `round1`: cell -> its first-round job id; `arm_of`: cell -> arm.

    The others are picked by rendezvous hashing (the smallest hashes of own + other): a fixed few, so one failed
    training blocks few second rounds, and the pick stays put when cells are added unless a new one ranks among
    the first REFERENCES: a second round is keyed by its references, so a pick that moved would redo finished
    work."""
    cell = next(c for c, j in round1.items() if j == own)
    same = sorted({j for c, j in round1.items() if j != own and arm_of[c] == arm_of[cell]})
    if same:
        return same
    others = {j for j in round1.values() if j != own}
    return sorted(sorted(others, key=lambda j: hashlib.sha256(f"{own}|{j}".encode()).hexdigest())[:REFERENCES])


@dataclass(frozen=True)
class SharedSlices:
    """The parts of the spec that every cell's jobs of a stage hash alike, computed once per plan."""

    base_model: dict[str, Any]  # the base model's identity
    prompt: dict[str, Any]
    pool: dict[str, Any]  # the pool job's whole config
    train: dict[str, Any]
    eval: dict[str, Any]
    benchmarks: list[tuple[BenchmarkSpec, dict[str, Any]]]  # each benchmark with its identity
    log: dict[str, Any]


def shared_slices(spec: AblationSpec, spec_dir: Path | None, problems: list[str]) -> SharedSlices:
    """What each stage's key hashes of the spec, besides a cell's own levels and seed; missing files go to
    `problems`."""
    base_ident = model_identity(spec.model, spec_dir, problems, "model")
    prompt = spec.prompt.model_dump(mode="json")
    pool_sources = [pool_identity(s, spec_dir, problems, f"pool[{i}]") for i, s in enumerate(spec.pool)]
    # a setting added after studies were run is keyed only when it differs from the old behaviour
    once = {"shuffle"} if spec.train.shuffle == "once" else set()
    # Run-only fields (marked so in the spec's schema) change how a job runs, not what it computes: not keyed.
    train_slice = spec.train.model_dump(
        mode="json", exclude={**run_only_fields(TrainSpec), **dict.fromkeys(once, True)}
    )
    eval_slice = eval_config(spec.eval)
    # what the pool's annotations depend on besides its sources: grading labels `correct`, and a pass-rate file
    pool_extra: dict[str, Any] = {"grading": spec.eval.grading.model_dump(mode="json", include={"grader", "fallbacks"})}
    if spec.annotate.pass_rates:
        rates = resolve_path(spec.annotate.pass_rates, spec_dir)
        pool_extra["pass_rates_content"] = file_digest(rates) if rates is not None and rates.is_file() else "missing"
    benches = [
        (b, benchmark_identity(b, spec_dir, problems, f"eval.benchmarks[{i}]"))
        for i, b in enumerate(spec.eval.benchmarks)
    ]
    if spec.annotate.exclude_eval_problems:  # the pool leaves out the benchmarks' problems
        pool_extra["benchmarks"] = [ident for _, ident in benches]
    log_slice = {
        "uri": configured_tracking_uri(spec),  # None: the default database, wherever the results are
        "experiment": spec.tracking.experiment or spec.name,
        **spec.tracking.model_dump(mode="json", exclude={"uri", "experiment"}),
        "pass_k": spec.eval.pass_k,  # computed from the stored samples when the eval ran with other ks
    }

    pool = {
        "sources": pool_sources,
        "tokenizer": base_ident,
        "annotate": spec.annotate.model_dump(mode="json"),
        **pool_extra,
    }
    return SharedSlices(base_ident, prompt, pool, train_slice, eval_slice, benches, log_slice)


def plan_notes(spec: AblationSpec, model_idents: dict[str, dict[str, Any]], trains: bool) -> list[str]:
    """What `plan` says without refusing: unpinned hub data, a last short step per epoch, a secret in a Slurm setup
    line, a spec tracking URI that overrides the environment's."""
    notes = unpinned_hub_data(spec, model_idents)
    last = spec.n_examples % spec.train.global_batch_size
    if last and spec.n_examples > spec.train.global_batch_size and trains:
        notes.append(
            f"train: global_batch_size {spec.train.global_batch_size} does not divide n_examples {spec.n_examples}: "
            f"every epoch ends with a step of {last} examples"
            + (", the same ones each epoch (train.shuffle: once)" if spec.train.shuffle == "once" else "")
        )
    for i, line in lines_with_secrets(spec.launcher.slurm.setup):  # the job script must hold the line to run it
        notes.append(
            f"launcher.slurm.setup[{i}] ({line}) holds a secret, which every Slurm job script in the store keeps "
            "(readable by you only); read it when the job runs instead, as `export X=$(cat ~/.x)`, or pass it "
            "from your environment with the scheduler's --export"
        )
    for name, b in budgets(spec).items():
        notes.append(
            f"eval: {name} samples {b.first_round} per problem from every checkpoint, then a second round per "
            f"checkpoint up to a mean of {b.budget} (at most {b.max} per problem) where the other seeds of its arm "
            "(else three other checkpoints) varied most; its own first round never decides it, so pass@1 stays unbiased"
            + (f"; it stops once sampling adds at most {b.target_half_width:g} to an arm difference's 95% half-width"
               if b.target_half_width is not None else "")
        )  # fmt: skip
    if spec.search is not None:
        notes.append(search_note(spec.search))
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if spec.tracking.uri and env_uri and env_uri != spec.tracking.uri:
        notes.append(
            f"tracking.uri in the spec ({redact_text(spec.tracking.uri)}) wins over MLFLOW_TRACKING_URI "
            f"({redact_text(env_uri)}): runs are logged to the spec's"
        )
    return notes


# ---------------------------------------------------------------------------------------------- plan
def build_plan(
    spec: AblationSpec,
    spec_path: str | Path | None = None,
    *,
    strict: bool = True,
    results_base: str | Path | None = None,
    check_tracking: bool = False,
) -> Plan:
    """Expand the spec and key every stage job. Cheap: hashes configs and small files, loads nothing heavy.

    strict=False (for `ablate validate`) turns missing local files and directories into warnings: a spec written
    for a cluster validates on a laptop that lacks the cluster's data. `results_base` is the results root the
    command uses (--results-dir), when it overrides $ABLATE_RESULTS_DIR and the spec.
    """
    spec_dir = Path(spec_path).resolve().parent if spec_path else None
    problems: list[str] = []
    cells = expand(spec)
    shared = shared_slices(spec, spec_dir, problems)
    planner = _Planner(spec, spec_dir, shared, problems, model_idents={"model": shared.base_model})
    cell_jobs = {cell.id: planner.cell_jobs(cell) for cell in cells}
    planner.second_rounds(cells, cell_jobs)
    trains = any(j.stage == "train" for j in planner.jobs.values())
    if trains:
        problems += launch_problems(spec)
        problems += context_problems(spec, None, spec_dir)
    if check_tracking:  # only where a run starts: status, cancel or a non-log stage never depend on tracking
        problems += [p for p in [tracking_dir_problem(spec, results_base)] if p]
    problems = list(dict.fromkeys(problems))
    if problems and strict:
        raise PlanError(problems)
    notes = plan_notes(spec, planner.model_idents, trains)
    return Plan(
        spec=spec, cells=cells, jobs=planner.jobs, cell_jobs=cell_jobs, warnings=problems, notes=notes,
        generated=planner.generated,
    )  # fmt: skip


def context_problems(spec: AblationSpec, baseline: str | None, spec_dir: Path | None) -> list[str]:
    """A baseline whose generation budget cannot fit its model's context, where its config.json can be read here
    (a local checkpoint, a hub model in the local cache); the eval stage checks the rest before its engine loads,
    with the prompts' real lengths. `baseline` None: the trained arms' checkpoints, whose context is the base
    model's; checked on a local or shipped base only (a hub base's cached config would make a plan depend on the
    machine's cache), so an arm's budget is refused before any GPU-hour is spent on its training."""

    b = next((b for b in spec.baselines if b.name == baseline), None)
    _, ev = spec.evaluation_for(baseline)
    try:
        source = model_source.resolve(b.model if b is not None and b.model else spec.model, spec_dir=spec_dir)
    except UserError:  # a missing or malformed model is reported where its identity is taken
        return []
    if baseline is None and source.kind not in ("local", "toy"):
        return []
    limit = model_source.known_context_length(source)
    if limit is None or (ev.clip_to_context and ev.max_model_len is None):
        return []
    where = f"baselines.{baseline}" if baseline is not None else "eval"
    problem = model_source.budget_problem(
        source.describe(), limit, ev.sampling.max_tokens, prompt=None, max_model_len=ev.max_model_len, where=where
    )
    return [problem] if problem else []


def _same_journal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two generations' requests go to one journal (framework.generate.stage.journal_dir)."""
    pick = ("chat", "sampling")
    return a["teacher"] == b["teacher"] and all(a["generate"][k] == b["generate"][k] for k in pick)


def data_config(spec: AblationSpec, cell: Cell) -> dict[str, Any]:
    """What a trained cell's data job hashes: its arm's factor levels, the sample size and the data seed."""
    data_seed = cell.seed if spec.resample_per_seed else spec.data_seed
    definition = arm_definition(spec, cell.levels)
    config = {"arm": definition, "n_examples": spec.n_examples, "seed": data_seed}
    if versions := factor_versions(definition):  # factors whose code changed what they produce
        config["factor_versions"] = versions
    budget_from = token_budget_reference(spec, definition)
    if budget_from is not None:  # match_total_tokens: the reference level's selection sets the budget
        config["token_budget_reference"] = budget_from
    return config


def job_key(stage: str, config: dict[str, Any], deps: list[str]) -> str:
    """A stage job's key: what it computes from (its config and its inputs' ids) and the stage's code version. A
    search's trials key their training and validation jobs with it, as the plan would."""
    return content_key({"stage": stage, "version": STAGES[stage].version, "config": config, "deps": deps})


def unsearched(train: dict[str, Any], search: SearchSpec) -> dict[str, Any]:
    """A train slice without the fields a search sets: what the spec says of them never reaches a trial or a final
    cell trained with a recipe, so editing it must not retrain them."""
    return {k: v for k, v in train.items() if k not in search.params}


def study_config(
    spec: AblationSpec, arm: Arm, shared: SharedSlices, validation: dict[str, Any]
) -> dict[str, Any]:  # fmt: skip
    """What a search's study hashes: the arm, the training every trial shares (its parameters aside), the
    validation evaluation and the search's own settings (how many workers pull its trials, and where its storage
    is, are how it runs: not keyed)."""
    search = spec.search
    assert search is not None
    # mode says which arms are searched, not what a study of one finds
    unkeyed = {**run_only_fields(SearchSpec), "objective": {"benchmark"}, "mode": True}
    settings = search.model_dump(mode="json", exclude=unkeyed)
    settings["trials"] = search.n_trials
    samples = search.objective.samples or first_round(spec.eval.samples)
    return {
        "arm": arm_definition(spec, arm),
        # the trials run, train and validate with these stages' code: a new version is a new study
        "versions": {s: STAGES[s].version for s in ("search", "train", "eval")},
        "train": {
            "model": shared.base_model,
            "dtype": spec.model.dtype,
            "prompt": shared.prompt,
            "train": unsearched(shared.train, search),
            "seed": spec.trial_seed,
        },
        "validation": {
            "validation": True,
            "dtype": spec.model.dtype,
            "benchmark": validation,
            "prompt": shared.prompt,
            "eval": {**shared.eval, "samples": samples},
            "reflection_keywords": spec.annotate.reflection_keywords,
        },
        "search": settings,
    }


@dataclass
class _Planner:
    """The jobs of one plan as its cells add them (in a valid topological order), and what planning them found:
    `problems` (shared with the caller) and the identity of every model read, by where the spec names it."""

    spec: AblationSpec
    spec_dir: Path | None
    shared: SharedSlices
    problems: list[str]
    model_idents: dict[str, dict[str, Any]]
    jobs: dict[str, Job] = field(default_factory=dict)
    generated: dict[int, str] = field(default_factory=dict)  # pool index -> generate job id
    generated_configs: dict[int, dict[str, Any]] = field(default_factory=dict)
    validation: dict[str, Any] | None = None  # a search's validation benchmark identity, once taken

    def add(self, stage: str, config: dict[str, Any], deps: list[str], cell: str) -> str:
        """The job's id; a job already added by another cell is shared, and lists this cell too."""
        key = job_key(stage, config, deps)
        jid = f"{stage}/{key}"
        if jid not in self.jobs:
            self.jobs[jid] = Job(stage, key, deps, config)
        if self.jobs[jid].cells[-1:] != [cell]:  # a cell adds its jobs consecutively: no quadratic membership test
            self.jobs[jid].cells.append(cell)
        return jid

    def model_job(self, ident: dict[str, Any], cell: str) -> list[str]:
        """Tiny models are built by a stage of their own; hub and local models need none."""
        return [self.add("model", {"model": ident}, [], cell)] if "tiny" in ident else []

    def cell_jobs(self, cell: Cell) -> dict[str, list[str]]:
        """A cell's job ids by stage: a trained cell's model, pool, data and train jobs, or a baseline's model
        job; then the evaluation of what they produced on each benchmark, and its log job."""
        spec, shared = self.spec, self.shared
        prompt, eval_slice = shared.prompt, shared.eval
        if cell.baseline is None:
            stages = self.training_jobs(cell)
            checkpoint, ident, dtype = stages["train"], shared.base_model, spec.model.dtype
        else:
            stages, ident, dtype = self.baseline_jobs(cell.baseline, cell.id)
            checkpoint = stages["model"]
            if next(b for b in spec.baselines if b.name == cell.baseline).overrides:  # its own evaluation settings
                own_prompt, own_eval = spec.evaluation_for(cell.baseline)
                prompt, eval_slice = own_prompt.model_dump(mode="json"), eval_config(own_eval)
        model_ref = {"checkpoint": checkpoint} if checkpoint else {"model": ident}
        stages["eval"] = []
        for bench, bident in self.round1_benchmarks:
            config = {
                **model_ref,
                "dtype": dtype,
                "benchmark": bident,
                "prompt": prompt,
                "eval": eval_slice,
                "reflection_keywords": spec.annotate.reflection_keywords,
            }
            if bench.name in self.budgets:
                config["seed_offset"] = seed_offset(config)
            stages["eval"].append(self.add("eval", config, checkpoint, cell.id))
        if not self.budgets:  # else after the second rounds, which need every cell's first
            self.add_log(cell, stages)
        return stages

    def add_log(self, cell: Cell, stages: dict[str, list[str]]) -> None:
        log_cfg = {"cell": cell.id, "cell_key": cell.key, "tracking": self.shared.log}
        stages["log"] = [self.add("log", log_cfg, stages["train"] + stages["eval"], cell.id)]

    @property
    def budgets(self) -> dict[str, SampleBudget]:
        return budgets(self.spec)

    @property
    def round1_benchmarks(self) -> list[tuple[BenchmarkSpec, dict[str, Any]]]:
        return [(b, first_round_identity(ident)) for b, ident in self.shared.benchmarks]

    def second_rounds(self, cells: list[Cell], cell_jobs: dict[str, dict[str, list[str]]]) -> None:
        """For each benchmark whose samples are a budget, one more eval job per cell that spends the rest of the
        budget where the other checkpoints' first rounds vary most; it waits for those first rounds, holds both
        rounds' samples, and becomes the cell's evaluation of that benchmark (what log and report read)."""
        if not self.budgets:
            return
        arm_of = {c.id: c.arm_id for c in cells}
        for i, (bench, _) in enumerate(self.shared.benchmarks):
            budget = self.budgets.get(bench.name)
            if budget is None:
                continue
            round1 = {c.id: cell_jobs[c.id]["eval"][i] for c in cells}
            for cell in cells:
                stages = cell_jobs[cell.id]
                own = round1[cell.id]
                refs = allocation_references(own, round1, arm_of)
                first = self.jobs[own]
                config = {
                    **{
                        k: first.config[k]
                        for k in ("checkpoint", "model", "dtype", "benchmark", "seed_offset")
                        if k in first.config
                    },
                    "round": 2,
                    "samples": budget.model_dump(mode="json"),
                    "first_round": first.key,
                    "reference": [self.jobs[j].key for j in refs],
                }
                if budget.target_half_width is not None:  # the target is per arm difference: seeds share it
                    config["seeds_per_arm"] = sum(arm_of[c.id] == cell.arm_id for c in cells)
                stages.setdefault("eval_first_round", []).append(own)
                stages["eval"][i] = self.add("eval", config, [*first.deps, own, *refs], cell.id)
        for cell in cells:
            self.add_log(cell, cell_jobs[cell.id])

    def training_jobs(self, cell: Cell) -> dict[str, list[str]]:
        """A trained cell's model (if tiny), pool, data and train jobs."""
        shared = self.shared
        stages: dict[str, list[str]] = {}
        stages["model"] = self.model_job(shared.base_model, cell.id)
        stages["generate"] = self.generate_jobs(cell.id)
        stages["pool"] = [self.add("pool", shared.pool, stages["model"] + stages["generate"], cell.id)]
        stages["data"] = [self.add("data", data_config(self.spec, cell), stages["pool"], cell.id)]
        train_cfg = {
            "model": shared.base_model,
            "dtype": self.spec.model.dtype,
            "prompt": shared.prompt,
            "train": shared.train,
            "seed": cell.seed,
        }
        deps = stages["model"] + stages["data"]
        stages["search"] = []
        if cell.recipe is not None:  # trained with the parameters a study chose (its select job's output)
            stages["search"] = self.study_jobs(
                reference_arm(self.spec) if cell.recipe == "shared" else cell.levels, cell
            )
            assert self.spec.search is not None
            train_cfg["train"] = unsearched(shared.train, self.spec.search)
            train_cfg["recipe"] = self.jobs[stages["search"][-1]].key
            deps = deps + stages["search"][-1:]
        stages["train"] = [self.add("train", train_cfg, deps, cell.id)]
        return stages

    def study_jobs(self, arm: Arm, cell: Cell) -> list[str]:
        """A study's worker jobs, which pull its trials from Optuna's storage, then its select job, which records
        the best parameters once every worker is done. Both wait for the trials' data (the arm at the search's
        seed). The select job is keyed by the study alone: how many workers ran it is not what it found."""
        spec, shared = self.spec, self.shared
        search = spec.search
        assert search is not None
        trial_cell = Cell(arm, spec.trial_seed, None, "")
        model = self.model_job(shared.base_model, cell.id)
        pool = [self.add("pool", shared.pool, model + self.generate_jobs(cell.id), cell.id)]
        deps = [*model, self.add("data", data_config(spec, trial_cell), pool, cell.id)]
        if self.validation is None:
            bench = search.objective.benchmark
            self.validation = benchmark_identity(bench, self.spec_dir, self.problems, "search.objective.benchmark")
            self.problems += validation_overlap(spec, self.spec_dir)
            self.problems += objective_problems(spec)
        study = study_config(spec, arm, shared, self.validation)
        workers = [
            self.add("search", {"role": "worker", "study": study, "worker": i}, deps, cell.id)
            for i in range(search.workers)
        ]
        select = self.add("search", {"role": "select", "study": study}, deps, cell.id)
        job = self.jobs[select]
        job.deps = list(dict.fromkeys([*job.deps, *workers]))  # ordering only: added after the key was taken
        return [*workers, select]

    def generate_jobs(self, cell: str) -> list[str]:
        """The generate job of each generated pool source, in pool order; a refinement waits for the generated
        sources before it (the traces it rewrites may be theirs)."""
        ids: list[str] = []
        for i, src in enumerate(self.spec.pool):
            if src.generate is None:
                continue
            if i not in self.generated_configs:
                self.generated_configs[i] = generate_config(self.spec, i, self.spec_dir, self.problems)
                self.model_idents[f"pool[{i}].generate.teacher"] = self.generated_configs[i]["teacher"]
            config = self.generated_configs[i]
            shared = [j for j in ids if _same_journal(self.jobs[j].config, config)]
            # A refinement may rewrite any earlier generation's traces; generations asking one teacher the same
            # way share a request journal, so they run one after the other and never pay twice for a request.
            deps = list(ids) if src.generate.refine is not None else shared
            self.generated[i] = self.add("generate", self.generated_configs[i], deps, cell)
            self.jobs[self.generated[i]].gpus = src.generate.teacher.tensor_parallel_size
            ids.append(self.generated[i])
        return ids

    def baseline_jobs(self, name: str, cell: str) -> tuple[dict[str, list[str]], dict[str, Any], str]:
        """A baseline cell's model job (if tiny), the identity of its model and the dtype it is evaluated in."""
        b = next(b for b in self.spec.baselines if b.name == name)
        ident = self.shared.base_model
        if b.model is not None:
            ident = model_identity(b.model, self.spec_dir, self.problems, f"baselines.{b.name}")
            self.model_idents[f"baselines.{b.name}"] = ident
        stages: dict[str, list[str]] = {"model": self.model_job(ident, cell)}
        stages["generate"] = stages["pool"] = stages["data"] = stages["search"] = stages["train"] = []
        if "tiny" not in ident and ident.get("local") != "missing":
            self.problems += context_problems(self.spec, b.name, self.spec_dir)
        return stages, ident, (b.model or self.spec.model).dtype
