"""An exclusive lock on a file that the kernel drops however its holder ends (no stale lock after a kill)."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def flocked(path: Path, *, required: bool = True) -> Iterator[bool]:
    """Hold an flock on `path` (created with its directory). With required=False, a lock that cannot be had (a
    read-only cache, a file system without flock) yields False instead of raising: the caller only loses time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a")  # noqa: SIM115 (closed below)
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    except OSError:
        if required:
            raise
        yield False
        return
    try:
        yield True
    finally:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()
