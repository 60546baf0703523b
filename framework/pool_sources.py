"""Reading one pool source (file, dataset directory, hub dataset or preset) into a DataFrame in the pool schema.

Every problem is reported with where it is (file and line or row, field), and all problems of a source are
collected before failing, so a malformed pool is fixed in one pass.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from framework.errors import UserError
from framework.grading import answer_text
from framework.registry import POOL_PRESETS
from framework.spec.models import POOL_FIELDS, PoolSourceSpec

REQUIRED = ("problem", "trace")
SUFFIX_FORMAT = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


class PoolError(UserError):
    """A malformed pool source."""


def normalize_problem(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def problem_id_for(text: str) -> str:
    """Stable id from the normalized problem text, for pools that carry none."""
    return "p" + hashlib.sha256(normalize_problem(text).encode("utf-8")).hexdigest()[:12]


def read_jsonl(path: Path) -> pd.DataFrame:
    """Line-by-line, so a bad line is reported by number instead of failing the whole file opaquely."""
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                problems.append(f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start})")
                continue
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                problems.append(f"{path}:{lineno}: invalid JSON ({e.msg})")
                continue
            if not isinstance(obj, dict):
                problems.append(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
                continue
            obj["_where"] = f"{path}:{lineno}"
            rows.append(obj)
    if problems:
        raise PoolError(problems[:50] + ([f"{path}: ... and {len(problems) - 50} more"] if len(problems) > 50 else []))
    # One object column per field: a numeric column with a gap would turn 3 into "3.0" and a long id into 1e16.
    return pd.DataFrame(rows, dtype=object)


def _with_rows(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    frame["_where"] = [f"{label} row {i}" for i in range(len(frame))]
    return frame


def read_file(path: Path, fmt: str) -> pd.DataFrame:
    if fmt == "auto":
        if path.is_dir():
            fmt = "hf"
        else:
            fmt = SUFFIX_FORMAT.get(path.suffix.lower(), "")
            if not fmt:
                raise PoolError(f"{path}: unknown file type {path.suffix!r}; set format: jsonl|json|parquet|csv|hf")
    try:
        if fmt == "jsonl":
            return read_jsonl(path)
        if fmt == "json":
            return _with_rows(pd.read_json(path), str(path))
        if fmt == "parquet":
            return _with_rows(pd.read_parquet(path), str(path))
        if fmt == "csv":
            return _with_rows(pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8"), str(path))
    except UnicodeDecodeError as e:
        raise PoolError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except (ValueError, OSError) as e:
        raise PoolError(f"{path}: cannot read as {fmt} ({e})") from None
    return _load_dataset_dir(path)


def _load_dataset_dir(path: Path, split: str = "train") -> pd.DataFrame:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError):
        ds = datasets.load_dataset(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise PoolError(f"{path}: no split {split!r}; splits: {list(ds)}")
        ds = ds[split]
    return _with_rows(ds.to_pandas(), str(path))


def read_hub(hub: str, split: str, src: PoolSourceSpec) -> pd.DataFrame:
    """The split's rows, filtered and limited as the source says; `attrs["hub"]` names the dataset and commit."""
    from framework.hub_data import read_hub_split

    revision = src.revision
    where = {c: (v if isinstance(v, list) else [v]) for c, v in src.filter.items()}
    try:
        frame = read_hub_split(hub, split, revision=revision, where=where, limit=src.limit)
    except Exception as e:  # the hub client raises many types; the message is what the user needs
        at = f" at revision {revision!r}" if revision else ""
        raise PoolError(f"hub dataset {hub!r} (split {split!r}){at} cannot be loaded: {e}") from None
    return _with_rows(frame, f"{hub}[{split}]")


def read_source(src: PoolSourceSpec, index: int, resolve: Any) -> tuple[pd.DataFrame, str]:
    """Raw rows of one source and its default source label. `resolve(path)` finds local files."""
    columns = dict(src.columns)
    label = f"pool[{index}]"
    split = src.split or "train"
    if src.preset is not None:
        preset = POOL_PRESETS.resolve(src.preset)
        split = src.split or preset.split  # an explicit split, even 'train', is the one read
        columns = {**preset.columns, **columns}
        label = src.preset
        if src.preset == "toy" and src.path is None:
            from framework.toy import make_world, pool_rows

            opts = dict(src.options)
            world = make_world(opts.pop("world_seed", 0))
            frame = _with_rows(pd.DataFrame(pool_rows(world, **opts)), "toy pool")
            return _select(frame, src, columns), label
        if src.path is None and src.hub is None:
            return _select(read_hub(preset.hub, split, src), src, columns), label
    if src.path is not None:
        path = resolve(src.path)
        if path is None:
            raise PoolError(f"{label}: pool file {src.path!r} does not exist")
        frame = (
            read_file(path, src.format)
            if not (path.is_dir() and src.format in ("auto", "hf"))
            else _load_dataset_dir(path, split)
        )
        label = label if src.preset else Path(src.path).stem
    else:
        frame = read_hub(src.hub or "", split, src)
        label = src.hub or label
    return _select(frame, src, columns), label


