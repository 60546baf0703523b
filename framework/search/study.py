"""The Optuna side of a search: where its studies live, how a study is opened and a trial's parameters suggested,
the loop a worker pulls trials with, and what a finished study chose.

The loop takes the objective as a function (framework.search.trials makes store jobs of a trial), so how workers
share one study -- trials counted under a store-wide mutex, heartbeats, a dead worker's trial failed and retried
-- is the same whatever a trial costs, and is tested with real processes and a cheap objective.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
import random
import re
import threading
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, Trial, TrialState
from sqlalchemy.engine import make_url

from framework.errors import RetryLater, UserError
from framework.hashing import content_key
from framework.redaction import redact_text
from framework.spec.search import SearchParam, SearchSpec

log = logging.getLogger(__name__)

GRID_ATTR = "grid_enqueued"  # study user attr: the grid's points are queued (once, whichever worker came first)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

Objective = Callable[[Trial, dict[str, Any]], float]
Mutex = Callable[[], AbstractContextManager[Any]]


class SearchError(UserError):
    """A search that cannot go on as configured: a storage that cannot be opened, a metric the validation does not
    report, a study with nothing completed."""


def study_name(study: dict[str, Any], deps: list[str]) -> str:
    """The study's name in the storage: the content key of its config and of the jobs its trials train on (the
    arm's data, a tiny model), so a changed arm, recipe, validation or training set is a new study -- never an
    old one's trials, and the parameters they chose, under a new sweep's name -- and a rerun finds the old one.
    `deps`: the worker's or select job's inputs (the workers a select job waits for are left out)."""
    keyed = sorted(d for d in deps if not d.startswith("search/"))
    return "ablate-" + content_key({"study": study, "inputs": keyed})[:20]


def shown_storage(url: str, configured: str | None) -> str:
    """The storage as the store, logs, MLflow and the report may show it: the spec's own text where it reads
    ${VAR}s (never their values), else the URL with its password hidden; a URL that does not parse is not shown."""
    if configured is not None and _VAR.search(configured):  # user:password@ hidden, whatever the host's ${VAR}
        return redact_text(re.sub(r"(://)[^/]*@", r"\1***@", configured))
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # SQLAlchemy's parse error repeats the whole string, password and all
        return "<search.storage, which is not a valid SQLAlchemy URL>"


def storage_url(configured: str | None, results_root: Path) -> str:
    """search.storage with ${VAR} read from the environment now (so a password never sits in the spec or the
    store), or a sqlite file under the sweep's results."""
    if configured is None:
        folder = results_root / "search"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(folder / 'optuna.db').resolve()}"
    missing = sorted({m for m in _VAR.findall(configured) if m not in os.environ})
    if missing:
        raise SearchError(f"search.storage names environment variable(s) {', '.join(missing)}, which are not set")
    return _VAR.sub(lambda m: os.environ[m.group(1)], configured)


def grace_period(search: SearchSpec) -> int:
    """Seconds of silence after which a running trial counts as dead (whole seconds, as Optuna takes them)."""
    return max(1, math.ceil(search.grace_s if search.grace_s is not None else 4 * search.heartbeat_s))


def open_storage(url: str, search: SearchSpec, mutex: Mutex | None = None, configured: str | None = None) -> RDBStorage:
    """The storage with heartbeats on: a trial silent for the grace period is failed by whichever worker looks
    next, and its parameters queued again up to max_retries times. Concurrent sqlite writers wait for each other
    (busy timeout) instead of failing; the workers' `mutex` keeps two from creating a new database's tables at
    once."""
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(4):
        try:
            with mutex() if mutex is not None else contextlib.nullcontext(), warnings.catch_warnings():
                # heartbeats and the retry callback are marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs=kwargs,
                    heartbeat_interval=max(1, math.ceil(search.heartbeat_s)),
                    grace_period=grace_period(search),
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=search.max_retries),
                )
        except Exception as e:  # SQLAlchemy raises many types; the message may carry the URL, password and all
            if attempt < 3:  # another store's worker making a new database's tables just now ("already exists",
                time.sleep(1.0)  # a duplicate schema version): the next attempt finds them made
                continue
            raise SearchError(
                f"search.storage: cannot open {shown_storage(url, configured)}: {_scrub(str(e), url)}"
            ) from None
    raise AssertionError("unreachable")


