"""The terminal views of a sweep: readable at 80 columns, bounded for big sweeps, and the live view of a run."""

from __future__ import annotations

import copy
import io
import re
import sys
from pathlib import Path

from rich.console import Console

from framework.spec import load_spec, spec_from_dict
from framework.store import Store
from framework.sweep.plan import build_plan
from framework.sweep.view import (
    LiveRun,
    RunProgress,
    live_run,
    measured_durations,
    run_table,
    sweep_view,
    wide_plan_lines,
)
from launchers.base import pending_tasks
from launchers.local import LocalLauncher
from tests.helpers import MINIMAL

ROOT = Path(__file__).resolve().parents[3]


def render(renderable, width: int = 80, **kw) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), **kw)
    console.print(renderable)
    return console.export_text()


def big_plan(levels: int = 10, keywords: int = 5, seeds: int = 2):
    data = copy.deepcopy(MINIMAL)
    data["factors"] = {
        "source": {"levels": [f"src{i}" for i in range(levels)]},
        "keywords": {"levels": {f"kw{i}": {"mode": "replace", "replacement": f"w{i}"} for i in range(keywords)}},
    }
    data["seeds"] = list(range(seeds))
    return build_plan(spec_from_dict(data))


def test_toy_paper_plan_reads_at_80_columns_with_every_level_of_every_factor():
    loaded = load_spec(ROOT / "ablations" / "toy-paper.yaml")
    plan = build_plan(loaded.spec, loaded.path)
    text = render(sweep_view(plan, {}), width=80)
    lines = text.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    words = set(re.findall(r"[\w-]+", text))
    for name, factor in loaded.spec.factors.items():
        assert name in words, f"no column for factor {name}"
        for level in factor.levels:
            assert level.name in words, f"level {name}={level.name} is not shown"
    # Each arm is one row, whose cells are its levels in the factors' order.
    for i, cell in enumerate(c for c in plan.cells if c.seed == 0):
        row = next(line for line in lines if line.split()[:1] == [str(i + 1)])
        assert row.split()[1 : 1 + len(cell.levels)] == [level for _, level in cell.levels]
        assert "0,1,2" in row


def test_a_big_sweep_shows_a_bounded_number_of_rows_and_says_how_to_see_the_rest():
    plan = big_plan()  # 50 arms x 2 seeds + a baseline
    states = {j.id: "done" for j in plan.by_stage("data")[:7]}
    failed = plan.by_stage("train")[3]
    states[failed.id] = "failed"
    text = render(sweep_view(plan, states, details={failed.id: "RuntimeError: boom"}, max_rows=12), width=80)
    rows = [line for line in text.splitlines() if re.match(r"\s*\d+\s+src", line)]
    assert [int(r.split()[0]) for r in rows] == list(range(1, 13))
    assert "... 38 more rows: --wide or --json for all" in text
    assert "base" in text  # a baseline row is always shown
    assert "data 7/100" in text and "train 0/100 ✗1" in text  # counts per stage and state, first
    assert text.index("failed (1):") < text.index("RuntimeError: boom") < text.index(rows[0])
    assert f"train/{failed.key[:8]}" in text


def test_wide_lists_every_cell_in_full():
    plan = big_plan()
    lines = wide_plan_lines(plan, {})
    assert len(lines) == 1 + len(plan.cells)
    for cell in plan.cells:
        assert any(cell.key[:8] in line for line in lines)
    assert all("…" not in line for line in lines)


def test_status_glyphs_per_seed_and_partly_done_cells():
    plan = big_plan(levels=2, keywords=1, seeds=3)
    first = plan.cells[0]
    states = {plan.cell_jobs[first.id]["train"][0]: "done", plan.cell_jobs[plan.cells[1].id]["train"][0]: "running"}
    text = render(sweep_view(plan, states), width=80)
    row = next(line for line in text.splitlines() if line.split()[:2] == ["1", "src0"])
    assert "✓▶·" in row  # train: seed 0 done, seed 1 running, seed 2 pending


