"""`ablate fetch`: download the released benchmarks and pools once, on a machine with network (a login node), into
the local files specs read, so that sweeps run offline (compute nodes usually have none).

Benchmarks are written in NeMo-Skills' layout (`problem`, `expected_answer`, `id`, `subset_for_metrics` where it
applies) from the sources NeMo-Skills itself prepares them from; pools keep the hub's own columns, which their
preset maps. Beside each file a record (`<file>.source.json`) says where it came from, the commit read, its sha256,
its row count and the command that made it: the file's digest is what a stage key sees, the record says what it is.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import math
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from framework.errors import UserError
from framework.redaction import redact_text
from framework.registry import POOL_PRESETS, suggest

if TYPE_CHECKING:  # frames come from the hub reader, imported when used
    import pandas as pd

DEFAULT_DIR = "data"
RECORD_SUFFIX = ".source.json"
NEMO_SKILLS = "NVIDIA/NeMo-Skills"
# The commit whose copies are read by default; their sha256 at it are checked, so a default fetch is reproducible.
NEMO_SKILLS_COMMIT = "0b012df8a09cd4730d31b16e90a0d8f13d145fb8"


class FetchError(UserError):
    """A file that cannot be fetched: unknown name, no network, a gated or missing dataset, a changed copy."""


@dataclass(frozen=True)
class GitHubFile:
    """A file of a GitHub repository (NeMo-Skills ships some benchmarks as files, not hub datasets)."""

    repo: str
    path: str
    sha256: str  # at NEMO_SKILLS_COMMIT: checked when no --revision is given


@dataclass(frozen=True)
class HubSplit:
    """One split of a hub dataset; `preset` takes the dataset and split from a pool preset."""

    dataset: str = ""
    split: str = "train"
    config: str | None = None
    preset: str | None = None
    where: dict[str, list[Any]] = field(default_factory=dict)
    limit: int | None = None


@dataclass(frozen=True)
class Target:
    name: str
    kind: str  # "benchmark" or "pool"
    origin: GitHubFile | HubSplit
    filename: str
    description: str
    convert: Callable[[pd.DataFrame], pd.DataFrame] | None = None  # hub rows -> NeMo-Skills layout

    def relpath(self) -> PurePosixPath:
        return PurePosixPath(f"{self.kind}s", self.name, self.filename)


def _renamed(frame: pd.DataFrame, name: str, columns: dict[str, str], id_column: str | None) -> pd.DataFrame:
    """Hub columns renamed to NeMo-Skills' (others kept), with an `id` (`<name>-<n>` from a numeric index)."""
    out = frame.rename(columns=columns)
    if id_column is not None and id_column in out.columns:
        ids = out.pop(id_column)
        out.insert(0, "id", [str(v) if isinstance(v, str) else f"{name}-{v}" for v in ids])
    elif "id" not in out.columns:
        out.insert(0, "id", [f"{name}-{i}" for i in range(len(out))])
    return out


def _hmmt_feb_2025(frame: pd.DataFrame) -> pd.DataFrame:
    return _renamed(frame, "hmmt-feb-2025", {"answer": "expected_answer"}, "problem_idx")


def _math_500(frame: pd.DataFrame) -> pd.DataFrame:
    return _renamed(frame, "math-500", {"answer": "expected_answer", "solution": "reference_solution"}, "unique_id")


def _gpqa(frame: pd.DataFrame) -> pd.DataFrame:
    """Rendered as the loader renders the hub copy (same option order, same letters), so a sweep that reads the
    file asks what one reading the hub asks."""
    # lazy: the rendering imports pandas, which every CLI command would pay for (the parser imports this module)
    from framework.benchmarks.choices import multiple_choice

    rendered = multiple_choice(frame, "gpqa-diamond")
    return rendered.rename(columns={"problem_id": "id"})[["id", "problem", "expected_answer"]]


