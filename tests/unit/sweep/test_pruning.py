"""train.keep_checkpoint: false — a checkpoint goes once all its evaluations are done, and comes back (trained
again) before an evaluation added later."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from framework.sweep import execute as execute_module
from framework.sweep.execute import ExecError, execute
from framework.sweep.pruning import PRUNED, inputs_not_ready, is_pruned, needed_again, prune_if_evaluated
from launchers.base import pending_tasks
from launchers.slurm import _inputs_not_done, key_state
from tests.synthetic import synthetic_sweep


def _with_models(sw) -> list[str]:
    keys = [j.key for j in sw.plan.by_stage("train")]
    for key in keys:
        model = sw.store.path("train", key) / "model"
        model.mkdir()
        (model / "config.json").write_text("{}")
        (model / "model.safetensors").write_bytes(b"\0" * 1000)
    return keys


def _evals_of(sw, key: str):
    return [j for j in sw.plan.by_stage("eval") if f"train/{key}" in j.deps]


def test_a_checkpoint_goes_once_every_evaluation_of_it_is_done(tmp_path: Path) -> None:
    sw = synthetic_sweep(tmp_path, seeds=(0,), eval={"benchmarks": ["aime24", "math-500"], "samples": 2})
    key = _with_models(sw)[0]
    first, second = _evals_of(sw, key)
    sw.store.invalidate("eval", second.key)  # one evaluation of it still to run
    assert prune_if_evaluated(sw.plan, sw.store, first, keep=False) == []
    assert (sw.store.path("train", key) / "model").is_dir()

    with sw.store.build("eval", second.key) as b:
        assert b is not None
    assert prune_if_evaluated(sw.plan, sw.store, second, keep=True) == []  # the default keeps it
    assert prune_if_evaluated(sw.plan, sw.store, second, keep=False) == [key]
    assert not (sw.store.path("train", key) / "model").exists()
    assert sw.store.is_done("train", key) and is_pruned(sw.store, key)  # its loss curve and metrics stay
    record = json.loads((sw.store.path("train", key) / PRUNED).read_text())
    assert record["bytes_freed"] == 1002 and sorted(record["after"]) == sorted([first.id, second.id])


def test_a_checkpoint_being_rebuilt_is_not_pruned(tmp_path: Path) -> None:
    sw = synthetic_sweep(tmp_path, seeds=(0,))
    key = _with_models(sw)[0]
    (job,) = _evals_of(sw, key)
    with sw.store.locked("train", key) as held:
        assert held
        assert prune_if_evaluated(sw.plan, sw.store, job, keep=False) == []
    assert (sw.store.path("train", key) / "model").is_dir()


def test_an_evaluation_added_later_trains_the_pruned_checkpoint_again_first(tmp_path, monkeypatch) -> None:
    sw = synthetic_sweep(tmp_path, seeds=(0,))
    keys = _with_models(sw)
    for key in keys:
        prune_if_evaluated(sw.plan, sw.store, _evals_of(sw, key)[0], keep=False)
    assert {t.stage for t in pending_tasks(sw.plan, sw.store)} == {"log"}  # the logs read metrics, not models
    (added,) = _evals_of(sw, keys[0])
    sw.store.invalidate("eval", added.key)  # as if a benchmark had been added: an evaluation to run
    assert [j.id for j in needed_again(sw.plan, sw.store, [added])] == [f"train/{keys[0]}"]
    tasks = pending_tasks(sw.plan, sw.store)
    ids = [t.id for t in tasks]
    assert f"train/{keys[0]}" in ids and ids.index(f"train/{keys[0]}") < ids.index(f"eval/{added.key}")
    assert f"train/{keys[1]}" not in ids  # nothing new reads the others

    def fake_train(ctx) -> None:
        (ctx.out / "model").mkdir()
        (ctx.out / "model" / "config.json").write_text("{}")

    monkeypatch.setattr(execute_module, "stage_function", lambda stage: fake_train)
    assert execute(sw.loaded, sw.plan, sw.store, "train", keys[0])  # done, but pruned: built again
    assert (sw.store.path("train", keys[0]) / "model" / "config.json").is_file()
    assert not is_pruned(sw.store, keys[0])
    assert not execute(sw.loaded, sw.plan, sw.store, "train", keys[0])  # and now simply done


def test_a_pruned_checkpoint_every_evaluation_has_read_is_not_trained_again(tmp_path, monkeypatch) -> None:
    """Two runs of one sweep both schedule a training; the one that gets it after the other has trained,
    evaluated and pruned it finds it done: nothing reads the checkpoint any more."""
    sw = synthetic_sweep(tmp_path, seeds=(0,))
    key = _with_models(sw)[0]
    prune_if_evaluated(sw.plan, sw.store, _evals_of(sw, key)[0], keep=False)
    trained: list[str] = []
    monkeypatch.setattr(execute_module, "stage_function", lambda stage: lambda ctx: trained.append(ctx.job.key))
    assert not execute(sw.loaded, sw.plan, sw.store, "train", key)
    assert trained == [] and is_pruned(sw.store, key)


def test_an_evaluation_of_a_pruned_checkpoint_not_trained_again_is_refused_not_run(tmp_path, monkeypatch) -> None:
    """The training stays marked done after its checkpoint is deleted; an evaluation added later that starts
    anyway (a Slurm bundle waits for its trainings with afterany, so it starts after a failed rebuild too) must
    find its input not ready and skip it, not evaluate a missing model; a bundle's status says why."""
    sw = synthetic_sweep(tmp_path, seeds=(0,), eval={"benchmarks": ["aime24", "math-500"], "samples": 2})
    key = _with_models(sw)[0]
    first, added = _evals_of(sw, key)
    sw.store.invalidate("eval", added.key)
    with sw.store.build("eval", added.key) as b:  # every evaluation done: the checkpoint is pruned
        assert b is not None
    assert prune_if_evaluated(sw.plan, sw.store, added, keep=False) == [key]
    sw.store.invalidate("eval", added.key)  # then an evaluation to run again (a benchmark added), no rebuild yet
    ran: list[str] = []
    monkeypatch.setattr(execute_module, "stage_function", lambda stage: lambda ctx: ran.append(ctx.job.key))
    with pytest.raises(ExecError, match=f"needs train/{key} to be done first"):
        execute(sw.loaded, sw.plan, sw.store, "eval", added.key)
    assert ran == [] and inputs_not_ready(sw.store, first) == [f"train/{key}"]
    # an evaluation done before the pruning is done, not waiting (a requeued bundle reruns its done keys)...
    assert not execute(sw.loaded, sw.plan, sw.store, "eval", first.key)
    # ...and forced, it says how to get the checkpoint back: `ablate run` alone would find nothing to do
    with pytest.raises(ExecError, match=f"remove {sw.store.path('eval', first.key)} and `ablate run` trains it"):
        execute(sw.loaded, sw.plan, sw.store, "eval", first.key, force=True)
    info = {"stage": "eval", "keys": [first.key, added.key], "state": "running", "detail": ""}
    assert _inputs_not_done(sw.plan, sw.store, info, added.key) == [f"train/{key}"]
    assert key_state(sw.store, info, added.key, [f"train/{key}"])["state"] == "cancelled"


