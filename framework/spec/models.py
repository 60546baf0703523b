"""The ablation spec's sections: one typed model per YAML section.

The whole spec that holds them is `framework.spec.ablation`; the pool, search, launcher and generation sections
have modules of their own. Together they are the reference for the YAML format: every field carries its description
and default, and `ablate schema` prints them. Semantic checks that need registries (factor kinds, benchmark names,
level parameters) live in `framework.spec.checks`, so that all errors can be reported at once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, ValidationInfo, field_validator, model_validator

from framework.registry import suggest
from framework.spec.base import RUN_ONLY, PassThroughArgs, SpecModel
from framework.spec.fields import OVERRIDES
from framework.spec.names import NAME_RE, normalize_levels, plain_name

DEFAULT_USER_TEMPLATE = (
    "Solve the following math problem. Make sure to put the answer (and only answer) inside \\boxed{{}}.\n\n{problem}"
)


# --------------------------------------------------------------------------------------------- model
class TinyModelSpec(SpecModel):
    """A small Qwen2 built locally from a config, with a tokenizer trained on the toy corpus."""

    hidden_size: int = Field(
        128, ge=64, description="Hidden width; a multiple of 64 (head_dim 64 for vLLM's CPU kernels)."
    )
    num_layers: int = Field(4, ge=1, le=64, description="Transformer layers.")
    num_heads: int = Field(2, ge=1, description="Attention heads (hidden_size / num_heads must be 64).")
    num_kv_heads: int | None = Field(None, ge=1, description="Key/value heads for GQA; default: num_heads.")
    intermediate_size: int = Field(512, ge=1, description="MLP width.")
    vocab_size: int = Field(512, ge=64, description="Tokenizer vocabulary to train on the toy corpus.")
    max_position_embeddings: int = Field(2048, ge=64, description="Longest sequence the model can take.")
    tie_word_embeddings: bool = Field(True, description="Share input and output embeddings.")
    init_seed: int = Field(0, description="Seed of the random initialization.")

    @model_validator(mode="after")
    def _head_dim(self) -> TinyModelSpec:
        if self.hidden_size % self.num_heads or self.hidden_size // self.num_heads != 64:
            raise ValueError(
                f"hidden_size / num_heads must be 64 (vLLM's CPU attention rejects other head sizes); "
                f"got {self.hidden_size} / {self.num_heads}"
            )
        kv = self.num_kv_heads or self.num_heads
        if self.num_heads % kv:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({kv})")
        return self


# Models shipped with ablate: the name a spec gives one -> (its directory under framework/toy/assets, the command
# that builds it there).
TOY_MODELS: dict[str, tuple[str, str]] = {
    "toy:base": ("base", "ablate toy pretrain"),
    "toy:teacher": ("teacher", "ablate toy teacher"),
}


class ModelSpec(SpecModel):
    """The base model every cell fine-tunes: a hub id, a local directory, or a tiny model built here."""

    name_or_path: str | None = Field(
        None,
        description="Hub id (e.g. Qwen/Qwen2.5-32B) or local directory of a Hugging Face checkpoint. "
        "'toy:base' names the pretrained toy base shipped with ablate, 'toy:teacher' the toy base fine-tuned on long "
        "chain-of-thought traces (a reasoning model to generate traces with).",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) to pin.")
    tiny: TinyModelSpec | None = Field(None, description="Build a small Qwen2 locally instead of loading one.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weights dtype: auto = bfloat16 on GPU, float32 on CPU."
    )
    chat_template: str | None = Field(
        None, description="Jinja chat template to use when the tokenizer has none (or to override it)."
    )
    trust_remote_code: bool = Field(False, description="Allow custom modelling code from the checkpoint.")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.name_or_path is None) == (self.tiny is None):
            raise ValueError("give exactly one of 'name_or_path' (hub id or local path) or 'tiny' (build locally)")
        if self.name_or_path and self.name_or_path.startswith("toy:") and self.name_or_path not in TOY_MODELS:
            raise ValueError(
                f"unknown toy model {self.name_or_path!r}: the toy world ships {', '.join(map(repr, TOY_MODELS))}"
            )
        return self


# ------------------------------------------------------------------------------------------- factors
class LevelSpec(SpecModel):
    """One level of a factor: a name and the parameters the factor's implementation takes."""

    name: str = Field(..., pattern=NAME_RE, description="Level name, used in cell ids and reports.")
    params: dict[str, Any] = Field(default_factory=dict, description="Parameters for the factor at this level.")

    @field_validator("name", mode="before")
    @classmethod
    def _plain_name(cls, v: Any) -> Any:
        return plain_name(v)


