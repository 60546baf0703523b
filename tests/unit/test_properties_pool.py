"""Property tests: whatever a pool file holds, loading it gives a pool that can be stored, or a user error with
a message, never another exception (which the CLI would turn into exit 1 and a traceback)."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from framework.errors import UserError
from framework.pool.stage import load_pool
from framework.spec import spec_from_dict

KEYS = ["problem", "trace", "expected_answer", "source", "difficulty", "topic", "problem_id", "pass_rate"]
KEYS += ["q", "out", "gold", "lvl", "correct", "origin", "_where", "trace_id", "n_tokens", "", "0"]
PROPERTY = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", " ", "Level 3", "hard", "3", "n/a", "\\boxed{2}", "nan"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
rows = st.lists(st.dictionaries(st.sampled_from(KEYS), values, max_size=8), min_size=0, max_size=6)
sources = st.fixed_dictionaries(
    {},
    optional={
        "columns": st.dictionaries(
            st.sampled_from(["problem", "trace", "expected_answer", "source", "difficulty", "topic", "problem_id"]),
            st.sampled_from(KEYS[:-2]),
            max_size=3,
        ),
        "on_missing": st.sampled_from(["error", "drop", "keep"]),
        "source": st.sampled_from(["human", "model"]),
    },
)


def load(path: Path, source: dict) -> None:
    """Load, and store as the pool stage does; a UserError is the only acceptable failure."""
    spec = spec_from_dict({"name": "p", "model": {"name_or_path": "m/m"}, "pool": [{"path": path.name, **source}]})
    try:
        pool, report = load_pool(spec, lambda p: path.parent / p)
    except UserError as e:
        assert str(e).strip(), "a user error must say what is wrong"
        return
    pool.to_parquet(io.BytesIO(), index=False)
    json.dumps(report)
    assert len(pool) and pool["trace"].map(lambda t: isinstance(t, str) and t.strip() != "").all()


@contextlib.contextmanager
def scratch(name: str) -> Iterator[Path]:
    """A path in a directory of its own, removed after the example (hundreds of examples run per session)."""
    with tempfile.TemporaryDirectory(prefix="ablate-prop-") as folder:
        yield Path(folder) / name


@PROPERTY
@given(rows=rows, source=sources, junk=st.lists(st.binary(max_size=20), max_size=2))
@example(rows=[{"problem": None}], source={"columns": {"problem": "problem", "trace": "_where"}}, junk=[])
@example(
    rows=[{"problem": "q", "trace": "t", "lvl": 3}, {"problem": "r", "trace": "u", "lvl": "3"}],
    source={"columns": {"difficulty": "lvl"}},
    junk=[b"[" * 100000],
)
def test_any_jsonl_file_loads_or_is_a_user_error(rows, source, junk):
    with scratch("pool.jsonl") as path:
        lines = [json.dumps(r).encode() for r in rows] + junk
        path.write_bytes(b"\n".join(lines))
        load(path, source)


@PROPERTY
@given(data=st.one_of(rows, values), source=sources)
@example(data=[{}, None], source={})
@example(data={"problem": ["q"], "trace": ["t"]}, source={})
@example(data={"problem": {"0": "q", "1": None}, "trace": {"0": "t"}}, source={"on_missing": "drop"})
@example(data={"columns": ["problem"], "index": [0], "data": [["q"], 3]}, source={})
def test_any_json_file_loads_or_is_a_user_error(data, source):
    with scratch("pool.json") as path:
        path.write_text(json.dumps(data))
        load(path, source)


@PROPERTY
@given(
    text=st.one_of(st.text(max_size=200), st.sampled_from(["problem,trace\nq,t\n", "problem,trace,a,a\nq,t,1,2\n"])),
    source=sources,
)
def test_any_csv_file_loads_or_is_a_user_error(text, source):
    with scratch("pool.csv") as path:
        path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
        load(path, source)


columns = st.dictionaries(
    st.sampled_from(KEYS),
    st.one_of(
        st.lists(st.one_of(st.none(), st.text(max_size=8)), min_size=3, max_size=3),
        st.lists(st.integers(-5, 5), min_size=3, max_size=3),
        st.lists(st.floats(allow_nan=True), min_size=3, max_size=3),
        st.lists(st.lists(st.text(max_size=3), max_size=2), min_size=3, max_size=3),
    ),
    max_size=6,
)


@PROPERTY
@given(table=columns, source=sources)
def test_any_parquet_file_loads_or_is_a_user_error(table, source):
    with scratch("pool.parquet") as path:
        pd.DataFrame(table, index=range(3)).to_parquet(path)
        load(path, source)


@PROPERTY
@given(table=columns, source=sources)
@example(table={}, source={})
def test_any_dataset_directory_loads_or_is_a_user_error(table, source):
    import datasets

    with scratch("ds") as path:
        frame = pd.DataFrame(table, index=range(3))
        datasets.Dataset.from_pandas(frame, preserve_index=False).save_to_disk(str(path))
        load(path, source)


def test_the_examples_leave_no_temporary_files(tmp_path, monkeypatch):
    """Every example writes a file; left behind, a run of the suite would leave hundreds of directories."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    row = {"problem": "q", "trace": "t", "expected_answer": "1"}
    test_any_jsonl_file_loads_or_is_a_user_error.hypothesis.inner_test(rows=[row], source={}, junk=[])
    test_any_json_file_loads_or_is_a_user_error.hypothesis.inner_test(data=[row], source={})
    test_any_csv_file_loads_or_is_a_user_error.hypothesis.inner_test(text="problem,trace\nq,t\n", source={})
    test_any_parquet_file_loads_or_is_a_user_error.hypothesis.inner_test(table={"problem": ["q"] * 3}, source={})
    assert list(tmp_path.iterdir()) == []
