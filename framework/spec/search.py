"""The `search:` block: a hyper-parameter search (Optuna) of the training recipe, per arm or once for all.

An ablation trains every arm with one recipe; if short traces want another learning rate than long ones, "long
traces are better" may only mean "the recipe suited long traces". A search tunes train fields on a validation
benchmark (never a test benchmark of the sweep), then trains the final cells with the chosen parameters.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from framework.registry import suggest
from framework.spec.base import RUN_ONLY, SpecModel, is_run_only
from framework.spec.models import BenchmarkSpec, TrainSpec

# Train fields a search may not vary: they say how a job runs (run-only) or change what a "cell" is.
NOT_SEARCHABLE = {"nodes", "processes", "extra_args"}


class SearchParam(SpecModel):
    """One train field to search, as Optuna suggests it: a float or int range, or categorical choices."""

    type: Literal["float", "int", "categorical"] = Field(
        ..., description="float (suggest_float), int (suggest_int) or categorical (suggest_categorical)."
    )
    low: float | None = Field(None, description="Lowest value (float and int).")
    high: float | None = Field(None, description="Highest value, included (float and int).")
    log: bool = Field(False, description="Sample on a log scale (learning rates); low must be positive.")
    step: float | None = Field(
        None, gt=0, description="Spacing of the values (float and int; int default 1); needed for a grid of floats."
    )
    choices: list[str | int | float | bool] | None = Field(None, description="The values (categorical).")

    @model_validator(mode="after")
    def _consistent(self) -> SearchParam:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs `choices` (one or more values)")
            if len({repr(c) for c in self.choices}) != len(self.choices):
                raise ValueError(f"choices must be unique, got {self.choices}")
            if {"low", "high", "log", "step"} & self.model_fields_set:
                raise ValueError("a categorical parameter takes only `choices`")
            return self
        if self.choices is not None:
            raise ValueError(f"`choices` is for categorical parameters; this one is type {self.type}")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs `low` and `high`")
        if self.low > self.high:
            raise ValueError(f"low {self.low:g} is above high {self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale parameter needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("`step` and `log` cannot be combined (Optuna samples one or the other)")
        if self.type == "int":
            for name in ("low", "high", "step"):
                value = getattr(self, name)
                if value is not None and value != int(value):
                    raise ValueError(f"an int parameter needs an integer `{name}`, got {value:g}")
        return self

    def values(self) -> list[Any] | None:
        """Every value the parameter can take, for a grid; None for a continuous range."""
        if self.type == "categorical":
            return list(self.choices or [])
        assert self.low is not None and self.high is not None
        if self.type == "int" and not self.log:
            step = int(self.step or 1)
            return list(range(int(self.low), int(self.high) + 1, step))
        if self.type == "int":  # log-spaced ints are still finitely many
            return list(range(int(self.low), int(self.high) + 1))
        if self.step is None:
            return None
        n = math.floor((self.high - self.low) / self.step + 1e-9)
        return [round(self.low + i * self.step, 12) for i in range(n + 1)]

    def bounds(self) -> list[Any]:
        """The extreme values a trial can give the train field, to check them against its schema."""
        return list(self.choices or []) if self.type == "categorical" else [self._cast(self.low), self._cast(self.high)]

    def _cast(self, v: float | None) -> Any:
        return int(v) if self.type == "int" and v is not None else v


class SearchObjective(SpecModel):
    """What a trial is scored on: a metric of the trained checkpoint on a validation benchmark."""

    benchmark: BenchmarkSpec = Field(
        ...,
        description="The validation benchmark (name, path, limit... as in eval.benchmarks): never one of the "
        "sweep's test benchmarks; the plan refuses a problem they share, by text (toy-dev is the toy world's).",
    )
    metric: str = Field(
        "pass@1", description="A metric of the validation evaluation's metrics.json: pass@1, maj@<n>, ..."
    )
    direction: Literal["maximize", "minimize"] = Field("maximize", description="Whether a higher metric is better.")
    samples: int | None = Field(None, ge=1, description="Samples per validation problem; default eval.samples.")

    @field_validator("benchmark", mode="before")
    @classmethod
    def _named(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("benchmark")
    @classmethod
    def _fixed_samples(cls, v: BenchmarkSpec) -> BenchmarkSpec:
        if v.samples is not None:
            raise ValueError("set the validation samples with search.objective.samples (a number)")
        return v


class SearchSampler(SpecModel):
    """How Optuna proposes the next trial's parameters."""

    kind: Literal["tpe", "random", "grid"] = Field(
        "tpe",
        description="tpe (Bayesian, the default), random, or grid (every combination of the parameters' values "
        "once, each claimed by one worker: grid points are queued in the study, so concurrent workers never run "
        "one twice).",
    )
    seed: int = Field(0, ge=0, description="Seed of the sampler (and of the grid's order).")
    startup_trials: int = Field(
        4, ge=1, description="tpe: trials sampled at random before the model of good parameters is used."
    )


