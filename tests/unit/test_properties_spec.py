"""Property tests: whatever a spec file holds, `ablate validate` exits 0 or 2 with a message, never 1 (an
exception the CLI did not expect) and never a traceback."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from framework.cli import main
from tests.helpers import MINIMAL

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
WORDS = [
    "name", "model", "pool", "factors", "levels", "params", "n_examples", "seeds", "train", "eval", "include",
    "path", "preset", "columns", "on_missing", "source", "difficulty", "min", "max", "bins", "bin", "length",
    "min_tokens", "max_tokens", "tracking", "uri", "results_dir", "launcher", "kind", "grid", "exclude",
    "benchmarks", "name_or_path", "tiny", "keywords", "mode", "annotate", "baselines", "x",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 100),
    st.floats(allow_nan=True),
    st.text(max_size=10),
    st.sampled_from(["sqlite:///nowhere/m.db", "toy", "toy:base", "nemotron-math-human-reasoning", "aime24", "1e-5"]),
)
trees = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(WORDS), inner, max_size=4),
    max_leaves=10,
)


def validate(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="ablate-spec-") as folder:  # removed after each of many examples
        path = Path(folder) / "spec.yaml"
        path.write_text(text, encoding="utf-8")
        code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code in (0, 2), err
    assert "Traceback" not in err
    assert code == 0 or "error:" in err


@PROPERTY
@given(tree=trees)
def test_any_yaml_document_validates_or_is_a_user_error(tree, capsys):
    validate(yaml.safe_dump(tree), capsys)


@PROPERTY
@given(edits=st.dictionaries(st.sampled_from(WORDS), trees, max_size=3), section=st.sampled_from(list(MINIMAL)))
def test_a_valid_spec_with_random_edits_validates_or_is_a_user_error(edits, section, capsys):
    spec = copy.deepcopy(MINIMAL)
    if isinstance(spec[section], dict):
        spec[section].update(edits)
    else:
        spec.update(edits)
    validate(yaml.safe_dump(spec), capsys)


@PROPERTY
@given(text=st.text(max_size=120))
@example(text="name: x\n\x1f")  # a control character: refused by the YAML reader before parsing
def test_any_text_validates_or_is_a_user_error(text, capsys):
    validate(text, capsys)


def test_the_examples_leave_no_temporary_files(tmp_path, monkeypatch, capsys):
    """Every example writes a spec; left behind, a run of the suite would leave hundreds of directories."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    test_any_text_validates_or_is_a_user_error.hypothesis.inner_test(text="name: x\n", capsys=capsys)
    assert list(tmp_path.iterdir()) == []
