"""Files that survive a crash or a power cut: a JSON file replaced in one step, and a tree (with its directories'
entries) on disk before anything vouches for it. The store's publication rests on these, and so does every stage or
launcher file that a reader must never see half written.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import uuid
from pathlib import Path
from typing import Any

__all__ = ["fsync_dir", "fsync_tree", "write_json_atomic"]

# What a file system answers when it cannot fsync a directory at all; any other error is lost data.
_DIR_FSYNC_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON so readers see the old file or the complete new one, never a prefix (even after a crash).

    Values JSON cannot encode (paths, dates) are written as their ``str()``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Persist a rename. A file system that cannot fsync directories (EINVAL) only weakens power-loss durability;
    any other error (EIO, ENOSPC, EDQUOT) may mean lost data, and is raised so that nothing is marked done."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    """Persist one regular file; its fsync errors are raised. Links, fifos and sockets are skipped: they hold no
    data of the build's (and opening a fifo would block)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:  # removed since it was listed: nothing left to persist
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Every file and directory under root on disk, so that a marker never outlives the data it vouches for."""
    for dirpath, _dirs, files in os.walk(root, onerror=_raise):
        for name in files:
            _fsync_file(os.path.join(dirpath, name))
        fsync_dir(Path(dirpath))


def _raise(exc: OSError) -> None:
    raise exc