class FactorSpec(SpecModel):
    """A property of the training data to vary, and its levels."""

    kind: str | None = Field(
        None,
        description="Factor implementation: a built-in name (source, length, difficulty, diversity, keywords, "
        "correctness) or 'package.module:attr'. Default: the factor's key in `factors`.",
    )
    levels: list[LevelSpec] = Field(
        ..., min_length=1, description="Levels: a list of names, or a mapping of name -> parameters."
    )
    reference: str | None = Field(
        None, description="Level the report compares the others against. Default: the first level."
    )

    @field_validator("levels", mode="before")
    @classmethod
    def _normalize(cls, v: Any) -> Any:
        return normalize_levels(v)

    @model_validator(mode="after")
    def _unique(self) -> FactorSpec:
        names = [lv.name for lv in self.levels]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate level name(s): {dupes}")
        return self

    @field_validator("reference")
    @classmethod
    def _known_reference(cls, v: str | None, info: ValidationInfo) -> str | None:
        names = [lv.name for lv in info.data.get("levels", [])]
        if v is not None and names and v not in names:
            raise ValueError(f"unknown reference level {v!r}{suggest(v, names)}; levels: {', '.join(names)}")
        return v

    @property
    def reference_level(self) -> str:
        return self.reference or self.levels[0].name


# ---------------------------------------------------------------------------------------------- grid
class GridSpec(SpecModel):
    """How factor levels combine into cells."""

    design: Literal["factorial", "one_at_a_time"] = Field(
        "factorial",
        description="factorial: every combination of levels; one_at_a_time: the all-reference cell plus, per "
        "factor, each other level with the rest at their reference levels.",
    )
    exclude: list[dict[str, str | list[str]]] = Field(
        default_factory=list,
        description="Drop cells matching every factor=level(s) of a rule, e.g. {source: human, keywords: inject}.",
    )
    include: list[dict[str, str]] = Field(
        default_factory=list,
        description="Extra cells, one factor=level mapping each; factors left out take their reference level.",
    )


class BaselineSpec(SpecModel):
    """A model evaluated as is, beside the arms (e.g. the untuned base model)."""

    name: str = Field(..., pattern=NAME_RE, description="Baseline name; 'base' is the spec's base model.")
    model: ModelSpec | None = Field(
        None,
        description="Model to evaluate; 'base' (only) may leave it out. Its `chat_template` overrides the "
        "tokenizer's for this baseline alone.",
    )
    prompt: PromptSpec | None = Field(
        None,
        description="The prompt this model is evaluated with (e.g. the system message its model card recommends); "
        "fields left out are the spec's `prompt`. Default: the spec's prompt, the one the arms train and test on.",
        json_schema_extra=OVERRIDES,
    )
    sampling: SamplingSpec | None = Field(
        None,
        description="Decoding settings for this model; fields left out are `eval.sampling`'s (e.g. only "
        "`max_tokens: 3072` for a model with a 4,096-token context). Default: eval.sampling.",
        json_schema_extra=OVERRIDES,
    )
    max_model_len: int | None = Field(
        None,
        ge=16,
        description="Engine context length for this model; default: eval.max_model_len.",
        json_schema_extra=OVERRIDES,
    )
    clip_to_context: bool | None = Field(
        None,
        description="Lower max_tokens to what fits this model's context instead of refusing the plan; default: "
        "eval.clip_to_context.",
        json_schema_extra=OVERRIDES,
    )

    @property
    def overrides(self) -> dict[str, Any]:
        """The evaluation settings this baseline sets for itself, by field name (none: the spec's apply)."""
        names = ("prompt", "sampling", "max_model_len", "clip_to_context")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    @model_validator(mode="after")
    def _has_model(self) -> BaselineSpec:
        if self.model is None and self.name != "base":
            raise ValueError(
                f"baseline {self.name!r} names no model: give it `model:` (name_or_path or tiny), or call it 'base' "
                "to evaluate the spec's base model"
            )
        return self


