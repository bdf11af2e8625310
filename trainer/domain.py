"""Plain types the Trainer's parts share; no gRPC here (the servicer turns
them into protos). The job record is typed end to end: the store writes these
dataclasses as JSON columns and reads them back, the scheduler fills them, the
servicer maps them field by field."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from modelspec.report import ResultReport
from trainer.readings import (
    JobContainment,
    JobProgress,
    JobResources,
    LabelMetrics,
    Placement,
    TrackedProcess,
)
from trainer.verdicts import (
    METRICS,
    HeldOutMetrics,
    PushDecision,
    PushOutcome,
    ValidationPolicy,
    ValidationRequest,
)


class JobState(enum.Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    # Kill was asked: its process tree is being ended in the background.
    STOPPING = "STOPPING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    KILLED = "KILLED"

    @property
    def ended(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.KILLED)


class Priority(enum.IntEnum):
    """A job's priority: the queue admits higher first; the gate stops lower first."""

    LOW = 0
    NORMAL = 1
    HIGH = 2


class GateAction(enum.Enum):
    ADMIT = "ADMIT"
    WAIT = "WAIT"
    KILL = "KILL"


@dataclasses.dataclass(frozen=True)
class GateDecision:
    """What the load gate decided, on which machine readings, and why.
    ``decided_at`` is wall-clock seconds (0: not stamped yet)."""

    action: GateAction
    reason: str
    cpu: float = 0.0
    memory: float = 0.0
    job_id: str = ""
    decided_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "reason": self.reason,
            "cpu": self.cpu,
            "memory": self.memory,
            "job_id": self.job_id,
            "decided_at": self.decided_at,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> GateDecision | None:
        if not value.get("action"):
            return None
        return cls(
            action=GateAction(value["action"]),
            reason=str(value.get("reason", "")),
            cpu=float(value.get("cpu", 0.0)),
            memory=float(value.get("memory", 0.0)),
            job_id=str(value.get("job_id", "")),
            # "time": rows written before the record was typed.
            decided_at=float(value.get("decided_at", value.get("time", 0.0))),
        )


@dataclasses.dataclass(frozen=True)
class JobRequest:
    """What Start asks for, before validation."""

    model: str
    label: str
    recipe: str = ""
    corpus: str = ""
    params: dict[str, int] = dataclasses.field(default_factory=dict)
    idempotency_key: str = ""
    # A bundle's labels in column order (then ``label`` is empty).
    labels: tuple[str, ...] = ()
    validation: ValidationRequest = ValidationRequest()
    # A sweep's trial or final job (trainer.sweeps): the sweep's id, and
    # whether the job trains and scores without exporting (a trial).
    sweep_id: str = ""
    no_push: bool = False
    # trainer.job_limits: seconds of run time and/or an absolute wall-clock
    # deadline (None: none), retries of a job that fails on its own, and the
    # priority (Priority: 0 LOW, 1 NORMAL, 2 HIGH).
    deadline_s: float | None = None
    deadline_at: float | None = None
    max_retries: int = 0
    priority: int = 1


@dataclasses.dataclass
class JobRecord:
    """One job as stored. Times are wall-clock seconds since the epoch."""

    job_id: str
    recipe: str
    model: str
    label: str
    corpus: str  # relative to the data root
    params: dict[str, int]
    state: JobState
    create_time: float
    reason: str = ""
    seq: int = 0
    pid: int = 0
    pid_create_time: float = 0.0
    start_time: float | None = None
    end_time: float | None = None
    exit_code: int | None = None
    attempts: int = 0
    overload_kills: int = 0  # attempts the load gate killed (the requeue limit counts these)
    not_before: float = 0.0
    model_version: int = 0
    # From the job's ``progress`` / ``result`` lines (modelspec.report).
    progress: JobProgress = JobProgress()
    # The gate's latest decision about this job.
    gate: GateDecision | None = None
    resources: JobResources = JobResources()
    idempotency_key: str = ""
    # The running attempt's processes (empty when none runs).
    containment: JobContainment = JobContainment()
    # A bundle's labels in column order; empty for a single-label model.
    labels: list[str] = dataclasses.field(default_factory=list)
    # The validation policy in effect (None: the recipe does not validate) and
    # its verdict on the job's model version (None until judged).
    validation: ValidationPolicy | None = None
    push: PushDecision | None = None
    # The sweep this job belongs to ("" for none), and whether it only trains
    # and reports its held-out metrics without exporting (a sweep trial).
    sweep_id: str = ""
    no_push: bool = False
    # trainer.job_limits: deadlines (0: none) - seconds of run time, summed
    # over attempts in ``run_s``, and an absolute wall-clock time; retries of
    # a job that fails on its own; priority (0 LOW, 1 NORMAL, 2 HIGH).
    deadline_s: float = 0.0
    deadline_at: float = 0.0
    run_s: float = 0.0
    max_retries: int = 0
    retries: int = 0
    priority: int = 1
    # Where the running attempt runs (trainer.executor); empty when none runs.
    placement: Placement = Placement()

    def copy(self) -> JobRecord:
        # Every nested value is frozen: a shallow copy with its own params and
        # labels is a full copy.
        return dataclasses.replace(self, params=dict(self.params), labels=list(self.labels))


# -- sweeps (trainer.sweeps) ----------------------------------------------------


