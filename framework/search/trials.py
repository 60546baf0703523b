"""A trial as ordinary store jobs: a train job keyed by the trial's parameters and validation eval jobs of its
checkpoint, keyed as the plan keys its own (framework.sweep.plan.job_key). A repeated suggestion finds its
result done, and a retried trial resumes a killed training from its checkpoint.

With a pruner the validation problems are split into rungs, one eval job each: the objective after each rung is
the problem-weighted mean over the rungs done, and a poor trial stops between them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from framework.search.study import SearchError
from framework.store import Store
from framework.sweep.plan import Job, Plan, job_key
from framework.sweep.pruning import prune_if_evaluated

# Metrics that are means over a rung's problems (weighted by its n_problems) or over its samples (n_samples); the
# rest (a median, the counts) cannot be put together from the rungs' values.
_PER_PROBLEM = ("pass@", "maj@")
_PER_SAMPLE = {"no_answer_rate", "truncation_rate", "mean_response_tokens", "reflection_per_response"}


def rungs(problem_ids: list[str], n: int) -> list[list[str]]:
    """The validation problems dealt round-robin into `n` parts (a benchmark sorted by difficulty or topic
    spreads over all of them); empty parts are dropped."""
    return [part for part in (problem_ids[r::n] for r in range(n)) if part]


def _weight_name(metric: str) -> str | None:
    prefix, _, base = metric.rpartition("/")
    prefix = prefix + "/" if prefix else ""
    if base.startswith(_PER_PROBLEM):
        return prefix + "n_problems"
    if base in _PER_SAMPLE:
        return prefix + "n_samples"
    return None


def combine(rung_metrics: list[dict[str, float]], metric: str) -> float:
    """The objective over the rungs done: `metric` of each rung's metrics.json ("metrics"), weighted by the
    problems (or samples) it covers. A rung without the metric's subset weighs nothing."""
    present = [m for m in rung_metrics if metric in m]
    if not present:
        known = sorted({k for m in rung_metrics for k in m})
        raise SearchError(
            f"search.objective.metric: {metric!r} is not a metric of the validation evaluation; it reports "
            f"{', '.join(known) or 'none'}"
        )
    if len(rung_metrics) == 1:
        return float(present[0][metric])
    weight = _weight_name(metric)
    if weight is None:
        raise SearchError(
            f"search.objective.metric: {metric!r} cannot be combined over the pruner's rungs (it is not a mean over "
            "problems or samples); choose pass@k, maj@n or a rate, or set search.pruner.kind: none"
        )
    for m in rung_metrics:
        if metric not in m and m.get(weight, 0):
            raise SearchError(
                f"search.objective.metric: {metric!r} is missing from a rung that has {m[weight]:g} of its "
                "problems (pass@k needs k samples per problem)"
            )
    total = sum(float(m[weight]) for m in present)
    return sum(float(m[metric]) * float(m[weight]) for m in present) / total


@dataclass(frozen=True)
class TrialJobs:
    """The store jobs of a study's trials. `deps`: the worker's keyed inputs (the tiny model's job, the arm's data
    at the search's seed); `parts`: the rungs' problem ids, or None for one evaluation of every problem."""

    study: dict[str, Any]  # framework.sweep.plan.study_config
    deps: list[str]
    cells: list[str]
    parts: list[list[str]] | None = None

    def train(self, params: dict[str, Any]) -> Job:
        config = {**self.study["train"], "params": params}
        return Job("train", job_key("train", config, self.deps), list(self.deps), config, list(self.cells))

    def evals(self, train: Job) -> list[Job]:
        """One validation eval job per rung (or one for all problems), each reading the trial's checkpoint."""
        validation = self.study["validation"]
        benches = (
            [validation["benchmark"]]
            if self.parts is None
            else [{**validation["benchmark"], "problem_ids": part} for part in self.parts]
        )
        jobs = []
        for bench in benches:
            config = {"checkpoint": [train.id], **validation, "benchmark": bench}
            jobs.append(Job("eval", job_key("eval", config, [train.id]), [train.id], config, list(self.cells)))
        return jobs


def register(plan: Plan, jobs: list[Job]) -> None:
    """Make jobs the plan did not list runnable by `execute` (a trial's are known only once it is suggested)."""
    for job in jobs:
        plan.jobs.setdefault(job.id, job)


def prune_trial_checkpoint(plan: Plan, store: Store, train: Job, evaluated: list[Job], *, keep: bool) -> list[str]:
    """Delete a trial's checkpoint once the evaluations it got are done, when a pruned trial stops before its
    last rungs (`execute` deletes it after the last one otherwise). Judged on the trial's own jobs alone: no final
    cell reads a trial's checkpoint (theirs are keyed by their recipe, not by parameters)."""
    if keep or not evaluated:
        return []
    own = dataclasses.replace(plan, jobs={train.id: train, **{j.id: j for j in evaluated}})
    return prune_if_evaluated(own, store, evaluated[-1], keep=False)
