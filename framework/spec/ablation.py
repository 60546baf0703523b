"""The whole spec: `AblationSpec`, its sections together and the checks that need more than one of them.

It has a module of its own because it is the one model that holds the `search:` block, and `framework.spec.search`
builds on the section models (a benchmark, the train fields): sections (`framework.spec.models`), then the search,
then the whole spec, each importing only the ones before it.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from framework.spec.base import SpecModel
from framework.spec.launch import LauncherSpec, TrackingSpec
from framework.spec.models import BaselineSpec, EvalSpec, FactorSpec, GridSpec, ModelSpec, PromptSpec, TrainSpec
from framework.spec.names import NAME_RE, NAME_RULE, RESERVED_SWEEP_NAMES, is_name
from framework.spec.pool import AnnotateSpec, PoolSourceSpec
from framework.spec.search import SearchSpec


class AblationSpec(SpecModel):
    """A data-ablation sweep: which data properties to vary, how to train and how to evaluate.

    Top-level keys starting with `x-` are ignored: they hold YAML anchors, e.g. `x-lr: &lr {...}`, `train: *lr`."""

    name: str = Field(..., pattern=NAME_RE, description="Sweep name; results go under <results_dir>/<name>/.")
    description: str = Field("", description="What question the sweep asks.")
    model: ModelSpec = Field(..., description="The base model every cell fine-tunes.")
    pool: list[PoolSourceSpec] = Field(
        default_factory=list,
        description="Sources of traces, concatenated. Required unless the spec only evaluates (baselines, no factors).",
    )
    annotate: AnnotateSpec = Field(default_factory=AnnotateSpec, description="Per-trace annotations.")
    factors: dict[str, FactorSpec] = Field(
        default_factory=dict,
        description="Data properties to vary, by name; applied in a fixed documented order. None, with baselines: "
        "an evaluation-only spec that trains nothing (scores teachers or instruct models beside earlier sweeps); "
        "none and no baselines: one arm trained on the whole pool.",
    )
    n_examples: int = Field(20, ge=1, description="Training examples per cell, sampled after the factors' filters.")
    seeds: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [0], min_length=1, description="Replicates: selection + training seed (0 or more)."
    )
    resample_per_seed: bool = Field(
        True,
        description="True: each seed draws its own examples; False: every seed trains on the draw of `data_seed` "
        "(seeds then vary training only).",
    )
    data_seed: int = Field(
        0,
        ge=0,
        description="The one draw every seed shares when resample_per_seed is false (not the seeds list's "
        "first: reordering or prepending seeds must not change every training set).",
    )
    grid: GridSpec = Field(default_factory=GridSpec, description="How levels combine into cells.")
    baselines: list[BaselineSpec] = Field(
        default_factory=list, description="Models evaluated without fine-tuning ('base' = the base model)."
    )
    prompt: PromptSpec = Field(default_factory=PromptSpec, description="Prompt format (training and evaluation).")
    train: TrainSpec = Field(default_factory=TrainSpec, description="Fine-tuning recipe.")
    search: SearchSpec | None = Field(
        None,
        description="Tune train fields per arm (or once, on the reference arm) on a validation benchmark before the "
        "final cells train; default: every arm trains with `train` as written.",
    )
    eval: EvalSpec = Field(default_factory=EvalSpec, description="Evaluation.")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="MLflow logging.")
    launcher: LauncherSpec = Field(default_factory=LauncherSpec, description="Where stage jobs run.")
    results_dir: str = Field("results", description="Root of all results (relative to the working directory).")

    @model_validator(mode="before")
    @classmethod
    def _anchor_holders(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if not str(k).startswith("x-")} if isinstance(data, dict) else data

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v.lower() in RESERVED_SWEEP_NAMES:
            raise ValueError(f"the sweep name {v!r} is reserved: results/{v} belongs to the default MLflow database")
        return v

    @field_validator("baselines", mode="before")
    @classmethod
    def _baseline_names(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": b} if isinstance(b, str) else b for b in v]
        return v

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be unique, got {v}")
        return v

    @field_validator("factors")
    @classmethod
    def _factor_names(cls, v: dict[str, FactorSpec]) -> dict[str, FactorSpec]:
        bad = [k for k in v if not is_name(k) or k in ("seed", "baseline")]
        if bad:
            raise ValueError(f"invalid factor name(s) {bad}: {NAME_RULE}; 'seed'/'baseline' are reserved")
        return v

    def evaluation_for(self, baseline: str | None) -> tuple[PromptSpec, EvalSpec]:
        """The prompt and evaluation settings a cell is scored with: the spec's, with a baseline's own fields over
        them (only those it sets, so `sampling: {max_tokens: 3072}` keeps eval.sampling's temperature)."""
        b = next((b for b in self.baselines if b.name == baseline), None)
        if b is None or not b.overrides:
            return self.prompt, self.eval
        prompt, ev = self.prompt, self.eval
        if b.prompt is not None:
            prompt = prompt.model_copy(update={k: getattr(b.prompt, k) for k in b.prompt.model_fields_set})
        update: dict[str, Any] = {}
        if b.sampling is not None:
            fields = {k: getattr(b.sampling, k) for k in b.sampling.model_fields_set}
            update["sampling"] = ev.sampling.model_copy(update=fields)
        update |= {k: getattr(b, k) for k in ("max_model_len", "clip_to_context") if getattr(b, k) is not None}
        return prompt, ev.model_copy(update=update)

    @model_validator(mode="after")
    def _greedy_baselines(self) -> AblationSpec:
        """A baseline's own temperature 0 with the spec's samples (eval's own is checked by EvalSpec)."""
        problems = [
            p
            for i, b in enumerate(self.baselines)
            if b.sampling is not None
            and (p := self.evaluation_for(b.name)[1].greedy_problem(f"baselines[{i}] ({b.name}): "))
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def trains(self) -> bool:
        """Whether any cell is fine-tuned: a spec with baselines and no factors only evaluates."""
        return bool(self.factors) or not self.baselines

    @model_validator(mode="after")
    def _pool_when_training(self) -> AblationSpec:
        if self.trains and not self.pool:
            raise ValueError(
                "pool: a spec that trains needs at least one source of traces (one that only evaluates, with "
                "baselines and no factors, needs none)"
            )
        return self

    @model_validator(mode="after")
    def _search_needs_training(self) -> AblationSpec:
        if self.search is not None and not self.trains:
            raise ValueError(
                "search: this spec trains nothing (baselines and no factors), so there is no recipe to tune"
            )
        return self

    @property
    def trial_seed(self) -> int:
        """The training and data seed of a search's trials."""
        return self.search.seed if self.search is not None and self.search.seed is not None else self.seeds[0]

    @field_validator("baselines")
    @classmethod
    def _baselines_unique(cls, v: list[BaselineSpec]) -> list[BaselineSpec]:
        names = [b.name for b in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate baseline(s): {dupes}")
        return v
