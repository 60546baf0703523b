"""The package's layering, checked by import-linter's contracts in .importlinter: stages never import each other
(they talk through the store), launchers import no stage, the core (spec, sweep, store) and the shared pieces import
no stage, no launcher, no report and no CLI. `make lint` runs the same contracts."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

from framework.sweep.stages import STAGES

ROOT = Path(__file__).resolve().parents[2]


def contracts() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    return config


def test_every_stage_package_is_in_the_independence_contract():
    """A new stage must not escape the contract: each stage's entry point lives in framework.<stage>."""
    modules = contracts()["importlinter:contract:stages"]["modules"].split()
    packages = {STAGES[s].target.split(":")[0].rsplit(".", 1)[0] for s in STAGES}
    assert packages == {f"framework.{s}" for s in STAGES}
    assert set(modules) == packages


def test_the_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout
