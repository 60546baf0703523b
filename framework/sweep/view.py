"""What `ablate plan`, `ablate status` and `ablate run` show in a terminal: the sweep at a glance.

A sweep's cells are named by their full level strings, which a terminal cuts to the first factor: here the levels
become short columns (only the factors that vary), the seeds of an arm share a row, the stages are columns of one
glyph per seed, and a summary line comes first. A big sweep is summarized (counts per stage and state, what failed
or runs, then a bounded number of rows); `--wide` lists everything as plain aligned text, which stays fast at
tens of thousands of rows where a rich table does not.

Everything here is a pure function of the plan and a job state per job id, except LiveRun, which follows a local
launcher's task states while `ablate run` waits.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from framework.sweep.plan import Plan
from framework.sweep.stages import STAGE_ORDER

MAX_ROWS = 40  # arms (or cells) the terminal view shows before it summarizes the rest
MAX_ATTENTION = 20  # failed / running jobs listed by name
MAX_GLYPHS = 5  # seeds per arm shown one glyph each; more are counted

GLYPH = {
    "done": "✓",
    "running": "▶",
    "queued": "○",
    "deferred": "↻",
    "failed": "✗",
    "cancelled": "✗",
    "skipped": "-",
    "partial": "◐",
    "pending": "·",
}
COLOR = {
    "done": "green",
    "running": "cyan",
    "queued": "blue",
    "deferred": "yellow",
    "failed": "red",
    "cancelled": "red",
    "skipped": "dim",
    "partial": "green",
    "pending": "dim",
}
# When a cell has several jobs of one stage (its evaluations), the state that needs attention first names them.
_PRECEDENCE = ("failed", "cancelled", "running", "queued", "deferred", "skipped")
LEGEND = "✓ done  ▶ running  ○ queued  ↻ deferred  ✗ failed  ◐ partly done  · pending"


@dataclass
class ArmRow:
    """One row of the view: an arm with its seeds (cells), or a baseline."""

    label: str  # "1", "2", ... or the baseline's name
    levels: dict[str, str]
    cells: list[Any] = field(default_factory=list)  # framework.sweep.grid.Cell

    @property
    def baseline(self) -> str | None:
        return self.cells[0].baseline


def cell_state(states: dict[str, str], job_ids: list[str]) -> str | None:
    """One state for a cell's jobs of one stage; None when it has none (a baseline trains nothing)."""
    if not job_ids:
        return None
    seen = {states.get(j, "pending") for j in job_ids}
    for state in _PRECEDENCE:
        if state in seen:
            return state
    if seen == {"done"}:
        return "done"
    return "partial" if "done" in seen else "pending"


def arm_rows(plan: Plan) -> list[ArmRow]:
    """Cells grouped by arm in plan order (replicates share a row), baselines last, each its own row."""
    rows: dict[str, ArmRow] = {}
    for cell in plan.cells:
        row = rows.get(cell.arm_id)
        if row is None:
            label = (
                cell.baseline if cell.baseline is not None else str(1 + sum(r.baseline is None for r in rows.values()))
            )
            row = rows[cell.arm_id] = ArmRow(label, shown_levels(cell))
        row.cells.append(cell)
    return list(rows.values())


def shown_levels(cell: Any) -> dict[str, str]:
    """A cell's levels as the views show them: its factors', and under a search the recipe it trains with."""
    return {**cell.level_map, **({"recipe": cell.recipe} if cell.recipe else {})}


def varying_factors(plan: Plan) -> list[str]:
    """Factors whose level differs between cells (and the recipe, where arms train with more than one): the
    others say nothing about which cell is which."""
    seen: dict[str, set[str]] = {}
    for cell in plan.cells:
        for factor, level in shown_levels(cell).items():
            seen.setdefault(factor, set()).add(level)
    return [f for f, levels in seen.items() if len(levels) > 1]


