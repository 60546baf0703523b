"""Reading one pool source (file, dataset directory, hub dataset or preset) into a DataFrame in the pool schema.

Every problem is reported with where it is (file and line or row, field), and all problems of a source are
collected before failing, so a malformed pool is fixed in one pass.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from framework import hub_data
from framework.annotations import label_key, normalize_problem
from framework.artifacts import GENERATED_FILE
from framework.errors import UserError
from framework.grading import answer_text
from framework.registry import POOL_PRESETS
from framework.spec.pool import POOL_FIELDS, PoolSourceSpec
from framework.toy import make_world, pool_rows

REQUIRED = ("problem", "trace")
SUFFIX_FORMAT = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


class PoolError(UserError):
    """A malformed pool source."""


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
            except RecursionError:
                problems.append(f"{path}:{lineno}: JSON nested too deeply")
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


def read_json(path: Path, fields: tuple[str, ...] = ()) -> pd.DataFrame:
    """A JSON array of objects, or a table pandas' `to_json` writes (any orient but values), held as JSONL's rows
    are: one object column per field, so that no number or date is converted on the way. `fields` are the
    columns the source reads, which tell a mapping of rows from a mapping of columns."""
    data = json_rows(json.loads(path.read_text(encoding="utf-8")), fields)
    if not isinstance(data, list):
        raise PoolError(
            f"{path}: expected a JSON array of objects (one per trace) or a table written by pandas' to_json, "
            f"got {type(data).__name__}"
        )
    bad = [f"{path} row {i}: expected a JSON object, got {type(r).__name__}" for i, r in enumerate(data)]
    bad = [b for b, r in zip(bad, data) if not isinstance(r, dict)]
    if bad:
        raise PoolError(_capped(bad, str(path), "the item is no object"))
    return _with_rows(pd.DataFrame(data, dtype=object), str(path))


def json_rows(data: Any, fields: tuple[str, ...] = ()) -> Any:
    """Rows (a list of objects) of the table layouts pandas writes: records (already rows), columns (its default:
    {column: {index: value}}), index ({index: {column: value}}), split and table; lists of equal-length columns.
    Columns and index are told apart by their keys: index labels are numbers (a default index) where column
    names are not; else the level naming more of `fields` holds the columns. Anything else is returned as it
    is, for the caller to refuse."""
    if not isinstance(data, dict) or not data:
        return data
    names = data.get("columns")
    split = isinstance(names, list) and all(isinstance(c, str) for c in names)
    if isinstance(data.get("data"), list) and (split or isinstance(data.get("schema"), dict)):
        if split:  # split: columns, index, data; table: schema, data (records)
            return [dict(zip(names, r)) if isinstance(r, list) and len(r) == len(names) else r for r in data["data"]]
        return data["data"]
    values = list(data.values())
    if all(isinstance(v, list) for v in values) and len({len(v) for v in values}) == 1:  # {"problem": [...], ...}
        return [dict(zip(data, row)) for row in zip(*values)]
    if all(isinstance(v, dict) for v in values):
        inner = list(dict.fromkeys(k for v in values for k in v))
        outer_labels, inner_labels = _labels(list(data)), _labels(inner)
        named = len(set(fields) & set(inner)) > len(set(fields) & set(data))
        if (outer_labels and not inner_labels) or (outer_labels == inner_labels and named):  # orient=index
            return values
        return [{c: data[c][i] for c in data if i in data[c]} for i in inner]  # orient=columns
    return data


def _labels(keys: list[str]) -> bool:
    """Keys that look like a default index (0, 1, 2, ...), as JSON writes them."""
    return all(k.lstrip("-").isdigit() for k in keys)


def _with_rows(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    frame["_where"] = [f"{label} row {i}" for i in range(len(frame))]
    return frame


def read_file(path: Path, fmt: str, fields: tuple[str, ...] = ()) -> pd.DataFrame:
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
            return read_json(path, fields)
        if fmt == "parquet":
            return _with_rows(pd.read_parquet(path), str(path))
        if fmt == "csv":
            return _with_rows(pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8"), str(path))
    except UnicodeDecodeError as e:
        raise PoolError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except (ValueError, OSError) as e:
        raise PoolError(f"{path}: cannot read as {fmt} ({e})") from None
    except RecursionError:
        raise PoolError(f"{path}: cannot read as {fmt} (nested too deeply)") from None
    return _load_dataset_dir(path)


def _load_dataset_dir(path: Path, split: str = "train") -> pd.DataFrame:
    import datasets

    try:
        try:
            ds = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError):
            ds = datasets.load_dataset(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise PoolError(f"{path}: no split {split!r}; splits: {list(ds)}")
            ds = ds[split]
        frame = ds.to_pandas()
    except PoolError:
        raise
    except Exception as e:  # `datasets` raises many types for a directory it cannot read; the message is the help
        raise PoolError(f"{path}: cannot read as a dataset directory ({type(e).__name__}: {e})") from None
    return _with_rows(frame, str(path))


def read_hub(hub: str, split: str, src: PoolSourceSpec) -> pd.DataFrame:
    """The split's rows, filtered and limited as the source says; `attrs["hub"]` names the dataset and commit."""
    revision = src.revision
    where = {c: (v if isinstance(v, list) else [v]) for c, v in src.filter.items()}
    try:
        frame = hub_data.read_hub_split(hub, split, revision=revision, where=where, limit=src.limit)
    except Exception as e:  # the hub client raises many types; the message is what the user needs
        at = f" at revision {revision!r}" if revision else ""
        raise PoolError(f"hub dataset {hub!r} (split {split!r}){at} cannot be loaded: {e}") from None
    return _with_rows(frame, f"{hub}[{split}]")


