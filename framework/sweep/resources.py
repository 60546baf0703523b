"""What a stage job needs from a machine, from the spec alone: a training's process layout (processes per node,
world size, gradient accumulation) and a Slurm job's resources (launcher defaults merged with `stages.<stage>`).

The plan checks them before anything is launched; the train stage and the launchers use the same functions, so
what was checked is what runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from framework.errors import UserError
from framework.spec.ablation import AblationSpec
from framework.spec.launch import SlurmLauncherSpec
from framework.spec.models import TrainSpec
from framework.sweep.stages import STAGES


class TrainConfigError(UserError):
    """A training recipe that cannot run on the resources it was given."""


@dataclass(frozen=True)
class Layout:
    """How a training job is spread: nodes × processes per node, and what that implies for batching."""

    nodes: int
    procs_per_node: int
    gpu: bool
    micro_batch_size: int
    grad_accum: int

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node

    @property
    def global_batch_size(self) -> int:
        return self.world_size * self.micro_batch_size * self.grad_accum

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "world_size": self.world_size, "global_batch_size": self.global_batch_size}


def split_evenly(items: list[int], parts: int) -> list[list[int]]:
    """Contiguous, disjoint runs of `items` whose lengths differ by at most one (the first ones longer): cores
    between CPU slots, between data-parallel ranks, between tensor-parallel workers."""
    per, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        n = per + (i < extra)
        out.append(items[start : start + n])
        start += n
    return out


def processes_per_node(train: TrainSpec, *, gpus: int) -> int:
    """train.processes, else the visible GPUs (2 on a CPU-only machine)."""
    return train.processes or (gpus if gpus > 0 else 2)


def layout(train: TrainSpec, *, gpus: int) -> Layout:
    """Processes per node as `processes_per_node` says; accumulation fills the batch."""
    procs = processes_per_node(train, gpus=gpus)
    world = train.nodes * procs
    per_step = world * train.micro_batch_size
    if train.global_batch_size % per_step:
        raise TrainConfigError(
            f"train.global_batch_size {train.global_batch_size} is not a multiple of micro_batch_size "
            f"{train.micro_batch_size} × {world} processes ({train.nodes} node(s) × {procs}); choose a global "
            f"batch that is a multiple of {per_step}, or set train.processes"
        )
    return Layout(train.nodes, procs, gpus > 0, train.micro_batch_size, train.global_batch_size // per_step)


@dataclass(frozen=True)
class StageResources:
    """What one stage's jobs ask Slurm for, after merging the launcher defaults with `stages.<stage>`."""

    nodes: int = 1
    gpus_per_node: int = 0
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    time: str | None = None
    constraint: str | None = None
    extra_sbatch: tuple[str, ...] = ()


def stage_resources(spec: AblationSpec, stage: str, device: str | None = None) -> StageResources:
    """Launcher defaults overridden by `stages.<stage>` (a field set there, even to null, wins).

    Node and GPU counts are the exception, because the defaults describe the training job: CPU stages get 1 node and
    no GPU, eval gets 1 node, and train gets `train.nodes` (which the training's process layout follows), unless
    `stages.<stage>` says otherwise. A Slurm node count for train that differs from `train.nodes` is an error rather
    than an allocation half the training would leave idle. A search worker, whose trials train and evaluate, gets
    the train job's resources unless `stages.search` is given. `device`: what the job needs, when it differs from
    its stage's (a generation through an endpoint needs no GPU).
    """
    slurm: SlurmLauncherSpec = spec.launcher.slurm
    override = slurm.stages.get(stage)
    explicit = override.model_fields_set if override is not None else set()

    def pick(name: str) -> Any:
        return getattr(override, name) if name in explicit else getattr(slurm, name)

    gpu_stage = (device or STAGES[stage].device) == "gpu"
    if stage == "search" and gpu_stage and override is None:  # a worker trains its trials: a training's job
        return stage_resources(spec, "train")
    if stage == "train":
        asked = override.nodes if "nodes" in explicit and override is not None else slurm.nodes
        if asked is not None and asked != spec.train.nodes:
            where = "launcher.slurm.stages.train.nodes" if "nodes" in explicit else "launcher.slurm.nodes"
            raise UserError(
                f"{where} = {asked} but train.nodes = {spec.train.nodes}: the training's layout follows train.nodes "
                "and the Slurm allocation follows it; set train.nodes only"
            )
        nodes = spec.train.nodes
    else:
        nodes = override.nodes if "nodes" in explicit and override is not None and override.nodes else 1
    gpus = pick("gpus_per_node") if gpu_stage or "gpus_per_node" in explicit else 0
    return StageResources(
        nodes=nodes,
        gpus_per_node=gpus or 0,
        partition=pick("partition"),
        account=pick("account"),
        qos=pick("qos"),
        cpus_per_task=pick("cpus_per_task"),
        mem=pick("mem"),
        time=pick("time"),
        constraint=pick("constraint"),
        extra_sbatch=tuple(pick("extra_sbatch")),
    )
