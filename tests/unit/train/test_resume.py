"""Which checkpoint a restarted training resumes from: only one written with the same ranks and ZeRO settings."""

from __future__ import annotations

import json
from pathlib import Path

from framework.train.stage import resume_point
from framework.train.worker import COMPLETE


def _checkpoints(root: Path, shards: dict, steps: dict[int, bool]) -> Path:
    root.mkdir()
    (root / "layout.json").write_text(json.dumps(shards))
    for step, complete in steps.items():
        (root / f"checkpoint-{step}").mkdir()
        if complete:
            (root / f"checkpoint-{step}" / COMPLETE).write_text(str(step))
    return root


def test_the_newest_complete_checkpoint_of_the_same_layout(tmp_path: Path) -> None:
    shards = {"world_size": 2, "zero": {"stage": 3, "offload_optimizer": {"device": "cpu"}}}
    root = _checkpoints(tmp_path / "c", shards, {5: True, 10: True, 15: False})
    assert resume_point(root, shards) == root / "checkpoint-10"


def test_other_ranks_or_zero_settings_start_over(tmp_path: Path) -> None:
    shards = {"world_size": 2, "zero": {"stage": 3, "offload_optimizer": {"device": "cpu"}}}
    root = _checkpoints(tmp_path / "c", shards, {5: True})
    assert resume_point(root, {**shards, "world_size": 4}) is None
    assert resume_point(root, {**shards, "zero": {"stage": 3}}) is None  # offload turned off between attempts
    assert resume_point(tmp_path / "none", shards) is None


def test_a_checkpoint_from_before_zero_settings_were_recorded_resumes_on_the_same_ranks(tmp_path: Path) -> None:
    shards = {"world_size": 2, "zero": {"stage": 3}}
    root = _checkpoints(tmp_path / "c", {"world_size": 2, "micro_batch_size": 1}, {5: True})
    assert resume_point(root, shards) == root / "checkpoint-5"
    assert resume_point(root, {**shards, "world_size": 4}) is None
