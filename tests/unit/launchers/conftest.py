"""The fake Slurm every Slurm launcher test submits to."""

from __future__ import annotations

import pytest

from tests.unit.launchers.fakes import FakeSlurm


@pytest.fixture
def fake_slurm(monkeypatch) -> FakeSlurm:
    fake = FakeSlurm()
    monkeypatch.setattr("launchers.slurm._run", fake)
    monkeypatch.setattr("launchers.slurm.require", lambda *names: None)
    return fake