def read_source(src: PoolSourceSpec, index: int, resolve: Any) -> tuple[pd.DataFrame, str, dict[str, str]]:
    """Raw rows of one source, its default source label and its column mapping (field -> column, for messages).
    `resolve(path)` finds local files."""
    columns = dict(src.columns)
    label = f"pool[{index}]"
    split = src.split or "train"
    if src.preset is not None:
        preset = POOL_PRESETS.resolve(src.preset)
        split = src.split or preset.split  # an explicit split, even 'train', is the one read
        columns = {**preset.columns, **columns}
        label = src.preset
        if src.preset == "toy" and src.path is None:
            opts = dict(src.options)
            world = make_world(opts.pop("world_seed", 0))
            frame = _with_rows(pd.DataFrame(pool_rows(world, **opts)), "toy pool")
            return _select(frame, src, columns), label, columns
        if src.path is None and src.hub is None:
            return _select(read_hub(preset.hub, split, src), src, columns), label, columns
    if src.path is not None:
        path = resolve(src.path)
        if path is None:
            raise PoolError(f"{label}: pool file {src.path!r} does not exist")
        frame = (
            read_file(path, src.format, (*REQUIRED, *columns.values()))
            if not (path.is_dir() and src.format in ("auto", "hf"))
            else _load_dataset_dir(path, split)
        )
        label = label if src.preset else Path(src.path).stem
    else:
        frame = read_hub(src.hub or "", split, src)
        label = src.hub or label
    return _select(frame, src, columns), label, columns


def read_generated(src: PoolSourceSpec, directory: Path, index: int) -> tuple[pd.DataFrame, str, dict[str, str]]:
    """A generated source's traces (its generate job's output) as read_source returns a file's: already in the
    pool's field names, labelled `source:` or by the teacher's name."""
    assert src.generate is not None
    frame = pd.read_parquet(directory / GENERATED_FILE)
    label = src.generate.teacher.name
    if frame.empty:
        raise PoolError(f"pool[{index}]: the generation ({label}) wrote no trace")
    return _select(frame, src, dict(src.columns)), label, dict(src.columns)


def trace_id(source: str, problem_id: str, trace: str) -> str:
    """A trace's identity in the pool: a stable hash of its source label, problem and text."""
    h = hashlib.sha256()
    for part in (source, problem_id, trace):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def _select(frame: pd.DataFrame, src: PoolSourceSpec, columns: dict[str, str]) -> pd.DataFrame:
    """Row filter and limit, then rename mapped columns to the internal names (unmapped ones stay as metadata)."""
    if frame.empty:
        what = f"the filter {src.filter} keeps no row" if src.filter else "no rows (an empty file or split)"
        raise PoolError(f"{src.path or src.hub or src.preset}: {what}")
    where = frame["_where"].iloc[0].rsplit(" row", 1)[0].rsplit(":", 1)[0]
    missing = [
        f"{where}: column {col!r} (mapped to {field}) not found; columns: {sorted(c for c in frame.columns if c != '_where')}"
        for field, col in columns.items()
        if col not in frame.columns or col == "_where"  # the reader's own column, whatever a file holds
    ]
    for col in src.filter:
        if col not in frame.columns or col == "_where":
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


MISSING_CHECKED = ("problem", "trace", "problem_id", "source", "expected_answer")
# Columns the pool and data stages add: a source column of the same name is kept as `<name>_given`.
RESERVED = ("trace_id", "origin", "n_tokens", "answer", "answer_method", "correct", "reflection_count", "topic_given")
RESERVED_DATA = ("example_index", "_stratum")


