"""Load a spec file into a validated `AblationSpec`, reporting every problem at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from framework.hashing import content_key
from framework.spec.ablation import AblationSpec
from framework.spec.checks import check_factors, check_grid, check_names
from framework.spec.errors import SpecError, SpecErrors, from_validation_error
from framework.spec.fields import drop_default_nulls, null_rules
from framework.spec.yamlsrc import Source, SpecFileError, load_source

__all__ = ["AblationSpec", "LoadedSpec", "SpecError", "SpecErrors", "SpecFileError", "load_spec", "validate"]


@dataclass
class LoadedSpec:
    """A validated spec and where it came from."""

    spec: AblationSpec
    path: Path | None
    source: Source

    @property
    def files(self) -> list[Path]:
        return self.source.files

    @property
    def hash(self) -> str:
        """The spec's content hash, launcher settings excluded (moving a sweep to Slurm is the same study): what
        `ablate plan --json` prints and MLflow tags each cell with."""
        return content_key(self.spec.model_dump(mode="json", exclude={"launcher"}))


def validate(source: Source) -> AblationSpec:
    """Validate merged raw data; raise SpecErrors with all problems (schema and registry checks together)."""
    errors: list[SpecError] = []
    spec: AblationSpec | None = None
    source.data = drop_default_nulls(source.data, AblationSpec)  # schema fields only: a null level stays a level
    try:
        spec = AblationSpec.model_validate(source.data)
    except ValidationError as e:
        errors.extend(from_validation_error(e, source, AblationSpec))
    factor_errors, params = check_factors(source)
    errors.extend(factor_errors)
    errors.extend(check_grid(source))
    errors.extend(check_names(source))
    if errors or spec is None:
        raise SpecErrors(_dedupe(errors))
    for fname, factor in spec.factors.items():
        for level in factor.levels:
            level.params = params.get(fname, {}).get(level.name, level.params)
    return spec


def _dedupe(errors: list[SpecError]) -> list[SpecError]:
    seen: set[tuple[str, str]] = set()
    out = []
    for e in errors:
        if (e.path, e.message) not in seen:
            seen.add((e.path, e.message))
            out.append(e)
    return sorted(out, key=lambda e: (e.file or "", e.line or 0, e.path))


def load_spec(path: str | Path) -> LoadedSpec:
    """Read, merge includes, validate. Raises SpecFileError (unreadable) or SpecErrors (invalid)."""
    source = load_source(path, nulls=null_rules(AblationSpec))  # a null in a base reads as in the spec
    return LoadedSpec(spec=validate(source), path=Path(path), source=source)


def spec_from_dict(data: dict[str, Any]) -> AblationSpec:
    """Validate a spec built in code (tests, notebooks)."""
    return validate(Source(data=data))
