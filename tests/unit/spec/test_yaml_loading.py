"""YAML as `ablate validate` reads it: nulls, merge keys, anchors and aliases, names YAML would change, bad paths.

Every spec here is YAML text loaded through `load_spec`, the path `ablate validate` takes, since these problems
live in the YAML layer that `spec_from_dict` skips.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from framework.cli import main
from framework.spec import SpecErrors, SpecFileError, load_spec

HEAD = """name: t
model: {name_or_path: toy:base}
pool: [{preset: toy}]
eval: {benchmarks: [toy], samples: 1}
"""


def errors_of(exc: SpecErrors) -> dict[str, tuple[str, int | None]]:
    return {e.path: (e.message, e.line) for e in exc.errors}


# ------------------------------------------------------------------------------------------------ nulls
def test_a_level_written_with_no_parameters_is_a_level(write_spec):
    text = HEAD + "factors:\n  correctness:\n    levels:\n      correct:\n      incorrect:\n"
    text += "  keywords:\n    levels:\n      keep:\n      mask: {mode: delete}\n"
    spec = load_spec(write_spec(text)).spec
    assert [lv.name for lv in spec.factors["correctness"].levels] == ["correct", "incorrect"]
    assert [lv.name for lv in spec.factors["keywords"].levels] == ["keep", "mask"]


def test_a_factor_written_with_nothing_is_an_error_not_dropped(write_spec):
    with pytest.raises(SpecErrors) as info:
        load_spec(write_spec(HEAD + "factors:\n  correctness:\n"))
    message, line = errors_of(info.value)["factors.correctness.levels"]
    assert "required field is missing" in message and line == 6


def test_a_null_schema_field_means_its_default_and_a_null_in_a_user_map_is_kept(write_spec):
    text = HEAD.replace("samples: 1", "samples: ~") + "train: {epochs: ~}\n"
    text = text.replace("[{preset: toy}]", "[{preset: toy, filter: {topic: ~}, limit: ~}]")
    text += "factors:\n  keywords:\n    levels:\n      keep:\n      mask: {mode: replace, replacement: ~}\n"
    spec = load_spec(write_spec(text)).spec
    assert spec.eval.samples == 64 and spec.train.epochs == 3.0 and spec.pool[0].limit is None
    assert spec.pool[0].filter == {"topic": None}
    assert spec.factors["keywords"].levels[1].params["replacement"] == "so"  # a level parameter's default


def test_an_include_keeps_a_null_level_the_base_lacks_and_drops_one_it_has(write_spec):
    write_spec(HEAD + "factors:\n  keywords:\n    levels: {keep: {}, mask: {mode: delete}}\n", "base.yaml")
    child = "include: base.yaml\nfactors:\n  keywords:\n    levels: {mask: ~, inject: ~}\n"
    spec = load_spec(write_spec(child, "child.yaml")).spec
    assert [lv.name for lv in spec.factors["keywords"].levels] == ["keep", "inject"]


# ----------------------------------------------------------------------------------------- merge keys
def test_a_merge_key_is_overridden_by_the_keys_written_beside_it(write_spec):
    text = HEAD + "x-recipe: &r {epochs: 2, learning_rate: 1.0e-4}\ntrain: {<<: *r, epochs: 3}\n"
    spec = load_spec(write_spec(text)).spec
    assert spec.train.epochs == 3 and spec.train.learning_rate == 1e-4


def test_a_key_written_twice_beside_a_merge_is_still_a_duplicate(write_spec):
    text = HEAD + "x-r: &r {epochs: 2}\ntrain:\n  <<: *r\n  warmup_ratio: 0.1\n  warmup_ratio: 0.2\n"
    with pytest.raises(SpecFileError, match=r"spec.yaml:9: duplicate key train.warmup_ratio"):
        load_spec(write_spec(text))


def test_a_merged_value_is_located_where_it_is_written(write_spec):
    text = HEAD + "x-r: &r {epochs: -1}\ntrain: {<<: *r}\n"
    with pytest.raises(SpecErrors) as info:
        load_spec(write_spec(text))
    assert errors_of(info.value)["train.epochs"][1] == 5


def test_only_x_keys_may_hold_anchors_at_the_top_level(write_spec):
    with pytest.raises(SpecErrors) as info:
        load_spec(write_spec(HEAD + "common: &c {epochs: 2}\ntrain: *c\n"))
    message, line = errors_of(info.value)["common"]
    assert "unknown key 'common'" in message and "must start with 'x-'" in message and line == 5


# ------------------------------------------------------------------------------------ anchors and aliases
@pytest.mark.parametrize(
    ("yaml_text", "path"),
    [("seeds: &a [0, *a]\n", "seeds[1]"), ("description: &a {x: *a}\n", "description.x")],
)
def test_a_recursive_alias_is_a_located_error(write_spec, yaml_text, path):
    with pytest.raises(
        SpecFileError, match=rf"spec.yaml:5: {re.escape(path)}: recursive alias: alias \*a is used inside"
    ):
        load_spec(write_spec(HEAD + yaml_text))


def test_a_recursive_merge_is_a_located_error(write_spec):
    with pytest.raises(SpecFileError, match=r"spec.yaml:5: x-a: recursive merge"):
        load_spec(write_spec(HEAD + "x-a: &a {<<: *a}\n"))


def test_nested_aliases_are_walked_once_and_an_alias_bomb_is_refused(write_spec):
    bomb = ["x-a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        bomb.append(f"x-{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    started = time.monotonic()
    with pytest.raises(SpecFileError, match="aliases expand to more than 1,000,000 values"):
        load_spec(write_spec(HEAD + "\n".join(bomb) + "\ntrain: {extra_args: {x: *i}}\n"))
    assert time.monotonic() - started < 5  # walking every alias path took minutes and gigabytes
    shared = HEAD + "x-s: &s {temperature: 0.5}\neval: {benchmarks: [toy], samples: 1, sampling: *s}\n"
    assert load_spec(write_spec(shared.replace("eval: {benchmarks: [toy], samples: 1}\n", ""))).spec


def test_a_chain_of_merges_is_resolved_once_per_mapping(write_spec):
    chain = ["x-0: &a0 {k0: 1}"] + [f"x-{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}], k{i}: 1}}" for i in range(1, 22)]
    started = time.monotonic()
    spec = load_spec(write_spec(HEAD + "\n".join(chain) + "\n"))
    assert time.monotonic() - started < 5  # each `<<` re-resolved its sources: 2**21 walks, ~15 s
    assert spec.source.data["x-21"] == {f"k{i}": 1 for i in range(22)}


def test_a_symlink_loop_is_a_spec_file_error(tmp_path, capsys):
    loop = tmp_path / "loop.yaml"
    os.symlink(loop, loop)
    with pytest.raises(SpecFileError, match=r"loop\.yaml: cannot read"):
        load_spec(loop)
    assert main(["validate", str(loop)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_recursive_alias_exits_2_without_a_traceback(write_spec, capsys):
    assert main(["validate", str(write_spec(HEAD + "seeds: &a [0, *a]\n"))]) == 2
    err = capsys.readouterr().err
    assert "recursive alias" in err and "RecursionError" not in err


# -------------------------------------------------------------------------------- names YAML would change
def test_a_yaml_boolean_or_float_is_no_level_name(write_spec):
    text = HEAD + "factors:\n  source:\n    levels: [yes, Off, 1.10, 7, 'no']\n"
    text += "  keywords:\n    levels: {on: {}, mask: {mode: delete}}\n"
    with pytest.raises(SpecErrors) as info:
        load_spec(write_spec(text))
    errs = errors_of(info.value)
    assert errs["factors.source.levels[0]"] == ("YAML reads `yes` as true; quote it ('yes') to use it as a name", 7)
    assert errs["factors.source.levels[1]"][0].startswith("YAML reads `Off` as false; quote it ('Off')")
    assert errs["factors.source.levels[2]"][0].startswith("YAML reads `1.10` as the number 1.1; quote it ('1.10')")
    assert errs["factors.keywords.levels.True"][0].startswith("YAML reads `on` as true")
    assert len(errs) == 4  # 7 (an integer keeps its text) and the quoted 'no' are names


def test_quoted_and_integer_level_names_are_names(write_spec):
    spec = load_spec(write_spec(HEAD + "factors:\n  source:\n    levels: ['yes', '1.0', 7]\n")).spec
    assert [lv.name for lv in spec.factors["source"].levels] == ["yes", "1.0", "7"]
