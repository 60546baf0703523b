"""`ablate report`: the sweep's results as tables, intervals, tests and plots, read from the store.

The store, not MLflow, is the source: a report works offline, mid-sweep (cells not evaluated yet are listed as
such) and without a tracking server. When tracking is reachable the report files are also attached to the sweep's
parent run. Column names follow docs/results-schema.md; the statistics are those of `framework.report.stats`. Every
file is written through `framework.redaction` (the spec's description, warnings and cell names are user text),
and uploaded through it again.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from framework.errors import UserError
from framework.grading.metrics import pass_at_k_from_samples
from framework.log.mlflow_client import TrackingUnavailable
from framework.log.stage import eval_counts, log_report, metric_key, trained_recipe
from framework.redaction import write_csv, write_text
from framework.report.plots import accuracy_by_level, length_vs_accuracy
from framework.report.search import (
    RECIPE_TITLES,
    search_section,
    studies_frame,
    survive_frame,
    trials_frame,
)
from framework.report.stats import (
    ARM_COLUMNS,
    Arm,
    ArmCounts,
    Comparison,
    align,
    compare_arms,
    factor_columns,
)
from framework.sweep.evaluations import finished_evaluations
from framework.sweep.execute import results_base
from framework.sweep.plan import configured_tracking_uri, tracking_uri
from framework.sweep.pruning import stale_evaluations

if TYPE_CHECKING:
    from framework.spec import AblationSpec, LoadedSpec
    from framework.store import Store
    from framework.sweep.plan import Plan

__all__ = ["COLUMNS", "SEARCH_COLUMNS", "report_frame", "write_report"]

# The fixed columns of report_frame, in order: name -> (dtype, meaning). docs/results-schema.md documents them;
# a test keeps the two in step. Factor columns follow "baseline"; metrics beyond these (pass@k for k > 1,
# "<subset>/<metric>") are appended with the eval stage's names.
COLUMNS: dict[str, tuple[str, str]] = {
    "cell": ("str", "cell id: factor=level pairs and seed=N, or baseline=NAME"),
    "arm": ("str", "the cell's id without its seed; replicates of one arm share it"),
    "seed": ("Int64", "training (and data-selection) seed; missing for baselines"),
    "baseline": ("str", "baseline name, missing for trained cells"),
    "benchmark": ("str", "benchmark name as in eval.benchmarks"),
    "evaluated": ("bool", "the cell's eval stage for this benchmark is done"),
    "n_problems": ("Int64", "problems evaluated"),
    "n_samples": ("Int64", "graded responses in all (problems x samples per problem)"),
    "samples_per_problem": ("Float64", "responses sampled per problem"),
    "pass@1": ("float64", "mean over problems of the fraction of correct responses (avg@n)"),
    "maj@n": ("float64", "fraction of problems whose most frequent answer is correct"),
    "no_answer_rate": ("float64", "fraction of responses with no extractable answer"),
    "truncation_rate": ("float64", "fraction of responses cut at max_tokens"),
    "mean_response_tokens": ("float64", "mean response length in tokens"),
    "median_response_tokens": ("float64", "median response length in tokens"),
    "reflection_per_response": ("float64", "mean count of reflection keywords per response"),
    "train_examples": ("Int64", "training examples the model saw (after length filtering)"),
    "train_tokens": ("Int64", "tokens processed in training, all epochs"),
    "train_steps": ("Int64", "optimizer steps"),
    "train_final_loss": ("float64", "last logged training loss"),
    "train_runtime_s": ("float64", "wall-clock seconds of the train stage"),
    "train_truncated": ("Int64", "training examples cut at train.max_seq_len (no answer or end of turn trained)"),
    "warnings": ("str", "the eval stage's warnings (truncation, grading timeouts), '; '-joined"),
    "data_key": ("str", "store key of the cell's data stage"),
    "train_key": ("str", "store key of the cell's train stage"),
    "eval_key": ("str", "store key of this benchmark's eval stage"),
    "log_key": ("str", "store key of the cell's log stage"),
    "mlflow_run_id": ("str", "the cell's MLflow run, once its log stage is done"),
}
# Columns of a sweep with a search, after the factor columns; then one `param.<name>` column per searched param.
SEARCH_COLUMNS: dict[str, tuple[str, str]] = {
    "recipe": ("str", "the recipe the cell trained with: shared (the reference arm's best) or own (its arm's best)"),
    "recipe_study": ("str", "store key of the study (search select job) that chose the recipe's parameters"),
    "recipe_trial": ("Int64", "the study's trial whose parameters the cell trained with"),
}
_TRAIL = ["warnings", "data_key", "train_key", "eval_key", "log_key", "mlflow_run_id"]
_MAJ = "maj@n"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as e:  # cut short or overwritten: name it, and how to get it back
        raise UserError(
            f"{path}: a finished job's record that cannot be read ({e}); delete {path.parent} and `ablate run` "
            "builds it again"
        ) from None


def _train_summary(m: Mapping[str, Any]) -> dict[str, Any]:
    """The train stage's metrics.json in either layout (flat counts, or nested examples/tokens/timings)."""
    curve = m.get("loss_curve") or []
    examples, truncated = m.get("examples"), None
    if isinstance(examples, Mapping):
        examples, truncated = examples.get("kept", examples.get("examples")), examples.get("truncated")
    tokens = m.get("train_tokens")
    if tokens is None and isinstance(m.get("tokens"), Mapping):
        tokens = m["tokens"].get("total_trained")
    runtime = m.get("runtime_s")
    if runtime is None and isinstance(m.get("timings"), Mapping):
        runtime = m["timings"].get("total_s")
    return {
        "train_examples": examples,
        "train_tokens": tokens,
        "train_steps": m.get("steps", curve[-1]["step"] if curve else None),
        "train_final_loss": m.get("final_loss", curve[-1]["loss"] if curve else None),
        "train_runtime_s": runtime,
        "train_truncated": truncated,
    }