def grid_stages(plan: Plan) -> list[str]:
    """Stages worth a column: those with more than one job (the tiny model and the pool are shared by all cells and
    appear in the summary only)."""
    n = Counter(j.stage for j in plan.jobs.values())
    return [s for s in STAGE_ORDER if n[s] > 1]


def stage_counts(plan: Plan, states: dict[str, str]) -> dict[str, Counter[str]]:
    """Per stage, how many of its jobs are in each state (a job shared by cells counted once)."""
    out: dict[str, Counter[str]] = {s: Counter() for s in STAGE_ORDER}
    for jid, job in plan.jobs.items():
        out[job.stage][states.get(jid, "pending")] += 1
    return out


def summary_text(plan: Plan, states: dict[str, str], width: int = 80) -> Text:
    """The first line: what the grid is, then per stage its jobs done out of all, with any other states."""
    arms = arm_rows(plan)
    trained = [r for r in arms if r.baseline is None]
    n_seeds = len(plan.spec.seeds)
    baselines = len(arms) - len(trained)
    recipes = len({c.recipe for c in plan.cells if c.baseline is None})
    n_arms = len(trained) // max(recipes, 1)
    per_recipe = f" x {recipes} recipes" if recipes > 1 else ""
    grid = (
        f"{len(plan.cells)} cells: {n_arms} arm{'s' * (n_arms != 1)}{per_recipe} x {n_seeds} seed{'s' * (n_seeds != 1)}"
    )
    if baselines:
        grid += f" + {baselines} baseline{'s' * (baselines != 1)}"
    if not plan.spec.trains:
        grid = f"{len(plan.cells)} cells: {baselines} baseline{'s' * (baselines != 1)}, evaluation only (nothing is trained)"
    factors = varying_factors(plan)
    if factors:
        grid += f" (varying {', '.join(factors)})"
    text = Text(f"{plan.spec.name}: {grid}", style="bold")
    line = Text(f"{len(plan.jobs)} stage jobs, done/total:")
    for stage, counts in stage_counts(plan, states).items():
        total = sum(counts.values())
        if not total:
            continue
        chunk = Text(f"  {stage} ")
        chunk.append(f"{counts['done']}/{total}", style="green" if counts["done"] == total else "")
        others = [(s, n) for s, n in counts.items() if s not in ("done", "pending") and n]
        for state, n in sorted(others, key=lambda sn: _PRECEDENCE.index(sn[0]) if sn[0] in _PRECEDENCE else 99):
            chunk.append(f" {GLYPH.get(state, '?')}{n}", style=COLOR.get(state, ""))
        if line.cell_len + chunk.cell_len > width:  # break between stages, never inside one
            text.append("\n").append_text(line)
            line = Text(" ") + chunk
        else:
            line.append_text(chunk)
    return text.append("\n").append_text(line)


def _seed_cell(states: dict[str, str], plan: Plan, row: ArmRow, stage: str) -> Text:
    per_cell = [cell_state(states, plan.stage_jobs(c.id, stage)) for c in row.cells]
    if all(s is None for s in per_cell):
        return Text("—", style="dim")
    if len(per_cell) <= MAX_GLYPHS:
        text = Text()
        for s in per_cell:
            text.append(GLYPH[s] if s else "—", style=COLOR.get(s or "", "dim"))
        return text
    counts = Counter(per_cell)
    text = Text(f"{counts['done']}/{len(per_cell)}", style="green" if counts["done"] == len(per_cell) else "")
    for state in _PRECEDENCE:
        if counts[state]:
            text.append(f" {GLYPH[state]}{counts[state]}", style=COLOR[state])
    return text


def _seeds(row: ArmRow) -> str:
    if row.baseline is not None:
        return "—"
    seeds = [c.seed for c in row.cells]
    if len(seeds) > 3 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def _table(gap: int = 2, **kw: Any) -> Table:
    return Table(box=None, pad_edge=False, padding=(0, gap - 1, 0, 1), header_style="bold", **kw)


