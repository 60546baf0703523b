"""The spec schema: defaults, normalization, and every error reported at once with its YAML path and line."""

from __future__ import annotations

import pytest

from framework.spec import SpecErrors, SpecFileError, load_spec, spec_from_dict


def errors_of(exc: SpecErrors) -> dict[str, str]:
    return {e.path: e.message for e in exc.errors}


def errors_for(data: dict) -> dict[str, str]:
    """The spec's errors by YAML path; the spec must be invalid."""
    with pytest.raises(SpecErrors) as info:
        spec_from_dict(data)
    return errors_of(info.value)


def test_minimal_spec_fills_documented_defaults(minimal):
    spec = spec_from_dict(minimal)
    assert spec.n_examples == 20
    assert spec.train.zero_stage == 3
    assert spec.eval.benchmarks[0].name == "aime24"
    assert [lv.name for lv in spec.factors["source"].levels] == ["qwq_32b_preview", "human_stage4"]
    # Level params are validated and completed with the factor's defaults (so keys see the same thing).
    mask = spec.factors["keywords"].levels[1]
    assert mask.params["mode"] == "delete" and mask.params["replacement"] == "so"
    assert spec.baselines[0].name == "base"


@pytest.mark.parametrize(
    "levels",
    [
        ["a", "b"],
        [{"name": "a"}, {"name": "b", "sources": ["x"]}],
        {"a": {}, "b": {"sources": ["x"]}},
        [{"name": "a", "params": {}}, {"name": "b", "params": {"sources": ["x"]}}],
    ],
)
def test_level_forms_normalize_alike(minimal, levels):
    minimal["factors"] = {"source": {"levels": levels}}
    spec = spec_from_dict(minimal)
    names = [lv.name for lv in spec.factors["source"].levels]
    assert names == ["a", "b"]


def test_many_mistakes_are_all_reported_with_paths_and_lines(write_spec):
    path = write_spec(
        """name: mistakes
modle: {name_or_path: x}
pool:
  - {path: data.jsonl}
factors:
  sorce: {levels: [a, b]}
  keywords:
    levels:
      keep: {}
      mask: {mode: delet}
  length: {levels: []}
n_examples: twenty
train: {learning_rat: 1.0e-5}
"""
    )
    with pytest.raises(SpecErrors) as info:
        load_spec(path)
    errs = {e.path: e for e in info.value.errors}
    assert "model" in errs and "required" in errs["model"].message  # missing base model
    assert 'did you mean "model"' in errs["modle"].message and errs["modle"].line == 2  # typo'd key
    assert (
        'did you mean "source"' in errs["factors.sorce"].message and errs["factors.sorce"].line == 6
    )  # unknown factor
    assert "delete" in errs["factors.keywords.levels.mask.mode"].message  # wrong level parameter
    assert errs["factors.keywords.levels.mask.mode"].line == 10
    assert "at least 1" in errs["factors.length.levels"].message  # empty level list
    assert "integer" in errs["n_examples"].message and errs["n_examples"].line == 12  # wrong type
    assert 'did you mean "learning_rate"' in errs["train.learning_rat"].message
    assert all(e.file == str(path) for e in info.value.errors)
    assert len(info.value.errors) == 7


def test_unknown_keys_are_rejected_at_any_depth(minimal):
    minimal["eval"]["sampling"] = {"temprature": 0.7}
    minimal["launcher"] = {"kind": "slurm", "slurm": {"partitoin": "gpu", "stages": {"train": {"nodez": 2}}}}
    errs = errors_for(minimal)
    assert 'did you mean "temperature"' in errs["eval.sampling.temprature"]
    assert 'did you mean "partition"' in errs["launcher.slurm.partitoin"]
    assert 'did you mean "nodes"' in errs["launcher.slurm.stages.train.nodez"]