def _scrub(text: str, url: str) -> str:
    """An error message with every part of the URL that could be a secret taken out: the whole URL, its password
    (as written and as parsed), then the usual patterns."""
    secrets = [url]
    with contextlib.suppress(Exception):
        password = make_url(url).password
        if password:
            secrets.append(str(password))
    if "@" in url:  # user:password@host, parsed or not
        secrets.append(url.split("://", 1)[-1].rsplit("@", 1)[0])
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return redact_text(text)


def make_sampler(search: SearchSpec, seed: int) -> optuna.samplers.BaseSampler:
    """TPE (with a constant liar, so concurrent workers do not all propose the same point) or random; a grid's
    points are queued in the study, and the random sampler covers anything asked beyond them."""
    if search.sampler.kind == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=search.sampler.startup_trials, constant_liar=True
            )
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(search: SearchSpec) -> optuna.pruners.BasePruner:
    """Steps are rungs of the validation problems (0, 1, ...)."""
    p = search.pruner
    if p.kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_rungs)
    if p.kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def open_study(storage: RDBStorage, name: str, search: SearchSpec, mutex: Mutex, worker: int = 0) -> optuna.Study:
    """Create the study or load it; the first worker to get here queues a grid's points, shuffled by the sampler's
    seed, and records that it did so every later one leaves them be. Each worker's sampler draws its own random
    stream (from the seed, its index and the trials so far): identical streams would propose identical points,
    and a restarted worker would propose again what it ran before."""
    with mutex():
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            direction=search.objective.direction,
            pruner=make_pruner(search),
            load_if_exists=True,
        )
        if search.sampler.kind == "grid" and not study.user_attrs.get(GRID_ATTR):
            points = search.grid_points()
            random.Random(search.sampler.seed).shuffle(points)
            for point in points:
                study.enqueue_trial(point)
            study.set_user_attr(GRID_ATTR, len(points))
        seed = int(content_key([search.sampler.seed, worker, len(study.trials)])[:8], 16)
    study.sampler = make_sampler(search, seed)
    return study


def suggest(trial: Trial, params: dict[str, SearchParam]) -> dict[str, Any]:
    """The trial's value of every searched train field (a queued or retried trial's own values come back)."""
    out: dict[str, Any] = {}
    for name, p in params.items():
        if p.type == "categorical":
            out[name] = trial.suggest_categorical(name, list(p.choices or []))
            continue
        assert p.low is not None and p.high is not None
        if p.type == "int":
            out[name] = trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            out[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
    return out


def counts(study: optuna.Study) -> dict[TrialState, int]:
    tally = dict.fromkeys(TrialState, 0)
    for t in study.get_trials(deepcopy=False):
        tally[t.state] += 1
    return tally


class _Heartbeat:
    """Records a running trial's heartbeat every `every_s` seconds in a thread, for as long as the trial runs."""

    def __init__(self, storage: BaseHeartbeat, trial_id: int, every_s: float) -> None:
        self.storage, self.trial_id, self.every_s = storage, trial_id, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"trial {trial_id} heartbeat", daemon=True)

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.every_s):
                try:
                    self.storage.record_heartbeat(self.trial_id)
                except Exception as e:  # a storage hiccup skips one beat; the grace period covers a few
                    log.warning("trial heartbeat failed: %s", redact_text(str(e)))
        finally:
            backend = getattr(self.storage, "_backend", self.storage)  # a study wraps its storage in a cache
            if isinstance(backend, RDBStorage):
                backend.remove_session()  # this thread's connection

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _retry(study: optuna.Study, trial_id: int, max_retry: int | None) -> None:
    """Queue a failed trial's parameters again, as the storage does for a dead worker's (one retry history)."""
    frozen = study._storage.get_trial(trial_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, frozen)


