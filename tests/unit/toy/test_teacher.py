"""The toy teacher: learned from problems no toy sweep trains or tests on, and nameable as `toy:teacher`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from framework import model_source as models
from framework.spec.models import ModelSpec
from framework.sweep import plan as plan_module
from framework.toy import make_world, split_problems
from framework.toy.teacher import TEACHER_DIR, TeacherSettings, teacher_problems, training_rows


def test_teacher_problems_avoid_every_sweeps_training_problems_and_the_test_split() -> None:
    world, settings = make_world(0), TeacherSettings()
    mine = {p.problem_id for p in teacher_problems(world, settings)}
    held = split_problems(world, n_train=settings.held_out_train, n_dev=0, n_test=settings.held_out_test)
    assert len(mine) == 2 * 4 * world.n_values - settings.held_out_train - settings.held_out_test
    assert not mine & {p.problem_id for p in held["train"]}
    assert not mine & {p.problem_id for p in held["test"]}
    # The toy benchmark's test problems and the pools of the shipped specs (n_problems up to 128) are those.
    assert not mine & {p.problem_id for p in split_problems(world, n_train=128)["train"]}
    assert not mine & {p.problem_id for p in split_problems(world)["test"]}


def test_teacher_traces_are_long_cot_and_a_function_of_the_seed() -> None:
    world, settings = make_world(0), TeacherSettings()
    problems = teacher_problems(world, settings)[:5]
    rows = training_rows(world, problems, settings)
    assert all(r["trace"].startswith("We apply") and "\\boxed" in r["trace"] for r in rows)
    assert rows == training_rows(world, problems, settings)
    assert [p.problem_id for p in problems] == [p.problem_id for p in teacher_problems(world, settings)[:5]]


def test_toy_teacher_is_a_model_name_and_unknown_toy_names_are_refused() -> None:
    assert ModelSpec(name_or_path="toy:teacher").name_or_path == "toy:teacher"
    with pytest.raises(ValidationError, match="'toy:base', 'toy:teacher'"):
        ModelSpec(name_or_path="toy:student")


def test_a_missing_toy_teacher_names_the_command_that_builds_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(models, "toy_model_path", lambda name: tmp_path / "absent")
    with pytest.raises(models.ModelError, match=r"toy teacher is missing .*ablate toy teacher"):
        models.resolve(ModelSpec(name_or_path="toy:teacher"))
    monkeypatch.setattr(plan_module, "toy_model_path", lambda name: tmp_path / "absent")
    problems: list[str] = []
    plan_module.model_identity(ModelSpec(name_or_path="toy:teacher"), None, problems, "pool[0].generate.teacher")
    assert len(problems) == 1 and "ablate toy teacher" in problems[0]


def test_the_shipped_teacher_resolves_and_is_keyed_by_its_own_weights() -> None:
    assert (TEACHER_DIR / "config.json").is_file(), "the toy teacher ships with the package (ablate toy teacher)"
    assert models.resolve(ModelSpec(name_or_path="toy:teacher")).location == str(TEACHER_DIR)
    ids = [plan_module.model_identity(ModelSpec(name_or_path=n), None, [], "m") for n in ("toy:base", "toy:teacher")]
    assert ids[0] != ids[1]
    built = json.loads((TEACHER_DIR / "teacher.json").read_text())
    # What it was built from and what it measured, as the README states.
    assert built["settings"]["held_out_train"] >= 128 and built["skill"]["test"]["greedy"] > 0.5


def test_ablate_toy_teacher_runs_the_teacher_build(monkeypatch, tmp_path: Path) -> None:
    from framework import cli

    calls: list[list[str]] = []
    monkeypatch.setattr(cli.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert cli.main(["toy", "teacher", "--seed", "3", "--out", str(tmp_path)]) == 0
    assert calls == [[calls[0][0], "-m", "framework.toy.teacher", "--seed", "3", "--out", str(tmp_path)]]
    assert cli.main(["toy", "pretrain"]) == 0 and calls[1][2] == "framework.toy.pretrain"