class SearchPruner(SpecModel):
    """Stopping a poor trial early. Its intermediate scores are the validation metric on the first rungs of the
    validation problems (evaluation dominates a trial's cost); its training always completes."""

    kind: Literal["none", "median", "successive_halving"] = Field(
        "none", description="none, median (Optuna's MedianPruner) or successive_halving."
    )
    rungs: int = Field(
        4, ge=2, description="The validation problems are evaluated in this many parts; a trial may stop between them."
    )
    startup_trials: int = Field(2, ge=0, description="median: trials completed before any is pruned.")
    warmup_rungs: int = Field(1, ge=0, description="median: rungs evaluated before a trial may be pruned.")


class SearchSpec(SpecModel):
    """A hyper-parameter search of train fields, on a validation benchmark, before the final cells are trained."""

    mode: Literal["shared", "per_arm"] = Field(
        "per_arm",
        description="shared: search on the reference arm, then train every arm with its best parameters; per_arm: "
        "search every arm on its own, and train every arm both with the reference arm's best (the shared recipe) "
        "and with its own, so the report shows each factor's effect under both.",
    )
    params: dict[str, SearchParam] = Field(
        ..., min_length=1, description="Train fields to search, by name (learning_rate, epochs, lr_scheduler, ...)."
    )
    objective: SearchObjective = Field(..., description="What a trial is scored on.")
    trials: int | None = Field(
        None, ge=1, description="Completed trials per study (per arm, or one study in shared mode); default 8, or "
        "the grid's size."
    )  # fmt: skip
    seed: int | None = Field(
        None, ge=0, description="The training (and data) seed of every trial; default the first of `seeds`."
    )
    sampler: SearchSampler = Field(default_factory=SearchSampler, description="How trials are proposed.")
    pruner: SearchPruner = Field(default_factory=SearchPruner, description="Stopping poor trials early.")
    workers: int = Field(
        1, ge=1, description="Worker jobs per study pulling trials at once (local slots or Slurm jobs).",
        json_schema_extra=RUN_ONLY,
    )  # fmt: skip
    storage: str | None = Field(
        None,
        description="Optuna's storage, an SQLAlchemy URL (postgresql://..., mysql://...) every worker reaches; "
        "default sqlite:///<results>/<name>/search/optuna.db (one machine or a shared filesystem with few "
        "workers). A password in it is never logged: prefer ${VAR} to read it from the environment.",
        json_schema_extra=RUN_ONLY,
    )
    heartbeat_s: float = Field(
        30.0, gt=0, description="A running trial's heartbeat; a trial silent for grace_s is failed and retried.",
        json_schema_extra=RUN_ONLY,
    )  # fmt: skip
    grace_s: float | None = Field(
        None, gt=0, description="Silence after which a trial counts as dead; default 4 heartbeats.",
        json_schema_extra=RUN_ONLY,
    )  # fmt: skip
    max_retries: int = Field(
        2, ge=0, description="Times a failed trial's parameters are tried again.", json_schema_extra=RUN_ONLY
    )

    @field_validator("params")
    @classmethod
    def _train_fields(cls, v: dict[str, SearchParam]) -> dict[str, SearchParam]:
        problems = []
        fields = TrainSpec.model_fields
        for name, param in v.items():
            if name not in fields:
                problems.append(f"{name!r} is not a train field{suggest(name, list(fields))}")
            elif name in NOT_SEARCHABLE or is_run_only(fields[name]):
                problems.append(f"{name!r} says how a training runs, not what it learns: it cannot be searched")
            else:
                values = param.bounds()
                if param.type == "float":  # a value between the bounds, which an int field refuses
                    assert param.low is not None and param.high is not None
                    between = param.low + 0.37 * (param.high - param.low)
                    values.append(param.low + param.step if param.step else between)
                for value in values:
                    try:
                        TrainSpec.model_validate({name: value})
                    except ValidationError as e:
                        problems.append(f"{name}: {value!r} is not a valid value ({e.errors()[0]['msg']})")
                        break
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @model_validator(mode="after")
    def _grace(self) -> SearchSpec:
        if self.grace_s is not None and self.grace_s < 2 * self.heartbeat_s:
            raise ValueError(
                f"grace_s {self.grace_s:g} is under two heartbeats ({self.heartbeat_s:g} s each): a live trial "
                "would be judged dead and run again"
            )
        return self

    @model_validator(mode="after")
    def _grid(self) -> SearchSpec:
        if self.sampler.kind == "grid":
            continuous = [n for n, p in self.params.items() if p.values() is None]
            if continuous:
                raise ValueError(f"a grid needs finitely many values: give {continuous} a `step` (or choices)")
            if self.trials is not None and self.trials > self.grid_size():
                raise ValueError(f"trials {self.trials} exceeds the grid's {self.grid_size()} points")
        return self

    def grid_size(self) -> int:
        return math.prod(len(p.values() or []) for p in self.params.values())

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the parameters' values, in the spec's order (the worker shuffles it by seed)."""
        names = list(self.params)
        values = [self.params[n].values() or [] for n in names]
        return [dict(zip(names, combo)) for combo in itertools.product(*values)]

    @property
    def n_trials(self) -> int:
        if self.trials is not None:
            return self.trials
        return self.grid_size() if self.sampler.kind == "grid" else 8