def _fail(study: optuna.Study, trial: Trial, mutex: Mutex, error: BaseException, max_retry: int | None) -> None:
    with mutex():  # counted and queued again in one step: no worker sees the failure without its retry
        if study._storage.get_trial(trial._trial_id).state.is_finished():
            return  # judged dead by another worker meanwhile, which queued its retry
        trial.set_user_attr("error", redact_text(f"{type(error).__name__}: {error}")[:2000])
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        _retry(study, trial._trial_id, max_retry)


def run_trial(study: optuna.Study, trial: Trial, search: SearchSpec, objective: Objective, mutex: Mutex) -> dict:
    """Suggest, run the objective with a heartbeat, and tell the study how it ended: its value, PRUNED, or FAIL on
    an exception (queued again up to max_retries; an interruption -- a preemption, Ctrl-C -- always, and raised
    on). Returns {number, state, value, params}; a trial another worker judged dead meanwhile keeps that state."""
    storage = study._storage
    assert isinstance(storage, BaseHeartbeat)
    params = suggest(trial, search.params)
    if trial.user_attrs.get("error"):  # a retry inherits its failed trial's attributes: not its error
        trial.set_user_attr("error", None)
    value: float | None = None
    with _Heartbeat(storage, trial._trial_id, search.heartbeat_s):
        try:
            value = float(objective(trial, params))
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        except (RetryLater, KeyboardInterrupt, SystemExit) as e:
            _fail(study, trial, mutex, e, None)
            raise
        except SearchError as e:  # the search's own configuration: every trial would fail alike
            _fail(study, trial, mutex, e, 0)
            raise
        except Exception as e:
            log.warning("trial %d failed: %s", trial.number, redact_text(f"{type(e).__name__}: {e}"), exc_info=True)
            _fail(study, trial, mutex, e, search.max_retries)
        else:
            if math.isnan(value):
                trial.set_user_attr("error", f"the objective {search.objective.metric} was not a number")
            with warnings.catch_warnings():  # a NaN is told as FAIL, with Optuna's warning
                warnings.simplefilter("ignore", UserWarning)
                study.tell(trial, value, skip_if_finished=True)
    final = storage.get_trial(trial._trial_id)
    return {"number": trial.number, "state": final.state.name, "value": final.value, "params": params}


CLOCK_SLACK_S = 60.0  # how far another host's clock may be off, for a trial's start time written there


def fail_unbeaten(study: optuna.Study, search: SearchSpec) -> list[int]:
    """Fail (and queue again) every running trial that never beat, started more than a grace period ago. A worker
    asks for a trial and records its first beat inside the mutex, so a trial seen beatless from inside it lost
    its worker in between (a kill, a storage error): Optuna never judges such a trial stale, and the workers
    would wait for it forever. The grace period (plus a minute for clocks of other hosts) keeps a trial asked by
    anything else than a worker safe. Called under the mutex; returns the trial numbers failed."""
    backend = getattr(study._storage, "_backend", study._storage)
    if not isinstance(backend, RDBStorage):
        return []
    from optuna.storages._rdb import models  # the heartbeat table: no public call tells a trial that never beat

    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=grace_period(search) + CLOCK_SLACK_S)
    session = backend.scoped_session()
    try:
        running = (
            session.query(models.TrialModel)
            .filter(models.TrialModel.state == TrialState.RUNNING, models.TrialModel.study_id == study._study_id)
            .all()
        )
        beatless = [
            (t.trial_id, t.number)
            for t in running
            if not t.heartbeats and t.datetime_start is not None and t.datetime_start < cutoff
        ]
    finally:
        session.close()
    for trial_id, number in beatless:
        study._storage.set_trial_user_attr(trial_id, "error", "its worker stopped before the trial's first heartbeat")
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        _retry(study, trial_id, search.max_retries)
    return [number for _, number in beatless]