# ------------------------------------------------------------------------------------------- live run
def test_run_progress_counts_states_and_estimates_from_measured_durations():
    progress = RunProgress({"data/a": "data", "data/b": "data", "train/c": "train", "train/d": "train"})
    progress.update({"data/a": "running", "data/b": "pending", "train/c": "pending", "train/d": "pending"}, 0.0)
    progress.update({"data/a": "done", "data/b": "running", "train/c": "pending", "train/d": "pending"}, 10.0)
    rows = {r["stage"]: r for r in progress.rows(now=14.0)}
    assert (rows["data"]["done"], rows["data"]["running"], rows["data"]["queued"]) == (1, 1, 0)
    assert rows["data"]["elapsed"] == 14.0
    assert rows["data"]["eta"] == 6.0  # measured 10 s, running for 4
    assert rows["train"]["queued"] == 2 and rows["train"]["eta"] is None  # nothing measured yet
    text = render(run_table(progress, 14.0), width=100, force_terminal=True)
    assert "elapsed 14s, ETA ?" in text
    assert re.search(r"data\s+1\s+1\s+0\s+0\s+0\s+0\s+14s\s+6s", text)
    progress.durations["train"] = [60.0, 120.0]  # as the store's manifests would give
    progress.update({"data/b": "failed", "train/c": "running", "data/a": "done", "train/d": "pending"}, 20.0)
    rows = {r["stage"]: r for r in progress.rows(now=30.0)}
    assert rows["data"]["failed"] == 1 and rows["data"]["eta"] == 0.0
    assert rows["train"]["eta"] == 90.0 + 80.0  # one queued (mean 90) after one running 10 s of 90, one at a time


def test_the_eta_spreads_the_work_left_over_the_tasks_seen_running_at_once():
    """Eight evaluations at once on an 8-GPU node finish eight times sooner than one at a time; two 2-process
    trainings at once on 4 CPU slots take half as long as one, not a quarter: what ran at once, not the slots."""
    evals = RunProgress({f"eval/{i}": "eval" for i in range(16)}, {"eval": [10.0]})
    evals.update({f"eval/{i}": "running" if i < 8 else "pending" for i in range(16)}, 0.0)
    assert evals.rows(now=0.0)[0]["eta"] == 16 * 10.0 / 8
    evals.update({f"eval/{i}": "done" if i < 8 else "running" if i < 10 else "pending" for i in range(16)}, 10.0)
    assert evals.peak["eval"] == 8 and evals.rows(now=10.0)[0]["eta"] == 8 * 10.0 / 8  # a gap between starts
    evals.update({f"eval/{i}": "running" if i in (9, 15) else "done" for i in range(16)}, 30.0)
    evals.durations["eval"] = [10.0]
    assert evals.rows(now=31.0)[0]["eta"] == 9.0  # eval/9 is overdue, eval/15 has 9 s left: not 9 / 2

    trainings = RunProgress({f"train/{i}": "train" for i in range(4)}, {"train": [100.0]})
    trainings.update({"train/0": "running", "train/1": "running", "train/2": "pending", "train/3": "pending"}, 0.0)
    assert trainings.rows(now=0.0)[0]["eta"] == 4 * 100.0 / 2


def test_a_task_of_several_jobs_is_expected_to_take_their_time_and_measures_per_job():
    """The store times each benchmark's evaluation; a task evaluates all benchmarks of a checkpoint at once."""
    progress = RunProgress({"eval/a+2": "eval", "eval/b+2": "eval"}, {"eval": [10.0]}, weights={"eval/a+2": 3})
    progress.weights["eval/b+2"] = 3
    progress.update({"eval/a+2": "running", "eval/b+2": "pending"}, 0.0)
    assert progress.rows(now=0.0)[0]["eta"] == 60.0  # 2 tasks x 3 benchmarks x 10 s, one at a time
    progress.update({"eval/a+2": "done", "eval/b+2": "running"}, 60.0)
    assert progress.durations["eval"] == [10.0, 20.0]  # the task's 60 s over its 3 jobs
    assert progress.rows(now=60.0)[0]["eta"] == 3 * 15.0