def _eval_metrics(result: Mapping[str, Any]) -> dict[str, Any]:
    """Eval metrics under the report's names: maj@<n> becomes maj@n (one column across benchmarks)."""
    out: dict[str, Any] = {}
    for name, value in (result.get("metrics") or {}).items():
        head, _, tail = name.rpartition("/")
        if tail.startswith("maj@"):
            name = f"{head}/{_MAJ}" if head else _MAJ
        if name not in ("n_problems", "n_samples"):
            out[name] = value
    return out | eval_counts(result)


def report_factor_columns(factors: Iterable[str]) -> dict[str, str]:
    """A factor's column, the same in cells.csv and arms.csv: `factor.<name>` where it would take a fixed one's."""
    return factor_columns(factors, [*COLUMNS, *SEARCH_COLUMNS, *ARM_COLUMNS])


def report_frame(plan: Plan, store: Store) -> pd.DataFrame:
    """One row per cell x benchmark, from the store; cells not evaluated yet have missing metrics."""
    factors = list(plan.spec.factors)
    factor_col = report_factor_columns(factors)
    searched = list(plan.spec.search.params) if plan.spec.search else []
    rows = []
    for cell in plan.cells:
        stages = plan.cell_jobs[cell.id]
        recipe = _recipe_columns(plan, store, cell, searched)
        keys = {s: ",".join(j.split("/")[1] for j in stages[s]) or None for s in ("data", "train", "log")}
        train: dict[str, Any] = {}
        for job in stages["train"]:
            if store.is_done(*job.split("/")):
                train = _train_summary(_read_json(store.path(*job.split("/")) / "metrics.json"))
        run_id = None
        for job in stages["log"]:
            if store.is_done(*job.split("/")):
                run_id = _read_json(store.path(*job.split("/")) / "run.json").get("run_id")
        for job in stages["eval"]:
            stage, key = job.split("/")
            done = store.is_done(stage, key)
            result = _read_json(store.path(stage, key) / "metrics.json") if done else {}
            if done:  # a pass@k asked for after the evaluation ran, from its stored samples
                extra = pass_at_k_from_samples(
                    store.path(stage, key) / "samples.parquet", plan.spec.eval.pass_k, result.get("metrics", {})
                )
                result = {**result, "metrics": {**result.get("metrics", {}), **extra}}
            rows.append(
                {
                    "cell": cell.id,
                    "arm": cell.arm_id,
                    "seed": cell.seed,
                    "baseline": cell.baseline,
                    **{factor_col[f]: cell.level_map.get(f) for f in factors},
                    **recipe,
                    "benchmark": plan.jobs[job].config["benchmark"]["name"],
                    "evaluated": done,
                    **_eval_metrics(result),
                    **train,
                    "warnings": "; ".join(result.get("warnings", [])) or None,
                    "data_key": keys["data"],
                    "train_key": keys["train"],
                    "eval_key": key,
                    "log_key": keys["log"],
                    "mlflow_run_id": run_id,
                }
            )
    frame = pd.DataFrame(rows)
    fixed = [c for c in COLUMNS if c not in _TRAIL]
    recipe_cols = [*SEARCH_COLUMNS, *(f"param.{n}" for n in searched)] if searched else []
    head = (
        fixed[: fixed.index("baseline") + 1]
        + [factor_col[f] for f in factors]
        + recipe_cols
        + fixed[fixed.index("baseline") + 1 :]
    )
    extra = sorted(c for c in frame.columns if c not in COLUMNS and c not in head)
    for col in head + _TRAIL:
        if col not in frame.columns:
            frame[col] = None
    frame = frame[head + extra + _TRAIL]
    for col, (dtype, _) in {**COLUMNS, **(SEARCH_COLUMNS if searched else {})}.items():
        if dtype != "str":
            frame[col] = frame[col].astype(dtype)
    for name in searched:  # an int parameter stays an int beside the baselines' missing values
        if plan.spec.search and plan.spec.search.params[name].type == "int":
            frame[f"param.{name}"] = frame[f"param.{name}"].astype("Int64")
    return frame