def _held(value: Any) -> str | None:
    """What a cell holds when it cannot stand for one text or label: a list, a mapping or bytes."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple, set, np.ndarray)):
        return "a list"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    return None


def _capped(lines: list[str], label: str, what: str, cap: int = 20) -> list[str]:
    return lines[:cap] + ([f"{label}: ... and {len(lines) - cap} more rows where {what}"] if len(lines) > cap else [])


def shape_problems(frame: pd.DataFrame, label: str, columns: dict[str, str]) -> list[str]:
    """Values no field can take: a list or mapping anywhere (a list of strings would train as "['a', 'b']"),
    a number as the problem or trace text."""
    problems: list[str] = []
    for field in (f for f in POOL_FIELDS if f in frame.columns):
        bad = [
            f"{w}: field {field!r}{_of(field, columns)} holds {k}, not one value"
            for w, v in zip(frame["_where"], frame[field])
            if (k := _held(v))
        ]
        if bad:
            bad[0] += "; join or pick the text in the file (a list of chat messages is not read as a trace)"
        problems += _capped(bad, label, f"{field} holds a list or mapping")
    for field in REQUIRED:
        bad = [
            f"{w}: field {field!r}{_of(field, columns)} holds {v!r}, not text"
            for w, v in zip(frame["_where"], frame[field])
            if not isinstance(v, str) and _held(v) is None and answer_text(v) is not None
        ]
        problems += _capped(bad, label, f"{field} is not text")
    return problems


def _absent(value: Any) -> bool:
    """No value: None, NaN, an empty or blank text. A list or mapping is a value (of the wrong shape)."""
    return _held(value) is None and answer_text(value) is None


def missing_values(
    frame: pd.DataFrame, label: str, on_missing: str, columns: dict[str, str]
) -> tuple[pd.DataFrame, dict[str, Any], list[str]]:
    """Apply `on_missing` to rows lacking a value of a field their source provides (MISSING_CHECKED); an empty
    problem or trace can only be dropped, never kept. Returns the rows, the counts for the pool's stats and the
    problems to report (each row that `on_missing` does not allow, then how to allow it)."""
    gaps = {f: frame[f].map(_absent).astype(bool) for f in MISSING_CHECKED if f in frame.columns}
    fatal = on_missing == "error"
    problems: list[str] = []
    refused = []
    for field, gap in gaps.items():
        if gap.any() and (fatal or (on_missing == "keep" and field in REQUIRED)):
            refused.append(field)
            lines = [f"{w}: field {field!r} is empty or missing{_of(field, columns)}" for w in frame.loc[gap, "_where"]]
            problems += _capped(lines, label, f"{field!r} is empty")
    if problems:
        keepable = [f for f in refused if f not in REQUIRED]
        keep = (
            f", or `keep` to keep those lacking only {'/'.join(keepable)} (ungraded without an answer, an id from "
            "the problem text, the label of `source:` or the file name); an empty problem or trace is never kept"
            if fatal and keepable
            else ""
        )
        problems.append(f"pool source {label!r}: set `on_missing: drop` on it to leave such rows out{keep}")
    counts = {f: int(g.sum()) for f, g in gaps.items() if g.any()}
    any_gap = pd.Series(False, index=frame.index)
    for gap in gaps.values():
        any_gap |= gap
    report = {"on_missing": on_missing, "rows": int(any_gap.sum()), "by_field": counts} if counts else {}
    if not problems and on_missing == "drop" and any_gap.any():
        frame = frame[~any_gap]
        if frame.empty:
            problems.append(f"{label}: every row lacks a value ({', '.join(counts)}); on_missing: drop left none")
    return frame, report, problems


def _of(field: str, columns: dict[str, str]) -> str:
    col = columns.get(field, field)
    return f" (column {col!r})" if col != field else ""


def _keep_reserved(frame: pd.DataFrame) -> pd.DataFrame:
    """A source column named like an annotation (`correct`, `n_tokens`, ...) is metadata: keep it as `<name>_given`
    rather than let the annotation overwrite it or clash with it."""
    rename = {}
    for name in (c for c in frame.columns if c in (*RESERVED, *RESERVED_DATA)):
        new = f"{name}_given"
        while new in frame.columns or new in rename.values():
            new += "_"
        rename[name] = new
    return frame.rename(columns=rename) if rename else frame


def conform(
    frame: pd.DataFrame, label: str, src: PoolSourceSpec, columns: dict[str, str] | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Check required fields and fill the optional ones; every problem names its file and line/row. Returns the
    rows in the pool schema and what `on_missing` did (empty when no row lacked a value)."""
    columns = columns or {}
    problems = [
        f"{label}: required field {f!r} is missing (map it with columns: {{{f}: <column>}})"
        for f in REQUIRED
        if f not in frame.columns
    ]
    if problems:
        raise PoolError(problems)
    problems = shape_problems(frame, label, columns)
    out = _keep_reserved(frame.copy())
    for field in ("source", "problem_id", *OPTIONAL_TEXT):  # an empty CSV cell or JSON "" is missing, not a label
        if field in out.columns:
            out[field] = pd.Series([None if _absent(v) else v for v in out[field]], index=out.index, dtype=object)
    if src.source is not None and "source" in out.columns:  # the constant labels the rows that have none
        out["source"] = out["source"].fillna(src.source)
    out, missing, gaps = missing_values(out, label, src.missing_rule(), columns)
    if problems or gaps:  # shapes and gaps in one report, so the file is fixed in one pass
        raise PoolError(problems + gaps)
    out["problem"] = out["problem"].astype(str)
    out["trace"] = out["trace"].astype(str)
    if "source" not in out.columns:
        out["source"] = src.source or label
    else:
        out["source"] = out["source"].fillna(src.source or label)
    out["source"] = out["source"].astype(str)
    if "problem_id" not in out.columns:
        out["problem_id"] = [problem_id_for(p) for p in out["problem"]]
    else:
        out["problem_id"] = [problem_id_for(p) if i is None else i for i, p in zip(out["problem_id"], out["problem"])]
    out["problem_id"] = out["problem_id"].astype(str)
    for field in ("expected_answer", "difficulty", "pass_rate", "topic"):
        if field not in out.columns:
            out[field] = None
    out["pass_rate"] = pd.to_numeric(out["pass_rate"], errors="coerce").astype("float64")  # "n/a" -> missing
    out["expected_answer"] = pd.Series([answer_text(v) for v in out["expected_answer"]], index=out.index, dtype=object)
    out["topic"] = pd.Series(
        [None if answer_text(v) is None else str(v) for v in out["topic"]], index=out.index, dtype=object
    )
    return out[[*POOL_FIELDS, *(c for c in out.columns if c not in POOL_FIELDS)]].reset_index(drop=True), missing