def _nemo_skills(name: str, sha256: str) -> GitHubFile:
    return GitHubFile(NEMO_SKILLS, f"nemo_skills/dataset/{name}/test.txt", sha256)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "comp-math-24-25",
            "benchmark",
            _nemo_skills("comp-math-24-25", "c83c51386c1bb15e26b665caf880e8158e57585bffb3579a824f93eec4c49190"),
            "test.jsonl",
            "AIME24 + AIME25 + HMMT Nov 2024 and Feb 2024/2025 answer problems (256), subset_for_metrics per source",
        ),
        Target(
            "aime24",
            "benchmark",
            _nemo_skills("aime24", "e428f83ec735201c9db2a232727f4c20dbce87079ed386b6e3fb7f756d078756"),
            "test.jsonl",
            "AIME 2024 I and II (30)",
        ),
        Target(
            "aime25",
            "benchmark",
            _nemo_skills("aime25", "b672f9c6660b68dd42f5fc705b17405f24eaa9991c98991d63463c6b683468a8"),
            "test.jsonl",
            "AIME 2025 I and II (30)",
        ),
        Target(
            "hmmt-feb-2025",
            "benchmark",
            HubSplit("MathArena/hmmt_feb_2025", "train"),
            "test.jsonl",
            "HMMT February 2025 (30)",
            _hmmt_feb_2025,
        ),
        Target(
            "math-500",
            "benchmark",
            HubSplit("HuggingFaceH4/MATH-500", "test"),
            "test.jsonl",
            "MATH-500 (500)",
            _math_500,
        ),
        Target(
            "gpqa-diamond",
            "benchmark",
            HubSplit("Idavidrein/gpqa", "train", config="gpqa_diamond"),
            "test.jsonl",
            "GPQA-Diamond (198, multiple choice; gated on the hub)",
            _gpqa,
        ),
        Target(
            "nemotron-math-human-reasoning",
            "pool",
            HubSplit(preset="nemotron-math-human-reasoning"),
            "train.parquet",
            "human solutions (human_stage1..4) and QwQ-32B-Preview traces of the same problems",
        ),
        Target(
            "open-math-reasoning",
            "pool",
            HubSplit(preset="open-math-reasoning", where={"problem_type": ["has_answer_extracted"]}, limit=100_000),
            "cot.parquet",
            "the first 100,000 chain-of-thought traces with an extracted answer (--limit changes how many)",
        ),
    )
}


# --------------------------------------------------------------------------------------------- hints
def fetch_command(name: str, root: str = DEFAULT_DIR, *, revision: str | None = None, limit: int | None = None) -> str:
    """The command that writes `name`'s file under `root`, as a user would type it."""
    parts = ["ablate fetch", name]
    if PurePosixPath(root) != PurePosixPath(DEFAULT_DIR):
        parts += ["--dir", root]
    if revision is not None:
        parts += ["--revision", revision]
    if limit is not None:
        parts += ["--limit", str(limit)]
    return " ".join(parts)


