"""The spec's pool sections: where traces come from (`pool:`) and how they are annotated (`annotate:`)."""

from __future__ import annotations

import inspect
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from framework.registry import POOL_PRESETS, ResolveError, suggest
from framework.spec.base import RUN_ONLY, SpecModel
from framework.spec.generate import DEFAULT_PROMPT, PLACEHOLDER, GenerateSamplingSpec, TeacherSpec
from framework.toy.world import pool_rows

DEFAULT_REFLECTION_KEYWORDS = [
    "wait",
    "but wait",
    "let me check",
    "let me verify",
    "alternatively",
    "hmm",
    "double-check",
]

# ---------------------------------------------------------------------------------------------- pool
POOL_FIELDS = ("problem_id", "problem", "trace", "source", "expected_answer", "difficulty", "pass_rate", "topic")


class PoolSourceSpec(SpecModel):
    """One source of traces; several are concatenated into the sweep's pool."""

    path: str | None = Field(
        None,
        description="Local file (.jsonl, .json, .parquet, .csv) or a local Hugging Face dataset directory.",
    )
    hub: str | None = Field(None, description="Hugging Face dataset id, loaded with `datasets`.")
    preset: str | None = Field(
        None,
        description="A built-in layout: 'nemotron-math-human-reasoning', 'open-math-reasoning' or 'toy'. "
        "A preset fills `hub` and `columns`; a `path` alongside it loads the same layout from a local file.",
    )
    split: str | None = Field(
        None, description="Dataset split (hub datasets and dataset directories); default: the preset's, else train."
    )
    revision: str | None = Field(
        None,
        description="Hub revision (commit, tag or branch) of a hub dataset or preset; pin a commit so a new upload "
        "cannot change the pool under the same key. Default: the latest (the commit read is recorded).",
    )
    format: Literal["auto", "jsonl", "json", "parquet", "csv", "hf"] = Field(
        "auto", description="File format; auto = by extension."
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Map of internal field -> column in this source. Internal fields: "
        + ", ".join(POOL_FIELDS)
        + ". Unmapped columns are kept as free metadata.",
    )
    source: str | None = Field(
        None,
        description="Constant `source` label for every trace when no column holds one, and for the rows whose "
        "source column is empty. Without it and without a source column, the label is the file's stem, the hub id "
        "or the preset's name.",
    )
    on_missing: Literal["error", "drop", "keep"] | None = Field(
        None,
        description="A row without a value for a field this source provides (problem, trace, problem_id, source "
        "without a `source:` label, expected_answer): 'error' names each file:line; 'drop' leaves such rows out "
        "(counted in the pool's stats.json, `missing_values`); 'keep' keeps them ungraded without an answer, "
        "with an id from the problem text, labelled as `source:` says (an empty problem or trace is never kept). "
        "Default: the preset's rule ('keep' for nemotron-math-human-reasoning and open-math-reasoning, whose "
        "released rows lack some answers), else 'error'. A missing difficulty, topic or pass_rate is never an "
        "error: the factor filtering on it drops such rows and counts them.",
    )
    filter: dict[str, Any] = Field(
        default_factory=dict, description="Keep only rows whose column equals the value (or is in the list)."
    )
    limit: int | None = Field(None, ge=1, description="Read at most this many rows (for quick trials).")
    options: dict[str, Any] = Field(default_factory=dict, description="Preset-specific options (e.g. toy seed).")
    generate: GenerateSpec | None = Field(
        None,
        description="Traces written here by a teacher (a model run with vLLM, or an OpenAI-compatible endpoint) "
        "sampled on problems, instead of read from a file. Label them with `source:` (default: the teacher's name).",
    )

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(POOL_FIELDS))
        if unknown:
            raise ValueError(f"unknown internal field(s) {unknown}; valid: {list(POOL_FIELDS)}")
        return v

    def missing_rule(self) -> str:
        """The `on_missing` in force: the source's own, else its preset's, else 'error'."""
        if self.on_missing is not None:
            return self.on_missing
        return self.default_missing_rule()

    def default_missing_rule(self) -> str:
        """A preset of released data keeps the rows it is known to leave incomplete; a user's own file errs."""
        if self.preset is None:
            return "error"
        try:
            return str(getattr(POOL_PRESETS.resolve(self.preset), "on_missing", "error"))
        except ResolveError:  # an unknown preset is reported by the spec checks, with suggestions
            return "error"

    @model_validator(mode="after")
    def _one_location(self) -> PoolSourceSpec:
        given = [k for k in ("path", "hub", "preset") if getattr(self, k) is not None]
        if self.generate is not None:
            if given or self.revision is not None:
                where = ", ".join(repr(k) for k in [*given, *(["revision"] if self.revision else [])])
                raise ValueError(f"a generated source takes its problems from generate.problems; drop {where}")
            return self
        if not given:
            raise ValueError("a pool source needs one of 'path', 'hub', 'preset' or 'generate'")
        if self.path is not None and self.hub is not None:
            raise ValueError("give 'path' or 'hub', not both")
        if self.revision is not None and (self.path is not None or self.preset == "toy"):
            raise ValueError("'revision' pins a hub dataset; a local path or the toy preset has none")
        if self.options:
            if self.preset != "toy" or self.path is not None:
                raise ValueError("options apply only to the toy preset generated in code (preset: toy, no path)")
            known = ["world_seed", *(p for p in inspect.signature(pool_rows).parameters if p != "world")]
            bad = [f"{k!r}{suggest(str(k), known)}" for k in self.options if k not in known]
            if bad:
                raise ValueError(f"unknown toy pool option(s) {', '.join(bad)}; known: {', '.join(known)}")
        return self