OPTIONAL_TEXT = ("expected_answer", "difficulty", "topic")
TEXT_FIELDS = ("problem_id", "problem", "trace", "source", "topic", "_where")  # str (or None) once conformed


def difficulty_labels(pool: pd.DataFrame) -> pd.DataFrame:
    """Labels as the difficulty factor reads them (`label_key`), stored with one Python type so the pool can be
    written: a missing marker ("n/a", "?", "Level ?") becomes None, numbers of mixed types (3 beside "3" beside
    "Level 3") floats, and numbers mixed with words text. Never an error here: only a factor ordering labels
    (min/max, bins) needs numbers, and it names the row that has none."""
    present = pool["difficulty"].notna()
    if not present.any():
        return pool
    labels = pool.loc[present, "difficulty"]
    keys = labels.map(label_key)
    marked = keys.isna()
    labels = labels[~marked]
    keys = keys[~marked]
    types = {type(v) for v in labels}
    numbers = all(issubclass(t, (int, float, np.integer, np.floating)) and not issubclass(t, bool) for t in types)
    if not marked.any() and (len(types) <= 1 or numbers):
        return pool
    pool = pool.copy()
    column = pool["difficulty"].astype(object)
    column.loc[marked[marked].index] = None
    if len(types) > 1 and not numbers:
        numeric = keys.map(lambda k: isinstance(k, float)).astype(bool)
        column.loc[labels.index] = keys if numeric.all() else labels.map(str)
    pool["difficulty"] = column
    return pool


def storable(pool: pd.DataFrame) -> pd.DataFrame:
    """Metadata columns as Parquet can hold them: a column mixing types (1 beside "a", a list beside a number) is
    kept as text (JSON for lists and mappings) rather than failing the write after the whole pool was read."""
    import pyarrow as pa

    out = pool
    for col in pool.columns:
        if pool[col].dtype != object or col in TEXT_FIELDS:  # known text: converting it would copy the traces
            continue
        try:
            pa.array(pool[col].tolist(), from_pandas=True)
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            out = out.copy() if out is pool else out
            out[col] = [_as_text(v) for v in pool[col]]
    return out


def _as_text(value: Any) -> str | None:
    if _held(value) is not None and not isinstance(value, (bytes, bytearray)):
        return json.dumps(value.tolist() if isinstance(value, np.ndarray) else value, default=str, ensure_ascii=False)
    if value is None or (not isinstance(value, (str, bytes, bytearray)) and pd.isna(value)):
        return None
    return str(value)
