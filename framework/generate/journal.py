"""The request journal: every finished generation request, kept durably the moment it finishes.

A teacher's requests are content-addressed (`request_id`), so the journal is a cache shared by every generation
job of that teacher, prompt and sampling: adding problems or samples only asks for what is new, and a job killed
at any moment keeps everything that finished before it. Each writing process appends to a file of its own
(no lock, no interleaving, safe on a shared file system); a reader takes the union. A line is flushed and fsynced
before the next request's result is written, and a torn last line (a kill mid-write) is ignored on reading: only
the request in flight is lost, and a rerun asks for it again.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from framework.store.durable import fsync_dir

JOURNAL_SUFFIX = ".jsonl"


def read_journal(directory: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(finished, failed): the latest record per request id. A success always wins over a failure, whichever
    process wrote it or when: a request that failed once and succeeded on a rerun is done."""
    done: dict[str, dict[str, Any]] = {}
    failed: dict[str, dict[str, Any]] = {}
    if not directory.is_dir():
        return done, failed
    for path in sorted(directory.glob(f"*{JOURNAL_SUFFIX}")):
        for record in _records(path):
            rid = record.get("request_id")
            if not isinstance(rid, str):
                continue
            if record.get("status") == "ok":
                done[rid] = record
                failed.pop(rid, None)
            elif rid not in done:
                failed[rid] = record
    return done, failed


def _records(path: Path) -> Iterable[dict[str, Any]]:
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.endswith("\n"):  # torn by a kill mid-write: that request is asked again
                return
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record


class JournalWriter:
    """Appends records to this process's own journal file, each durable before `write` returns."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{JOURNAL_SUFFIX}"
        self.path = directory / name
        self._file: TextIO | None = None
        self._lock = threading.Lock()  # the endpoint client hands results over from several threads

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
        with self._lock:
            if self._file is None:
                self._file = self.path.open("a", encoding="utf-8")
                fsync_dir(self.path.parent)  # the new file's name survives a power cut too
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