# ----------------------------------------------------------------------------------------- prompting
class PromptSpec(SpecModel):
    """How a problem becomes a chat prompt; the same function formats training and evaluation."""

    system: str | None = Field(None, description="System message; none when null.")
    user_template: str = Field(
        DEFAULT_USER_TEMPLATE, description="User message; `{problem}` is replaced by the problem text."
    )

    @field_validator("user_template")
    @classmethod
    def _has_problem(cls, v: str) -> str:
        if "{problem}" not in v:
            raise ValueError("user_template must contain '{problem}'")
        try:
            v.format(problem="x")
        except (IndexError, KeyError, ValueError) as e:
            raise ValueError(
                f"user_template is not a valid format string ({e}); write literal braces as {{{{ }}}}"
            ) from e
        return v


# --------------------------------------------------------------------------------------------- train
class TrainSpec(SpecModel):
    """Full fine-tuning with DeepSpeed (ZeRO-3 by default)."""

    epochs: float = Field(3.0, gt=0, description="Passes over the cell's training set.")
    learning_rate: float = Field(1.0e-5, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule."
    )
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Fraction of steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    global_batch_size: int = Field(16, ge=1, description="Sequences per optimizer step, over all processes.")
    micro_batch_size: int = Field(1, ge=1, description="Sequences per process per forward pass.")
    max_seq_len: int = Field(16384, ge=16, description="Longest training sequence in tokens (prompt + trace).")
    overlong: Literal["truncate", "drop"] = Field(
        "truncate", description="What to do with a longer example: cut it at max_seq_len, or leave it out."
    )
    shuffle: Literal["once", "every_epoch"] = Field(
        "once",
        description="once: every epoch reads the data stage's order (shuffled once by the cell seed), so each "
        "epoch repeats the same batches; every_epoch: a new order each epoch, from the cell seed and the epoch.",
    )
    zero_stage: Literal[0, 1, 2, 3] = Field(3, description="DeepSpeed ZeRO stage.", json_schema_extra=RUN_ONLY)
    offload_optimizer: bool = Field(
        False, description="Keep optimizer states in CPU memory.", json_schema_extra=RUN_ONLY
    )
    offload_params: bool = Field(
        False, description="Keep parameters in CPU memory (ZeRO-3 only).", json_schema_extra=RUN_ONLY
    )
    zero3_gather_per_layer: bool = Field(
        False,
        description="ZeRO-3 gathers each decoder layer's weights as one unit (DeepSpeed leaf modules) instead of "
        "module by module: a tenth of the hooks, half the host time per step for a 28-layer model (measured on "
        "CPU); holds one whole layer's weights at a time.",
        json_schema_extra=RUN_ONLY,
    )
    zero3_memory_efficient_linear: bool = Field(
        True,
        description="Under ZeRO-3, DeepSpeed's own linear (its memory-efficient autograd function, DeepSpeed's "
        "default). False runs torch's linear: a sixth less host time per step with zero3_gather_per_layer "
        "(measured on CPU). Its memory cost on GPUs is not yet measured: check peak memory before using it on a "
        "model that only just fits.",
        json_schema_extra=RUN_ONLY,
    )
    gradient_checkpointing: bool = Field(
        True, description="Recompute activations to save memory.", json_schema_extra=RUN_ONLY
    )
    loss_chunk_tokens: int | None = Field(
        None,
        ge=1,
        description="Compute the LM head and cross-entropy over at most this many target tokens at a time, "
        "recomputing each chunk's logits in backward, so a long sequence's full-vocabulary logits never exist at "
        "once (~10 GB in fp32 per 16k tokens of a 152k vocabulary). Same loss; none = the model's own loss.",
        json_schema_extra=RUN_ONLY,
    )
    lean_activations: bool = Field(
        False,
        description="RMSNorm and SwiGLU MLP (Llama/Qwen/Mistral modules) keep only their inputs for backward and "
        "recompute the rest with fused elementwise kernels: ~0.5 GB less per layer at 16k tokens in a 1.5B Qwen2, "
        "so long sequences fit without gradient checkpointing. Same math.",
        json_schema_extra=RUN_ONLY,
    )
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto = bf16 on GPU, fp32 on CPU.")
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = Field(
        "auto",
        description="Attention kernel; auto = flash attention when installed, else sdpa.",
        json_schema_extra=RUN_ONLY,
    )
    sdpa_backends: list[Literal["cudnn", "flash", "efficient", "math"]] | None = Field(
        None,
        description="With sdpa attention, the order in which PyTorch tries its kernels (those left out follow in "
        "PyTorch's order, so none is disabled); none = cuDNN first on Hopper GPUs (compute capability 9.x), where "
        "its training kernels outrun flash, and PyTorch's own order elsewhere.",
        json_schema_extra=RUN_ONLY,
    )
    checkpoint_every_steps: int | None = Field(
        None,
        ge=1,
        description="Save a resumable ZeRO checkpoint this often (for preemption); none = only at end.",
        json_schema_extra=RUN_ONLY,
    )
    keep_checkpoint: bool = Field(
        True,
        description="False: delete each checkpoint (a 32B one is ~64 GB) once every evaluation of it is done; its "
        "metrics stay, and an evaluation added later trains it again first.",
        json_schema_extra=RUN_ONLY,
    )
    processes: int | None = Field(
        None,
        ge=1,
        description="Training processes per node: default = GPUs visible, or 2 on a CPU-only machine.",
        json_schema_extra=RUN_ONLY,
    )
    nodes: int = Field(
        1, ge=1, description="Nodes per training job (multi-node via srun + torchrun).", json_schema_extra=RUN_ONLY
    )
    extra_args: PassThroughArgs = Field(
        default_factory=dict, description="Extra transformers TrainingArguments, verbatim; `arg: ~` leaves it unset."
    )

    @model_validator(mode="after")
    def _batch(self) -> TrainSpec:
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"global_batch_size ({self.global_batch_size}) must be a multiple of micro_batch_size "
                f"({self.micro_batch_size})"
            )
        per_step = self.nodes * (self.processes or 1) * self.micro_batch_size
        if self.processes and self.global_batch_size % per_step:
            raise ValueError(
                f"global_batch_size ({self.global_batch_size}) must be a multiple of micro_batch_size "
                f"({self.micro_batch_size}) x processes ({self.processes}) x nodes ({self.nodes}) = {per_step}"
            )
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage 3")
        if self.offload_optimizer and self.weight_decay > 0:
            raise ValueError(
                "offload_optimizer steps DeepSpeed's CPU AdamW, which decays every parameter (norms and biases "
                "too, which the default optimizer exempts): set weight_decay 0 or leave offload_optimizer off"
            )
        if self.zero3_gather_per_layer and self.zero_stage != 3:
            raise ValueError("zero3_gather_per_layer needs zero_stage 3")
        if not self.zero3_memory_efficient_linear and self.zero_stage != 3:
            raise ValueError("zero3_memory_efficient_linear applies to zero_stage 3 only")
        return self


