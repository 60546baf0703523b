"""The report's view of a hyper-parameter search: each study's outcome, and whether an effect found under the
shared recipe survives when every arm is trained with its own best one.

An effect measured under one recipe may be the recipe's: a learning rate that suits long traces makes "long traces
help" look true. In per_arm mode each arm is trained under both the reference arm's best recipe ("shared") and its
own ("own"), and the comparisons are made within each recipe; this module sets the two side by side. It reads the
search stage's select jobs (best.json, trials.csv, history.png, importance.png) from the store.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from framework.log.stage import study_result
from framework.redaction import copy_redacted

if TYPE_CHECKING:
    from framework.spec.ablation import AblationSpec
    from framework.spec.search import SearchParam
    from framework.store import Store
    from framework.sweep.plan import Job, Plan

RECIPE_TITLES = {
    "shared": "shared recipe: every arm trained with the reference arm's best parameters",
    "own": "own recipe: every arm trained with its own best parameters",
}
STUDY_COLUMNS = [
    "study", "arm", "done", "params", "trial", "value", "metric", "direction", "complete", "pruned", "failed",
    "importances",
]  # fmt: skip
SURVIVE_SIDES = ("estimate", "ci_low", "ci_high", "p_value", "over")


# ------------------------------------------------------------------------------------------------ studies
def study_jobs(plan: Plan) -> list[Job]:
    """The plan's studies: their select jobs, in plan order (the reference arm's first)."""
    return [j for j in plan.by_stage("search") if j.config.get("role") == "select"]


def study_arm(spec: AblationSpec, job: Job) -> str:
    """A study's arm as the report names arms (factor=level in the spec's factor order)."""
    levels = {fname: level for fname, _kind, level, _params in job.config["study"]["arm"]}
    return ",".join(f"{f}={levels[f]}" for f in spec.factors if f in levels) or "all"


def studies_frame(plan: Plan, store: Store) -> pd.DataFrame:
    """One row per study: its best parameters, trial, objective and trial counts (empty until it is done)."""
    rows = []
    for job in study_jobs(plan):
        best = study_result(store, job.key)
        counts = best.get("counts") or {}
        rows.append(
            {
                "study": job.key,
                "arm": study_arm(plan.spec, job),
                "done": bool(best),
                "params": json.dumps(best["params"], sort_keys=True) if "params" in best else None,
                "trial": best.get("trial"),
                "value": best.get("value"),
                "metric": best.get("metric"),
                "direction": best.get("direction"),
                **{state: counts.get(state) for state in ("complete", "pruned", "failed")},
                "importances": json.dumps(best["importances"], sort_keys=True) if "importances" in best else None,
            }
        )
    return pd.DataFrame(rows, columns=STUDY_COLUMNS)


def trials_frame(plan: Plan, store: Store) -> pd.DataFrame:
    """Every finished study's trials.csv, each row with its study and arm in front."""
    parts = []
    for job in study_jobs(plan):
        path = store.path("search", job.key) / "trials.csv"
        if store.is_done("search", job.key) and path.is_file():
            trials = pd.read_csv(path)
            parts.append(trials.assign(study=job.key, arm=study_arm(plan.spec, job)))
    if not parts:
        return pd.DataFrame(columns=["study", "arm"])
    frame = pd.concat(parts, ignore_index=True)
    return frame[["study", "arm", *[c for c in frame.columns if c not in ("study", "arm")]]]


def describe_param(name: str, p: SearchParam) -> str:
    """A searched parameter's space as a reader would write it."""
    if p.type == "categorical":
        return f"{name} in {{{', '.join(str(c) for c in p.choices or [])}}}"
    scale = ", log" if p.log else (f", step {p.step:g}" if p.step else "")
    return f"{name} {p.type} {p.low:g}..{p.high:g}{scale}"


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _slug(text: str) -> str:
    return re.sub(r"[^\w.=-]+", "_", text)[:60]


