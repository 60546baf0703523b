"""Content keys: short stable hashes of canonical JSON, identical across runs, processes and machines."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

KEY_LEN = 16  # hex chars = 64 bits: collisions are out of reach for any realistic sweep


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace; floats keep repr so 1e-5 and 0.00001 hash alike."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_key(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()[:KEY_LEN]


_FILE_CACHE: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, cached per (path, size, mtime) within the process."""
    p = Path(path)
    st = p.stat()
    ck = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if ck not in _FILE_CACHE:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _FILE_CACHE[ck] = h.hexdigest()
    return _FILE_CACHE[ck]


def tree_digest(path: str | Path, *, max_content_bytes: int = 1 << 20) -> str:
    """Fingerprint of a directory: every file's relative name and size, and the content of small files.

    Large weight shards are identified by name and size only: hashing 64 GB per plan would be unusable, and
    their config/index files (small, hashed) change whenever the weights do.
    """
    root = Path(path)
    entries = []
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if any(part.startswith(".") for part in f.relative_to(root).parts):
            continue
        size = f.stat().st_size
        entries.append([rel, size, file_digest(f) if size <= max_content_bytes else None])
    return content_key(entries)
