"""The requests of one generation: one per (problem, sample), content-addressed.

A request's id hashes what determines its answer: the teacher's identity, the rendered prompt, chat or not, the
sampling and the sample's index. So the same problem asked of the same teacher in two sweeps, or in one sweep
after problems or samples were added, is the same request, answered once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from framework.errors import DataError
from framework.hashing import content_key
from framework.spec.generate import PLACEHOLDER
from framework.spec.pool import GenerateSpec


@dataclass(frozen=True)
class Request:
    request_id: str
    item: str  # what is asked about: a problem id, or the trace id of the trace a refinement rewrites
    problem_id: str
    sample: int
    prompt: str
    seed: int


def render(template: str, row: dict[str, Any]) -> str:
    """The template with each {name} replaced by the row's value; other braces are left as written."""
    return PLACEHOLDER.sub(lambda m: "" if row.get(m.group(1)) is None else str(row[m.group(1)]), template)


def unknown_placeholders(template: str, columns: list[str]) -> list[str]:
    return sorted({m.group(1) for m in PLACEHOLDER.finditer(template)} - set(columns))


def sampling_identity(gen: GenerateSpec) -> dict[str, Any]:
    return {"chat": gen.chat, "sampling": gen.sampling.model_dump(mode="json")}


def build_requests(
    problems: pd.DataFrame, gen: GenerateSpec, teacher: dict[str, Any], item: str = "problem_id"
) -> list[Request]:
    """Every (row, sample) request in row order; `item` names the column that identifies a row (the problem, or
    the trace a refinement rewrites). `teacher` is the teacher's identity (what keys it)."""
    missing = unknown_placeholders(gen.prompt, list(problems.columns))
    if missing:
        raise DataError(
            f"generate.prompt names {', '.join('{' + m + '}' for m in missing)}, which the problems do not have; "
            f"fields: {', '.join(c for c in problems.columns if not c.startswith('_'))}"
        )
    base = {"teacher": teacher, **sampling_identity(gen)}
    out = []
    for row in problems.to_dict("records"):
        prompt = render(gen.prompt, row)
        for k in range(gen.samples):
            rid = content_key({**base, "prompt": prompt, "sample": k})
            seed = request_seed(gen.sampling.seed, rid)
            out.append(Request(rid, str(row[item]), str(row["problem_id"]), k, prompt, seed))
    return out


def request_seed(seed: int, request_id: str) -> int:
    """A seed per request, stable and independent of batching and order; fits the int32 that servers accept."""
    return (seed + int(request_id[:8], 16)) % (2**31 - 1)