def search_section(plan: Plan, store: Store, out_dir: Path, plots_dir: Path) -> str:
    """The "Search" section: per study the searched space, the best parameters, trial, objective and counts,
    with its history and importance plots copied beside the report."""
    spec = plan.spec
    search = spec.search
    assert search is not None
    space = "; ".join(describe_param(n, p) for n, p in search.params.items())
    objective = search.objective
    out = [
        "## Search",
        "",
        f"Searched: {space}. Objective: {objective.direction} {objective.metric} on the validation benchmark "
        f"{objective.benchmark.name} ({search.n_trials} trials per study, sampler {search.sampler.kind}, pruner "
        f"{search.pruner.kind}, trial seed {spec.trial_seed}).",
        "",
    ]
    if search.mode == "shared":
        out += ["One study, on the reference arm: every arm was trained with its best parameters.", ""]
    else:
        out += ["One study per arm: each arm's own best parameters (the `own` recipe) beside the reference arm's.", ""]
    for job in study_jobs(plan):
        arm = study_arm(spec, job)
        best = study_result(store, job.key)
        out += [f"### Study of {arm}", ""]
        if not best:
            out += [f"Not finished yet (search/{job.key}).", ""]
            continue
        counts = best.get("counts") or {}
        params = ", ".join(f"{k} = {_value(v)}" for k, v in (best.get("params") or {}).items()) or "–"
        value = best.get("value")
        shown = "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"
        importances = best.get("importances") or {}
        out += [
            f"- Best parameters: {params} (trial {best.get('trial')}).",
            f"- Objective: {best.get('metric')} = {shown} ({best.get('direction')}).",
            f"- Trials: {counts.get('complete', 0)} complete, {counts.get('pruned', 0)} pruned, "
            f"{counts.get('failed', 0)} failed.",
            "- Importance: "
            + (
                ", ".join(f"{k} {v:.0%}" for k, v in sorted(importances.items(), key=lambda kv: -kv[1]))
                if importances
                else "not estimated (fewer than 2 completed trials, or nothing varied)"
            )
            + ".",
            f"- Store: search/{job.key}.",
            "",
        ]
        for name in ("history", "importance"):
            src = store.path("search", job.key) / f"{name}.png"
            if src.is_file():
                dst = copy_redacted(src, plots_dir / f"search-{_slug(arm)}-{job.key[:8]}-{name}.png")
                out += [f"![{arm} {name}]({dst.relative_to(out_dir).as_posix()})"]
        out += [""]
    return "\n".join(out) + "\n"


# -------------------------------------------------------------------------------------- survive tuning
def _excludes_zero(low: float, high: float) -> bool:
    return low > 0 or high < 0


def survival_verdict(shared: Mapping[str, Any], own: Mapping[str, Any]) -> str:
    """One line on whether an effect under the shared recipe holds under every arm's own best recipe, from the two
    intervals alone. An interval that covers 0 means the data cannot show the effect, not that it is 0."""
    values = [shared.get(k) for k in ("estimate", "ci_low", "ci_high")] + [
        own.get(k) for k in ("estimate", "ci_low", "ci_high")
    ]
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return "not estimable: the effect is missing under one recipe"
    s_est, s_lo, s_hi, o_est, o_lo, o_hi = (float(v) for v in values)
    s_shown, o_shown = _excludes_zero(s_lo, s_hi), _excludes_zero(o_lo, o_hi)
    flips = s_est * o_est < 0
    if s_shown and o_shown:
        verdict = (
            "reverses: opposite signs, both intervals exclude 0"
            if flips
            else "survives: same sign, both intervals exclude 0"
        )
    elif s_shown:
        verdict = "does not survive tuning: the own-recipe interval covers 0" + (" and the sign flips" if flips else "")
    elif o_shown:
        verdict = "appears only under own recipes: the shared-recipe interval covers 0"
    else:
        verdict = "no effect shown under either recipe: both intervals cover 0"
    conditional = [side for side in (shared, own) if "seed" not in str(side.get("over") or "seed")]
    return verdict + ("; for these fine-tunes only (too few seeds)" if conditional else "")


def survive_frame(shared: pd.DataFrame, own: pd.DataFrame) -> pd.DataFrame:
    """Per factor level against its reference: the effect under the shared recipe and under the arms' own, each
    with its interval and p, and the verdict. `shared`, `own`: the effects tables of the two comparisons."""
    keys = ["factor", "level", "reference_level"]
    merged = shared[keys + list(SURVIVE_SIDES)].merge(
        own[keys + list(SURVIVE_SIDES)], on=keys, how="outer", suffixes=("_shared", "_own"), sort=False
    )
    merged = merged.rename(columns={f"{c}_{side}": f"{side}_{c}" for c in SURVIVE_SIDES for side in ("shared", "own")})
    merged["verdict"] = [
        survival_verdict({c: r[f"shared_{c}"] for c in SURVIVE_SIDES}, {c: r[f"own_{c}"] for c in SURVIVE_SIDES})
        for _, r in merged.iterrows()
    ]
    return merged
