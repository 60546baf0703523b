"""Content keys: short stable hashes of canonical JSON, identical across runs, processes and machines."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from framework.file_lock import flocked

KEY_LEN = 16  # hex chars = 64 bits: collisions are out of reach for any realistic sweep


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace; floats keep repr so 1e-5 and 0.00001 hash alike."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_key(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()[:KEY_LEN]


_FILE_CACHE: dict[tuple[str, int, int, int, int], str] = {}
_SETTLED_S = 2.0  # a file changed more recently than this may change again within one timestamp tick


def digest_cache_dir() -> Path:
    """Where file digests persist between processes: hashing a 64 GB checkpoint once per machine, not per plan."""
    if os.environ.get("ABLATE_CACHE_DIR"):
        return Path(os.environ["ABLATE_CACHE_DIR"]) / "digests"
    base = Path(os.environ["XDG_CACHE_HOME"]) if os.environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "ablate" / "digests"


def _stat_key(p: Path) -> tuple[str, int, int, int, int]:
    # Any write changes ctime (which no tool can set back), so a stale digest cannot survive a rewrite in place.
    # No device number: network file systems number their mounts per node, and the cache may be shared.
    st = p.stat()
    return (str(p.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes; remembered per (file, inode, size, mtime, ctime) in memory and on disk."""
    p = Path(path)
    ck = _stat_key(p)
    if ck in _FILE_CACHE:
        return _FILE_CACHE[ck]
    entry = digest_cache_dir() / hashlib.sha256(repr(ck).encode("utf-8")).hexdigest()
    with flocked(entry.with_name(entry.name + ".lock"), required=False):  # hashed once, not by each process
        cached = _read_entry(entry)
        if cached:
            _FILE_CACHE[ck] = cached
            return cached
        h = hashlib.sha256()
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        # Kept only if the file did not change while it was read, and not so recently that a rewrite within the
        # same timestamp tick (coarse clocks on some file systems) could leave its stat unchanged.
        if _stat_key(p) == ck:
            _FILE_CACHE[ck] = digest
            if time.time() - ck[4] / 1e9 > _SETTLED_S:
                _remember(entry, digest)
        return digest


def _read_entry(entry: Path) -> str:
    try:
        text = entry.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return text if len(text) == 64 else ""


def _remember(entry: Path, digest: str) -> None:
    """Best effort: an unwritable cache only costs time. Written whole then renamed, so readers never see half."""
    try:
        tmp = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
        tmp.write_text(digest, encoding="ascii")
        os.replace(tmp, entry)
    except OSError:
        pass


def tree_digest(path: str | Path) -> str:
    """Fingerprint of a directory: every file's relative name and content (hidden files aside).

    Weights are hashed too: two fine-tunes of one architecture have identical configs and shard sizes. The
    on-disk digest cache makes this a one-time cost per file and machine.
    """
    root = Path(path)
    entries = []
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        entries.append([rel.as_posix(), f.stat().st_size, file_digest(f)])
    return content_key(entries)
