"""`include:` of a base spec: deep merge, overrides, what a null means in each file, cycles, and errors located in
the right file. Specs are YAML text loaded as `ablate validate` does."""

from __future__ import annotations

import pytest

from framework.spec import SpecErrors, SpecFileError, load_spec
from framework.spec.models import EvalSpec

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
    assert spec.eval.samples == 64  # the base's: `samples: ~` is the default, i.e. as if not written
    assert spec.model.name_or_path == "Qwen/Qwen2.5-32B"


def test_a_null_field_resets_what_the_files_it_includes_set(write_spec):
    write_spec(BASE.replace("samples: 64", "samples: 8"), "base.yaml")
    spec = load_spec(write_spec("name: c\ninclude: base.yaml\neval: {samples: ~}\n", "c.yaml")).spec
    assert spec.eval.samples == EvalSpec.model_fields["samples"].default  # back to the default, not 8


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


# ------------------------------------------------------------------------------------ nulls in a chain
SLURM_BASE = """name: base
model: {name_or_path: toy:base}
pool: [{preset: toy}]
eval: {benchmarks: [toy], samples: 2}
train: {global_batch_size: 4, processes: 2}
launcher:
  kind: slurm
  slurm:
    qos: high
    extra_sbatch: ["--exclusive"]
    stages:
      eval: {qos: low}
"""


def test_a_null_in_a_later_base_keeps_an_earlier_bases_value(write_spec):
    # inc_b's `processes: ~` is the default, as in the spec itself: it must not erase inc_a's 2
    write_spec(SLURM_BASE, "base.yaml")
    write_spec("train: {processes: 2, epochs: 7}\n", "inc_a.yaml")
    write_spec("train: {processes: ~, learning_rate: 0.001}\n", "inc_b.yaml")
    spec = load_spec(write_spec("include: [base.yaml, inc_a.yaml, inc_b.yaml]\nname: multi\n")).spec
    assert (spec.train.processes, spec.train.epochs, spec.train.learning_rate) == (2, 7.0, 0.001)


def test_an_error_on_a_value_a_later_null_leaves_points_at_the_file_that_set_it(write_spec):
    write_spec(SLURM_BASE, "base.yaml")
    inc_a = write_spec("train:\n  epochs: -1\n", "inc_a.yaml")
    write_spec("train: {epochs: ~}\n", "inc_b.yaml")
    with pytest.raises(SpecErrors) as info:
        load_spec(write_spec("include: [base.yaml, inc_a.yaml, inc_b.yaml]\nname: multi\n"))
    assert {e.path: (e.file, e.line) for e in info.value.errors}["train.epochs"] == (str(inc_a), 2)


@pytest.mark.parametrize(
    "files",
    [
        {"spec.yaml": SLURM_BASE.replace("{qos: low}", "{qos: ~}")},  # no include
        {"base.yaml": SLURM_BASE, "spec.yaml": "include: base.yaml\nlauncher: {slurm: {stages: {eval: {qos: ~}}}}\n"},
        {
            "base.yaml": SLURM_BASE,
            "inc.yaml": "launcher: {slurm: {stages: {eval: {qos: ~}}}}\n",
            "spec.yaml": "include: [base.yaml, inc.yaml]\n",
        },
    ],
    ids=["in-the-spec", "over-a-base", "in-a-later-base"],
)
def test_a_null_in_a_stage_override_means_none_for_that_stage_wherever_it_is_written(write_spec, files):
    from framework.sweep.resources import stage_resources

    for name, text in files.items():
        path = write_spec(text, name)
    spec = load_spec(path).spec
    assert stage_resources(spec, "eval").qos is None  # not the base's `low`, nor the launcher's `high`
    assert stage_resources(spec, "train").qos == "high"


def test_a_null_extra_sbatch_in_a_stage_override_is_no_line(write_spec):
    from framework.sweep.resources import stage_resources

    write_spec(SLURM_BASE, "base.yaml")
    spec = load_spec(write_spec("include: base.yaml\nlauncher: {slurm: {stages: {train: {extra_sbatch: ~}}}}\n")).spec
    assert spec.launcher.slurm.stages["train"].extra_sbatch == []  # it validates, as no line
    assert tuple(stage_resources(spec, "train").extra_sbatch) == ()  # none for this stage
    assert tuple(stage_resources(spec, "eval").extra_sbatch) == ("--exclusive",)  # the launcher's


def test_a_null_extra_arg_is_never_passed_on_and_unsets_an_included_one(write_spec):
    from framework.train.config import deepspeed_config, layout

    base = SLURM_BASE.replace("processes: 2}", "processes: 2, extra_args: {adam_beta2: 0.95, warmup_steps: 3}}")
    write_spec(base, "base.yaml")
    child = "include: base.yaml\ntrain:\n  offload_optimizer: true\n"
    child += "  extra_args: {adam_beta1: ~, report_to: ~, warmup_steps: ~}\n"
    train = load_spec(write_spec(child)).spec.train
    assert train.extra_args == {"adam_beta2": 0.95}  # no None; the base's warmup_steps unset
    betas = deepspeed_config(train, layout(train, gpus=0))["optimizer"]["params"]["betas"]
    assert betas == [0.9, 0.95]  # DeepSpeed's default beta1, not None