def arms_table(
    plan: Plan,
    states: dict[str, str],
    rows: list[ArmRow],
    *,
    levels: bool = True,
    stages: bool = True,
    gap: int = 2,
) -> Table:
    """The grid: a row per arm, a column per varying factor (header the factor, value the level; a factor's
    reference level dimmed), the seeds, and a column per stage with a glyph per seed."""
    factors = varying_factors(plan)
    reference = {f: plan.spec.factors[f].reference_level if f in plan.spec.factors else "shared" for f in factors}
    table = _table(gap)
    table.add_column("#", justify="right", no_wrap=True)
    if levels:
        for f in factors or ["arm"]:
            table.add_column(f, no_wrap=True)
        table.add_column("seeds", no_wrap=True)
    if stages:
        for s in grid_stages(plan):
            table.add_column(s, no_wrap=True)
    for row in rows:
        cells: list[RenderableType] = [row.label]
        if levels:
            if row.baseline is not None:
                cells += [Text("baseline", style="italic"), *("" for _ in factors[1:])]
            else:
                cells += (
                    [Text(row.levels[f], style="dim" if row.levels[f] == reference[f] else "") for f in factors]
                    if factors
                    else [row.cells[0].arm_id]
                )
            cells.append(_seeds(row))
        if stages:
            cells += [_seed_cell(states, plan, row, s) for s in grid_stages(plan)]
        table.add_row(*cells)
    return table


def _fits(table: Table, width: int) -> bool:
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(width=width)
    unbounded = console.options.update(max_width=1_000_000)
    return Measurement.get(console, unbounded, table).maximum <= width


def grid_tables(plan: Plan, states: dict[str, str], rows: list[ArmRow], width: int) -> list[Table]:
    """The grid in one table if it fits the width (with columns two spaces apart, else one); if not, the levels
    and the stages in a table each, their rows matched by #."""
    for gap in (2, 1):
        if _fits(table := arms_table(plan, states, rows, gap=gap), width):
            return [table]
    gap = 2 if _fits(arms_table(plan, states, rows, stages=False), width) else 1
    return [
        arms_table(plan, states, rows, stages=False, gap=gap),
        arms_table(plan, states, rows, levels=False),
    ]


def attention(plan: Plan, states: dict[str, str], details: dict[str, str], limit: int = MAX_ATTENTION) -> list[Text]:
    """Failed, deferred and running jobs by name, with the cells that need them and why (bounded)."""
    labels = {
        c.id: f"#{r.label}" + (f" seed {c.seed}" if c.seed is not None else "") for r in arm_rows(plan) for c in r.cells
    }
    out: list[Text] = []
    for state in ("failed", "cancelled", "deferred", "running"):
        jobs = [j for jid, j in plan.jobs.items() if states.get(jid) == state]
        if not jobs:
            continue
        out.append(Text(f"{state} ({len(jobs)}):", style=f"bold {COLOR[state]}"))
        for job in jobs[:limit]:
            cells = ", ".join(labels[c] for c in job.cells[:3]) + (
                f" +{len(job.cells) - 3}" if len(job.cells) > 3 else ""
            )
            line = Text(f"  {GLYPH[state]} {job.stage}/{job.key[:8]}", style=COLOR[state])
            line.append(f"  {cells}")
            if details.get(job.id):
                line.append(f"  {details[job.id]}", style="dim")
            out.append(line)
        if len(jobs) > limit:
            out.append(Text(f"  ... {len(jobs) - limit:,} more: --wide or --json for all", style="dim"))
    return out


