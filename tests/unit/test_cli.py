"""The `ablate` command line: exit codes, one clear line per problem, machine-readable output."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import framework.sweep.execute
from framework.cli import main
from framework.sweep.stages import STAGES, Stage


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "framework.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_validate_ok_and_bad(write_spec, minimal):
    good = write_spec(minimal, "good.yaml")
    minimal["modle"] = minimal.pop("model")
    minimal["n_examples"] = "x"
    bad = write_spec(minimal, "bad.yaml")
    out = run_cli("validate", str(good), str(bad))
    assert out.returncode == 2
    assert "ok  " in out.stdout and "mini" in out.stdout
    lines = [line for line in out.stderr.strip().splitlines() if not line.startswith(f"note: {good}: ")]
    assert all(line.startswith("error: ") for line in lines)
    assert f"note: {good}: pool[0]: hub dataset 'nvidia/Nemotron-Math-HumanReasoning' is read at" in out.stderr
    assert any("modle" in line and 'did you mean "model"' in line for line in lines)
    assert any("n_examples" in line for line in lines)
    assert "Traceback" not in out.stderr


def test_missing_spec_file_is_exit_2_without_traceback(tmp_path):
    out = run_cli("plan", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2 and "no such file" in out.stderr and "Traceback" not in out.stderr


def test_plan_json_lists_cells_jobs_and_counts(write_spec, minimal, in_tmp, capsys):
    path = write_spec(minimal)
    assert main(["plan", str(path), "--json", "--no-build"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == "mini" and len(data["cells"]) == 9
    cell = data["cells"][0]
    assert cell["levels"] == {"source": "qwq_32b_preview", "keywords": "keep"} and cell["seed"] == 0
    assert set(cell["stages"]) == {"model", "generate", "pool", "data", "search", "train", "eval", "log"}
    assert cell["stages"]["generate"] == []  # no generated source
    assert data["counts"]["pool"] == {"jobs": 1, "done": 0}  # shared stage counted once
    job_ids = {j["id"] for j in data["jobs"]}
    assert all(d in job_ids for j in data["jobs"] for d in j["deps"])
    assert any(n.startswith("pool[0]: hub dataset 'nvidia/Nemotron-Math-HumanReasoning'") for n in data["notes"])
    assert data["generation"] == []


def test_plan_shows_what_generations_will_ask(write_spec, in_tmp, capsys):
    endpoint = {
        "base_url": "http://127.0.0.1:9/v1",
        "model": "t",
        "price_input_per_mtok": 1,
        "price_output_per_mtok": 2,
    }
    generated = {"problems": {"preset": "toy", "limit": 8}, "teacher": {"endpoint": endpoint}, "samples": 3}
    spec = {
        "name": "g",
        "model": {"name_or_path": "toy:base"},
        "pool": [{"preset": "toy"}, {"source": "t", "generate": {**generated, "sampling": {"max_tokens": 10}}}],
        "factors": {"source": {"levels": ["long_cot", "t"]}},
        "eval": {"benchmarks": [{"name": "toy", "limit": 2}], "samples": 1, "sampling": {"max_tokens": 64}},
    }
    path = write_spec(spec)
    assert main(["plan", str(path), "--json"]) == 0  # builds nothing that waits for the generation
    (gen,) = json.loads(capsys.readouterr().out)["generation"]
    assert gen["requests"] % 3 == 0 and gen["journaled"] == 0 and gen["max_output_tokens"] == gen["requests"] * 10
    assert gen["cost_max"] > 0 and gen["source"] == "pool[1] t"
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"pool[1] t (t): {gen['requests']} requests (0 already answered" in out and "cost at most" in out


def test_exec_unknown_key_and_unimplemented_stage(write_spec, minimal, in_tmp, capsys):
    path = write_spec(minimal)
    assert main(["exec", "pool", "0000", "--spec", str(path)]) == 2
    assert "no pool job with key '0000'" in capsys.readouterr().err
    main(["plan", str(path), "--json", "--no-build"])
    data = json.loads(capsys.readouterr().out)
    train = next(j for j in data["jobs"] if j["stage"] == "train")
    assert main(["exec", "train", train["key"], "--spec", str(path)]) == 2  # its data is not built yet
    assert "to be done first" in capsys.readouterr().err


calls: list[str] = []


def fake_pool(ctx) -> None:
    """A stand-in stage body: the exec machinery is under test here, not the pool."""
    calls.append(ctx.job.key)
    (ctx.out / "pool.txt").write_text("annotated")


def test_exec_is_idempotent_and_force_rebuilds(write_spec, minimal, in_tmp, capsys, monkeypatch):
    monkeypatch.setitem(STAGES, "pool", Stage("pool", "1", f"{__name__}:fake_pool", "cpu", "test"))
    monkeypatch.setattr(framework.sweep.execute, "stage_function", lambda s: fake_pool)
    calls.clear()
    path = write_spec(minimal)
    main(["plan", str(path), "--json", "--no-build"])
    key = next(j["key"] for j in json.loads(capsys.readouterr().out)["jobs"] if j["stage"] == "pool")
    assert main(["exec", "pool", key, "--spec", str(path)]) == 0
    assert main(["exec", "pool", key, "--spec", str(path)]) == 0
    assert calls == [key]
    out = capsys.readouterr().out
    assert "already done" in out
    done = in_tmp / "results" / "mini" / "store" / "pool" / key
    assert (done / "pool.txt").read_text() == "annotated" and (done / "SUCCESS").exists()
    manifest = json.loads((done / "manifest.json").read_text())
    assert manifest["stage"] == "pool" and manifest["code_version"] == "1" and "config" in manifest
    main(["plan", str(path), "--json", "--no-build"])
    assert json.loads(capsys.readouterr().out)["counts"]["pool"]["done"] == 1
    assert main(["exec", "pool", key, "--spec", str(path), "--force"]) == 0
    assert calls == [key, key]


def test_status_json(write_spec, minimal, in_tmp, capsys):
    path = write_spec(minimal)
    assert main(["status", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["stages"]
    assert rows and all(r["state"] == "pending" for r in rows)


@pytest.mark.parametrize("section", [None, "train", "eval.sampling", "factors.keywords", "launcher.slurm"])
def test_schema_documents_every_field(section, capsys):
    assert main(["schema", *([section] if section else [])]) == 0
    text = capsys.readouterr().out
    assert text.count("=") >= 3


def test_exec_takes_the_short_keys_the_tables_show(write_spec, minimal, in_tmp, capsys, monkeypatch):
    monkeypatch.setattr(framework.sweep.execute, "stage_function", lambda s: fake_pool)
    calls.clear()
    path = write_spec(minimal)
    main(["plan", str(path), "--json", "--no-build"])
    key = next(j["key"] for j in json.loads(capsys.readouterr().out)["jobs"] if j["stage"] == "pool")
    assert main(["exec", "pool", key[:6], "--spec", str(path)]) == 0
    assert calls == [key] and f"pool/{key}: done" in capsys.readouterr().out


def test_report_with_nothing_evaluated_is_a_user_error_that_writes_nothing(write_spec, minimal, in_tmp, capsys):
    path = write_spec(minimal)
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert "nothing to report for mini: no cell has been evaluated" in err and "Traceback" not in err
    assert not (in_tmp / "results" / "mini" / "report.md").exists() and not (in_tmp / "results" / "mlflow.db").exists()


def test_unusable_paths_and_uris_are_user_errors(write_spec, minimal, in_tmp, capsys, monkeypatch):
    path = write_spec(minimal)
    blocker = in_tmp / "a-file"
    blocker.write_text("")
    assert main(["plan", str(path), "--results-dir", str(blocker)]) == 2
    assert f"the results directory {blocker} is not a directory" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "::garbage::")
    assert main(["ui", str(path)]) == 2
    assert "MLFLOW_TRACKING_URI: tracking URI '::garbage::' is not a URI" in capsys.readouterr().err
    minimal["tracking"] = {"uri": "notascheme://x"}
    assert main(["validate", str(write_spec(minimal, "uri.yaml"))]) == 2
    assert "unknown scheme 'notascheme'" in capsys.readouterr().err


def test_json_commands_print_their_errors_as_json(write_spec, minimal, in_tmp, capsys):
    minimal["modle"] = minimal.pop("model")
    path = write_spec(minimal)
    for command in ("plan", "status"):
        assert main([command, str(path), "--json"]) == 2
        data = json.loads(capsys.readouterr().out)
        assert data["exit_code"] == 2 and any('did you mean "model"' in e for e in data["errors"])


def test_bad_options_are_user_errors(write_spec, minimal, in_tmp, capsys):
    assert run_cli("ui", "x.yaml", "--port", "99999").returncode == 2
    assert main(["schema", "trian"]) == 2
    assert "no section 'trian' (did you mean \"train\"?)" in capsys.readouterr().err
    assert main(["schema", "factors.bogus"]) == 2
    path = write_spec(minimal)
    cell = "source=qwq_32b_preview,keywords=keep,seed=0"
    assert main(["data", str(path), cell, "--export", "out.txt"]) == 2
    assert "name a .jsonl, .csv or .parquet file" in capsys.readouterr().err
    assert main(["data", str(path), cell, "--export", "no/dir/out.jsonl"]) == 2
    assert "no directory" in capsys.readouterr().err
    assert main(["data", str(path), ""]) == 2  # an empty id is not the start of every cell's key
    assert "no cell ''" in capsys.readouterr().err
    out = run_cli("data", str(path), cell, "--show", "-1")
    assert out.returncode == 2 and "is not a count" in out.stderr


def test_exec_runs_every_key_when_one_fails(write_spec, minimal, in_tmp, capsys, monkeypatch):
    def picky(ctx) -> None:
        if not calls:
            calls.append("boom")
            raise RuntimeError("first job breaks")
        fake_pool(ctx)

    monkeypatch.setattr(framework.sweep.execute, "stage_function", lambda s: picky)
    calls.clear()
    minimal["eval"]["benchmarks"] = ["aime24", "aime25"]  # the base model's two evals: a grouped task, no deps
    path = write_spec(minimal)
    main(["plan", str(path), "--json", "--no-build"])
    jobs = json.loads(capsys.readouterr().out)["jobs"]
    evals = [j["key"] for j in jobs if j["stage"] == "eval" and not j["deps"]]
    assert len(evals) == 2
    assert main(["exec", "eval", *evals, "--spec", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"eval/{evals[0]}: not done: RuntimeError: first job breaks" in err
    assert err.count("first job breaks") == 1 and "1 of 2 eval jobs not done" in err  # said once, then counted
    assert calls == ["boom", evals[1]]  # the second job ran after the first failed


def test_plan_reports_every_cell_that_cannot_be_built(write_spec, in_tmp, capsys):
    spec = {
        "name": "few",
        "model": {"name_or_path": "toy:base"},
        "pool": [{"preset": "toy", "options": {"n_problems": 16}}],
        "factors": {"source": {"levels": {"a": {"sources": ["nope_a"]}, "b": {"sources": ["nope_b"]}}}},
        "eval": {"benchmarks": [{"name": "toy", "limit": 4}], "sampling": {"max_tokens": 64}},
    }
    assert main(["plan", str(write_spec(spec))]) == 2
    err = capsys.readouterr().err
    assert "source=a,seed=0: after source=a: 0 traces left" in err and "no trace has source 'nope_a'" in err
    assert "source=b,seed=0: after source=b: 0 traces left" in err


def test_a_missing_file_is_located_in_the_file_that_names_it(write_spec, minimal, in_tmp, capsys):
    base = write_spec({"eval": {"benchmarks": [{"name": "aime24", "path": "nowhere/test.jsonl"}]}}, "base/b.yaml")
    spec = {k: v for k, v in minimal.items() if k != "eval"}
    path = write_spec({"include": "base/b.yaml", **spec}, "spec.yaml")
    assert main(["plan", str(path), "--no-build"]) == 2
    err = capsys.readouterr().err
    assert f"{base}:4: eval.benchmarks[0].path: benchmark file 'nowhere/test.jsonl' does not exist" in err
    assert f"(looked in {in_tmp})" in err  # the working directory, which is also the spec's here


def test_plan_of_toy_paper_reads_in_an_80_column_terminal(in_tmp, capsys, monkeypatch):
    from framework.spec import load_spec

    monkeypatch.setenv("COLUMNS", "80")
    spec = Path(__file__).resolve().parents[2] / "ablations" / "toy-paper.yaml"
    assert main(["plan", str(spec), "--no-build"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    words = set(re.findall(r"[\w-]+", out))
    for factor in load_spec(spec).spec.factors.values():
        assert all(level.name in words for level in factor.levels)


def test_plan_and_status_wide_show_every_cell_and_job(write_spec, minimal, in_tmp, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    path = write_spec(minimal)
    assert main(["plan", str(path), "--json", "--no-build"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert main(["plan", str(path), "--no-build", "--wide"]) == 0
    out = capsys.readouterr().out
    assert all(c["key"][:8] in out for c in plan["cells"])
    assert all(j["key"][:8] in out for j in plan["jobs"])
    assert main(["status", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["stages"]
    assert main(["status", str(path), "--wide"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(rows)
    assert all(r["log"] in line and r["key"][:8] in line for r, line in zip(rows, lines[1:]))