class TopicClusterSpec(SpecModel):
    """How topics are made when the pool gives none: distinct problems embedded, then clustered (spherical k-means)."""

    embedder: str = Field(
        "tfidf",
        description="'tfidf' (word TF-IDF, no model), 'base' (the base model's mean-pooled hidden states) or a hub "
        "id / local directory of a transformers encoder (mean-pooled last hidden states).",
    )
    n_topics: int = Field(8, ge=2, description="Number of clusters, i.e. topics (named cluster-0, cluster-1, ...).")
    seed: int = Field(0, description="Seed of the k-means++ initialisation.")
    restarts: int = Field(4, ge=1, description="k-means runs from different seeds; the most cohesive one is kept.")
    batch_size: int = Field(32, ge=1, description="Problems per forward pass (model embedders).")
    max_length: int = Field(512, ge=8, description="Tokens of a problem that the model embedder reads.")


class AnnotateSpec(SpecModel):
    """What the pool stage computes for every trace, once per sweep."""

    reflection_keywords: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REFLECTION_KEYWORDS),
        description="Reflection phrases counted in traces (and in evaluation outputs); matched case-insensitively "
        "on word boundaries.",
    )
    grading_timeout_s: float = Field(5.0, gt=0, description="Time limit for grading one trace's final answer.")
    topics: Literal["given", "none", "cluster"] = Field(
        "given",
        description="Where trace topics come from: a column of the pool ('given'), nowhere, or clusters of problem "
        "embeddings ('cluster', see topic_clusters; a given topic is kept as `topic_given`).",
    )
    topic_clusters: TopicClusterSpec = Field(
        default_factory=TopicClusterSpec, description="Embedding and clustering settings for topics: cluster."
    )
    pass_rates: str | None = Field(
        None,
        description="Parquet/JSONL of a reference model's sampled results (problem_id, correct) from which the "
        "estimated difficulty (1 - pass rate) is computed; it takes precedence over a pool's own pass_rate column.",
    )
    exclude_eval_problems: bool = Field(
        False,
        description="Drop pool traces whose problem (case and whitespace aside) is a problem of an evaluated "
        "benchmark. The pool then depends on the benchmarks, so adding one re-runs every cell; without it the "
        "eval stage still names the benchmark problems a checkpoint was trained on.",
    )


class GenerateSpec(SpecModel):
    """Sample a teacher on problems: `samples` traces per problem, each graded and annotated by the pool stage."""

    problems: PoolSourceSpec | None = Field(
        None,
        description="Where the problems come from: a pool source (path, hub or preset, with columns mapping "
        "problem, problem_id and expected_answer; a trace column is not needed). Each distinct problem is asked once "
        "per sample.",
    )
    refine: str | None = Field(
        None,
        description="Instead of problems: rewrite the traces labelled with this source by the pool sources listed "
        "before this one (a file's source column or label, or an earlier generated source: refinement passes "
        "chain). Each trace is asked once per sample with the prompt's {trace} as the trace; the rewrite keeps "
        "`parent_trace_id`, the pool's trace_id of the trace it came from.",
    )
    teacher: TeacherSpec = Field(..., description="The model that writes the traces.")
    prompt: str = Field(
        DEFAULT_PROMPT,
        description="Prompt template: {name} is the problem row's field or column `name` (problem, problem_id, "
        "expected_answer or any column of the source); other braces, as in \\boxed{}, are text.",
    )
    chat: bool = Field(
        True,
        description="Send the prompt as a user turn through the teacher's chat template (the endpoint's "
        "/chat/completions); false for a base model: the prompt is the raw text (/completions).",
    )
    sampling: GenerateSamplingSpec = Field(default_factory=GenerateSamplingSpec, description="Decoding settings.")
    samples: int = Field(1, ge=1, description="Traces per problem. Raising it later asks only for the new samples.")
    max_failed_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="The stage fails (after finishing every request it can) when more than this fraction of requests "
        "failed for good; the finished ones are kept and a rerun asks only for the failed ones.",
        json_schema_extra=RUN_ONLY,
    )
    allow_test_problems: bool = Field(
        False,
        description="Allow problems that are also problems of the sweep's evaluated benchmarks (compared by "
        "normalized text). Default: such problems are refused, since training on them leaks the test.",
    )

    @model_validator(mode="after")
    def _checks(self) -> GenerateSpec:
        if (self.problems is None) == (self.refine is None):
            raise ValueError("give exactly one of 'problems' (sample the teacher on them) or 'refine' (rewrite traces)")
        if self.problems is not None and self.problems.generate is not None:
            raise ValueError("generate.problems reads problems from a file, the hub or a preset; to rewrite "
                             "generated traces, name their source label with 'refine'")  # fmt: skip
        names = {m.group(1) for m in PLACEHOLDER.finditer(self.prompt)}
        if not names:
            raise ValueError("the prompt template names no field: put {problem} where the problem goes")
        if self.refine is not None and "trace" not in names:
            raise ValueError("a refinement's prompt must contain {trace}, the trace to rewrite")
        return self


PoolSourceSpec.model_rebuild()  # its `generate` field names GenerateSpec, defined after it (they hold each other)
