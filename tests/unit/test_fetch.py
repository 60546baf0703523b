"""`ablate fetch`, without network: GitHub files served from a local tree laid out as raw.githubusercontent.com
lays them out, hub datasets read by the real hub reader from local repositories laid out as the hub lays them out."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import urllib.error
from pathlib import Path

import pandas as pd
import pytest

import framework.hub_data
from framework import fetch
from framework.benchmarks.loading import BenchmarkError, load_benchmark
from framework.cli import main
from framework.spec import spec_from_dict
from framework.spec.models import BenchmarkSpec
from framework.sweep.plan import benchmark_identity, pool_identity

COMP_MATH = [
    {"id": "aime25-0", "subset_for_metrics": "aime25", "problem": "Find b.", "expected_answer": "70"},
    {"id": "aime24-0", "problem": "Residents?", "expected_answer": "73", "subset_for_metrics": "aime24"},
    {
        "id": "hmmt_F_2025_guts_1",
        "subset_for_metrics": "hmmt-24-25",
        "problem": "Slips?",
        "expected_answer": "\\frac{1}{2}",
    },
]


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture
def github(tmp_path, monkeypatch):
    """A local raw.githubusercontent.com: <root>/<owner>/<repo>/<commit>/<path>; `main` resolves to a commit. The
    pinned copy of comp-math-24-25 holds COMP_MATH (its recorded sha256 is that file's). Returns the URLs read."""
    root = tmp_path / "github"
    path = root / fetch.NEMO_SKILLS / fetch.NEMO_SKILLS_COMMIT / "nemo_skills/dataset/comp-math-24-25/test.txt"
    path.parent.mkdir(parents=True)
    path.write_bytes(jsonl(COMP_MATH))
    target = fetch.TARGETS["comp-math-24-25"]
    origin = dataclasses.replace(target.origin, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    monkeypatch.setitem(fetch.TARGETS, "comp-math-24-25", dataclasses.replace(target, origin=origin))
    asked: list[str] = []

    def serve(url: str, accept: str | None = None) -> bytes:
        asked.append(url)
        if url.startswith("https://api.github.com/repos/NVIDIA/NeMo-Skills/commits/main"):
            return b"1" * 40
        local = root / url.removeprefix("https://raw.githubusercontent.com/")
        if not local.is_file():
            raise urllib.error.HTTPError(url, 404, "Not Found", None, None)  # type: ignore[arg-type]
        return local.read_bytes()

    monkeypatch.setattr(fetch, "read_url", serve)
    monkeypatch.chdir(tmp_path)
    return asked


def hub_repo(root: Path, dataset: str, splits: dict[str, pd.DataFrame], config: str = "default") -> None:
    """A dataset repository as the hub holds it: a README declaring each split's parquet files."""
    repo = root / dataset
    (repo / "data").mkdir(parents=True)
    files = "".join(f"  - split: {s}\n    path: data/{s}-*.parquet\n" for s in splits)
    (repo / "README.md").write_text(f"---\nconfigs:\n- config_name: {config}\n  data_files:\n{files}---\n")
    for split, frame in splits.items():
        frame.to_parquet(repo / "data" / f"{split}-00000-of-00001.parquet")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The real hub reader, pointed at local repositories under <tmp>/hub/<org>/<name>; returns that root."""
    root = tmp_path / "hub"
    read = framework.hub_data.read_hub_split

    def local(repo: str, split: str, **kwargs):
        frame = read(str(root / repo), split, **kwargs)
        frame.attrs["hub"]["dataset"] = repo
        return frame

    monkeypatch.setattr(framework.hub_data, "read_hub_split", local)
    monkeypatch.chdir(tmp_path)
    return root


def test_comp_math_is_nemo_skills_file_with_its_subsets_and_a_record(github, capsys):
    assert main(["fetch", "comp-math-24-25"]) == 0
    out = Path("data/benchmarks/comp-math-24-25/test.jsonl")
    assert out.read_bytes() == jsonl(COMP_MATH)  # NeMo-Skills' own bytes
    record = json.loads(Path(f"{out}.source.json").read_text())
    assert record["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert record["rows"] == 3 and record["command"] == "ablate fetch comp-math-24-25"
    assert record["source"]["commit"] == fetch.NEMO_SKILLS_COMMIT
    assert record["source"]["path"] == "nemo_skills/dataset/comp-math-24-25/test.txt"
    assert f"wrote {out}: 3 rows" in capsys.readouterr().out
    frame = load_benchmark(BenchmarkSpec(name="comp-math-24-25", path=str(out)), lambda p: Path(p))
    assert list(frame["subset"]) == ["aime25", "aime24", "hmmt-24-25"]
    assert list(frame["problem_id"]) == ["aime25-0", "aime24-0", "hmmt_F_2025_guts_1"]


def test_a_second_fetch_leaves_the_file_alone_unless_forced(github, capsys):
    assert main(["fetch", "comp-math-24-25", "--dir", "d"]) == 0
    out = Path("d/benchmarks/comp-math-24-25/test.jsonl")
    reads = len(github)
    capsys.readouterr()
    assert main(["fetch", "comp-math-24-25", "--dir", "d"]) == 0
    assert len(github) == reads  # nothing downloaded
    assert f"kept {out}: already fetched (3 rows, at {fetch.NEMO_SKILLS_COMMIT})" in capsys.readouterr().out
    out.write_bytes(out.read_bytes() + b"\n")  # edited by hand: never overwritten silently
    assert main(["fetch", "comp-math-24-25", "--dir", "d"]) == 0
    assert "changed since it was fetched (--force replaces it)" in capsys.readouterr().out
    assert main(["fetch", "comp-math-24-25", "--dir", "d", "--force"]) == 0
    assert len(github) > reads and out.read_bytes() == jsonl(COMP_MATH)
    assert json.loads(Path(f"{out}.source.json").read_text())["command"] == "ablate fetch comp-math-24-25 --dir d"


def test_a_copy_that_is_not_the_pinned_commits_file_is_refused(github, monkeypatch, capsys):
    target = fetch.TARGETS["comp-math-24-25"]
    monkeypatch.setitem(
        fetch.TARGETS,
        "comp-math-24-25",
        dataclasses.replace(target, origin=dataclasses.replace(target.origin, sha256="0" * 64)),
    )
    assert main(["fetch", "comp-math-24-25"]) == 2
    assert "sha256 differs); nothing was written" in capsys.readouterr().err
    assert not Path("data/benchmarks").exists()


def test_a_revision_resolves_to_the_commit_read_and_a_missing_file_is_named(github, capsys):
    assert main(["fetch", "aime24", "--revision", "main"]) == 2  # the local host has no aime24 at that commit
    err = capsys.readouterr().err
    assert f"raw.githubusercontent.com/NVIDIA/NeMo-Skills/{'1' * 40}/nemo_skills/dataset/aime24/test.txt" in err
    assert "404" in err and "Traceback" not in err


def test_no_network_says_where_to_run_it(github, monkeypatch, capsys):
    def down(url, accept=None):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(fetch, "read_url", down)
    assert main(["fetch", "aime25"]) == 2
    assert "fetch needs network access (a login node)" in capsys.readouterr().err


def test_hub_benchmarks_are_written_in_the_nemo_skills_layout(hub, capsys):
    hub_repo(
        hub,
        "MathArena/hmmt_feb_2025",
        {"train": pd.DataFrame({"problem_idx": [1, 2], "problem": ["a?", "b?"], "answer": ["3", "\\sqrt{2}"]})},
    )
    hub_repo(
        hub,
        "HuggingFaceH4/MATH-500",
        {
            "test": pd.DataFrame(
                {"problem": ["c?"], "solution": ["s"], "answer": ["4"], "level": [5], "unique_id": ["test/x/1.json"]}
            )
        },
    )
    assert main(["fetch", "hmmt-feb-2025", "math-500"]) == 0
    hmmt = [json.loads(line) for line in Path("data/benchmarks/hmmt-feb-2025/test.jsonl").read_text().splitlines()]
    assert hmmt == [
        {"id": "hmmt-feb-2025-1", "problem": "a?", "expected_answer": "3"},
        {"id": "hmmt-feb-2025-2", "problem": "b?", "expected_answer": "\\sqrt{2}"},
    ]
    math500 = json.loads(Path("data/benchmarks/math-500/test.jsonl").read_text())
    assert math500 == {
        "id": "test/x/1.json",
        "problem": "c?",
        "reference_solution": "s",
        "expected_answer": "4",
        "level": 5,
    }
    record = json.loads(Path("data/benchmarks/math-500/test.jsonl.source.json").read_text())
    assert record["source"]["hub"] == "HuggingFaceH4/MATH-500" and record["source"]["split"] == "test"
    assert record["source"]["commit"]  # the commit the reader resolved
    frame = load_benchmark(BenchmarkSpec(name="hmmt-feb-2025", path="data/benchmarks/hmmt-feb-2025/test.jsonl"), Path)
    assert list(frame["expected_answer"]) == ["3", "\\sqrt{2}"]


def test_gpqa_file_asks_what_the_hub_copy_asks(hub):
    columns = ["Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]
    raw = pd.DataFrame(
        [[f"Q{i}?", f"right{i}", f"w{i}a", f"w{i}b", f"w{i}c"] for i in range(4)], columns=columns
    ).assign(**{"Record ID": [f"rec{i}" for i in range(4)]})
    hub_repo(hub, "Idavidrein/gpqa", {"train": raw}, config="gpqa_diamond")
    assert main(["fetch", "gpqa-diamond"]) == 0
    from_file = load_benchmark(BenchmarkSpec(name="gpqa-diamond", path="data/benchmarks/gpqa-diamond/test.jsonl"), Path)
    from_hub = load_benchmark(BenchmarkSpec(name="gpqa-diamond"), Path)
    pd.testing.assert_frame_equal(from_file, from_hub)
    assert set(from_file["expected_answer"]) <= set("ABCD")


def test_a_gated_dataset_says_how_to_get_access_and_prints_no_token(tmp_path, monkeypatch, capsys):
    from datasets.exceptions import DatasetNotFoundError

    def refused(repo, split, **kwargs):
        message = f"Dataset '{repo}' is a gated dataset on the Hub. You must be authenticated to access it."
        raise DatasetNotFoundError(message)

    monkeypatch.setattr(framework.hub_data, "read_hub_split", refused)
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnopqrstuvwxyz012345")
    monkeypatch.chdir(tmp_path)
    assert main(["fetch", "gpqa-diamond", "--dir", "d"]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert (
        "the hub dataset 'Idavidrein/gpqa' is gated: accept its terms on https://huggingface.co/datasets/Idavidrein/gpqa"
        in err
    )
    assert "`huggingface-cli login` (or set HF_TOKEN), then run `ablate fetch gpqa-diamond --dir d` again" in err
    assert "hf_abcdefghij" not in captured.out + err and "Traceback" not in err
    assert not Path("d").exists()


def test_pools_keep_the_hub_columns_and_load_offline_through_their_preset(hub, monkeypatch, capsys):
    from framework.pool.stage import load_pool

    nemotron = pd.DataFrame(
        {
            "problem": ["p1", "p1"],
            "solution": ["s \\boxed{1}", "t \\boxed{1}"],
            "solution_type": ["human_stage4", "qwq_32b_preview"],
            "expected_answer": ["1", "1"],
        }
    )
    hub_repo(hub, "nvidia/Nemotron-Math-HumanReasoning", {"train": nemotron})
    omr = pd.DataFrame(
        {
            "problem": [f"q{i}" for i in range(5)],
            "generated_solution": ["x"] * 5,
            "generation_model": ["DeepSeek-R1"] * 5,
            "expected_answer": ["2"] * 5,
            "pass_rate_72b_tir": [0.5] * 5,
            "problem_type": ["has_answer_extracted", "converted_proof"] * 2 + ["has_answer_extracted"],
        }
    )
    hub_repo(hub, "nvidia/OpenMathReasoning", {"cot": omr, "tir": omr.head(1)})
    assert main(["fetch", "nemotron-math-human-reasoning", "open-math-reasoning", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    path = "data/pools/nemotron-math-human-reasoning/train.parquet"
    assert f"in a spec: {{preset: nemotron-math-human-reasoning, path: {path}}}" in out
    pd.testing.assert_frame_equal(pd.read_parquet(path), nemotron)
    sliced = pd.read_parquet("data/pools/open-math-reasoning/cot.parquet")
    assert list(sliced["problem"]) == ["q0", "q2"]  # the named slice: answered problems, the first --limit of them
    record = json.loads(Path("data/pools/open-math-reasoning/cot.parquet.source.json").read_text())
    assert record["source"]["filter"] == {"problem_type": ["has_answer_extracted"]} and record["source"]["limit"] == 2
    assert record["command"] == "ablate fetch open-math-reasoning --limit 2"
    assert (
        record["sha256"] == hashlib.sha256(Path("data/pools/open-math-reasoning/cot.parquet").read_bytes()).hexdigest()
    )

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(framework.hub_data, "read_hub_split", offline)
    spec = spec_from_dict(
        {
            "name": "t",
            "model": {"name_or_path": "m/m"},
            "pool": [{"preset": "nemotron-math-human-reasoning", "path": path}],
        }
    )
    pool, _ = load_pool(spec, lambda p: Path(p))
    assert list(pool["source"]) == ["human_stage4", "qwq_32b_preview"]


def test_missing_files_that_fetch_writes_name_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    problems: list[str] = []
    bench = BenchmarkSpec(name="comp-math-24-25", path="data/benchmarks/comp-math-24-25/test.jsonl")
    benchmark_identity(bench, None, problems, "eval.benchmarks[0]")
    elsewhere = BenchmarkSpec(name="aime25", path="/scratch/d/benchmarks/aime25/test.jsonl")
    benchmark_identity(elsewhere, None, problems, "eval.benchmarks[1]")
    own = BenchmarkSpec(name="aime25", path="mine/aime25.jsonl")
    benchmark_identity(own, None, problems, "eval.benchmarks[2]")
    pool = spec_from_dict(
        {
            "name": "t",
            "model": {"name_or_path": "m/m"},
            "pool": [
                {
                    "preset": "nemotron-math-human-reasoning",
                    "path": "data/pools/nemotron-math-human-reasoning/train.parquet",
                }
            ],
        }
    ).pool[0]
    pool_identity(pool, None, problems, "pool[0]")
    assert problems[0].endswith("; `ablate fetch comp-math-24-25` writes it (on a machine with network)")
    assert problems[1].endswith("; `ablate fetch aime25 --dir /scratch/d` writes it (on a machine with network)")
    assert problems[2].endswith(f"(looked in {tmp_path})")  # a path fetch does not write: the message as it was
    assert problems[3].endswith("; `ablate fetch nemotron-math-human-reasoning` writes it (on a machine with network)")
    with pytest.raises(BenchmarkError, match=r"does not exist; `ablate fetch comp-math-24-25` writes it"):
        load_benchmark(bench, lambda p: None)
    with pytest.raises(BenchmarkError, match=r"no hub copy: `ablate fetch comp-math-24-25` writes it to data/"):
        load_benchmark(BenchmarkSpec(name="comp-math-24-25"), lambda p: None)


def test_unknown_names_and_misused_options_exit_2_and_no_name_lists_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fetch", "aime-24"]) == 2
    assert "unknown name 'aime-24' (did you mean \"aime24\"?)" in capsys.readouterr().err
    assert main(["fetch", "math-500", "--limit", "5"]) == 2
    assert "--limit applies to pools only" in capsys.readouterr().err
    assert main(["fetch"]) == 0
    listing = capsys.readouterr().out
    assert all(f"data/{t.kind}s/{name}/{t.filename}" in listing for name, t in fetch.TARGETS.items())
    assert not Path("data").exists()


def test_a_spec_fetches_the_files_it_reads_where_it_reads_them(github, capsys):
    Path("s.yaml").write_text(
        "name: s\nmodel: {name_or_path: 'toy:base'}\npool: [{preset: toy}]\neval:\n  benchmarks:\n"
        "    - {name: comp-math-24-25, path: local/benchmarks/comp-math-24-25/test.jsonl}\n"
        "    - {name: aime25, path: mine/aime25.jsonl}\n"
    )
    assert main(["fetch", "--spec", "s.yaml"]) == 0
    assert Path("local/benchmarks/comp-math-24-25/test.jsonl").read_bytes() == jsonl(COMP_MATH)
    assert not Path("mine").exists() and not Path("data").exists()
    record = json.loads(Path("local/benchmarks/comp-math-24-25/test.jsonl.source.json").read_text())
    assert record["command"] == "ablate fetch comp-math-24-25 --dir local"
