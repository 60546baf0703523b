"""What a sweep's generations will ask before anything is spent: requests (and how many are already journaled),
prompt tokens, generated tokens and, for an endpoint with prices, the cost.

Generated tokens are bounded by max_tokens per request; where the teacher's journal already holds answers under
the same sampling, their mean is the expectation. Prompt tokens are counted by characters (about 4 per token)
when no tokenizer is at hand: shown as an estimate, never as a count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from framework.errors import UserError
from framework.generate.journal import read_journal
from framework.generate.requests import build_requests
from framework.generate.stage import journal_dir, read_problems, read_refined
from framework.locations import resolve_path
from framework.store import Store
from framework.sweep.plan import Plan

CHARS_PER_TOKEN = 4.0


@dataclass
class Estimate:
    source: str  # pool[i] and its label
    teacher: str
    job: str
    requests: int | None  # None: a refinement of traces not generated yet
    journaled: int
    prompt_tokens: float | None
    max_output_tokens: int | None
    expected_output_tokens: float | None  # from the journal's answers of this teacher and sampling
    cost_max: float | None
    cost_expected: float | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate(plan: Plan, spec_dir: Path | None, store: Store) -> list[Estimate]:
    """One estimate per generated pool source of the plan, in pool order."""
    out: list[Estimate] = []
    counts: dict[int, int | None] = {}
    for index, job_id in plan.generated.items():
        src = plan.spec.pool[index]
        gen = src.generate
        assert gen is not None
        teacher = plan.jobs[job_id].config["teacher"]
        label = f"pool[{index}] {src.source or gen.teacher.name}"
        journal_done, _ = read_journal(journal_dir(store.root, teacher, gen))
        if gen.problems is not None:
            try:
                problems = read_problems(gen.problems, f"pool[{index}].generate", lambda p: resolve_path(p, spec_dir))
            except (UserError, OSError) as e:
                out.append(_unknown(label, gen, job_id, f"problems not readable here: {e}"))
                counts[index] = None
                continue
            requests = build_requests(problems, gen, teacher)
            counts[index] = len(requests)
            done = sum(r.request_id in journal_done for r in requests)
            chars = sum(len(r.prompt) for r in requests)
            out.append(_estimate(label, gen, job_id, len(requests), done, chars / CHARS_PER_TOKEN, journal_done))
        else:
            requests = refined_requests(plan, index, spec_dir, store, teacher)
            if requests is not None:  # the traces it rewrites exist: count its requests as the stage will
                counts[index] = len(requests)
                done = sum(r.request_id in journal_done for r in requests)
                chars = sum(len(r.prompt) for r in requests)
                out.append(_estimate(label, gen, job_id, len(requests), done, chars / CHARS_PER_TOKEN, journal_done))
                continue
            parents = [n for j, n in counts.items() if plan.spec.pool[j].source == gen.refine] if counts else []
            n = parents[0] * gen.samples if parents and parents[0] is not None else None
            note = f"rewrites the traces labelled {gen.refine!r}: " + (
                "counted from the generation that writes them" if n is not None else "counted once they exist"
            )
            counts[index] = n
            out.append(_estimate(label, gen, job_id, n, 0, None, journal_done, note))
    return out


def refined_requests(
    plan: Plan, index: int, spec_dir: Path | None, store: Store, teacher: dict[str, Any]
) -> list[Any] | None:
    """A refinement's requests, when every generation before it is done (their traces are what it may rewrite);
    None before that, or when its sources cannot be read here."""
    generated = {}
    for j, job_id in plan.generated.items():
        if j < index:
            stage, key = job_id.split("/")
            if not store.is_done(stage, key):
                return None
            generated[j] = store.path(stage, key)
    try:
        rows = read_refined(plan.spec, index, lambda p: resolve_path(p, spec_dir), generated, f"pool[{index}].generate")
    except (UserError, OSError):
        return None
    return build_requests(rows, plan.spec.pool[index].generate, teacher, "parent_trace_id")


def _estimate(
    label: str, gen: Any, job_id: str, n: int | None, done: int, prompt_tokens: float | None,
    journal: dict[str, dict], note: str = "",
) -> Estimate:  # fmt: skip
    max_out = gen.sampling.max_tokens
    answered = [r.get("completion_tokens") for r in journal.values() if r.get("completion_tokens") is not None]
    mean_out = sum(answered) / len(answered) if answered else None
    todo = None if n is None else n - done
    expected = None if todo is None or mean_out is None else todo * mean_out
    ep = gen.teacher.endpoint
    priced = ep is not None and ep.price_input_per_mtok is not None and ep.price_output_per_mtok is not None

    def cost(out_tokens: float | None) -> float | None:
        if not priced or todo is None or out_tokens is None or prompt_tokens is None:
            return None  # a refinement's prompts hold traces not written yet: no honest price
        prompt = prompt_tokens * (todo / n if n else 0)
        return (prompt * ep.price_input_per_mtok + out_tokens * ep.price_output_per_mtok) / 1e6

    return Estimate(
        label, gen.teacher.name, job_id, n, done, prompt_tokens, None if todo is None else todo * max_out,
        expected, cost(None if todo is None else float(todo * max_out)), cost(expected), note,
    )  # fmt: skip


def _unknown(label: str, gen: Any, job_id: str, note: str) -> Estimate:
    return Estimate(label, gen.teacher.name, job_id, None, 0, None, None, None, None, None, note)


def render(estimates: list[Estimate]) -> list[str]:
    """Lines for `ablate plan`: what each generation will ask, at most and as expected."""
    lines = []
    for e in estimates:
        if e.requests is None:
            lines.append(f"  {e.source} ({e.teacher}): requests unknown; {e.note}")
            continue
        todo = e.requests - e.journaled
        parts = [f"{e.requests} requests ({e.journaled} already answered, {todo} to ask)"]
        if e.prompt_tokens is not None:
            parts.append(f"~{_tokens(e.prompt_tokens)} prompt tokens")
        if e.max_output_tokens is not None:
            expected = (
                f", ~{_tokens(e.expected_output_tokens)} expected" if e.expected_output_tokens is not None else ""
            )
            parts.append(f"at most {_tokens(e.max_output_tokens)} generated tokens{expected}")
        if e.cost_max is not None:
            expected = f", ~{e.cost_expected:.2f} expected" if e.cost_expected is not None else ""
            parts.append(f"cost at most {e.cost_max:.2f}{expected}")
        lines.append(f"  {e.source} ({e.teacher}): " + "; ".join(parts))
    return lines


def _tokens(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"
