"""When a Slurm task counts as done: its stage's SUCCESS markers, except for a training whose checkpoint was pruned.

With `train.keep_checkpoint: false` a training keeps its SUCCESS marker after its checkpoint is deleted (its metrics
are still read) and gets PRUNED.json (framework/sweep/pruning.py). Submitted again because a new evaluation needs the
checkpoint (launchers/base.py pending_tasks), it is not done until rebuilt: otherwise the job script would skip it,
the launcher would mark it done at once, and the evaluation would fail on the missing model. The rebuild publishes a
new result without PRUNED.json; once the evaluations submitted with it are done, it may be pruned again, and done it
stays.
"""

from __future__ import annotations

from collections.abc import Iterable

from framework.store import Store
from framework.sweep.pruning import is_pruned
from launchers.base import Task


def outputs_done(store: Store, stage: str, keys: Iterable[str]) -> bool:
    return all(store.is_done(stage, k) for k in keys)


def task_done(store: Store, task: Task, submitted: Iterable[Task]) -> bool:
    """The task's outputs are complete; for a pruned training, also no evaluation submitted with it (in
    `submitted`) still waits to read its checkpoint."""
    if not outputs_done(store, task.stage, task.keys):
        return False
    if task.stage != "train" or not any(is_pruned(store, k) for k in task.keys):
        return True
    readers = [t for t in submitted if t.stage == "eval" and task.id in t.deps]
    return all(outputs_done(store, t.stage, t.keys) for t in readers)
