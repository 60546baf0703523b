"""The spec's `tracking` and `launcher` sections: where results are logged and where stage jobs run."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from framework.spec.base import SpecModel

TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "databricks-uc")


def tracking_uri_problem(uri: str) -> str | None:
    """Why MLflow cannot take this tracking URI, or None. Schemes of installed MLflow store plugins pass too."""
    from importlib.metadata import entry_points
    from urllib.parse import urlparse

    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+", 1)[0].lower()
    use = "use a database such as sqlite:///path/mlflow.db, or a server, http://host:port"
    if uri in ("databricks", "databricks-uc"):  # the default Databricks profile, as MLflow takes it
        return None
    if scheme == "sqlite":
        return _sqlite_problem(uri)
    if scheme in ("http", "https") and not parsed.hostname:
        return f"tracking URI {uri!r} names no server; use {scheme}://host:port"
    if scheme in TRACKING_SCHEMES or scheme in {e.name for e in entry_points(group="mlflow.tracking_store")}:
        return None
    if scheme == "file" or len(scheme) == 1 or (not scheme and (uri.startswith((".", "~")) or "/" in uri)):
        # a path (or a Windows drive letter): MLflow's file store
        return f"tracking URI {uri!r} is a directory (MLflow's file store, which current MLflow refuses); {use}"
    if not scheme:
        return f"tracking URI {uri!r} is not a URI (no scheme such as sqlite://, http:// or databricks://); {use}"
    return f"tracking URI {uri!r}: unknown scheme {scheme!r}; use one of {', '.join(TRACKING_SCHEMES)}"


def _sqlite_problem(uri: str) -> str | None:
    """SQLAlchemy's forms are sqlite:///relative.db and sqlite:////absolute.db; no file means an in-memory
    database, where every run logged would vanish with the process."""
    from urllib.parse import urlparse

    forms = "sqlite:///relative/path/mlflow.db or sqlite:////absolute/path/mlflow.db"
    if "://" not in uri:
        return f"tracking URI {uri!r} is not a URI SQLAlchemy reads; write {forms}"
    parsed = urlparse(uri)
    if parsed.netloc:
        return f"tracking URI {uri!r}: a sqlite URI names no host; write {forms}"
    if parsed.path.removeprefix("/") in ("", ":memory:"):
        return f"tracking URI {uri!r} is an in-memory database: nothing logged would persist; write {forms}"
    return None


class TrackingSpec(SpecModel):
    """Where results are logged."""

    uri: str | None = Field(
        None,
        description="MLflow tracking URI. Default: $MLFLOW_TRACKING_URI, else sqlite:///<results_dir>/mlflow.db.",
    )
    experiment: str | None = Field(None, description="MLflow experiment name; default: the spec's name.")
    log_generations: Literal["all", "sample", "none"] = Field(
        "sample", description="Which generations to attach as artifacts."
    )
    generation_sample: int = Field(50, ge=0, description="Generations per benchmark when log_generations=sample.")

    @field_validator("uri")
    @classmethod
    def _usable_uri(cls, v: str | None) -> str | None:
        problem = tracking_uri_problem(v) if v else None
        if problem:
            raise ValueError(problem)
        return v


class LocalLauncherSpec(SpecModel):
    """Options of the local launcher."""

    cpu_slots: int = Field(
        1,
        ge=1,
        description="CPU slots: how many CPU jobs run at once. The cores are split between the slots, and each job "
        "runs on its slots' cores alone, with as many threads: a training takes one slot per process "
        "(train.processes, at most all of them), any other stage job one. More slots than cores share cores.",
    )
    cores: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] | Literal["auto"] = Field(
        "auto", description="CPU cores to split between the slots; auto = every core this process may run on."
    )
    gpus: list[Annotated[int, Field(ge=0)]] | Literal["auto"] = Field(
        "auto", description="GPU ids to schedule on; auto = all visible."
    )

    @field_validator("gpus")
    @classmethod
    def _unique_gpus(cls, v: list[int] | str) -> list[int] | str:
        if isinstance(v, list) and len(set(v)) != len(v):
            raise ValueError(f"GPU ids must be unique, got {v}")
        return v


class SlurmStageResources(SpecModel):
    """Resources of one kind of stage job on Slurm; unset fields fall back to the launcher's defaults."""

    partition: str | None = Field(None, description="Partition (-p).")
    account: str | None = Field(None, description="Account (-A).")
    qos: str | None = Field(None, description="Quality of service (--qos).")
    nodes: int | None = Field(None, ge=1, description="Nodes (-N).")
    gpus_per_node: int | None = Field(None, ge=0, description="GPUs per node (--gpus-per-node).")
    cpus_per_task: int | None = Field(None, ge=1, description="CPUs per task (-c).")
    mem: str | None = Field(None, description="Memory per node (--mem), e.g. 200G.")
    time: str | None = Field(
        None,
        pattern=r"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2}|UNLIMITED|INFINITE)$",
        description="Time limit (-t) in a form sbatch takes: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or "
        "D-HH:MM:SS (e.g. 04:00:00), or UNLIMITED.",
    )
    constraint: str | None = Field(None, description="Node features (-C).")
    extra_sbatch: list[str] = Field(
        default_factory=list, description="Extra '#SBATCH' lines, verbatim (under `stages:`, `~` is none there)."
    )

    @field_validator("extra_sbatch", mode="before")
    @classmethod
    def _none_is_no_line(cls, v: object) -> object:
        """A stage override keeps its nulls ("none for this stage", `fields.drop_default_nulls`): no extra line."""
        return [] if v is None else v


class SlurmLauncherSpec(SlurmStageResources):
    """Options of the Slurm launcher: defaults for every stage job, and per-stage overrides."""

    setup: list[str] = Field(
        default_factory=list,
        description="Shell lines run before each job (module load, conda activate, ...).",
    )
    container: str | None = Field(None, description="Command prefix that runs the job in a container.")
    stages: dict[Literal["model", "generate", "pool", "data", "train", "eval", "log"], SlurmStageResources] = Field(
        default_factory=dict,
        description="Per-stage resource overrides. There `field: ~` means none for that stage (no qos, no extra "
        "#SBATCH line), in the spec and in an included base alike; leave the field out for the launcher's value.",
    )
    requeue: bool = Field(True, description="Requeue preempted or timed-out jobs (--requeue).")
    signal_seconds: int = Field(
        300, ge=0, description="Seconds before the time limit at which a job is signalled to checkpoint (USR1)."
    )
    max_requeues: int = Field(20, ge=0, description="Most times one job requeues itself before it counts as failed.")


class LauncherSpec(SpecModel):
    """Where stage jobs run. Options sit under the launcher's own name."""

    kind: Literal["local", "slurm"] = Field("local", description="Launcher: local (this machine) or slurm.")
    local: LocalLauncherSpec = Field(default_factory=LocalLauncherSpec, description="Local launcher options.")
    slurm: SlurmLauncherSpec = Field(default_factory=SlurmLauncherSpec, description="Slurm launcher options.")
