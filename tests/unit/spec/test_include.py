"""`include:` of a base spec: deep merge, overrides, null removal, cycles, and errors located in the right file."""

from __future__ import annotations

import pytest

from framework.spec import SpecErrors, SpecFileError, load_spec

BASE = """model: {name_or_path: Qwen/Qwen2.5-32B}
pool:
  - {preset: nemotron-math-human-reasoning}
train: {epochs: 10, learning_rate: 1.0e-5}
eval: {benchmarks: [aime24], samples: 64}
"""


def test_include_merges_and_overrides(write_spec):
    write_spec(BASE, "base/recipe.yaml")
    path = write_spec("name: child\ninclude: base/recipe.yaml\ntrain: {epochs: 3}\neval: {samples: ~}\n")
    spec = load_spec(path).spec
    assert spec.train.epochs == 3  # overridden
    assert spec.train.learning_rate == 1e-5  # inherited from the base, beside the override
    assert spec.eval.samples == 64 or spec.eval.samples == spec.eval.model_fields["samples"].default
    assert spec.model.name_or_path == "Qwen/Qwen2.5-32B"


def test_null_removes_an_inherited_key(write_spec):
    write_spec(BASE.replace("samples: 64", "samples: 8"), "base.yaml")
    spec = load_spec(write_spec("name: c\ninclude: base.yaml\neval: {samples: ~}\n", "c.yaml")).spec
    assert spec.eval.samples == 64  # the schema default, not the base's 8


def test_errors_point_into_the_file_that_set_the_key(write_spec):
    base = write_spec(BASE.replace("epochs: 10", "epochs: -1"), "base.yaml")
    child = write_spec("name: c\ninclude: base.yaml\ntrain: {learnin_rate: 1}\n", "c.yaml")
    with pytest.raises(SpecErrors) as info:
        load_spec(child)
    where = {e.path: (e.file, e.line) for e in info.value.errors}
    assert where["train.epochs"] == (str(base), 4)
    assert where["train.learnin_rate"] == (str(child), 3)


def test_include_cycle_is_an_error(write_spec):
    write_spec("include: b.yaml\nname: a\n", "a.yaml")
    write_spec("include: a.yaml\n", "b.yaml")
    with pytest.raises(SpecFileError, match="include cycle"):
        load_spec(write_spec("include: a.yaml\nname: top\n", "top.yaml"))


def test_missing_include(write_spec):
    with pytest.raises(SpecFileError, match="no such file"):
        load_spec(write_spec("name: a\ninclude: nope.yaml\n"))


def test_every_missing_include_is_reported_with_where_it_was_included(write_spec):
    spec = write_spec("name: a\ninclude:\n  - one.yaml\n  - two.yaml\n")
    with pytest.raises(SpecFileError) as info:
        load_spec(spec)
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and all(f"(included from {spec}:" in line for line in lines)
    assert "one.yaml: no such file" in lines[0] and "two.yaml: no such file" in lines[1]
