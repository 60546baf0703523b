"""The local runs of a sweep that are going now, as the store records them: one file per run under `.runs/`.

The local launcher writes and removes the records (launchers/local.py); reading them lives here so that commands
of the framework (`ablate clean`) can ask whether a run is going without importing a launcher.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from framework.store.locks import HOST

RUNS_DIR = ".runs"  # under the store's root; not a stage name (those start with a letter or digit)


def process_alive(pid: int, start: str | None) -> bool:
    """The process runs (not a zombie) and, where its start time was recorded, is the same process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return False
    return fields[0] not in ("Z", "X") and start in (None, fields[19])


def _records(store_root: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted((store_root / RUNS_DIR).glob("*.json")):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            rec = json.loads(path.read_text())
            found.append({**rec, "pid": int(rec["pid"])})
    return found


def live_runs(store: Any) -> dict[int, dict[str, Any]]:
    """This host's local runs of the sweep that are still going, by pid (`store`: a Store, or anything with its
    root)."""
    return {
        r["pid"]: r
        for r in _records(Path(store.root))
        if r.get("host") == HOST and process_alive(r["pid"], r.get("pid_start"))
    }


def other_host_runs(store: Any) -> list[dict[str, Any]]:
    """Runs recorded by other hosts: whether they still go, this host cannot tell (a run killed there leaves its
    record until the next run on that host)."""
    return [r for r in _records(Path(store.root)) if r.get("host") != HOST]