# ---------------------------------------------------------------------------------------------- eval
class SamplingSpec(SpecModel):
    """Decoding settings for evaluation."""

    temperature: float = Field(0.6, ge=0, description="Sampling temperature; 0 = greedy.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int = Field(-1, description="Top-k sampling; -1 = off.")
    max_tokens: int = Field(32768, ge=1, description="Longest response in tokens.")
    seed: int = Field(0, description="Sampling seed (each sample's seed is derived from it).")


class SampleBudget(SpecModel):
    """Samples per problem as a budget spent in two rounds: `first_round` for every problem of every checkpoint,
    then the rest of `budget` on the problems whose outcomes vary most (framework.eval.budget says why the
    per-problem mean stays unbiased)."""

    budget: int = Field(16, ge=1, description="Mean samples per problem per checkpoint: the cap on what it costs.")
    first_round: int = Field(
        4, ge=1, description="Samples every problem of every checkpoint gets in round 1 (pass_k must not exceed it)."
    )
    max: int = Field(64, ge=1, description="Most samples one problem of one checkpoint gets, both rounds together.")
    target_half_width: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Stop allocating once the part of a 95% half-width (pass-rate units, 0.02 = 2 points) of an "
        "arm difference that sampling adds is projected to reach this; the budget still caps. Default: spend "
        "the whole budget.",
    )

    @model_validator(mode="after")
    def _order(self) -> SampleBudget:
        if not self.first_round <= self.budget <= self.max:
            raise ValueError(
                f"need first_round <= budget <= max, got first_round {self.first_round}, budget {self.budget}, "
                f"max {self.max}"
            )
        return self