def test_unknown_benchmark_grader_and_preset(minimal):
    minimal["eval"] = {"benchmarks": ["aime24", "aime2x"], "grading": {"grader": "mth"}}
    minimal["pool"] = [{"preset": "nemotron"}]
    errs = errors_for(minimal)
    assert 'did you mean "aime25"' in errs["eval.benchmarks[1]"]
    assert 'did you mean "math"' in errs["eval.grading.grader"]
    assert "unknown pool preset" in errs["pool[0].preset"]


def test_model_needs_exactly_one_source(minimal):
    minimal["model"] = {"name_or_path": "x", "tiny": {}}
    with pytest.raises(SpecErrors, match="exactly one"):
        spec_from_dict(minimal)


def test_tiny_model_head_dim_must_be_64(minimal):
    minimal["model"] = {"tiny": {"hidden_size": 128, "num_heads": 4}}
    with pytest.raises(SpecErrors, match="must be 64"):
        spec_from_dict(minimal)


def test_grid_rules_must_name_real_factors_and_levels(minimal):
    minimal["grid"] = {"exclude": [{"source": "qwq"}, {"keywords": "mask", "lenght": "x"}]}
    with pytest.raises(SpecErrors) as info:
        spec_from_dict(minimal)
    messages = " | ".join(e.message for e in info.value.errors)
    assert 'did you mean "qwq_32b_preview"' in messages
    assert "unknown factor 'lenght'" in messages


def test_duplicates_are_errors(minimal, write_spec):
    minimal["seeds"] = [0, 0]
    minimal["factors"]["source"]["levels"] = ["a", "a"]
    minimal["baselines"] = ["base", "base"]
    with pytest.raises(SpecErrors) as info:
        spec_from_dict(minimal)
    assert {"seeds", "factors.source", "baselines"} <= set(errors_of(info.value))
    path = write_spec("name: x\nname: y\n")
    with pytest.raises(SpecFileError, match="duplicate key name"):
        load_spec(path)


def test_user_factor_by_import_path(minimal):
    minimal["factors"] = {"mine": {"kind": "framework.data.factors.source:FACTOR", "levels": ["a"]}}
    assert spec_from_dict(minimal).factors["mine"].kind == "framework.data.factors.source:FACTOR"
    minimal["factors"] = {"mine": {"kind": "no.such.module:FACTOR", "levels": ["a"]}}
    with pytest.raises(SpecErrors, match="cannot import module"):
        spec_from_dict(minimal)


def test_user_template_must_take_the_problem(minimal):
    minimal["prompt"] = {"user_template": "Solve it."}
    with pytest.raises(SpecErrors, match=r"\{problem\}"):
        spec_from_dict(minimal)


def test_yaml_syntax_error_is_located(write_spec):
    path = write_spec("name: x\nfactors: [a\n")
    with pytest.raises(SpecFileError, match=r"spec.yaml:\d+:\d+: invalid YAML"):
        load_spec(path)


def test_missing_file(tmp_path):
    with pytest.raises(SpecFileError, match="no such file"):
        load_spec(tmp_path / "nope.yaml")


def test_a_level_its_factor_cannot_run_is_a_spec_error_not_a_plan_crash(minimal):
    minimal["factors"] = {
        "correctness": {"levels": ["correct", "bogus"]},
        "keywords": {"levels": ["keep", "frobnicate"]},
        "diversity": {"levels": {"wide": {"mode": "stratified"}, "narrow": {}}},
    }
    errs = errors_for(minimal)
    assert "correctness level 'bogus' names no mode" in errs["factors.correctness.levels[1]"]
    assert "keywords level 'frobnicate' names no mode" in errs["factors.keywords.levels[1]"]
    assert "diversity level 'narrow' names no mode" in errs["factors.diversity.levels.narrow"]
    assert len(errs) == 3  # 'wide' names its mode in params