class Scale(enum.Enum):
    LINEAR = "LINEAR"
    LOG = "LOG"


class SearchAlgorithm(enum.Enum):
    GRID = "GRID"
    RANDOM = "RANDOM"


class Direction(enum.Enum):
    MAXIMIZE = "MAXIMIZE"
    MINIMIZE = "MINIMIZE"


class SweepState(enum.Enum):
    RUNNING = "RUNNING"  # trials queued or running
    PUSHING = "PUSHING"  # the best trial's configuration is trained with validation before push
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    KILLED = "KILLED"

    @property
    def ended(self) -> bool:
        return self in (SweepState.SUCCEEDED, SweepState.FAILED, SweepState.KILLED)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """One hyperparameter's candidates: ``values``, or a range
    [minimum, maximum] on a linear or log scale (a grid takes
    ``grid_points`` evenly spaced points of it)."""

    values: tuple[float, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    scale: Scale = Scale.LINEAR
    grid_points: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["values"], out["scale"] = list(self.values), self.scale.value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        return cls(
            values=tuple(float(v) for v in data.get("values", ())),
            minimum=data.get("minimum"),
            maximum=data.get("maximum"),
            scale=Scale(data.get("scale", "LINEAR")),
            grid_points=int(data.get("grid_points", 0)),
        )


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """What StartSweep asks for (checked by trainer.sweeps.check_spec)."""

    model: str
    label: str
    search_space: dict[str, SearchSpace]
    metric: str
    direction: Direction | None
    trial_budget: int
    recipe: str = ""
    corpus: str = ""
    base_params: dict[str, int] = dataclasses.field(default_factory=dict)
    algorithm: SearchAlgorithm = SearchAlgorithm.RANDOM
    seed: int = 0
    max_parallel: int = 1
    validation: ValidationRequest = ValidationRequest()
    idempotency_key: str = ""
    priority: int = 1  # of every trial and the final job (trainer.job_limits.Priority)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "label": self.label,
            "search_space": {k: v.to_dict() for k, v in self.search_space.items()},
            "metric": self.metric,
            "direction": self.direction.value if self.direction else "",
            "trial_budget": self.trial_budget,
            "recipe": self.recipe,
            "corpus": self.corpus,
            "base_params": dict(self.base_params),
            "algorithm": self.algorithm.value,
            "seed": self.seed,
            "max_parallel": self.max_parallel,
            "validation": dataclasses.asdict(self.validation),
            "idempotency_key": self.idempotency_key,
            "priority": self.priority,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepSpec:
        v = data.get("validation", {})
        return cls(
            model=data["model"],
            label=data["label"],
            search_space={k: SearchSpace.from_dict(s) for k, s in data["search_space"].items()},
            metric=data["metric"],
            direction=Direction(data["direction"]) if data.get("direction") else None,
            trial_budget=int(data["trial_budget"]),
            recipe=data.get("recipe", ""),
            corpus=data.get("corpus", ""),
            base_params={k: int(x) for k, x in data.get("base_params", {}).items()},
            algorithm=SearchAlgorithm(data.get("algorithm", "RANDOM")),
            seed=int(data.get("seed", 0)),
            max_parallel=int(data.get("max_parallel", 1)),
            validation=ValidationRequest(
                floors=dict(v.get("floors", {})),
                max_regression=v.get("max_regression"),
                regression_metric=v.get("regression_metric", ""),
                skip=bool(v.get("skip", False)),
                held_out_corpus=v.get("held_out_corpus", ""),
            ),
            idempotency_key=data.get("idempotency_key", ""),
            priority=int(data.get("priority", 1)),
        )


@dataclasses.dataclass
class SweepRecord:
    """One sweep as stored: its spec (recipe, corpus resolved), the trials'
    hyperparameters generated once at start (so a restart resumes the same
    sweep), and where it is. Trial i is the job with idempotency key
    ``<sweep_id>/trial-<i>``; the final job ``<sweep_id>/final``."""

    sweep_id: str
    spec: SweepSpec
    trials: list[dict[str, int]]
    state: SweepState
    create_time: float
    reason: str = ""
    end_time: float | None = None
    final_job_id: str = ""
    seq: int = 0


@dataclasses.dataclass(frozen=True)
class TrialView:
    """One trial as a sweep's status shows it."""

    index: int
    params: dict[str, int]
    job: JobRecord | None  # None: not started yet
    metric: float | None


@dataclasses.dataclass(frozen=True)
class SweepView:
    """A sweep with its trials, the best so far, and the final job."""

    sweep: SweepRecord
    trials: list[TrialView]
    best: TrialView | None
    final_job: JobRecord | None


__all__ = [
    "Direction",
    "GateAction",
    "GateDecision",
    "HeldOutMetrics",
    "JobContainment",
    "JobProgress",
    "JobRecord",
    "JobRequest",
    "JobResources",
    "JobState",
    "LabelMetrics",
    "METRICS",
    "PushDecision",
    "Placement",
    "Priority",
    "PushOutcome",
    "ResultReport",
    "Scale",
    "SearchAlgorithm",
    "SearchSpace",
    "SweepRecord",
    "SweepSpec",
    "SweepState",
    "SweepView",
    "TrackedProcess",
    "TrialView",
    "ValidationPolicy",
    "ValidationRequest",
]