def run_worker(
    study: optuna.Study,
    search: SearchSpec,
    objective: Objective,
    mutex: Mutex,
    *,
    poll_s: float = 5.0,
    stopping: Callable[[], bool] = lambda: False,
) -> list[dict[str, Any]]:
    """Pull trials until the study has `search.n_trials` COMPLETE or PRUNED ones. Under the mutex: fail the trials
    whose heartbeat stopped (their retries are queued), count, and ask for a trial -- a queued one first (grid
    points, retries) -- only while the complete, pruned and running ones fall short of the target; else wait for
    the running ones. A worker whose last max_retries + 1 trials all failed stops with the last error: something
    is wrong with it, not with the parameters. `stopping`: asked before each trial; once true the worker stops
    with RetryLater (exit 75, requeued). Returns the trials it ran."""
    n = search.n_trials
    ran: list[dict[str, Any]] = []
    in_a_row = 0
    while True:
        if stopping():  # the job's time is nearly up: stop between trials, to be requeued and resume
            raise RetryLater("the worker was asked to stop (a time limit near): its study resumes when it runs again")
        with mutex():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            fail_unbeaten(study, search)
            tally = counts(study)
            done = tally[TrialState.COMPLETE] + tally[TrialState.PRUNED]
            if done >= n:
                return ran
            trial = None
            if done + tally[TrialState.RUNNING] < n:
                with warnings.catch_warnings():  # "heartbeat is supposed to be used with optimize": this loop beats
                    warnings.simplefilter("ignore", UserWarning)
                    trial = study.ask()
                assert isinstance(study._storage, BaseHeartbeat)
                study._storage.record_heartbeat(trial._trial_id)  # alive from the start, so a crash is noticed
        if trial is None:
            time.sleep(poll_s)
            continue
        result = run_trial(study, trial, search, objective, mutex)
        ran.append(result)
        in_a_row = in_a_row + 1 if result["state"] == "FAIL" else 0
        if in_a_row > search.max_retries:
            error = study._storage.get_trial(trial._trial_id).user_attrs.get("error", "")
            raise SearchError(
                f"the last {in_a_row} trials of this worker failed (last: trial {trial.number}, {error}); its "
                "other trials stand, and running the worker again resumes the study"
            )


# ------------------------------------------------------------------------------------------- what it chose
def importances(study: optuna.Study) -> dict[str, float]:
    """Each parameter's share of the objective's variance over completed trials (fANOVA); empty with fewer than
    two completed trials or when nothing varies."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}
    return {k: float(v) for k, v in found.items() if math.isfinite(v)}


def best_record(study: optuna.Study, search: SearchSpec) -> dict[str, Any]:
    """best.json less where the study is stored and the arm it studied (the stage adds those)."""
    tally = counts(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise SearchError(
            f"study {study.study_name} has no completed trial ({tally[TrialState.PRUNED]} pruned, "
            f"{tally[TrialState.FAIL]} failed, {tally[TrialState.RUNNING]} running): there are no parameters to "
            "choose; see its workers' logs and trials, then run them again"
        )
    best = study.best_trial
    return {
        "study": study.study_name,
        "params": best.params,
        "trial": best.number,
        "value": best.value,
        "metric": search.objective.metric,
        "direction": search.objective.direction,
        "counts": {
            "complete": tally[TrialState.COMPLETE],
            "pruned": tally[TrialState.PRUNED],
            "failed": tally[TrialState.FAIL],
        },
        "importances": importances(study),
    }


def _duration(t: FrozenTrial) -> float | None:
    if t.datetime_start is None or t.datetime_complete is None:
        return None
    return round((t.datetime_complete - t.datetime_start).total_seconds(), 3)


def trial_rows(study: optuna.Study, search: SearchSpec) -> list[dict[str, Any]]:
    """trials.csv: one row per trial that ran or runs (queued grid points and retries that never started are
    not trials yet), with its parameters and its per-rung values."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "duration_s": _duration(t),
                "retried_from": t.system_attrs.get("failed_trial"),
                "train_key": t.user_attrs.get("train_key", ""),
                "eval_keys": json.dumps(t.user_attrs.get("eval_keys", [])),
                **{f"params.{name}": t.params.get(name) for name in search.params},
                "intermediate": json.dumps({str(k): v for k, v in sorted(t.intermediate_values.items())}),
            }
        )
    return rows