def test_seeds_pass_k_and_toy_pool_options_are_checked(minimal):
    minimal["seeds"] = [0, -1]
    minimal["eval"] = {"samples": 4, "benchmarks": ["toy"], "pass_k": [1, 8]}
    minimal["pool"] = [{"preset": "toy", "options": {"n_problemz": 5, "seed": 1}}]
    errs = errors_for(minimal)
    assert "greater than or equal to 0" in errs["seeds[1]"]
    assert "pass_k [8]" in errs["eval"]
    assert "unknown toy pool option(s) 'n_problemz' (did you mean \"n_problems\"?)" in errs["pool[0]"]
    minimal["seeds"], minimal["eval"]["pass_k"] = [0, 1], [1, 4]
    minimal["pool"][0]["options"] = {"n_problems": 5, "world_seed": 1}
    assert spec_from_dict(minimal).eval.pass_k == [1, 4]


def test_greedy_decoding_with_several_samples_is_refused_before_any_training(minimal):
    """vLLM and transformers refuse n > 1 at temperature 0: found by the spec, not by the first evaluation."""
    minimal["eval"] = {"samples": 4, "benchmarks": ["toy"], "sampling": {"temperature": 0}}
    assert "greedy decoding" in errors_for(minimal)["eval"]
    minimal["eval"] = {"samples": {"budget": 4, "first_round": 1, "max": 8}, "benchmarks": ["toy"]}
    minimal["eval"]["sampling"] = {"temperature": 0}
    assert "8 samples" in errors_for(minimal)["eval"]
    minimal["eval"] = {"samples": 4, "benchmarks": ["toy"]}
    minimal["baselines"] = ["base", {"name": "cold", "model": {"name_or_path": "toy:base"},
                                     "sampling": {"temperature": 0}}]  # fmt: skip
    assert "baselines[1] (cold): sampling.temperature 0" in " ".join(errors_for(minimal).values())
    minimal["eval"]["samples"] = 1
    assert spec_from_dict(minimal).baselines[1].sampling.temperature == 0


def test_baselines_slurm_time_and_gpu_ids_are_checked(minimal):
    minimal["baselines"] = [
        "base",
        "gpt4",
        {"name": "instruct", "model": {"name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"}},
    ]
    minimal["launcher"] = {"kind": "slurm", "slurm": {"time": "forever", "stages": {"eval": {"time": "1-12:00"}}}}
    errs = errors_for(minimal)
    assert "baseline 'gpt4' names no model" in errs["baselines[1]"]
    assert "launcher.slurm.time" in errs and len(errs) == 2  # '1-12:00' is a time sbatch takes
    minimal["baselines"], minimal["launcher"] = ["base"], {"local": {"gpus": [0, 0]}}
    with pytest.raises(SpecErrors, match="GPU ids must be unique"):
        spec_from_dict(minimal)


def test_a_local_benchmark_file_under_an_unknown_name_says_what_name_to_give(minimal):
    minimal["eval"]["benchmarks"] = [{"name": "mybench", "path": "mine.jsonl"}]
    assert (
        "a local file takes the name of the benchmark whose layout it has"
        in errors_for(minimal)["eval.benchmarks[0].name"]
    )


def test_a_yaml_boolean_is_not_taken_for_a_number(minimal, write_spec):
    minimal["n_examples"] = True
    minimal["seeds"] = [0, True]
    minimal["eval"]["sampling"] = {"temperature": False, "top_p": 1}
    minimal["train"] = {"learning_rate": 1, "gradient_checkpointing": True}  # a real boolean still reads as one
    with pytest.raises(SpecErrors) as info:
        load_spec(write_spec(minimal, "s.yaml"))
    errs = errors_of(info.value)
    assert errs == {
        "n_examples": "expected a number, got the boolean true",
        "seeds": "expected numbers, got a boolean in [0, true]",
        "eval.sampling.temperature": "expected a number, got the boolean false",
    }
    assert "s.yaml:" in str(info.value)  # located in the file like every other error