def _recipe_columns(plan: Plan, store: Store, cell: Any, searched: list[str]) -> dict[str, Any]:
    """A cell's recipe columns under a search (none without one): which recipe, from which study and trial, and
    the parameters it trained with (missing until its study has chosen them)."""
    if not searched:
        return {}
    used = trained_recipe(plan, store, cell) or {}
    params = used.get("params") or {}
    return {
        "recipe": used.get("recipe"),
        "recipe_study": used.get("study"),
        "recipe_trial": used.get("trial"),
        **{f"param.{n}": params.get(n) for n in searched},
    }


# ---------------------------------------------------------------------------------------------- statistics
def benchmark_arms(plan: Plan, store: Store, benchmark: str) -> tuple[list[Arm], list[str]]:
    """The evaluated arms of one benchmark with their (seed x problem) counts on the problems all of them share.

    Under a sample budget a cell's evaluation is its second-round job, whose samples.parquet holds both rounds:
    the counts are every sample the checkpoint drew (per problem a different number, fixed before its own
    samples were seen, so each problem's mean is unbiased: framework.eval.budget), and a note states the design."""
    finished = finished_evaluations(plan, store, benchmark)
    counts = {f.cell.id: f.counts for f in finished}
    commits: dict[str, list[str]] = {}  # hub commit read -> cells
    for f in finished:
        if (f.result.get("hub_data") or {}).get("commit"):  # local and toy benchmarks have none
            commits.setdefault(f.result["hub_data"]["commit"], []).append(f.cell.id)
    designs = [f.result["design"] for f in finished if f.result.get("design")]
    notes: list[str] = [_budget_note(benchmark, designs, len(counts))] if designs else []
    if not counts:
        return [], notes
    if len(commits) > 1:
        read = ", ".join(f"{c[:12]} by {len(cells)} cell(s)" for c, cells in commits.items())
        notes.append(
            f"{benchmark}: the cells read different commits of the hub dataset ({read}); a problem or answer that "
            "changed between them is compared across versions: pin `revision:` and re-run the stale cells"
        )
    keys, aligned = align(counts)
    if not keys:
        notes.append(
            f"{benchmark}: no problem is shared by every evaluated cell, so no arm can be compared; evaluate "
            "them on one problem set"
        )
        return [], notes
    dropped = {c: len(t) - len(keys) for c, t in counts.items() if len(t) > len(keys)}
    if dropped:
        notes.append(f"{benchmark}: {len(keys)} problems shared by every evaluated cell; others left out ({dropped})")
    cells = {c.id: c for c in plan.cells}
    by_arm: dict[str, list[str]] = {}
    for cell_id in counts:
        by_arm.setdefault(cells[cell_id].arm_id, []).append(cell_id)
    arms = []
    for arm_id, members in by_arm.items():
        first = cells[members[0]]
        correct = np.stack([aligned[m][0] for m in members])
        total = np.stack([aligned[m][1] for m in members])
        arms.append(Arm(arm_id, first.level_map, ArmCounts(correct, total), baseline=first.baseline is not None))
        planned = sum(c.arm_id == arm_id for c in plan.cells)
        if len(members) < planned:
            notes.append(f"{benchmark}: {arm_id} has {len(members)} of {planned} seeds evaluated")
    return arms, notes


def _budget_note(benchmark: str, designs: list[dict[str, Any]], cells: int) -> str:
    """The adaptive design of a benchmark, from its second-round jobs' metrics.json."""
    d = designs[0]
    target = f", target half-width {d['target_half_width']:g}" if d.get("target_half_width") else ""
    means = [x["mean_samples"] for x in designs]
    return (
        f"{benchmark}: adaptive samples ({len(designs)} of {cells} evaluated cells): {d['first_round']} per problem "
        f"for every checkpoint, then up to {d['max']} where the other checkpoints' first rounds varied most, within "
        f"a budget of {d['budget']} per problem{target}; drawn {min(means):.1f}-{max(means):.1f} per problem on "
        f"average, at most {max(x['max_drawn'] for x in designs)}. pass@1 is each problem's mean over all its "
        "samples (its count was fixed from other checkpoints' outcomes, so the mean is unbiased); maj@n and the "
        "response statistics (truncated, tokens) are the first round's, the same samples per problem for every "
        "checkpoint"
    )


