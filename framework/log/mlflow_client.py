"""MLflow client plumbing for the `log` stage and the report: connect (failing fast when the server is away),
find or create the experiment, the sweep's parent run and a cell's child run, and log in batches within MLflow's
request limits."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framework.errors import RetryLater, UserError
from framework.file_lock import flocked
from framework.redaction import redact_text

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, Run, RunTag

    from framework.sweep.grid import Cell

# MLflow's limits (mlflow.utils.validation): entities per log_batch call, params and tags per call, and a
# request-size cap; our chunks stay below all of them, with headroom on the size.
_MAX_ENTITIES, _MAX_PARAMS_TAGS, _MAX_METRICS = 1000, 100, 1000
_MAX_REQUEST_BYTES = 900_000
MAX_PARAM_LEN, MAX_TAG_LEN = 6000, 8000

# Fail fast when the server is down: (attempt timeout, pause before the next attempt) of the probe, and MLflow's
# own HTTP retry settings inside the stage. A refused connection fails in ~3 s; a server that accepts but never
# answers in ~18 s at the probe, or ~21 s (two 10 s attempts) if it hangs midway through logging.
_PROBE = ((5.0, 1.0), (5.0, 2.0), (5.0, 0.0))
_HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


class TrackingUnavailable(RetryLater):
    """The tracking server cannot be reached now (refused, timed out, 5xx, locked database). Retry later:
    `ablate exec` exits 75 (EX_TEMPFAIL) for it, and launchers defer the stage to their next run."""


# ------------------------------------------------------------------------------------------ connection
@contextlib.contextmanager
def fast_failure() -> Iterator[None]:
    """MLflow's HTTP client retries 7 times with exponential backoff (minutes) by default; inside a stage we
    would rather fail in seconds and let the launcher retry the stage later."""
    saved = {k: os.environ.get(k) for k in _HTTP_ENV}
    os.environ.update(_HTTP_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _probe(uri: str) -> None:
    """GET <uri>/health until it answers: any HTTP status below 500 means a server is there (auth errors are
    real errors for MLflow to report); refused connections, timeouts and 5xx from a proxy mean it is not."""
    url = uri.rstrip("/") + "/health"
    last = ""
    for timeout, pause in _PROBE:
        try:
            with urllib.request.urlopen(url, timeout=timeout):
                return
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return
            last = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            last = str(getattr(e, "reason", e))
        time.sleep(pause)
    raise TrackingUnavailable(f"MLflow tracking server {redact_text(uri)} is unreachable ({last})")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (relative to the working directory with three slashes)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


def connect(uri: str) -> MlflowClient:
    """A client for `uri`: an HTTP server must answer a probe first (TrackingUnavailable otherwise). A sqlite
    database is created in a directory that exists, never in a new one: a typo in the path would start an empty
    history beside the user's (the default database's directory holds the results, so it exists by now)."""
    from mlflow import MlflowClient

    if uri.startswith(("http://", "https://")):
        _probe(uri)
    db = sqlite_path(uri)
    if db is not None and not db.parent.is_dir():
        raise UserError(
            f"tracking URI {redact_text(uri)!r}: directory {db.parent} does not exist (a mistyped path would start "
            "a new, empty MLflow database); fix the path or create the directory"
        )
    try:
        if db is None:
            return MlflowClient(tracking_uri=uri)
        with flocked(db.with_name(db.name + ".init-lock")):  # MLflow creates its tables unlocked
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # creates or migrates the tables, one process at a time
        return client
    except Exception as e:
        if (down := as_unavailable(e)) is None:
            raise
        raise down from e


_TRANSIENT = re.compile(
    r"connection (?:refused|reset|aborted)|max retries exceeded|timed out|timeout|temporarily unavailable"
    r"|name or service not known|failed to establish|remote end closed|database is locked"
    r"|error code (?:429|50[234])\b|bad gateway|service unavailable|too many (?:429|50\d) error",
    re.IGNORECASE,
)


def as_unavailable(exc: BaseException) -> TrackingUnavailable | None:
    """TrackingUnavailable for errors that say "the server is not there right now", else None."""
    if isinstance(exc, TrackingUnavailable):
        return exc
    chain, seen = [], exc
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for e in chain:
        if isinstance(e, ConnectionError | TimeoutError | socket.timeout) or _TRANSIENT.search(str(e)):
            return TrackingUnavailable(f"MLflow tracking is unavailable: {redact_text(str(e))[:500]}")
    return None


# ---------------------------------------------------------------------------------- experiment and runs
# MLflow 3's UI opens an experiment on its GenAI (traces) pages unless the experiment says it holds training runs.
_KIND, _TRAINING = "mlflow.experimentKind", "custom_model_development"


def experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment's id, created (or restored from the trash) when needed. With a sqlite store the artifacts
    go beside the database, not into ./mlruns of whatever directory a stage happens to run in."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        if _KIND not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, _KIND, _TRAINING)
        return exp.experiment_id
    location = None
    db = sqlite_path(uri)
    if db is not None:
        safe = re.sub(r"[^\w.-]", "_", name)
        location = (db.parent.resolve() / "mlartifacts" / safe).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags={_KIND: _TRAINING})
    except MlflowException:  # created by a concurrent stage between our look-up and create
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _search(client: MlflowClient, exp_id: str, filters: Mapping[str, str]) -> list[Run]:
    """Active runs whose tags equal `filters`, oldest first (run id breaks ties: a total order every process
    agrees on)."""
    from mlflow.entities import ViewType

    query = " and ".join(f"tags.`{k}` = '{v.replace(chr(39), chr(92) + chr(39))}'" for k, v in filters.items())
    runs, token = [], None
    while True:
        page = client.search_runs(
            [exp_id], filter_string=query, run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def tagged_runs(client: MlflowClient, exp_id: str, tags: Mapping[str, str]) -> list[Run]:
    """Active runs carrying every tag of `tags`, oldest first: how a rerun finds what it logged before."""
    return _search(client, exp_id, tags)


def find_or_create_run(
    client: MlflowClient, exp_id: str, tags: Mapping[str, str], *, name: str, parent: str
) -> tuple[Run, bool]:
    """(the oldest active run with `tags`, created?): created as a child of `parent` when none has them. The
    caller holds a store mutex for `tags`, so that two processes never both create it."""
    found = _search(client, exp_id, tags)
    if found:
        return found[0], False
    return client.create_run(exp_id, run_name=run_name(name), tags={"mlflow.parentRunId": parent, **tags}), True


def find_sweep_run(client: MlflowClient, exp_id: str, sweep: str, store: str, *, create: bool = True) -> str | None:
    """The parent run of the sweep named `sweep` whose results are in the store with identity `store`:
    searched, else created. Only one process at a time may call this for a store with `create=True` (the
    tracking stage holds the store's election lock, see `framework.log.stage.sweep_run`): two creators would each
    make a parent run, and the one that cleans up the other's would delete a run its maker is still finishing.
    Duplicates left by older versions, or by hand, collapse into the oldest: their children move to it."""
    tags = {"ablate.sweep": sweep, "ablate.store": store, "ablate.role": "sweep"}
    found = _search(client, exp_id, tags)
    if not found:
        if not create:
            return None
        run = client.create_run(exp_id, run_name=sweep, tags=tags)
        client.set_terminated(run.info.run_id, "FINISHED")
        found = _search(client, exp_id, tags) or [run]
    keep = found[0].info.run_id
    for extra in found[1:]:
        for child in _search(client, exp_id, {"mlflow.parentRunId": extra.info.run_id}):
            client.set_tag(child.info.run_id, "mlflow.parentRunId", keep)
        with contextlib.suppress(Exception):  # a stage of an older version may have deleted it already
            client.delete_run(extra.info.run_id)
    return keep


MAX_RUN_NAME = 250  # the runs table's name column on database-backed servers


def run_name(cell_id: str) -> str:
    """The cell id, or its start and a hash of it when too long for a run name (the full id is a tag)."""
    if len(cell_id) <= MAX_RUN_NAME:
        return cell_id
    digest = hashlib.sha256(cell_id.encode()).hexdigest()[:12]
    return f"{cell_id[: MAX_RUN_NAME - 16]}... {digest}"


def child_run(
    client: MlflowClient,
    exp_id: str,
    parent: str,
    cell: Cell,
    sweep: str,
    store: str,
    results_key: str,
    built: str,
) -> tuple[Run, bool, list[str]]:
    """(run, created, superseded run ids) for the cell's results; the run is the cell's current one.

    A run holds one build of the results: same keys (`results_key`) and same build times (`built`). A run
    logged before build times were recorded takes them on.
    """
    tags = {"ablate.sweep": sweep, "ablate.store": store, "ablate.cell_key": cell.key, "ablate.role": "cell"}
    runs = _search(client, exp_id, tags)
    same = [
        r
        for r in runs
        if r.data.tags.get("ablate.results_key") == results_key
        and r.data.tags.get("ablate.results_built", built) == built
    ]
    if same:
        run, created = same[0], False
        if run.data.tags.get("ablate.results_built") != built:
            client.set_tag(run.info.run_id, "ablate.results_built", built)
    else:
        run, created = (
            client.create_run(
                exp_id,
                run_name=run_name(cell.id),
                tags={
                    "mlflow.parentRunId": parent,
                    **tags,
                    "ablate.results_key": results_key,
                    "ablate.results_built": built,
                },
            ),
            True,
        )
    return run, created, make_current(client, run.info.run_id, runs)


def make_current(client: MlflowClient, current: str, runs: list[Run]) -> list[str]:
    """Tag every other run of a cell as superseded by `current`, and `current` as not superseded (a change that
    was undone makes an older run current again); returns the runs newly superseded."""
    stale = []
    for r in runs:
        tagged = r.data.tags.get("ablate.superseded_by")
        if r.info.run_id == current and tagged:
            client.delete_tag(current, "ablate.superseded_by")
        elif r.info.run_id != current and not tagged:
            client.set_tag(r.info.run_id, "ablate.superseded_by", current)
            stale.append(r.info.run_id)
    return stale


def mark_current_runs(client: MlflowClient, exp_id: str, sweep: str, store: str, current: Mapping[str, str]) -> None:
    """Make the runs the store's log stages point at (`current`: cell key -> run id) the current ones of their
    cells. Undoing a change makes its cells' log stages done again under their old keys, so they never run to
    re-tag MLflow; the report does it."""
    runs = _search(client, exp_id, {"ablate.sweep": sweep, "ablate.store": store, "ablate.role": "cell"})
    by_cell: dict[str, list[Run]] = {}
    for r in runs:
        by_cell.setdefault(r.data.tags.get("ablate.cell_key", ""), []).append(r)
    for cell_key, run_id in current.items():
        cell_runs = by_cell.get(cell_key, [])
        if any(r.info.run_id == run_id for r in cell_runs):
            make_current(client, run_id, cell_runs)


# --------------------------------------------------------------------------------------------- batching
def _size(entity: Any) -> int:
    return len(entity.key) + len(str(getattr(entity, "value", ""))) + 64


def _fits(chunk: list[list], size: int, kind: int, item: Any) -> bool:
    """Whether `item` (kind 0 param, 1 tag, 2 metric) still fits a log_batch request holding `chunk`."""
    n_all = sum(map(len, chunk))
    if not n_all:  # always progress, even with an item near the size limit
        return True
    if size + _size(item) >= _MAX_REQUEST_BYTES or n_all >= _MAX_ENTITIES:
        return False
    return len(chunk[0]) + len(chunk[1]) < _MAX_PARAMS_TAGS if kind < 2 else len(chunk[2]) < _MAX_METRICS


def batches(
    metrics: list[Metric], params: list[Param], tags: list[RunTag]
) -> Iterator[tuple[list[Metric], list[Param], list[RunTag]]]:
    """Split into log_batch calls that respect MLflow's per-request limits on entities, params + tags and size."""
    queues = [collections.deque(params), collections.deque(tags), collections.deque(metrics)]
    while any(queues):
        chunk: list[list] = [[], [], []]
        size = 0
        for kind, queue in enumerate(queues):
            while queue and _fits(chunk, size, kind, queue[0]):
                size += _size(queue[0])
                chunk[kind].append(queue.popleft())
        yield chunk[2], chunk[0], chunk[1]


def log_batched(client: MlflowClient, run_id: str, metrics: list, params: list, tags: list) -> int:
    """log_batch in chunks; returns the number of requests made."""
    calls = 0
    for cm, cp, ct in batches(metrics, params, tags):
        client.log_batch(run_id, metrics=cm, params=cp, tags=ct, synchronous=True)
        calls += 1
    return calls