def test_deferred_tasks_have_their_own_column_and_an_overrun_stage_says_overdue():
    stages = {"train/a": "train", "train/b": "train", "eval/c": "eval", "eval/d": "eval"}
    progress = RunProgress(stages, {"train": [10.0], "eval": [5.0]})
    progress.update({"train/a": "running", "train/b": "running", "eval/c": "pending", "eval/d": "pending"}, 0.0)
    progress.update({"train/a": "deferred", "train/b": "running", "eval/c": "skipped", "eval/d": "pending"}, 8.0)
    rows = {r["stage"]: r for r in progress.rows(now=25.0)}
    assert (rows["train"]["deferred"], rows["train"]["skipped"], rows["eval"]["skipped"]) == (1, 0, 1)
    assert rows["train"]["eta"] is None and rows["train"]["overdue"]  # running 25 s, measured 10 s
    text = render(run_table(progress, 25.0), width=80, force_terminal=True)
    assert all(len(line) <= 80 for line in text.splitlines())
    header = next(line for line in text.splitlines() if "deferred" in line)
    assert header.split() == ["stage", "done", "running", "queued", "failed", "deferred", "skipped", "elapsed", "eta"]
    assert re.search(r"train\s+0\s+1\s+0\s+0\s+1\s+0\s+25s\s+overdue", text)
    assert "ETA ?" in text


def test_measured_durations_come_from_the_store_manifests(tmp_path):
    store = Store(tmp_path / "store")
    for key in ("a1", "b2"):
        with store.build("data", key):
            pass
    got = measured_durations(store, ["data", "train"])
    assert set(got) == {"data"} and len(got["data"]) == 2 and all(d >= 0 for d in got["data"])


def _launcher(tmp_path):
    data = copy.deepcopy(MINIMAL)
    data["model"] = {"tiny": {}}
    data["seeds"] = [0]
    spec = spec_from_dict(data)
    store = Store(tmp_path / "store")
    tasks = pending_tasks(build_plan(spec), store)
    code = (
        "import sys; from framework.store import Store\n"
        "store = Store(sys.argv[1])\n"
        "for k in sys.argv[3:]:\n"
        "    with store.build(sys.argv[2], k): pass\n"
    )
    cmd = lambda t: [sys.executable, "-c", code, str(store.root), t.stage, *t.keys]  # noqa: E731
    launcher = LocalLauncher(spec, "spec.yaml", store, command=cmd)
    launcher.submit(tasks)
    return launcher, tasks, store


def test_a_terminal_gets_the_live_view(tmp_path):
    launcher, tasks, store = _launcher(tmp_path)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with live_run(launcher, tasks, store, console=console) as view:
        assert isinstance(launcher.echo, LiveRun)
        states = launcher.wait(poll_s=0.01)
    assert set(states.values()) == {"done"} and launcher.echo is print
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "start  model/" in text and "done   log/" in text  # the launcher's lines still scroll past
    trainings = sum(t.stage == "train" for t in tasks)
    assert re.search(rf"train\s+{trainings}\s+0\s+0\s+0\s+0", text.split("done   log/")[-1])  # all done at the end
    assert view.progress.durations["train"]


def test_output_that_is_not_a_terminal_stays_plain_lines(tmp_path, capsys):
    launcher, tasks, store = _launcher(tmp_path)
    with live_run(launcher, tasks, store):  # stdout is captured: not a terminal
        assert launcher.echo is print
        launcher.wait(poll_s=0.01)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines and all(re.match(r"(start |done  )\s*\S+/", line) for line in lines)
    assert "\x1b[" not in out and "elapsed" not in out
