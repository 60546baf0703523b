"""Error messages that tell the user what to write: where a misplaced key belongs, what a name may be, which
reference level was meant, which tracking URIs MLflow can use. Specs are YAML text loaded as `ablate validate` does.
"""

from __future__ import annotations

import pytest

from framework.spec import SpecErrors, load_spec
from framework.spec.launch import tracking_uri_problem

HEAD = """name: t
model: {name_or_path: toy:base}
pool: [{preset: toy}]
eval: {benchmarks: [toy], samples: 1}
"""


def errors_in(write_spec, text: str) -> dict[str, tuple[str, int | None]]:
    with pytest.raises(SpecErrors) as info:
        load_spec(write_spec(text))
    return {e.path: (e.message, e.line) for e in info.value.errors}


# ---------------------------------------------------------------------------------------- unknown keys
def test_a_misplaced_key_says_which_section_it_belongs_to(write_spec):
    text = HEAD + "epochs: 3\nsamples: 4\ntrain: {temperature: 0.6}\nseed: 1\n"
    errs = errors_in(write_spec, text)
    assert errs["epochs"] == ("unknown key 'epochs': it belongs under `train:`", 5)
    assert errs["samples"][0] == "unknown key 'samples': it belongs under `eval:`"  # not "n_examples"
    assert errs["train.temperature"][0] == "unknown key 'temperature': it belongs under `eval.sampling:`"
    assert errs["seed"][0] == "unknown key 'seed' (did you mean \"seeds\"?)"  # a sibling it begins comes first


def test_a_close_sibling_or_enclosing_field_comes_before_the_same_key_in_an_unrelated_section(write_spec):
    write_spec(HEAD + "launcher: {kind: slurm}\n", "base.yaml")
    text = "include: base.yaml\ntrain: {batch_size: 4, seed: 1, warmup: 0.1}\n"
    text += "eval: {max_tokens: 10, seed: 2}\nlauncher: {slurm: {gpu: 8, stages: {eval: {gpus: 1}}}}\n"
    errs = {
        k: v[0].removeprefix(f"unknown key '{k.rsplit('.', 1)[-1]}'") for k, v in errors_in(write_spec, text).items()
    }
    # not the embedder's batch size under annotate.topic_clusters, nor its seed: siblings the key ends, the
    # top-level `seeds` the key begins
    assert errs["train.batch_size"] == ' (did you mean "micro_batch_size" or "global_batch_size"?)'
    assert errs["train.seed"] == ' (did you mean "seeds" at the top level?)'
    assert errs["train.warmup"] == ' (did you mean "warmup_ratio"?)'
    assert errs["eval.max_tokens"] == ": it belongs under `eval.sampling:`"  # inside eval: before `max_model_len`
    assert errs["eval.seed"] == ": it belongs under `eval.sampling:`"  # not annotate.topic_clusters too
    assert errs["launcher.slurm.gpu"] == ' (did you mean "gpus_per_node"?)'
    assert errs["launcher.slurm.stages.eval.gpus"] == ' (did you mean "gpus_per_node"?)'


def test_a_misspelt_key_still_gets_its_sibling_and_else_the_schema_section(write_spec):
    text = HEAD + "temprature: 0.6\ntrain: {learnin_rate: 1, frobnicate: 2}\nzzz: 1\n"
    errs = errors_in(write_spec, text)
    assert errs["train.learnin_rate"][0] == "unknown key 'learnin_rate' (did you mean \"learning_rate\"?)"
    assert errs["temprature"][0] == "unknown key 'temprature' (did you mean \"temperature\" under `eval.sampling:`?)"
    assert errs["train.frobnicate"][0] == "unknown key 'frobnicate'; `ablate schema train` lists the keys here"
    assert "`ablate schema` lists the sections" in errs["zzz"][0]


def test_an_unknown_level_parameter_points_at_its_factor_schema(write_spec):
    text = HEAD + "factors:\n  keywords:\n    levels: {mask: {mode: delete, zzz: 1}}\n"
    message, line = errors_in(write_spec, text)["factors.keywords.levels.mask.zzz"]
    assert message == "unknown key 'zzz'; `ablate schema factors.keywords` lists the keys here" and line == 7


# ----------------------------------------------------------------------------------------------- names
def test_a_bad_name_is_explained_in_words_not_a_regex(write_spec):
    text = HEAD.replace("name: t", "name: ../evil") + "factors:\n  source: {levels: [a/b]}\n"
    text += "launcher: {slurm: {time: forever}}\n"
    errs = errors_in(write_spec, text)
    assert errs["name"][0].startswith("'../evil' is not a valid name: use letters, digits, '.', '_' and '-', starting")
    assert "results/<name>/" in errs["name"][0]
    assert errs["factors.source.levels[0]"][0].startswith("'a/b' is not a valid name: use letters")
    assert errs["launcher.slurm.time"][0].startswith("'forever' is not in the expected form: Time limit (-t)")
    assert not any("pattern" in m for m, _ in errs.values())


def test_a_factor_name_with_a_trailing_newline_is_rejected(write_spec):
    errs = errors_in(write_spec, HEAD + 'factors:\n  "correctness\\n": {kind: correctness, levels: [correct]}\n')
    assert "invalid factor name(s) ['correctness\\n']: use letters" in errs["factors"][0]


def test_the_sweep_name_of_the_default_tracking_database_is_reserved(write_spec):
    errs = errors_in(write_spec, HEAD.replace("name: t", "name: mlflow.db"))
    assert "reserved" in errs["name"][0] and errs["name"][1] == 1


def test_an_unknown_reference_level_is_reported_at_its_line_with_a_suggestion(write_spec):
    text = HEAD + "factors:\n  correctness:\n    levels: [correct, incorrect]\n    reference: corect\n"
    errs = errors_in(write_spec, text)
    assert errs == {
        "factors.correctness.reference": (
            "unknown reference level 'corect' (did you mean \"correct\"?); levels: correct, incorrect",
            8,
        )
    }


# ---------------------------------------------------------------------------------------- tracking URIs
@pytest.mark.parametrize(
    "uri",
    ["databricks", "databricks://profile", "sqlite:///mlflow.db", "sqlite:////abs/mlflow.db", "http://host:5000"],
)
def test_tracking_uris_mlflow_takes(uri):
    assert tracking_uri_problem(uri) is None


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("garbage", "is not a URI"),
        ("./mlruns", "is a directory"),
        ("sqlite://", "in-memory database"),
        ("sqlite:///:memory:", "in-memory database"),
        ("sqlite:", "not a URI SQLAlchemy reads"),
        ("http://", "names no server"),
        ("https://:443", "names no server"),
        ("notascheme://x", "unknown scheme 'notascheme'"),
    ],
)
def test_tracking_uris_that_would_fail_or_lose_runs(uri, problem):
    assert problem in (tracking_uri_problem(uri) or "")


def test_a_spec_tracking_uri_is_checked_on_load(write_spec):
    errs = errors_in(write_spec, HEAD + "tracking: {uri: 'sqlite://'}\n")
    assert "in-memory database" in errs["tracking.uri"][0]