@pytest.mark.parametrize("keep", [True, False])
def test_execute_prunes_after_an_evaluation_as_the_spec_says(tmp_path, monkeypatch, keep: bool) -> None:
    sw = synthetic_sweep(tmp_path, seeds=(0,), train={"keep_checkpoint": keep})
    key = _with_models(sw)[0]
    (job,) = _evals_of(sw, key)
    sw.store.invalidate("eval", job.key)
    monkeypatch.setattr(execute_module, "stage_function", lambda stage: lambda ctx: None)
    assert execute(sw.loaded, sw.plan, sw.store, "eval", job.key)
    assert (sw.store.path("train", key) / "model").is_dir() is keep


def _pruned_store(tmp_path: Path):
    from framework.store import Store

    store = Store(tmp_path / "store")
    with store.build("train", "k1", resume=True) as b:
        (b.dir / "model").mkdir()
        (b.dir / "model" / "config.json").write_text('"v1"')
    (store.path("train", "k1") / PRUNED).write_text("{}")
    return store


def _redo(final: Path) -> bool:
    return (final / PRUNED).is_file()


class Preempted(Exception):
    pass


def test_rebuilding_a_pruned_training_resumes_after_a_preemption(tmp_path: Path) -> None:
    store = _pruned_store(tmp_path)
    with pytest.raises(Preempted), store.build("train", "k1", resume=True, redo=_redo) as b:
        assert b is not None and not b.resumed
        (b.dir / "checkpoints" / "checkpoint-500").mkdir(parents=True)
        raise Preempted
    assert store.is_done("train", "k1")  # the pruned result stays published meanwhile
    with store.build("train", "k1", resume=True, redo=_redo) as b:
        assert b is not None and b.resumed and (b.dir / "checkpoints" / "checkpoint-500").is_dir()
        (b.dir / "model").mkdir()
        (b.dir / "model" / "config.json").write_text('"v2"')
    assert (store.path("train", "k1") / "model" / "config.json").read_text() == '"v2"'
    assert not is_pruned(store, "k1")
    with store.build("train", "k1", resume=True, redo=_redo) as b:  # done, and no longer pruned
        assert b is None


