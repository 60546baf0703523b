"""The local launcher's reaper: stops its stage jobs when the launcher dies without stopping them itself.

Stage jobs run in sessions of their own (so that a Ctrl-C reaches the launcher alone, which stops them cleanly),
which also means nothing stops them when the launcher is killed outright: SIGKILL to its process group, or the OOM
killer taking only the launcher. The launcher therefore starts this small process, in a session of its own too,
and tells it over a pipe which process groups it started and which ended. The launcher holds the pipe's only write
end, so the kernel closes it however the launcher ends: on end of file, every group still alive gets TERM (a
training writes its checkpoint, as on Ctrl-C), then KILL after its grace period. A launcher that ends normally has
stopped or reaped every group first, so the end of file then finds none.

Standard library only: it must start in milliseconds and hold no memory worth the OOM killer's attention.
Messages, one JSON object a line: {"start": pgid, "ticks": start time, "grace": s, "log": path} and {"end": pgid}.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the command name may contain spaces and ')'


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is still running (zombies, which nobody may reap here, do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():  # no /proc: the kernel's answer, zombies included
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _ours(group: dict[str, Any]) -> bool:
    """Still the group the launcher started: a leader with another start time is a new process that reused the
    pid (the group itself cannot be reused while any member of it lives)."""
    now = process_start(group["start"])
    return now is None or group.get("ticks") in (None, now)


def _note(group: dict[str, Any], line: str) -> None:
    """A line in the stage's log, where whoever looks for why the job stopped will look."""
    with contextlib.suppress(OSError, KeyError, TypeError), open(group["log"], "a") as f:
        f.write(f"[{datetime.now(UTC).isoformat(timespec='seconds')}] {line}\n")


def _signal(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_groups(groups: list[dict[str, Any]], launcher: int, poll_s: float = 0.2) -> None:
    """TERM every group, wait until each is gone or its grace has passed, KILL what is left."""
    groups = [g for g in groups if _ours(g) and group_alive(g["start"])]
    for g in groups:
        _note(
            g, f"the launcher (pid {launcher}) is gone: stopping this stage job (TERM, then KILL after {g['grace']} s)"
        )
        _signal(g["start"], signal.SIGTERM)
    t0 = time.monotonic()
    while groups:
        groups = [g for g in groups if group_alive(g["start"])]
        for g in [g for g in groups if time.monotonic() - t0 >= g["grace"]]:
            _signal(g["start"], signal.SIGKILL)
            groups.remove(g)
        time.sleep(poll_s)


def main() -> int:
    """Read the launcher's messages from stdin until it closes; then stop the groups it left running."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher's terminal is not ours to obey
    launcher = int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid()
    groups: dict[int, dict[str, Any]] = {}
    for raw in sys.stdin.buffer:
        try:
            msg = json.loads(raw)
        except ValueError:
            continue
        if "start" in msg:
            groups[int(msg["start"])] = msg
        elif "end" in msg:
            groups.pop(int(msg["end"]), None)
    stop_groups(list(groups.values()), launcher)
    return 0


if __name__ == "__main__":
    sys.exit(main())