def _select(frame: pd.DataFrame, src: PoolSourceSpec, columns: dict[str, str]) -> pd.DataFrame:
    """Row filter and limit, then rename mapped columns to the internal names (unmapped ones stay as metadata)."""
    if frame.empty:
        what = f"the filter {src.filter} keeps no row" if src.filter else "no rows (an empty file or split)"
        raise PoolError(f"{src.path or src.hub or src.preset}: {what}")
    where = frame["_where"].iloc[0].rsplit(" row", 1)[0].rsplit(":", 1)[0]
    missing = [
        f"{where}: column {col!r} (mapped to {field}) not found; columns: {sorted(c for c in frame.columns if c != '_where')}"
        for field, col in columns.items()
        if col not in frame.columns
    ]
    for col in src.filter:
        if col not in frame.columns:
            missing.append(f"{where}: filter column {col!r} not found")
    if missing:
        raise PoolError(missing)
    for col, value in src.filter.items():
        allowed = value if isinstance(value, list) else [value]
        frame = frame[frame[col].isin(allowed)]
    if frame.empty:
        raise PoolError(f"{where}: the filter {src.filter} keeps no row")
    if src.limit is not None:
        frame = frame.head(src.limit)
    rename = {col: field for field, col in columns.items() if col != field}
    clashes = [c for c in rename.values() if c in frame.columns and c not in rename]
    frame = frame.drop(columns=clashes).rename(columns=rename)
    for field, col in columns.items():  # one column mapped to two fields
        if field not in frame.columns and col in frame.columns:
            frame[field] = frame[col]
    return frame.reset_index(drop=True)


def conform(frame: pd.DataFrame, label: str, constant_source: str | None) -> pd.DataFrame:
    """Check required fields and fill the optional ones; every problem names its file and line/row."""
    problems = [
        f"{label}: required field {f!r} is missing (map it with columns: {{{f}: <column>}})"
        for f in REQUIRED
        if f not in frame.columns
    ]
    if problems:
        raise PoolError(problems)
    for field in REQUIRED:
        empty = frame[field].isna() | (frame[field].astype(str).str.strip() == "")
        problems += [f"{w}: field {field!r} is empty" for w in frame.loc[empty, "_where"].head(20)]
    if problems:
        raise PoolError(problems)
    out = frame.copy()
    for field in ("source", *OPTIONAL_TEXT):  # an empty CSV cell or JSON "" is a missing value, not a label
        if field in out.columns:
            out[field] = pd.Series(
                [None if answer_text(v) is None else v for v in out[field]], index=out.index, dtype=object
            )
    out["problem"] = out["problem"].astype(str)
    out["trace"] = out["trace"].astype(str)
    if "source" not in out.columns:
        out["source"] = constant_source or label
    else:
        out["source"] = out["source"].fillna(constant_source or label)
    out["source"] = out["source"].astype(str)
    if "problem_id" not in out.columns:
        out["problem_id"] = [problem_id_for(p) for p in out["problem"]]
    out["problem_id"] = out["problem_id"].astype(str)
    for field in ("expected_answer", "difficulty", "pass_rate", "topic"):
        if field not in out.columns:
            out[field] = None
    out["pass_rate"] = pd.to_numeric(out["pass_rate"], errors="coerce").astype("float64")  # "n/a" -> missing
    out["expected_answer"] = pd.Series([answer_text(v) for v in out["expected_answer"]], index=out.index, dtype=object)
    out["topic"] = pd.Series(
        [None if answer_text(v) is None else str(v) for v in out["topic"]], index=out.index, dtype=object
    )
    return out[[*POOL_FIELDS, *(c for c in out.columns if c not in POOL_FIELDS)]]


OPTIONAL_TEXT = ("expected_answer", "difficulty", "topic")