def written_by(path: str) -> tuple[str, str] | None:
    """(name, --dir) when `path` is a file fetch writes, else None."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    for target in TARGETS.values():
        rel = target.relpath().parts
        if len(parts) >= len(rel) and parts[-len(rel) :] == rel:
            return target.name, str(PurePosixPath(*parts[: -len(rel)])) if len(parts) > len(rel) else "."
    return None


def fetch_hint(path: str) -> str:
    """'; `ablate fetch X` writes it' when `path` is a file fetch writes, else '' (for "does not exist" messages)."""
    if (found := written_by(path)) is None:
        return ""
    return f"; `{fetch_command(*found)}` writes it (on a machine with network)"


def spec_files(spec_path: str) -> list[tuple[str, str]]:
    """(name, --dir) of each file the spec reads (benchmarks, pool sources, a generation's problems) that fetch
    writes."""
    from framework.spec import load_spec  # only this option needs the spec machinery

    spec = load_spec(spec_path).spec
    sources = [*spec.pool, *(s.generate.problems for s in spec.pool if s.generate and s.generate.problems)]
    paths = [b.path for b in spec.eval.benchmarks] + [s.path for s in sources]
    return list(dict.fromkeys(found for p in paths if p and (found := written_by(p)) is not None))


# --------------------------------------------------------------------------------------------- reading
def read_url(url: str, accept: str | None = None) -> bytes:
    """The body at `url` (one place for tests to serve local files from)."""
    headers = {"User-Agent": "ablate-fetch", **({"Accept": accept} if accept else {})}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=120) as response:
        return response.read()


def _download(url: str, what: str, accept: str | None = None) -> bytes:
    try:
        return read_url(url, accept)
    except urllib.error.HTTPError as e:
        raise FetchError(f"{what}: {url} answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise FetchError(f"{what}: cannot reach {url} ({reason}); fetch needs network access (a login node)") from None


def _github_commit(repo: str, ref: str, what: str) -> str:
    if re.fullmatch(r"[0-9a-f]{40}", ref):
        return ref
    body = _download(f"https://api.github.com/repos/{repo}/commits/{ref}", what, "application/vnd.github.sha")
    return body.decode().strip()


def _read_github(target: Target, origin: GitHubFile, revision: str | None) -> tuple[bytes, dict[str, Any]]:
    """The file's bytes as NeMo-Skills ships them (already its layout), and where they came from."""
    commit = _github_commit(origin.repo, revision or NEMO_SKILLS_COMMIT, target.name)
    data = _download(f"https://raw.githubusercontent.com/{origin.repo}/{commit}/{origin.path}", target.name)
    if revision is None and hashlib.sha256(data).hexdigest() != origin.sha256:
        raise FetchError(
            f"{target.name}: the download of {origin.repo}/{origin.path} at {commit} is not the file of that commit "
            f"(sha256 differs); nothing was written"
        )
    source = {"github": origin.repo, "path": origin.path, "revision": revision, "commit": commit}
    return data, source


def _gated(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if type(seen).__name__ == "GatedRepoError" or "gated" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _read_hub(
    target: Target, origin: HubSplit, revision: str | None, limit: int | None, command: str
) -> tuple[pd.DataFrame, dict[str, Any]]:
    dataset, split = origin.dataset, origin.split
    if origin.preset is not None:
        preset = POOL_PRESETS.resolve(origin.preset)
        dataset, split = preset.hub, preset.split
    limit = limit if limit is not None else origin.limit
    # lazy: the hub reader imports pandas, which every CLI command would pay ~200 ms for (the parser imports this)
    from framework import hub_data

    try:
        frame = hub_data.read_hub_split(
            dataset, split, config=origin.config, revision=revision, where=origin.where or None, limit=limit
        )
    except Exception as e:  # the hub client raises many types; what the user needs is the reason and the fix
        if _gated(e):
            raise FetchError(
                f"{target.name}: the hub dataset {dataset!r} is gated: accept its terms on "
                f"https://huggingface.co/datasets/{dataset} (logged in to the hub), log in on this machine with "
                f"`huggingface-cli login` (or set HF_TOKEN), then run `{command}` again"
            ) from None
        raise FetchError(
            f"{target.name}: cannot read {dataset!r} (split {split!r}) from the hub: {redact_text(str(e))}; fetch "
            "needs network access (a login node)"
        ) from None
    hub = dict(frame.attrs.get("hub") or {})
    source = {
        "hub": dataset,
        "config": origin.config,
        "split": split,
        "revision": revision,
        "commit": hub.get("commit"),
        **({"filter": origin.where} if origin.where else {}),
        **({"limit": limit} if limit is not None else {}),
    }
    if target.convert is not None:
        frame = target.convert(frame)
    return frame, source


# --------------------------------------------------------------------------------------------- writing
def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _jsonl(frame: pd.DataFrame) -> bytes:
    rows = frame.to_dict(orient="records")
    return "".join(json.dumps(_jsonable(r), ensure_ascii=False) + "\n" for r in rows).encode()


def _write_atomic(path: Path, data: bytes) -> None:
    """Whole or not at all: a killed fetch leaves no half file for a spec to read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_record(path: Path) -> dict[str, Any] | None:
    """The record fetch wrote beside `path`, or None."""
    try:
        record = json.loads(Path(f"{path}{RECORD_SUFFIX}").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _kept(path: Path, revision: str | None) -> str | None:
    """Why an existing file is left alone (without --force), or None when it is not there."""
    if not path.exists():
        return None
    record = read_record(path)
    if record is None:
        return f"kept {path}: it exists and fetch did not write it (--force replaces it)"
    if record.get("sha256") != sha256_of(path):
        return f"kept {path}: it changed since it was fetched (--force replaces it)"
    source = record.get("source", {})
    at = source.get("commit") or "an unrecorded commit"
    other = (
        f"; --revision {revision} asks for another, add --force"
        if revision not in (None, source.get("revision"))
        else ""
    )
    return f"kept {path}: already fetched ({record.get('rows')} rows, at {at}){other}"


def _rows_of(data: bytes, target: Target) -> int:
    try:
        rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    except ValueError as e:
        raise FetchError(f"{target.name}: the download is not JSON lines ({e}); nothing was written") from None
    if missing := [c for c in ("problem", "expected_answer") if rows and c not in rows[0]]:
        raise FetchError(f"{target.name}: the download lacks {missing}; nothing was written")
    return len(rows)


def fetch(
    name: str, root: str = DEFAULT_DIR, *, revision: str | None = None, limit: int | None = None, force: bool = False
) -> str:
    """Write `name`'s file under `root` (unless it is there, fetched before, and not `force`) and its record; the
    line to print about it."""
    target = TARGETS.get(name)
    if target is None:
        raise FetchError(f"unknown name {name!r}{suggest(name, TARGETS)}; known: {', '.join(TARGETS)}")
    if limit is not None and limit < 1:
        raise FetchError(f"{name}: --limit must be a positive number of rows, not {limit}")
    if limit is not None and target.kind != "pool":
        raise FetchError(f"{name}: --limit applies to pools only (a benchmark is fetched whole)")
    path = Path(root) / target.relpath()
    if not force and (kept := _kept(path, revision)) is not None:
        return kept
    command = fetch_command(name, root, revision=revision, limit=limit)
    if isinstance(target.origin, GitHubFile):
        data, source = _read_github(target, target.origin, revision)
        rows = _rows_of(data, target)
    else:
        frame, source = _read_hub(target, target.origin, revision, limit, command)
        if frame.empty:
            raise FetchError(f"{name}: the hub split holds no row; nothing was written")
        rows = len(frame)
        if target.filename.endswith(".parquet"):
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            data = buffer.getvalue()
        else:
            data = _jsonl(frame)
    _write_atomic(path, data)
    record = {
        "name": name,
        "kind": target.kind,
        "file": target.filename,
        "sha256": hashlib.sha256(data).hexdigest(),
        "rows": rows,
        "source": source,
        "command": command,
        "fetched_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    _write_atomic(Path(f"{path}{RECORD_SUFFIX}"), (json.dumps(record, indent=2) + "\n").encode())
    where = source.get("hub") or f"{source.get('github')}/{source.get('path')}"
    use = f"{{name: {name}, path: {path}}}" if target.kind == "benchmark" else f"{{preset: {name}, path: {path}}}"
    return f"wrote {path}: {rows} rows from {where} at {source.get('commit')}, sha256 {record['sha256'][:12]}; in a spec: {use}"


# --------------------------------------------------------------------------------------------- command
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="what to fetch (none, and no --spec: list the names)")
    p.add_argument("--spec", help="fetch every file this spec reads that fetch writes (where the spec reads it)")
    p.add_argument("--dir", default=DEFAULT_DIR, help=f"where to write (default: {DEFAULT_DIR}/)")
    p.add_argument(
        "--revision", help="the hub dataset revision or NeMo-Skills commit to read (default: latest / pinned)"
    )
    p.add_argument("--limit", type=int, help="pools: how many rows of the slice")
    p.add_argument("--force", action="store_true", help="fetch again even if the file is there")


def cmd_fetch(args: argparse.Namespace) -> int:
    wanted = [(name, args.dir) for name in args.names] + (spec_files(args.spec) if args.spec else [])
    if args.spec and not wanted:
        print(f"{args.spec} reads no file that fetch writes (fetch NAME writes data/<kind>s/<name>/...)")
        return 0
    if not wanted:
        for t in TARGETS.values():
            print(f"{t.name:31} {t.kind:9} {Path(args.dir) / t.relpath()}  {t.description}")
        return 0
    problems = []
    for name, root in dict.fromkeys(wanted):
        try:
            print(fetch(name, root, revision=args.revision, limit=args.limit, force=args.force), flush=True)
        except FetchError as e:
            problems += e.problems
    if problems:
        raise FetchError(problems)
    return 0