# ------------------------------------------------------------------------------------------------ markdown
def _text(v: Any) -> str:
    """A cell of text, with pandas' missing values (None, NaN, NA) as ''."""
    return "" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)


def _count(v: Any) -> str:
    return "" if _text(v) == "" else str(int(v))


def _pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _ci(est: float, lo: float, hi: float, *, delta: bool = False) -> str:
    if any(v is None or math.isnan(v) for v in (est, lo, hi)):
        return "–"
    if delta:
        return f"{100 * est:+.1f} pp [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    return f"{100 * est:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def _p(p: float) -> str:
    return "–" if p is None or math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


GENERATION_COLUMNS = (
    "requests", "finished", "failed", "empty", "truncated", "prompt_tokens", "completion_tokens", "cost", "seconds",
)  # fmt: skip


def generation_frame(plan: Plan, store: Store) -> pd.DataFrame:
    """One row per generated pool source: who wrote its traces and what it cost (usage.json of its job)."""
    rows = []
    for index, job_id in plan.generated.items():
        src = plan.spec.pool[index]
        stage, key = job_id.split("/")
        usage = _read_json(store.path(stage, key) / "usage.json") if store.is_done(stage, key) else {}
        rows.append(
            {
                "source": src.source or src.generate.teacher.name,
                "teacher": src.generate.teacher.name,
                "job": job_id,
                "done": store.is_done(stage, key),
                **{c: usage.get(c) for c in GENERATION_COLUMNS},
            }
        )
    return pd.DataFrame(rows, columns=["source", "teacher", "job", "done", *GENERATION_COLUMNS])


def _generation_section(gen: pd.DataFrame) -> str:
    header = ["source", "teacher", "traces", "failed", "truncated", "generated tokens", "cost"]
    rows = [
        [
            r["source"], r["teacher"],
            f"{int(r['finished'])} of {int(r['requests'])}" if r["done"] else "not generated yet",
            _count(r["failed"]), _count(r["truncated"]), _count(r["completion_tokens"]),
            "" if _text(r["cost"]) == "" else f"{float(r['cost']):.2f}",
        ]
        for _, r in gen.iterrows()
    ]  # fmt: skip
    return "## Generated traces\n\n" + _table(header, rows) + "\n"


def _design(loaded: LoadedSpec, plan: Plan, frame: pd.DataFrame) -> list[str]:
    spec = loaded.spec
    factors = ", ".join(
        f"**{f}** ({', '.join(lv.name + ('*' if lv.name == fs.reference_level else '') for lv in fs.levels)})"
        for f, fs in spec.factors.items()
    )
    trained = [c for c in plan.cells if c.baseline is None]
    recipes = len({c.recipe for c in trained})
    arms = len({c.levels for c in trained})
    per_recipe = f" x {recipes} recipes" if recipes > 1 else ""
    fine_tunes = len({tuple(plan.cell_jobs[c.id]["train"]) for c in trained})
    baselines = ", ".join(b.name for b in spec.baselines) or "none"
    lines = [
        f"- Factors (* = reference level): {factors or 'none'}; grid: {spec.grid.design}.",
        f"- {arms} arms{per_recipe} x {len(spec.seeds)} seeds {spec.seeds} = {len(trained)} fine-tuned cells, "
        f"{spec.n_examples} training examples each; baselines: {baselines}."
        if spec.trains
        else f"- Evaluation only (baselines, no factors): nothing is trained; baselines: {baselines}.",
        "- Grading: a response cut off at the token limit is "
        + (
            "graded as it stands (`eval.grading.score_truncated: true`, NeMo-Skills' rule)."
            if spec.eval.grading.score_truncated
            else "scored wrong (`eval.grading.score_truncated: false`; NeMo-Skills grades it as it stands)."
        ),
    ]
    if spec.search is not None:
        lines.append(
            f"- Search: {fine_tunes} distinct fine-tunes; every arm trained under the recipes "
            + (
                "`shared` (the reference arm's best parameters) and `own` (its own best); the reference arm's two "
                "are one set of fine-tunes, and arms are compared only within a recipe (see Search)."
                if spec.search.mode == "per_arm"
                else "`shared`: the reference arm's best parameters (see Search)."
            )
        )
    for bench, d in frame.groupby("benchmark", sort=False):
        done = d[d["evaluated"]]
        if done.empty:
            lines.append(f"- {bench}: not evaluated yet (0 of {len(d)} cells).")
            continue
        lines.append(
            f"- {bench}: {int(done['n_problems'].max())} problems x {done['samples_per_problem'].max():g} samples per "
            f"problem; {len(done)} of {len(d)} cells evaluated."
        )
    return lines


DIFFERENCE_HEADER = ["Δ pass@1 [95% CI]", "p", "p (Holm)", "variance: problems/seeds/samples", "narrows most"]


def _split(row: Any) -> str:
    """Where an interval's variance comes from, as percentages of problems / seeds / samples."""
    if pd.isna(row["share_problems"]):
        return "–"
    return "/".join(f"{row[f'share_{k}']:.0%}" for k in ("problems", "seeds", "samples"))


def _narrows(row: Any) -> str:
    """Which doubling narrows the interval most."""
    return _text(row.get("narrows_most")) or "–"


def _for_these_fine_tunes(row: Any) -> bool:
    """A row about trained arms whose interval speaks for these fine-tunes only (too few seeds to pool)."""
    return "seed" not in (_text(row.get("over")) or "seed") and not bool(row.get("baseline", False))


def _interval(row: Any, *, delta: bool = False) -> str:
    """The estimate and its interval, marked when it does not speak for other training runs."""
    text = _ci(row["estimate"], row["ci_low"], row["ci_high"], delta=delta)
    return text + " (these fine-tunes)" if _for_these_fine_tunes(row) and text != "–" else text


def _difference_cells(row: Any) -> list[str]:
    """A comparison row's difference with its interval, its tests and its variance (as DIFFERENCE_HEADER names
    them)."""
    return [
        _interval(row, delta=True),
        _p(row["p_value"]),
        _p(row["p_holm"]),
        _split(row),
        _narrows(row),
    ]


def _benchmark_section(
    bench: str, cmps: Mapping[str | None, Comparison], cells: pd.DataFrame, factors: list[str], plots: list[str]
) -> str:
    """A benchmark's tables: its arms and comparisons, within each recipe under a search (`cmps`: recipe -> its
    comparison; the key None without a search)."""
    out = [f"## {bench}", ""]
    for recipe, cmp in cmps.items():
        if recipe is None:
            out += _comparison_tables(cmp, cells, factors, "###")
        else:
            out += [f"### {bench}, {RECIPE_TITLES.get(recipe, recipe)}", ""]
            out += _comparison_tables(cmp, cells, factors, "####")
    out += [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(out) + "\n"


def _comparison_tables(cmp: Comparison, cells: pd.DataFrame, factors: list[str], level: str) -> list[str]:
    """Markdown lines of one comparison: its arms, then each table of differences with its intervals and tests."""
    out = [f"{level} Arms", ""]
    per_arm = cells[cells["evaluated"]].groupby("arm", sort=False)
    rows = []
    for _, a in cmp.arms.iterrows():
        c = per_arm.get_group(a["arm"])
        rows.append(
            [
                a["arm"] + (" (baseline)" if a["baseline"] else ""),
                *(_text(a.get(f)) or "–" for f in factors),
                str(a["n_seeds"]),
                _interval(a),
                _pct(c["maj@n"].mean()),
                _pct(c["truncation_rate"].mean()),
                f"{c['mean_response_tokens'].mean():.0f}",
                _split(a),
                _narrows(a),
            ]
        )
    header = [
        "arm", *factors, "seeds", "pass@1 [95% CI]", "maj@n", "truncated", "mean tokens",
        "variance: problems/seeds/samples", "narrows most",
    ]  # fmt: skip
    out += [_table(header, rows), ""]
    # the comparison tables: their own leading columns, then the difference with its interval and tests
    for title, table, lead, names in (
        (
            "Effect of each level against its factor's reference",
            cmp.effects,
            ["factor", "level", "reference_level", "n_pairs"],
            ["factor", "level", "vs reference", "arm pairs"],
        ),
        ("Arms that differ in one factor", cmp.pairs, ["arm", "vs_arm", "factor"], ["arm", "vs arm", "factor"]),
        ("Arms against the baselines", cmp.baselines, ["arm", "vs_baseline"], ["arm", "vs baseline"]),
    ):
        if len(table):
            rows = [[str(r[c]) for c in lead] + _difference_cells(r) for _, r in table.iterrows()]
            out += [f"{level} {title}", "", _table([*names, *DIFFERENCE_HEADER], rows), ""]
    return out


SURVIVE_NOTE = (
    "Each level's effect against its factor's reference, measured within each recipe: under the shared recipe "
    "(every arm trained with the reference arm's best parameters) and under the arms' own (each arm with its own "
    "best). An effect that holds only under the shared recipe may be the recipe suiting one arm better. Verdicts "
    "read the two 95% intervals, unadjusted for multiple rows: an interval that covers 0 means these data cannot "
    "show the effect under that recipe, not that it is 0. The reference arm is one set of fine-tunes under both."
)


def _survive_section(bench: str, survive: pd.DataFrame) -> str:
    """Side by side, each level's effect under the shared recipe and under the arms' own, with the verdict."""
    rows = []
    for _, r in survive.iterrows():
        sides = []
        for side in ("shared", "own"):
            row = {k: r[f"{side}_{k}"] for k in ("estimate", "ci_low", "ci_high", "over")}
            sides += [_interval(row, delta=True), _p(r[f"{side}_p_value"])]
        rows.append([r["factor"], r["level"], r["reference_level"], *sides, r["verdict"]])
    header = ["factor", "level", "vs reference", "Δ shared [95% CI]", "p", "Δ own [95% CI]", "p", "verdict"]
    return "\n".join([f"### {bench}: does the effect survive per-arm tuning?", "", _table(header, rows), ""]) + "\n"


STATS_NOTE = (
    "Intervals: 95%, estimate ± t × SE, the variance split into problems, training seeds and samples by a "
    "method-of-moments (ANOVA) estimate of the crossed design: problems shared by every arm (comparisons are "
    "paired on them), each arm's seeds its own, the seed-to-seed variance pooled over the trained arms; t on "
    "Welch-Satterthwaite degrees of freedom. They speak for other training runs of each arm and other problems "
    "like the benchmark's, unless `over` says otherwise (one seed per arm, or a seed variance on fewer than 4 "
    "degrees of freedom: then for these fine-tunes only, marked so). p: the same t test, two-sided, so p < 0.05 "
    "exactly when the interval excludes 0; Holm-adjusted within each table; blank where a row speaks for these "
    "fine-tunes only, since no test of them is a test of the data. The CSV tables also hold p_checkpoints, a "
    "sign-flip test over problems of whether these checkpoints differ: it ignores seed-to-seed variation and is "
    "not a test of the data's effect. Δ in percentage points, positive = the level (or first arm) is better. "
    "Variance: the share of each interval's variance from problems, seeds and samples; narrows most: which of "
    "twice the seeds, samples or problems would narrow it most. Method: framework/variance.py."
)


_RESULT_TABLES = ("arms", "levels", "effects", "comparisons", "baselines", "survive")


@dataclass(frozen=True)
class _Layout:
    """Where a report's files go: report.md at the root, the CSV tables and the PNG plots in folders of their own."""

    root: Path

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def plots(self) -> Path:
        return self.root / "plots"


@dataclass
class _Findings:
    """What the benchmarks add to the report, gathered one benchmark after the other: report.md's warnings and
    sections in the order it shows them, the result tables' parts (name -> one frame per comparison) and, where
    both recipes were compared, the survive sections."""

    warnings: list[str]
    sections: list[str] = field(default_factory=list)
    results: dict[str, list[pd.DataFrame]] = field(default_factory=lambda: {k: [] for k in _RESULT_TABLES})
    survival: list[str] = field(default_factory=list)


def write_report(loaded: LoadedSpec, plan: Plan, store: Store, out_dir: Path, *, track: bool = True) -> Path:
    """Write out_dir/report.md with its CSV tables and PNG plots; attach them to the sweep's MLflow parent run
    when tracking is reachable. Returns the path of report.md."""
    spec = loaded.spec
    layout = _Layout(Path(out_dir))
    layout.tables.mkdir(parents=True, exist_ok=True)
    layout.plots.mkdir(parents=True, exist_ok=True)
    frame = report_frame(plan, store)
    write_csv(frame, layout.tables / "cells.csv")
    found = _Findings(warnings=[*stale_evaluations(plan, store), *_cut_training_warnings(spec, frame)])
    for bench in [b.name for b in spec.eval.benchmarks]:
        _add_benchmark(found, spec, plan, store, frame[frame["benchmark"] == bench], bench, layout)
    sections = [*_generation_sections(plan, store, layout.tables), *found.sections]
    if spec.search is not None:
        sections += _search_sections(plan, store, layout.root, layout.plots, layout.tables, found.survival)
    _write_results(found.results, layout.tables)
    files = sorted(p for p in [*layout.tables.glob("*.csv"), *layout.plots.glob("*.png")])
    if track:
        tracking_line = _track(loaded, plan, store, frame, files, layout.root)
    else:
        tracking_line = "MLflow: not attempted (tracking disabled for this report)."
    path = layout.root / "report.md"
    write_text(path, _markdown(loaded, plan, frame, found.warnings, sections, files, layout.root, tracking_line))
    if track and tracking_line.startswith("MLflow: attached"):
        _attach(loaded, plan, store, [path], layout.root)
    return path


def _cut_training_warnings(spec: AblationSpec, frame: pd.DataFrame) -> list[str]:
    """A warning for each fine-tune that trained on examples cut at train.max_seq_len (once, not per benchmark)."""
    cut = frame.drop_duplicates("train_key")
    return [
        f"{r['cell']}: {r['train_truncated']} of {r['train_examples']} training examples were cut at "
        f"train.max_seq_len {spec.train.max_seq_len}: the model trained on no answer and no end of turn for "
        "them (train.overlong: drop leaves them out)"
        for _, r in cut[cut["train_truncated"].fillna(0) > 0].iterrows()
    ]


def _add_benchmark(
    found: _Findings, spec: AblationSpec, plan: Plan, store: Store, cells: pd.DataFrame, bench: str, layout: _Layout
) -> None:
    """A benchmark's part of the report: its cells' warnings, its comparisons within each recipe, its section with
    their tables and plots and, where both recipes were compared, whether each effect survives per-arm tuning."""
    found.warnings += [f"{bench}, {r['cell']}: {r['warnings']}" for _, r in cells.iterrows() if _text(r["warnings"])]
    arms, notes = benchmark_arms(plan, store, bench)
    found.warnings += notes
    if not arms:
        why = "its cells share no problem (see Warnings)" if cells["evaluated"].any() else "no cell evaluated yet"
        found.sections.append(f"## {bench}\n\nNo comparison on {bench}: {why}.\n")
        return
    cmps = _compare_recipes(found, spec, plan, arms, bench)
    columns = report_factor_columns(spec.factors)
    factors = [columns[f] for f in spec.factors]
    plots = _benchmark_plots(cmps, cells, bench, layout)
    found.sections.append(_benchmark_section(bench, cmps, cells, factors, plots))
    if {"shared", "own"} <= set(cmps):
        survive = survive_frame(cmps["shared"].effects, cmps["own"].effects)
        found.results["survive"].append(survive.assign(benchmark=bench))
        found.survival.append(_survive_section(bench, survive))


def _compare_recipes(
    found: _Findings, spec: AblationSpec, plan: Plan, arms: list[Arm], bench: str
) -> dict[str | None, Comparison]:
    """Compare a benchmark's arms within each recipe (one comparison, keyed None, without a search); each
    comparison's notes join the warnings and its tables the results, tagged with the benchmark and recipe."""
    columns = report_factor_columns(spec.factors)
    levels = {f: [lv.name for lv in fs.levels] for f, fs in spec.factors.items()}
    refs = {f: fs.reference_level for f, fs in spec.factors.items()}
    cmps: dict[str | None, Comparison] = {}
    for recipe, members in _by_recipe(plan, arms).items():
        cmp = cmps[recipe] = compare_arms(members, levels, refs, columns=columns)
        where = bench if recipe is None else f"{bench} ({recipe} recipe)"
        found.warnings += [f"{where}: {n}" for n in cmp.notes]
        tag = {"benchmark": bench} | ({} if recipe is None else {"recipe": recipe})
        for name, table in (
            ("arms", cmp.arms), ("levels", cmp.levels), ("effects", cmp.effects),
            ("comparisons", cmp.pairs), ("baselines", cmp.baselines),
        ):  # fmt: skip
            found.results[name].append(table.assign(**tag))
    return cmps


def _benchmark_plots(
    cmps: Mapping[str | None, Comparison], cells: pd.DataFrame, bench: str, layout: _Layout
) -> list[str]:
    """A benchmark's plots: accuracy by level under each recipe, then response length against accuracy; their
    paths relative to report.md, leaving out a plot with nothing to draw."""
    slug = metric_key(bench).replace("/", "_")
    made = []
    for recipe, cmp in cmps.items():
        name = f"{slug}-levels.png" if recipe is None else f"{slug}-{recipe}-levels.png"
        made.append(accuracy_by_level(cmp.levels, cmp.arms, bench, layout.plots / name))
    made.append(length_vs_accuracy(cells, bench, layout.plots / f"{slug}-length.png"))
    return [str(p.relative_to(layout.root)) for p in made if p]


def _generation_sections(plan: Plan, store: Store, tables: Path) -> list[str]:
    """The "Generated traces" section with its table, for a sweep that generates pool sources (none otherwise)."""
    generation = generation_frame(plan, store)
    if generation.empty:
        return []
    write_csv(generation, tables / "generation.csv")
    return [_generation_section(generation)]


def _write_results(results: Mapping[str, list[pd.DataFrame]], tables: Path) -> None:
    """One CSV per result table holding every benchmark's (and recipe's) rows, led by the columns that tell them
    apart; a table with no rows anywhere is not written."""
    for name, parts in results.items():
        if parts:
            df = pd.concat(parts, ignore_index=True)
            lead = [c for c in ("benchmark", "recipe") if c in df.columns]
            write_csv(df[[*lead, *[c for c in df.columns if c not in lead]]], tables / f"{name}.csv")


def _track(loaded: LoadedSpec, plan: Plan, store: Store, frame: pd.DataFrame, files: list[Path], out_dir: Path) -> str:
    """Attach the report's files to the sweep's parent run, making the runs the cells' log stages wrote to their
    current ones; the line report.md ends with, said on the console too when the files were not attached."""
    keys = {c.id: c.key for c in plan.cells}  # each cell's current run: the one its log stage wrote to
    current = {keys[c]: r for c, r in zip(frame["cell"], frame["mlflow_run_id"]) if isinstance(r, str) and r}
    tracking_line = _attach(loaded, plan, store, files, out_dir, current)
    if not tracking_line.startswith("MLflow: attached"):
        print(f"warning: {tracking_line}", file=sys.stderr)  # not only inside report.md
    return tracking_line


def _markdown(
    loaded: LoadedSpec,
    plan: Plan,
    frame: pd.DataFrame,
    warnings: list[str],
    sections: list[str],
    files: list[Path],
    out_dir: Path,
    tracking_line: str,
) -> str:
    """report.md: the question and the design, the warnings, the sections, the files and where they went."""
    spec = loaded.spec
    body = [
        f"# {spec.name}: ablation report",
        "",
        f"**Question.** {spec.description.strip() or '(the spec has no description)'}",
        "",
        "## Design",
        "",
        *_design(loaded, plan, frame),
        "",
        STATS_NOTE,
        "",
    ]
    if warnings:
        body += ["## Warnings", "", *[f"- {w}" for w in warnings], ""]
    body += sections
    body += ["## Files", "", *[f"- [{p.relative_to(out_dir)}]({p.relative_to(out_dir)})" for p in files], ""]
    body += [tracking_line, ""]
    return "\n".join(body)


def _by_recipe(plan: Plan, arms: list[Arm]) -> dict[str | None, list[Arm]]:
    """The arms of each recipe, the baselines in every one: comparisons never mix recipes. Without a search one
    group, keyed None."""
    recipe_of = {c.arm_id: c.recipe for c in plan.cells}
    recipes = list(dict.fromkeys(recipe_of[a.id] for a in arms if not a.baseline)) or [None]
    return {r: [a for a in arms if a.baseline or recipe_of[a.id] == r] for r in recipes}


def _search_sections(
    plan: Plan, store: Store, out_dir: Path, plots_dir: Path, tables: Path, survival: list[str]
) -> list[str]:
    """The "Does the effect survive per-arm tuning?" section and the "Search" section, with their tables."""
    search = plan.spec.search
    assert search is not None
    head = "## Does the effect survive per-arm tuning?\n\n"
    if search.mode == "shared":
        survive = head + (
            "Every arm was trained with the reference arm's best parameters (`search.mode: shared`): the effects "
            "above are measured under that one recipe, and whether they survive tuning each arm is not tested "
            "(`search.mode: per_arm` tests it).\n"
        )
    elif survival:
        survive = head + SURVIVE_NOTE + "\n\n" + "\n".join(survival)
    else:
        survive = head + "No benchmark has both recipes evaluated yet.\n"
    studies = studies_frame(plan, store)
    write_csv(studies, tables / "studies.csv")
    trials = trials_frame(plan, store)
    if not trials.empty:
        write_csv(trials, tables / "trials.csv")
    return [survive, search_section(plan, store, out_dir, plots_dir)]


def _attach(
    loaded: LoadedSpec,
    plan: Plan,
    store: Store,
    files: list[Path],
    out_dir: Path,
    current: dict[str, str] | None = None,
) -> str:
    """Log files to the sweep's parent run, keeping the tables/ and plots/ layout, and make `current` (cell key
    -> run id) the cells' current runs in MLflow; a line for the markdown."""
    spec = loaded.spec
    logs = plan.by_stage("log")
    configured = logs[0].config["tracking"]["uri"] if logs else configured_tracking_uri(spec)
    uri = tracking_uri(configured, results_base(store))
    experiment = spec.tracking.experiment or spec.name
    try:
        run_id = log_report(uri, experiment, spec.name, store, out_dir, files, current)
    except TrackingUnavailable as e:
        return f"MLflow: not reachable, report not attached ({e}). Re-run `ablate report` once it is."
    return f"MLflow: attached to the sweep's parent run `{run_id}` in experiment `{experiment}`."