def _samples_kind(value: Any) -> str:
    return "dict[budget]" if isinstance(value, dict | SampleBudget) else "int"


# A number or a budget mapping; the discriminator keeps a mistake in one from being reported as both (its tags
# read as types, which error messages leave out of the YAML path).
SamplesSetting = Annotated[
    Annotated[Annotated[int, Field(ge=1)], Tag("int")] | Annotated[SampleBudget, Tag("dict[budget]")],
    Discriminator(_samples_kind),
]


def first_round(samples: int | SampleBudget) -> int:
    """Samples per problem of a benchmark's first (for a fixed design its only) evaluation."""
    return samples.first_round if isinstance(samples, SampleBudget) else samples


class BenchmarkSpec(SpecModel):
    """A benchmark to evaluate on, by registry name or import path, optionally from a local file."""

    name: str = Field(
        ...,
        description="Registry name (comp-math-24-25, aime24, aime25, hmmt-24-25, math-500, gpqa-diamond, toy, toy-dev) "
        "or 'package.module:attr'.",
    )
    path: str | None = Field(None, description="Local JSONL/Parquet of the same schema instead of the hub copy.")
    revision: str | None = Field(
        None,
        description="Hub revision (commit, tag or branch) of the hub copy; pin a commit so every cell of a long "
        "sweep reads the same problems and answers. Default: the latest (the commit read is recorded).",
    )
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N problems.")
    samples: SamplesSetting | None = Field(
        None, description="Samples per problem, a number or a budget mapping as eval.samples; default: eval.samples."
    )
    problem_ids: list[str] | None = Field(None, description="Evaluate only these problem ids.")

    @model_validator(mode="after")
    def _revision_needs_hub(self) -> BenchmarkSpec:
        if self.revision is not None and self.path is not None:
            raise ValueError("'revision' pins the hub copy; a local `path:` has none")
        return self


class GradingSpec(SpecModel):
    """How a response's final answer is extracted and compared."""

    grader: str | None = Field(
        None,
        description="Grader name (math, multiple_choice) or 'package.module:attr' for every benchmark; default: "
        "each benchmark's own (multiple_choice for GPQA, math for the others), and math for the pool's traces.",
    )
    score_truncated: bool = Field(
        False,
        description="Grade a response cut off at max_tokens as it stands; by default it counts as wrong, since "
        "its last \\boxed{} may be an answer it was still checking when the budget ran out.",
    )
    timeout_s: float = Field(5.0, gt=0, description="Time limit for grading one answer.")
    fallbacks: bool = Field(
        True, description="When no \\boxed{} is found, try 'final answer is ...' and the last number."
    )
    workers: int | None = Field(
        None, ge=1, description="Grading processes; default: CPU count.", json_schema_extra=RUN_ONLY
    )


