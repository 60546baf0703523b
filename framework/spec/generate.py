"""The teacher of a generated pool source (a model run here, or an OpenAI-compatible endpoint), its sampling and
the prompt template's rules. The generated source itself (`GenerateSpec`) is a pool section: framework.spec.pool."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from framework.spec.base import RUN_ONLY, SpecModel

DEFAULT_PROMPT = "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{}."
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")  # `\boxed{}` and `{ }` are text, not placeholders
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EndpointSpec(SpecModel):
    """An OpenAI-compatible server (`vllm serve`, SGLang, a hosted API). Only `model` (and the teacher's
    `revision`) key the traces: the same model served elsewhere writes the same traces."""

    base_url: str = Field(
        ..., description="The API root, e.g. http://127.0.0.1:8000/v1 (requests go to <base_url>/chat/completions).",
        json_schema_extra=RUN_ONLY,
    )  # fmt: skip
    model: str = Field(..., description="The model name the server knows (the request's `model`).")
    api_key_env: str | None = Field(
        None,
        description="Name of the environment variable holding the API key (never the key itself: it must not reach "
        "the spec, the store, logs or MLflow). None: no Authorization header.",
        json_schema_extra=RUN_ONLY,
    )
    concurrency: int = Field(16, ge=1, description="Requests in flight at once.", json_schema_extra=RUN_ONLY)
    timeout_s: float = Field(
        600.0, gt=0, description="Seconds one request may take before it is retried.", json_schema_extra=RUN_ONLY
    )
    max_retries: int = Field(
        8,
        ge=0,
        description="Retries of a request after a 429, a 5xx, a timeout, a dropped connection or a malformed "
        "response, with exponential backoff and jitter (a Retry-After header is honoured).",
        json_schema_extra=RUN_ONLY,
    )
    backoff_s: float = Field(
        1.0, gt=0, description="First retry delay; doubled per retry, at most 60 s.", json_schema_extra=RUN_ONLY
    )
    price_input_per_mtok: float | None = Field(
        None, ge=0, description="Price of a million prompt tokens, for the cost shown by plan and recorded.",
        json_schema_extra=RUN_ONLY,
    )  # fmt: skip
    price_output_per_mtok: float | None = Field(
        None, ge=0, description="Price of a million generated tokens.", json_schema_extra=RUN_ONLY
    )

    @model_validator(mode="after")
    def _checks(self) -> EndpointSpec:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        if self.api_key_env is not None and not ENV_NAME.match(self.api_key_env):
            # A key pasted where its variable's name belongs: refuse it without repeating it.
            raise ValueError("api_key_env must be the NAME of an environment variable (letters, digits, _)")
        return self


class TeacherSpec(SpecModel):
    """Who writes the traces: a model run here with vLLM (offline), or an endpoint."""

    model: str | None = Field(
        None,
        description="Hub id, local checkpoint directory, 'toy:base' or 'toy:teacher', run with vLLM in the stage's "
        "process.",
    )
    revision: str | None = Field(
        None,
        description="Hub revision of `model` (pin a commit), or the revision an endpoint serves (recorded and keyed, "
        "so a new checkpoint behind the same name is not mistaken for the old one).",
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weights dtype of `model`: auto = bfloat16 on GPU, float32 on CPU."
    )
    chat_template: str | None = Field(None, description="Jinja chat template of `model` when its tokenizer has none.")
    tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs per vLLM engine for `model`.", json_schema_extra=RUN_ONLY
    )
    batch_size: int = Field(
        256,
        ge=1,
        description="Requests handed to the offline engine at once; each batch is journaled when it finishes, so a "
        "kill loses at most one batch.",
        json_schema_extra=RUN_ONLY,
    )
    endpoint: EndpointSpec | None = Field(None, description="An OpenAI-compatible server instead of `model`.")

    @model_validator(mode="after")
    def _one_teacher(self) -> TeacherSpec:
        if (self.model is None) == (self.endpoint is None):
            raise ValueError(
                "give exactly one of 'model' (run here with vLLM) or 'endpoint' (an OpenAI-compatible API)"
            )
        return self

    @property
    def name(self) -> str:
        return self.model if self.model is not None else self.endpoint.model  # type: ignore[union-attr]


class GenerateSamplingSpec(SpecModel):
    """Decoding settings of the teacher."""

    temperature: float = Field(0.7, ge=0, description="Sampling temperature; 0 = greedy.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int = Field(-1, description="Top-k sampling; -1 = off (not sent to an endpoint).")
    max_tokens: int = Field(32768, ge=1, description="Longest trace in tokens.")
    seed: int = Field(0, description="Sampling seed; each request's seed is derived from it and the request.")