def test_an_inverted_range_is_an_error_at_its_yaml_path(write_spec):
    path = write_spec(
        """name: inverted
model: {name_or_path: m/m}
pool: [{path: p.jsonl}]
factors:
  difficulty:
    levels:
      hard: {min: 4, max: 2}
      easy: {min: 1, max: 1}
  length:
    levels:
      short: {min_tokens: 900, max_tokens: 100}
"""
    )
    with pytest.raises(SpecErrors) as info:
        load_spec(path)
    errs = {e.path: e for e in info.value.errors}
    assert "min 4 > max 2" in errs["factors.difficulty.levels.hard"].message
    assert errs["factors.difficulty.levels.hard"].line == 7
    assert "min_tokens 900 > max_tokens 100" in errs["factors.length.levels.short"].message
    assert len(errs) == 2  # min == max is a band of one value


def test_a_sqlite_database_in_a_missing_directory_is_refused_by_plan_and_a_warning_of_validate(
    minimal, write_spec, in_tmp, monkeypatch, capsys
):
    """A typo in the database's directory would start a new, empty history: `plan` exits 2 naming the URI and the
    directory, before anything runs. `validate` only warns, as for missing data: a cluster spec naming a
    cluster path validates on a laptop. The default database and one in the results root are not refused."""
    from framework.cli import main

    path = write_spec({**minimal, "tracking": {"uri": "sqlite:///reslts/mlflow.db"}})
    assert main(["plan", str(path), "--no-build"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:" in err and "tracking.uri: 'sqlite:///reslts/mlflow.db'" in err and "in reslts," in err
    assert "Traceback" not in err
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "tracking.uri: 'sqlite:///reslts/mlflow.db'" in err and "error:" not in err
    assert not (in_tmp / "reslts").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///nowhere/m.db")
    assert main(["plan", str(write_spec(minimal, "env.yaml")), "--no-build"]) == 2
    assert "MLFLOW_TRACKING_URI: 'sqlite:///nowhere/m.db'" in capsys.readouterr().err
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    fine = {**minimal, "results_dir": "out", "tracking": {"uri": "sqlite:///out/mlflow.db"}}
    assert main(["validate", str(write_spec(fine, "fine.yaml")), str(write_spec(minimal, "default.yaml"))]) == 0
    assert "warning" not in capsys.readouterr().err


def test_the_results_root_the_command_uses_is_exempt_from_the_tracking_directory_check(minimal, in_tmp, monkeypatch):
    """The sweep creates its results root: a database there is no typo, whether the root comes from the spec,
    $ABLATE_RESULTS_DIR or --results-dir (`results_base`)."""
    from framework.spec import spec_from_dict
    from framework.sweep.plan import PlanError, build_plan

    spec = spec_from_dict({**minimal, "tracking": {"uri": "sqlite:///scratch/res/mlflow.db"}})
    with pytest.raises(PlanError, match="scratch/res"):
        build_plan(spec, check_tracking=True)
    assert build_plan(spec, results_base="scratch/res", check_tracking=True).cells  # --results-dir scratch/res
    assert build_plan(spec, results_base=in_tmp / "scratch" / "res", check_tracking=True).cells
    monkeypatch.setenv("ABLATE_RESULTS_DIR", "scratch/res")
    assert build_plan(spec, check_tracking=True).cells
    with pytest.raises(PlanError, match="scratch/res"):  # --results-dir elsewhere wins over the variable
        build_plan(spec, results_base="elsewhere", check_tracking=True)


def test_a_bad_tracking_directory_never_stops_status_cancel_or_a_stage_that_does_not_log(
    minimal, write_spec, in_tmp, monkeypatch, capsys
):
    """Inspecting or stopping a sweep must not depend on its tracking settings (a stray MLFLOW_TRACKING_URI in
    the shell): only the commands that start one refuse the directory."""
    from framework.cli import main

    path = write_spec(minimal)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///nowhere/m.db")
    assert main(["plan", str(path), "--no-build"]) == 2
    capsys.readouterr()
    assert main(["status", str(path), "--json"]) == 0
    assert main(["cancel", str(path)]) == 0
    assert "nowhere" not in capsys.readouterr().err
