"""Stage keys: deterministic, stable across processes, and changed exactly by the inputs that matter."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framework.spec import spec_from_dict
from framework.sweep.plan import PlanError, build_plan
from tests.helpers import MINIMAL


def jobs_of(data: dict) -> dict[str, set[str]]:
    """stage -> set of job keys."""
    plan = build_plan(spec_from_dict(data))
    out: dict[str, set[str]] = {}
    for j in plan.jobs.values():
        out.setdefault(j.stage, set()).add(j.key)
    return out


def changed_stages(before: dict, after: dict) -> set[str]:
    a, b = jobs_of(before), jobs_of(after)
    return {s for s in set(a) | set(b) if a.get(s, set()) != b.get(s, set())}


def test_plan_shape_and_sharing(minimal):
    plan = build_plan(spec_from_dict(minimal))
    stages = {s: len(plan.by_stage(s)) for s in ("model", "pool", "data", "train", "eval", "log")}
    assert stages == {"model": 0, "pool": 1, "data": 8, "train": 8, "eval": 9, "log": 9}
    pool = plan.by_stage("pool")[0]
    assert len(pool.cells) == 8  # one pool job shared by every arm
    # deps point at existing jobs and precede their dependents (insertion order is topological)
    order = list(plan.jobs)
    for j in plan.jobs.values():
        assert all(d in plan.jobs and order.index(d) < order.index(j.id) for d in j.deps)


def test_shared_data_when_seeds_only_vary_training(minimal):
    minimal["resample_per_seed"] = False
    plan = build_plan(spec_from_dict(minimal))
    assert len(plan.by_stage("data")) == 4 and len(plan.by_stage("train")) == 8
    # Reordering or prepending seeds keeps every training set (and every existing training).
    minimal["seeds"] = [7, 1, 0]
    more = build_plan(spec_from_dict(minimal))
    assert {j.key for j in more.by_stage("data")} == {j.key for j in plan.by_stage("data")}
    assert {j.key for j in plan.by_stage("train")} <= {j.key for j in more.by_stage("train")}
    minimal["data_seed"] = 3  # another shared draw
    assert not {j.key for j in build_plan(spec_from_dict(minimal)).by_stage("data")} & {
        j.key for j in plan.by_stage("data")
    }


def test_keyword_levels_share_nothing_but_the_pool(minimal):
    plan = build_plan(spec_from_dict(minimal))
    keep = plan.cell_jobs["source=qwq_32b_preview,keywords=keep,seed=0"]
    mask = plan.cell_jobs["source=qwq_32b_preview,keywords=mask,seed=0"]
    assert keep["pool"] == mask["pool"] and keep["data"] != mask["data"]


def test_tiny_model_gets_a_model_stage_that_everything_depends_on(minimal):
    minimal["model"] = {"tiny": {}}
    plan = build_plan(spec_from_dict(minimal))
    (model,) = plan.by_stage("model")
    assert model.id in plan.by_stage("pool")[0].deps
    assert all(model.id in j.deps for j in plan.by_stage("train"))
    base_eval = plan.cell_jobs["baseline=base"]["eval"]
    assert plan.jobs[base_eval[0]].deps == [model.id]


def test_missing_local_files_are_plan_errors(minimal, in_tmp):
    minimal["pool"] = [{"path": "nope.jsonl"}]
    minimal["model"] = {"name_or_path": "./no-model"}
    with pytest.raises(PlanError) as info:
        build_plan(spec_from_dict(minimal))
    assert len(info.value.problems) == 2
    plan = build_plan(spec_from_dict(minimal), strict=False)
    assert len(plan.warnings) == 2


def test_pool_file_content_is_part_of_the_key(minimal, in_tmp):
    (in_tmp / "pool.jsonl").write_text('{"problem": "1+1", "trace": "2"}\n')
    minimal["pool"] = [{"path": "pool.jsonl"}]
    before = jobs_of(minimal)
    (in_tmp / "pool.jsonl").write_text('{"problem": "1+1", "trace": "two"}\n')
    assert jobs_of(minimal)["pool"] != before["pool"]


# ------------------------------------------------------------------------ keys change iff inputs change
def _set(data: dict, path: str, value) -> None:
    node = data
    parts = path.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


ARMS = {"data", "train", "eval", "log"}
# (path, value strategy, stages whose keys must change; all others must not)
MUTATIONS = [
    ("description", st.text(min_size=1, max_size=20), set()),
    ("launcher.kind", st.just("slurm"), set()),
    ("launcher.slurm.partition", st.text(alphabet="abcdefgh", min_size=1, max_size=8), set()),
    ("train.zero_stage", st.sampled_from([0, 1, 2]), set()),
    ("train.gradient_checkpointing", st.just(False), set()),
    ("eval.tensor_parallel_size", st.integers(2, 8), set()),
    ("train.learning_rate", st.floats(1e-7, 1e-3).filter(lambda x: x != 1e-5), {"train", "eval", "log"}),
    ("train.epochs", st.integers(4, 20), {"train", "eval", "log"}),
    ("train.shuffle", st.just("every_epoch"), {"train", "eval", "log"}),
    ("train.shuffle", st.just("once"), set()),  # the default, keyed only when it differs
    ("n_examples", st.integers(1, 19), ARMS),
    (
        "annotate.reflection_keywords",
        st.lists(st.sampled_from(["wait", "hmm", "so"]), min_size=1, unique=True),
        {"pool", *ARMS},
    ),
    ("eval.sampling.temperature", st.floats(0.01, 0.5), {"eval", "log"}),  # 0 is greedy: refused with samples > 1
    ("eval.samples", st.integers(1, 3), {"eval", "log"}),
    ("prompt.system", st.text(min_size=1, max_size=10), {"train", "eval", "log"}),
    ("tracking.experiment", st.text(alphabet="xyz", min_size=1, max_size=5), {"log"}),
    ("model.dtype", st.sampled_from(["float32", "bfloat16"]), {"train", "eval", "log"}),
    ("eval.grading.workers", st.integers(2, 8), set()),
    ("eval.grading.fallbacks", st.just(False), {"pool", *ARMS}),  # the pool's `correct` labels too
    ("eval.grading.score_truncated", st.just(True), {"eval", "log"}),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_keys_change_iff_an_input_that_matters_changes(data):
    path, values, expected = data.draw(st.sampled_from(MUTATIONS))
    after = copy.deepcopy(MINIMAL)
    _set(after, path, data.draw(values))
    assert changed_stages(MINIMAL, after) == expected, path


def test_the_run_only_fields_are_marked_in_the_schema_and_keyed_nowhere():
    """Which fields leave a job's key is said by the field itself (json_schema_extra=RUN_ONLY), beside its
    description: the plan keeps no list of its own to forget a new field in."""
    from framework.spec.base import run_only_fields
    from framework.spec.models import EvalSpec, TrainSpec

    assert set(run_only_fields(TrainSpec)) == {
        "zero_stage", "offload_optimizer", "offload_params", "zero3_gather_per_layer", "zero3_memory_efficient_linear",
        "gradient_checkpointing", "loss_chunk_tokens", "lean_activations", "attn_implementation", "sdpa_backends",
        "checkpoint_every_steps", "keep_checkpoint", "processes", "nodes",
    }  # fmt: skip
    assert run_only_fields(EvalSpec) == {
        "tensor_parallel_size": True, "data_parallel_size": True, "truncation_warning": True, "pass_k": True,
        "grading": {"workers": True}, "bundle": True, "reuse_engine": True,
    }  # fmt: skip
    for path, value in [("train.offload_params", True), ("train.nodes", 2), ("train.keep_checkpoint", False),
                        ("eval.data_parallel_size", 2), ("eval.truncation_warning", 0.5), ("eval.bundle", 3),
                        ("eval.reuse_engine", False), ("eval.tensor_parallel_size", 2)]:  # fmt: skip
        after = copy.deepcopy(MINIMAL)
        _set(after, path, value)
        assert changed_stages(MINIMAL, after) == set(), path


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(2, 1000), level=st.text(alphabet="abcxyz_", min_size=1, max_size=8))
def test_adding_cells_never_invalidates_existing_jobs(seed, level):
    after = copy.deepcopy(MINIMAL)
    after["seeds"] = [*MINIMAL["seeds"], seed]
    after["factors"]["source"]["levels"] = [*MINIMAL["factors"]["source"]["levels"], "zz" + level]
    before, now = jobs_of(MINIMAL), jobs_of(after)
    assert all(before[s] <= now[s] for s in before)
    assert all(len(now[s]) > len(before[s]) for s in ("data", "train"))


def test_level_param_change_touches_only_that_levels_cells(minimal):
    before = build_plan(spec_from_dict(minimal))
    minimal["factors"]["keywords"]["levels"]["mask"]["replacement"] = "thus"
    after = build_plan(spec_from_dict(minimal))
    for cell_id, stages in before.cell_jobs.items():
        same = stages["data"] == after.cell_jobs[cell_id]["data"]
        assert same == ("keywords=mask" not in cell_id)


def test_keys_are_stable_across_processes(minimal):
    here = {j for j in build_plan(spec_from_dict(minimal)).jobs}
    script = textwrap.dedent(
        f"""
        import json
        from framework.sweep.plan import build_plan
        from framework.spec import spec_from_dict
        print(json.dumps(sorted(build_plan(spec_from_dict(json.loads({json.dumps(json.dumps(minimal))}))).jobs)))
        """
    )
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
        assert set(json.loads(out.stdout)) == here


def test_a_pass_rate_files_content_and_a_match_total_tokens_reference_are_keyed(minimal, in_tmp):
    rates = in_tmp / "rates.jsonl"
    rates.write_text('{"problem_id": "p1", "correct": true}\n')
    minimal["annotate"] = {"pass_rates": str(rates)}
    minimal["factors"] = {
        "length": {
            "levels": {"long": {"bins": 2, "bin": 1}, "short": {"bins": 2, "bin": 0, "match_total_tokens": True}}
        }
    }
    before = jobs_of(minimal)
    rates.write_text('{"problem_id": "p1", "correct": false}\n')
    assert jobs_of(minimal)["pool"] != before["pool"]
    after = copy.deepcopy(minimal)
    after["factors"]["length"]["levels"]["long"]["bins"] = 3  # the reference sets the short arm's token budget
    after["factors"]["length"]["levels"]["long"]["bin"] = 2
    short_before = {k for k in jobs_of(minimal)["data"]}
    assert len(short_before & jobs_of(after)["data"]) == 0


def test_the_pool_depends_on_the_benchmarks_only_when_it_leaves_their_problems_out(minimal):
    more = copy.deepcopy(minimal)
    more["eval"]["benchmarks"] = ["aime24", "aime25"]
    assert jobs_of(minimal)["pool"] == jobs_of(more)["pool"]  # adding a benchmark retrains nothing by default
    minimal["annotate"] = more["annotate"] = {"exclude_eval_problems": True}
    assert jobs_of(minimal)["pool"] != jobs_of(more)["pool"]


def test_a_factor_whose_code_changed_rebuilds_only_its_arms(minimal, monkeypatch):
    import dataclasses

    from framework.data.factors import keywords
    from framework.registry import FACTORS

    only_source = copy.deepcopy(minimal)
    del only_source["factors"]["keywords"]
    before, before_source = jobs_of(minimal), jobs_of(only_source)
    bumped = dataclasses.replace(keywords.FACTOR, version="99")
    monkeypatch.setattr(FACTORS, "resolve", lambda name, _r=FACTORS.resolve: bumped if name == "keywords" else _r(name))
    assert jobs_of(minimal)["data"].isdisjoint(before["data"])  # every arm here has a keywords level
    assert jobs_of(only_source) == before_source


def test_a_pinned_hub_revision_is_keyed_and_an_unpinned_one_is_a_note(minimal):
    minimal["train"] = {"global_batch_size": 4}  # divides the 20 examples: no note about the batch
    plan = build_plan(spec_from_dict(minimal))
    assert plan.notes == [
        "pool[0]: hub dataset 'nvidia/Nemotron-Math-HumanReasoning' is read at its latest revision; pin `revision:` "
        "to a commit so a new upload cannot change it under the same key",
        "eval.benchmarks[0]: aime24 is read from hub dataset 'HuggingFaceH4/aime_2024' at its latest revision; pin "
        "`revision:` to a commit so a new upload cannot change it under the same key",
        "model: hub model 'Qwen/Qwen2.5-0.5B' is read at its latest revision; pin `revision:` to a commit so a new "
        "upload cannot change it under the same key",
    ]
    pinned = copy.deepcopy(minimal)
    pinned["pool"][0]["revision"] = "a1b2c3"
    assert changed_stages(minimal, pinned) == {"pool", "data", "train", "eval", "log"}
    base_evals = {j.key for j in build_plan(spec_from_dict(minimal)).by_stage("eval") if j.deps == []}
    pinned["eval"]["benchmarks"] = [{"name": "aime24", "revision": "d4e5f6"}]
    pinned["model"]["revision"] = "0f0f0f"
    plan = build_plan(spec_from_dict(pinned))
    assert plan.notes == [] and not base_evals & {j.key for j in plan.by_stage("eval")}


def test_a_global_batch_that_does_not_divide_the_examples_is_a_note(minimal):
    minimal["n_examples"], minimal["train"] = 20, {"global_batch_size": 16}
    assert build_plan(spec_from_dict(minimal)).notes[-1] == (
        "train: global_batch_size 16 does not divide n_examples 20: every epoch ends with a step of 4 examples, "
        "the same ones each epoch (train.shuffle: once)"
    )
    minimal["train"]["shuffle"] = "every_epoch"
    assert build_plan(spec_from_dict(minimal)).notes[-1].endswith("ends with a step of 4 examples")
    minimal["train"] = {"global_batch_size": 4}
    assert not any(n.startswith("train:") for n in build_plan(spec_from_dict(minimal)).notes)


def test_a_revision_for_a_benchmark_without_a_hub_copy_is_a_plan_error(minimal):
    minimal["eval"]["benchmarks"] = [{"name": "toy", "revision": "v1"}]
    with pytest.raises(PlanError, match=r"eval.benchmarks\[0\].revision: toy has no hub copy to pin"):
        build_plan(spec_from_dict(minimal))


def test_a_factor_version_can_depend_on_the_level_so_unchanged_levels_keep_their_keys():
    from framework.sweep.plan import factor_versions

    binned = ["difficulty", "difficulty", "easy", {"by": "label", "bins": 2, "bin": 0}]
    ranged = ["difficulty", "difficulty", "low", {"by": "label", "min": 1.0}]
    assert factor_versions([binned]) == {"difficulty": "2"}  # bins rank problems since version 2
    assert factor_versions([ranged]) == {}


def test_a_batch_the_slurm_train_jobs_gpus_cannot_split_is_a_plan_error(minimal):
    minimal["train"] = {"global_batch_size": 4}
    minimal["launcher"] = {"kind": "slurm", "slurm": {"gpus_per_node": 8}}
    with pytest.raises(
        PlanError, match=r"global_batch_size 4 is not a multiple of .* 8 processes .*\(8 from the Slurm"
    ):
        build_plan(spec_from_dict(minimal))
    minimal["launcher"]["slurm"]["stages"] = {"train": {"gpus_per_node": 4}}  # the train job asks for 4 GPUs
    build_plan(spec_from_dict(minimal))
    minimal["launcher"] = {"kind": "local", "local": {"gpus": [0, 1, 2]}}
    with pytest.raises(PlanError, match=r"3 processes .*\(3 from launcher.local.gpus\)"):
        build_plan(spec_from_dict(minimal))
    minimal["launcher"] = {"kind": "local"}  # the GPUs visible where it runs: checked there, before launch
    build_plan(spec_from_dict(minimal))


def test_a_spec_uri_that_overrides_the_environment_is_noted(minimal, monkeypatch):
    minimal["tracking"] = {"uri": "http://spec-server:5000"}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://site-server:5000")
    notes = build_plan(spec_from_dict(minimal)).notes
    assert any("wins over MLFLOW_TRACKING_URI (http://site-server:5000)" in n for n in notes)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://spec-server:5000")
    assert not any("MLFLOW_TRACKING_URI" in n for n in build_plan(spec_from_dict(minimal)).notes)


def test_a_slurm_eval_job_with_fewer_gpus_than_vllm_needs_is_a_plan_problem(minimal):
    minimal["eval"]["tensor_parallel_size"] = 8
    minimal["launcher"] = {"kind": "slurm", "slurm": {"gpus_per_node": 4, "stages": {"train": {"gpus_per_node": 4}}}}
    minimal["train"] = {"global_batch_size": 4}
    with pytest.raises(PlanError, match=r"eval: tensor_parallel_size x data_parallel_size = 8 GPUs, but the Slurm"):
        build_plan(spec_from_dict(minimal))
    minimal["launcher"]["slurm"]["stages"]["eval"] = {"gpus_per_node": 8}
    build_plan(spec_from_dict(minimal))


def test_a_setup_line_that_holds_a_secret_is_noted_without_the_secret(minimal):
    key = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"
    setup = ["module load cuda", f"export WANDB_API_KEY={key}", "export HF_TOKEN=$(cat ~/.hf_token)"]
    minimal["launcher"] = {"kind": "slurm", "slurm": {"setup": setup}}
    notes = [n for n in build_plan(spec_from_dict(minimal)).notes if "launcher.slurm.setup" in n]
    assert len(notes) == 1 and notes[0].startswith("launcher.slurm.setup[1] (export WANDB_API_KEY=[REDACTED])")
    assert key not in notes[0] and "$(cat ~/.x)" in notes[0]


def test_a_baseline_with_its_own_model_is_evaluated_on_it_alone(minimal, in_tmp):
    """A baseline's eval jobs read its model (in its dtype), not the base model; a tiny one is built by a model job
    of its own; a missing local one is a plan problem named by the baseline; an unpinned hub one is a note."""
    minimal["baselines"] = [
        "base",
        {"name": "big", "model": {"name_or_path": "org/big", "dtype": "bfloat16"}},
        {"name": "small", "model": {"tiny": {}}},
        {"name": "gone", "model": {"name_or_path": "./no-model"}},
    ]
    with pytest.raises(PlanError) as info:
        build_plan(spec_from_dict(minimal))
    assert info.value.problems == ["baselines.gone: model directory './no-model' does not exist"]
    plan = build_plan(spec_from_dict(minimal), strict=False)
    assert plan.warnings == info.value.problems
    jobs = {name: plan.cell_jobs[f"baseline={name}"] for name in ("base", "big", "small", "gone")}
    assert all(s["pool"] == s["data"] == s["train"] == [] for s in jobs.values())
    (big_eval,) = (plan.jobs[j] for j in jobs["big"]["eval"])
    assert big_eval.deps == [] and big_eval.config["dtype"] == "bfloat16"
    assert big_eval.config["model"] == {"hub": "org/big", "revision": "main", "chat_template": None}
    (base_eval,) = (plan.jobs[j] for j in jobs["base"]["eval"])
    assert base_eval.config["model"]["hub"] == "Qwen/Qwen2.5-0.5B" and base_eval.config["dtype"] == "auto"
    (small_model,) = jobs["small"]["model"]
    assert plan.by_stage("model") == [plan.jobs[small_model]]  # the base model is a hub model: no job of its own
    (small_eval,) = (plan.jobs[j] for j in jobs["small"]["eval"])
    assert small_eval.deps == [small_model] and small_eval.config["checkpoint"] == [small_model]
    assert all(plan.jobs[s["log"][0]].deps == s["eval"] for s in jobs.values())
    assert "baselines.big: hub model 'org/big' is read at its latest revision" in "\n".join(plan.notes)
    assert "baselines.small" not in "\n".join(plan.notes)
