"""A throwaway PostgreSQL server for the tests of a search's shared storage: `initdb` in a temporary directory, a
free port of 127.0.0.1, trust authentication, fsync off; stopped and removed afterwards. As root it runs as the
`postgres` user (initdb refuses root). Tests skip, saying why, where no server binaries are installed."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.mlflow_server import free_port


def server_binaries() -> Path | None:
    """The newest installed server's bin directory (Debian: /usr/lib/postgresql/<version>/bin), else PATH's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def unavailable() -> str | None:
    """Why no server can be started here, or None."""
    if server_binaries() is None:
        return "no PostgreSQL server binaries (initdb) installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root with no `postgres` user to run the server as"
    try:
        import psycopg2  # noqa: F401  -- the driver SQLAlchemy's postgresql:// URLs use
    except ImportError:
        return "psycopg2 is not installed"
    return None


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield the SQLAlchemy URL of a fresh database on a server started for the caller."""
    bins = server_binaries()
    assert bins is not None
    root = Path(tempfile.mkdtemp(prefix="pgtest-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        os.chown(root, pwd.getpwnam("postgres").pw_uid, -1)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data, log = root / "data", root / "server.log"

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)

    try:
        run(str(bins / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        run(str(bins / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o", options, "start")
        try:
            run(str(bins / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "search")
            yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/search"
        finally:
            run(str(bins / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
