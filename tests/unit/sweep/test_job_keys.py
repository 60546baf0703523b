"""Every stage job key of every shipped spec is the one recorded in job_keys.json: a refactor, a new option or a
moved module must not change the key of a result a researcher has already paid for. A deliberate change (a
stage's version bumped because its output changed) rewrites the file with
`.venv/bin/python -m tests.unit.sweep.test_job_keys --write` and says why in its commit."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

from framework.spec import load_spec
from framework.sweep.plan import build_plan

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).with_name("job_keys.json")
SPECS = sorted((ROOT / "ablations").glob("*.yaml"))


def job_ids(path: Path, scratch: Path) -> list[str]:
    """The plan's job ids, planned in `scratch` where stand-ins of the cluster's local data files are made (the
    same stand-ins every time, so their content keys are stable)."""
    cwd = Path.cwd()
    os.chdir(scratch)
    try:
        loaded = load_spec(path)
        for warning in build_plan(loaded.spec, path, strict=False).warnings:
            if "'" in warning:
                rel = scratch / warning.split("'")[1]
                rel.parent.mkdir(parents=True, exist_ok=True)
                rel.write_text('{"problem": "1+1", "expected_answer": "2"}\n')
        return sorted(build_plan(loaded.spec, path).jobs)
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_job_keys_are_unchanged(path: Path, tmp_path: Path):
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert path.name in golden, (
        f"{path.name} has no recorded keys: run `python -m tests.unit.sweep.test_job_keys --write`"
    )
    now = job_ids(path, tmp_path)
    recorded = golden[path.name]
    assert now == recorded, {"new": sorted(set(now) - set(recorded)), "gone": sorted(set(recorded) - set(now))}


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    keys = {}
    for spec in SPECS:
        with tempfile.TemporaryDirectory() as tmp:
            keys[spec.name] = job_ids(spec, Path(tmp))
    GOLDEN.write_text(json.dumps(keys, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN} ({sum(map(len, keys.values()))} job keys of {len(keys)} specs)")
