"""The stages of a sweep: their code versions (part of every key) and where their implementation lives.

Bump a stage's version when a change alters what it produces; every key of that stage (and downstream) changes,
so stale outputs are never reused. Implementations are imported only when a stage runs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    version: str
    target: str  # "package.module:function", called with a StageContext
    device: str  # "cpu" or "gpu": what a launcher must give the job
    description: str


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("model", "1", "framework.model.stage:run", "cpu", "build a tiny base model and tokenizer"),
        Stage(
            "generate",
            "1",
            "framework.generate.stage:run",
            "gpu",
            "sample a teacher (vLLM or an endpoint) on problems, or rewrite traces, for the pool",
        ),
        # pool 2: an "answer is X, which ..." phrase yields X (it fell through to the last number)
        # pool 3: a missing expected answer leaves a trace ungraded (it was graded wrong); integer answers with
        # gaps in their column stay exact text; empty CSV cells are missing values
        Stage("pool", "3", "framework.pool.stage:run", "cpu", "load and annotate the trace pool, once per sweep"),
        # data 2: problems and traces are drawn in an order keyed by hashes of (seed, id), so arms that keep other
        # traces of the same problems train on the same problems (it was one random stream per arm)
        Stage(
            "data",
            "2",
            "framework.data.stage:run",
            "cpu",
            "apply a cell's factor levels and sample its training set",
        ),
        Stage(
            "search",
            "1",
            "framework.search.stage:run",
            "gpu",
            "tune train fields on a validation benchmark: Optuna trials of train and validation-eval jobs",
        ),
        # train 2: examples that do not divide among the ranks are no longer trained twice per epoch
        Stage("train", "2", "framework.train.stage:run", "gpu", "full fine-tune (DeepSpeed ZeRO-3) on the cell's data"),
        # eval 2: samples stop at the chat turn end (a base model's config names only its EOS); samples of
        # different problems never share a seed; multiple-choice phrases and fallbacks: false as documented
        # eval 3: a baseline with a dtype of its own runs in it (it ran in the model's); a benchmark problem with
        # no expected answer is an error (it was graded against "nan"), and 204.0 reads 204
        Stage("eval", "3", "framework.eval.stage:run", "gpu", "generate, grade and score one benchmark"),
        Stage("log", "1", "framework.log.stage:run", "cpu", "log a cell to MLflow"),
    )
}
STAGE_ORDER = list(STAGES)


def job_device(stage: str, config: dict) -> str:
    """What one job of `stage` needs: the stage's device, except that a generation whose teacher is an endpoint
    only sends requests (a GPU allocation would sit idle while a server elsewhere answers), and a search's select
    job only reads its study."""
    if stage == "generate" and "endpoint_model" in (config.get("teacher") or {}):
        return "cpu"
    if stage == "search" and config.get("role") == "select":  # reads the study and writes the chosen parameters
        return "cpu"
    return STAGES[stage].device


def trains(stage: str, config: dict) -> bool:
    """Whether one job of `stage` runs trainings: a train job, or a search worker (its trials train), which
    launchers give a training's processes, GPUs, nodes and time to stop."""
    return stage == "train" or (stage == "search" and config.get("role") == "worker")