def test_a_finished_rebuild_killed_before_its_swap_is_published_not_redone(tmp_path: Path) -> None:
    from framework.store import MARKER

    store = _pruned_store(tmp_path)
    work = store.work_path("train", "k1")  # what the killed rebuild left: complete and marked
    (work / "model").mkdir(parents=True)
    (work / "model" / "config.json").write_text('"v2"')
    (work / MARKER).write_text("{}")
    with store.build("train", "k1", resume=True, redo=_redo) as b:
        assert b is None
    assert (store.path("train", "k1") / "model" / "config.json").read_text() == '"v2"'
    assert not list(store.path("train", "k1").parent.glob("*.replaced"))


def test_evaluations_of_an_earlier_build_of_a_retrained_checkpoint_are_named(tmp_path, monkeypatch) -> None:
    from framework.sweep.pruning import stale_evaluations

    sw = synthetic_sweep(tmp_path, seeds=(0,), eval={"benchmarks": ["aime24", "math-500"], "samples": 2})
    key = _with_models(sw)[0]
    first, second = _evals_of(sw, key)
    monkeypatch.setattr(execute_module, "stage_function", lambda stage: lambda ctx: (ctx.out / "model").mkdir())
    for job in (first, second):
        sw.store.invalidate("eval", job.key)
        execute(sw.loaded, sw.plan, sw.store, "eval", job.key)  # both on the first build
    assert stale_evaluations(sw.plan, sw.store) == []
    (sw.store.path("train", key) / PRUNED).write_text("{}")
    sw.store.invalidate("eval", second.key)  # a new evaluation needs the checkpoint: trained again
    execute(sw.loaded, sw.plan, sw.store, "train", key)
    execute(sw.loaded, sw.plan, sw.store, "eval", second.key)
    (line,) = stale_evaluations(sw.plan, sw.store)
    assert f"1 evaluation(s) of train/{key} were made on an earlier build" in line and first.key in line
    assert f"`ablate exec eval {first.key} --force` re-evaluates" in line
    (sw.store.path("train", key) / PRUNED).write_text("{}")  # deleted again: --force alone has no model to read
    (line,) = stale_evaluations(sw.plan, sw.store)
    assert f"remove {sw.store.path('eval', first.key)} and `ablate run` trains it again" in line
