"""Where a spec's files and the shipped toy models are: paths resolved as every command resolves them.

Shared by the plan (which keys what it finds) and model_source (which loads it), so neither imports the other
for a path.
"""

from __future__ import annotations

import os
from pathlib import Path

from framework.spec.models import TOY_MODELS


def resolve_path(path: str, spec_dir: Path | None) -> Path | None:
    """Relative paths resolve against the working directory, then the spec file's directory."""
    p = Path(os.path.expanduser(path))
    if p.is_absolute():
        return p if p.exists() else None
    for base in (Path.cwd(), spec_dir):
        if base is not None and (base / p).exists():
            return (base / p).resolve()
    return None


def searched(path: str, spec_dir: Path | None) -> str:
    """Where resolve_path looked, for a "does not exist" message."""
    if Path(os.path.expanduser(path)).is_absolute():
        return ""
    dirs = [str(Path.cwd())] + ([str(spec_dir)] if spec_dir is not None and spec_dir != Path.cwd() else [])
    return f" (looked in {' and '.join(dirs)})"


def toy_base_path() -> Path:
    return toy_model_path("toy:base")


def toy_model_path(name: str) -> Path:
    """The directory of a shipped toy model (`TOY_MODELS`)."""
    return Path(__file__).parent / "toy" / "assets" / TOY_MODELS[name][0]