class EvalSpec(SpecModel):
    """Evaluation of every checkpoint (and baseline) on the benchmarks."""

    benchmarks: list[BenchmarkSpec] = Field(
        default_factory=lambda: [BenchmarkSpec(name="comp-math-24-25")],
        description="Benchmarks: names, or mappings with name/path/limit/samples.",
    )
    samples: SamplesSetting = Field(
        64,
        description="Samples per problem (pass@1 is their mean; maj@n their vote): a number, or a budget "
        "{budget, first_round, max, target_half_width} spent in two rounds where outcomes vary most.",
    )
    sampling: SamplingSpec = Field(default_factory=SamplingSpec, description="Decoding settings.")
    grading: GradingSpec = Field(default_factory=GradingSpec, description="Answer extraction and comparison.")
    backend: Literal["vllm", "hf"] = Field("vllm", description="Generation engine; hf = transformers generate.")
    tensor_parallel_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="vLLM tensor parallelism (GPUs per engine). auto: the fewest GPUs (1, 2, 4, 8, ...) whose "
        "memory holds the weights with room for the KV cache and that split the attention heads; with "
        "data_parallel_size fixed, the job's GPUs / data_parallel_size; 1 on CPU.",
        json_schema_extra=RUN_ONLY,
    )
    data_parallel_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="vLLM engines run side by side over the prompts. auto: the job's GPUs / tensor_parallel_size "
        "(1 on CPU); the local launcher then gives each evaluation one engine's GPUs, so several checkpoints are "
        "evaluated at once instead.",
        json_schema_extra=RUN_ONLY,
    )
    max_model_len: int | None = Field(
        None, ge=16, description="Context length for the engine; default: prompt + max_tokens."
    )
    clip_to_context: bool = Field(
        False,
        description="When the longest prompt + max_tokens exceeds the model's context (max_position_embeddings), "
        "generate at most what fits, and say so in the eval's warnings; by default that is an error naming both "
        "numbers (found at plan time when the model's config.json is local or cached, else before the engine "
        "loads). It is part of every evaluation's key: set it on the baseline that needs it "
        "(baselines[].clip_to_context), not here, to keep finished evaluations.",
    )
    truncation_warning: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Warn when more than this fraction of samples hit max_tokens.",
        json_schema_extra=RUN_ONLY,
    )
    pass_k: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [1],
        description="k values for unbiased pass@k (each at most the samples per problem).",
        json_schema_extra=RUN_ONLY,
    )
    bundle: int = Field(
        1,
        ge=1,
        description="Slurm only: evaluate up to this many checkpoints of one model (same base and dtype) in one "
        "job, to pay the imports and engine start once; each evaluation keeps its own result and failure. A "
        "bundle starts when all its trainings have ended, so it pays only when they finish close together; it "
        "evaluates the checkpoints whose training succeeded and skips the others (the next `ablate run` trains and "
        "evaluates them). The eval "
        "time limit stays per checkpoint: a job of k checkpoints asks for k times it (`ablate plan` says how long, "
        "and warns when the partition's MaxTime is shorter). 1: one job per checkpoint.",
        json_schema_extra=RUN_ONLY,
    )
    reuse_engine: bool = Field(
        True,
        description="Keep one vLLM engine per process across checkpoints of one architecture, loading each "
        "checkpoint's weights into it; false: one engine per checkpoint.",
        json_schema_extra=RUN_ONLY,
    )

    @field_validator("benchmarks", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": b} if isinstance(b, str) else b for b in v]
        return v

    @model_validator(mode="after")
    def _unique(self) -> EvalSpec:
        names = [b.name for b in self.benchmarks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate benchmark(s): {dupes}")
        if problem := self.greedy_problem():
            raise ValueError(problem)
        fewest = min([first_round(self.samples_for(b)) for b in self.benchmarks], default=first_round(self.samples))
        over = [k for k in self.pass_k if k > fewest]
        if over:
            raise ValueError(
                f"pass_k {over} needs more samples per problem than {fewest} (a budget's first_round): pass@k "
                "takes k <= samples"
            )
        return self

    def greedy_problem(self, where: str = "") -> str | None:
        """Greedy decoding (temperature 0) gives one answer per prompt, so more samples would only repeat it; vLLM
        and transformers both refuse it, which would surface only once every training had run."""
        most = max(
            [s if isinstance(s, int) else s.max for s in (self.samples_for(b) for b in self.benchmarks)],
            default=1,
        )
        if self.sampling.temperature == 0 and most > 1:
            return (
                f"{where}sampling.temperature 0 (greedy decoding) gives one answer per problem, but {most} samples "
                "per problem are asked for: set samples: 1, or a temperature above 0"
            )
        return None

    def samples_for(self, bench: BenchmarkSpec) -> int | SampleBudget:
        """A benchmark's own samples setting, else eval.samples."""
        return bench.samples if bench.samples is not None else self.samples


BaselineSpec.model_rebuild()  # its prompt and sampling types are defined below it