def sweep_view(
    plan: Plan,
    states: dict[str, str],
    *,
    details: dict[str, str] | None = None,
    width: int = 80,
    max_rows: int = MAX_ROWS,
) -> Group:
    """The terminal view of `plan` and `status`: summary, jobs that need attention, the grid (bounded), a hint."""
    rows = arm_rows(plan)
    trained = [r for r in rows if r.baseline is None]
    shown = rows if len(rows) <= max_rows else trained[:max_rows] + [r for r in rows if r.baseline is not None]
    parts: list[RenderableType] = [summary_text(plan, states, width)]
    parts += attention(plan, states, details or {})
    parts += grid_tables(plan, states, shown, width)
    parts.append(Text(LEGEND, style="dim"))
    if len(shown) < len(rows):
        parts.append(Text(f"... {len(rows) - len(shown):,} more rows: --wide or --json for all", style="bold"))
    return Group(*parts)


# ------------------------------------------------------------------------------------------------- wide
def aligned(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    """Plain left-aligned columns: linear in the rows, so it stays fast where a rich table takes minutes."""
    rows = [header, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]


def wide_plan_lines(plan: Plan, states: dict[str, str]) -> list[str]:
    """`plan --wide`: a line per cell with every factor's level, its seed and key, and each stage's jobs (state glyph
    and key) — complete, however long the lines."""
    factors = list(dict.fromkeys([f for c in plan.cells for f in shown_levels(c)]))
    header = ["baseline", *factors, "seed", "key", *STAGE_ORDER]
    rows = []
    for c in plan.cells:
        level = shown_levels(c)
        stage_cols = [
            " ".join(GLYPH[states.get(j, "pending")] + j.split("/")[1][:8] for j in plan.stage_jobs(c.id, s)) or "—"
            for s in STAGE_ORDER
        ]
        name = c.baseline or ""
        rows.append(
            [
                name or "",
                *(level.get(f, "—") for f in factors),
                "—" if c.seed is None else str(c.seed),
                c.key[:8],
                *stage_cols,
            ]
        )
    if not any(r[0] for r in rows):
        header, rows = header[1:], [r[1:] for r in rows]
    return aligned(header, rows)


def wide_status_lines(plan: Plan, rows: list[dict[str, Any]]) -> list[str]:
    """`status --wide`: a line per cell and stage job with its state, detail and log (the --json rows as text)."""
    cells = {c.id: c for c in plan.cells}
    factors = list(dict.fromkeys([f for c in plan.cells for f in shown_levels(c)]))
    out = []
    for r in rows:
        c = cells[r["cell"]]
        level = shown_levels(c)
        who = [c.baseline or "", *(level.get(f, "—") for f in factors)]
        seed = "—" if c.seed is None else str(c.seed)
        out.append([*who, seed, r["stage"], r["key"][:8], r["state"], r["detail"] or "", r["log"]])
    header = ["baseline", *factors, "seed", "stage", "key", "state", "detail", "log"]
    if not any(r[0] for r in out):
        header, out = header[1:], [r[1:] for r in out]
    return aligned(header, out)


# ------------------------------------------------------------------------------------------ data stats
def data_table(plan: Plan, stats: dict[str, dict[str, Any]], max_rows: int = MAX_ROWS) -> list[RenderableType]:
    """The built training sets' statistics, a row per cell named by its arm's # and seed (bounded)."""
    labels = {c.id: (r.label, "" if c.seed is None else str(c.seed)) for r in arm_rows(plan) for c in r.cells}
    table = _table(title="training sets", title_justify="left", title_style="bold")
    for name in ("#", "seed", "examples", "tokens", "keywords", "correct", "sources", "topics"):
        table.add_column(name, justify="right" if name in ("#", "examples", "tokens") else "left")
    items = list(stats.items())
    for cid, st in items[:max_rows]:
        correct = "—" if st.get("correct_rate") is None else f"{st['correct_rate']:.2f}"
        mix = lambda m: " ".join(f"{k}:{v}" for k, v in (m or {}).items())  # noqa: E731
        table.add_row(
            *labels[cid],
            str(st["examples"]),
            f"{st['tokens']['mean']:.0f}",
            f"{st['keyword_rate']:.2f}",
            correct,
            mix(st.get("source_mix")),
            mix(st.get("topic_mix")),
        )
    parts: list[RenderableType] = [table]
    if len(items) > max_rows:
        parts.append(Text(f"... {len(items) - max_rows:,} more training sets: --wide or --json for all", style="dim"))
    return parts


# ------------------------------------------------------------------------------------------- live run
def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def measured_durations(store: Any, stages: Iterable[str], per_stage: int = 50) -> dict[str, list[float]]:
    """Durations (s) the store's manifests recorded for finished jobs, the newest `per_stage` of each stage."""
    out: dict[str, list[float]] = {}
    for stage in stages:
        stage_dir = Path(store.root) / stage
        try:
            done = [p for p in stage_dir.iterdir() if (p / "SUCCESS").is_file()]
        except FileNotFoundError:
            continue
        done.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for p in done[:per_stage]:
            try:
                out.setdefault(stage, []).append(float(json.loads((p / "manifest.json").read_text())["duration_s"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return out


@dataclass
class RunProgress:
    """What the live view of `ablate run` knows: each task's stage and state, when it started and finished (by the
    clock passed in), and the durations measured so far, per stage and per job (a task builds `weights[task]` jobs
    of its stage, the evaluations of one checkpoint say; the store's manifests time each job)."""

    stages: dict[str, str]  # task id -> stage
    durations: dict[str, list[float]] = field(default_factory=dict)  # stage -> seconds per job
    started: dict[str, float] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    t0: float = 0.0
    weights: dict[str, int] = field(default_factory=dict)  # task id -> its jobs; 1 where not given
    peak: dict[str, int] = field(default_factory=dict)  # stage -> most of its tasks seen running at once

    def weight(self, tid: str) -> int:
        return max(1, self.weights.get(tid, 1))

    def update(self, states: dict[str, str], now: float, took: dict[str, float] | None = None) -> None:
        """Record state changes; `took` gives measured durations of tasks just done (else start to finish)."""
        for tid, state in states.items():
            before = self.states.get(tid)
            if state == before:
                continue
            if state == "running":
                self.started.setdefault(tid, now)
            elif before == "running" or (state in ("done", "failed") and tid in self.started):
                self.finished[tid] = now
                if state == "done":
                    took_s = (took or {}).get(tid, now - self.started.get(tid, now))
                    self.durations.setdefault(self.stages[tid], []).append(took_s / self.weight(tid))
            self.states[tid] = state
        running = Counter(self.stages[t] for t, s in self.states.items() if s == "running" and t in self.stages)
        for stage, n in running.items():
            self.peak[stage] = max(self.peak.get(stage, 0), n)

    def _eta(self, stage: str, tids: list[str], now: float) -> tuple[float | None, bool]:
        """Seconds until the stage's open tasks are done, and whether its running ones have all outrun the
        estimate (None, True: overdue). A task is expected to take the mean measured per job times its jobs; the
        work left is spread over as many tasks as the stage has been seen running at once, at most as many as
        are open, and never ends before the longest running task's own remainder."""
        measured = self.durations.get(stage)
        queued = [t for t in tids if _run_state(self.states.get(t, "pending")) == "queued"]
        running = [t for t in tids if self.states.get(t) == "running"]
        if not (queued or running):
            return 0.0, False
        if not measured:
            return None, False
        mean = sum(measured) / len(measured)
        remaining = [max(0.0, mean * self.weight(t) - (now - self.started.get(t, now))) for t in running]
        left = sum(mean * self.weight(t) for t in queued) + sum(remaining)
        if left <= 0:
            return None, True
        at_once = max(1, min(self.peak.get(stage, 1), len(queued) + len(running)))
        return max(left / at_once, max(remaining, default=0.0)), False

    def rows(self, now: float) -> list[dict[str, Any]]:
        """Per stage: counts by state, elapsed since its first start, an ETA and whether it is overdue."""
        out = []
        for stage in dict.fromkeys(self.stages.values()):
            tids = [t for t, s in self.stages.items() if s == stage]
            counts = Counter(_run_state(self.states.get(t, "pending")) for t in tids)
            starts = [self.started[t] for t in tids if t in self.started]
            ends = [self.finished[t] for t in tids if t in self.finished]
            elapsed = None
            if starts:
                elapsed = (now if counts["running"] or counts["queued"] else max(ends, default=now)) - min(starts)
            eta, overdue = self._eta(stage, tids, now)
            row = {"stage": stage, **{k: counts[k] for k in RUN_COLUMNS}, "elapsed": elapsed}
            out.append({**row, "eta": eta, "overdue": overdue})
        return out


RUN_COLUMNS = ("done", "running", "queued", "failed", "deferred", "skipped")


def _run_state(state: str) -> str:
    if state == "pending":
        return "queued"
    if state in ("cancelled",):
        return "failed"
    return state


def _eta_text(row: dict[str, Any]) -> str:
    if row["overdue"]:
        return "overdue"
    if row["eta"] is None:
        return "?"
    return _clock(row["eta"]) if row["eta"] else ""  # 0: nothing left to run


def run_table(progress: RunProgress, now: float) -> Table:
    """The live view's table: a row per stage with its task counts, elapsed time and ETA, then the total."""
    rows = progress.rows(now)
    left = "?" if any(r["eta"] is None for r in rows) else _clock(sum(r["eta"] for r in rows))  # mostly in turn
    title = f"elapsed {_clock(now - progress.t0)}, ETA {left}"
    table = _table(title=title, title_justify="left", title_style="bold")
    table.add_column("stage")
    for name in (*RUN_COLUMNS, "elapsed", "eta"):
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(
            r["stage"],
            *(Text(str(r[k]), style=COLOR[k] if r[k] else "dim") for k in RUN_COLUMNS),
            _clock(r["elapsed"]) if r["elapsed"] is not None else "",
            _eta_text(r),
        )
    return table


class LiveRun:
    """The live view of `ablate run` in a terminal: the launcher's lines scroll above a table of its tasks by stage
    (done / running / queued / failed, elapsed, ETA) that redraws itself. Used as the launcher's echo."""

    def __init__(self, tasks: list[Any], status: Any, store: Any, console: Any, *, clock: Any = None):
        import threading

        self.clock = clock or time.monotonic
        self.status = status  # () -> {task id: state}, the launcher's
        self.console = console
        stages = {t.id: t.stage for t in tasks}
        durations = measured_durations(store, set(stages.values()))
        weights = {t.id: len(t.keys) for t in tasks}
        self.progress = RunProgress(stages, durations, t0=self.clock(), weights=weights)
        self._lock = threading.Lock()

    def __rich__(self) -> RenderableType:
        now = self.clock()
        with self._lock:
            self.progress.update(self.status(), now)
            return run_table(self.progress, now)

    def __call__(self, line: str) -> None:
        with self._lock:
            self.progress.update(self.status(), self.clock())
        try:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        except OSError:  # the terminal hung up: later output (the live redraws, the CLI's summary) goes nowhere
            with contextlib.suppress(OSError, ValueError, AttributeError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            raise  # the launcher stops printing (LocalLauncher._say)


def live_run(launcher: Any, tasks: list[Any], store: Any, *, console: Any = None) -> Any:
    """A context in which `launcher` prints through a LiveRun when it prints to stdout and stdout is a terminal;
    elsewhere (a log file, Slurm, a pipe, an echo of the caller's) it changes nothing: the plain lines stay."""
    from rich.console import Console
    from rich.live import Live

    console = console or Console()
    if launcher.echo is not print or not console.is_terminal or console.is_dumb_terminal:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def running() -> Any:
        view = LiveRun(tasks, launcher.status, store, console)
        echo, launcher.echo = launcher.echo, view
        try:
            with Live(view, console=console, refresh_per_second=1, redirect_stdout=False, redirect_stderr=False):
                yield view
        finally:
            launcher.echo = echo

    return running()
