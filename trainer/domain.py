"""Plain types the Trainer's parts share; no gRPC here (the servicer turns
them into protos). The job record is typed end to end: the store writes these
dataclasses as JSON columns and reads them back, the scheduler fills them, the
servicer maps them field by field."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from modelspec.report import ProgressReport, Report, ResultReport, ValidationReport


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
class LabelMetrics:
    """One label's held-out scores in a bundle's result (its ``label_metrics``)."""

    precision: float
    recall: float
    f1: float

    @classmethod
    def from_json(cls, value: Any) -> LabelMetrics | None:
        if not isinstance(value, Mapping):
            return None
        numbers = [value.get(k) for k in ("precision", "recall", "f1")]
        floats = [float(n) for n in numbers if isinstance(n, (int, float)) and not isinstance(n, bool)]
        return cls(*floats) if len(floats) == 3 else None


def _label_metrics(value: Any) -> dict[str, LabelMetrics]:
    """A result's ``label_metrics`` mapping, entries that are not metrics left out."""
    if not isinstance(value, Mapping):
        return {}
    read = {str(label): LabelMetrics.from_json(m) for label, m in value.items()}
    return {label: m for label, m in read.items() if m is not None}


@dataclasses.dataclass(frozen=True)
class JobProgress:
    """What the job last reported: the latest epoch's numbers, then the
    held-out metrics of its result. None: not reported."""

    epoch: int = 0
    epochs: int = 0
    loss: float | None = None
    accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    # A bundle's held-out scores per label, from its result's ``label_metrics``.
    label_metrics: Mapping[str, LabelMetrics] = dataclasses.field(default_factory=dict)

    def with_report(self, report: Report) -> JobProgress:
        """This progress updated by a recipe's report line (a validation
        verdict changes none of it: trainer.push reads that)."""
        if isinstance(report, ValidationReport):
            return self
        if isinstance(report, ProgressReport):
            changes = {
                k: v
                for k, v in dataclasses.asdict(report).items()
                if v is not None and not (k in ("epoch", "epochs") and v == 0)
            }
        else:
            changes = {
                name: getattr(report, name)
                for name in ("precision", "recall", "f1")
                if getattr(report, name) is not None
            }
            label_metrics = _label_metrics(report.extra.get("label_metrics"))
            if label_metrics:
                changes["label_metrics"] = label_metrics
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and v != {}}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> JobProgress:
        names = {f.name for f in dataclasses.fields(cls)}
        out = {k: v for k, v in value.items() if k in names and v is not None}
        for name in ("epoch", "epochs"):
            if name in out:
                out[name] = int(out[name])
        if "label_metrics" in out:
            out["label_metrics"] = _label_metrics(out["label_metrics"])
        return cls(**out)


@dataclasses.dataclass(frozen=True)
class JobResources:
    """The latest readings of a running job and the machine.

    ``cpu_percent`` is the job's process tree in percent of one core;
    ``cpu_share`` / ``memory_share`` are its recent load in machine percent
    (CPU: mean over the last few seconds of tree samples, not an average
    since start), the gate's estimate of what the job costs if it is
    requeued. ``read_time`` is wall-clock seconds."""

    cpu_percent: float = 0.0
    rss_bytes: int = 0
    machine_cpu_percent: float = 0.0
    machine_memory_percent: float = 0.0
    read_time: float = 0.0
    cpu_share: float | None = None
    memory_share: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> JobResources:
        names = {f.name for f in dataclasses.fields(cls)}
        out = {k: v for k, v in value.items() if k in names}
        if "rss_bytes" in out:
            out["rss_bytes"] = int(out["rss_bytes"])
        return cls(**out)


@dataclasses.dataclass(frozen=True)
class TrackedProcess:
    """A process identified across restarts: pid AND create time (pids are reused)."""

    pid: int
    create_time: float


@dataclasses.dataclass(frozen=True)
class JobContainment:
    """How a running attempt's processes are found again, by a restarted
    Trainer too: its cgroup (v2, where the machine lets us make one), the
    environment marker every process of the job inherits, and the process
    group / session / descendants seen so far (refreshed while it runs)."""

    marker: str = ""  # value of MARKER_ENV in the job's environment
    cgroup: str = ""  # absolute cgroup v2 directory, "" if none
    session: int = 0  # = process group = root pid (the job starts its own session)
    descendants: tuple[TrackedProcess, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "marker": self.marker,
            "cgroup": self.cgroup,
            "session": self.session,
            "descendants": [[p.pid, p.create_time] for p in self.descendants],
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> JobContainment:
        return cls(
            marker=str(value.get("marker", "")),
            cgroup=str(value.get("cgroup", "")),
            session=int(value.get("session", 0)),
            descendants=tuple(TrackedProcess(int(p), float(t)) for p, t in value.get("descendants", ())),
        )


METRICS = ("precision", "recall", "f1")


@dataclasses.dataclass(frozen=True)
class ValidationRequest:
    """The validation part of a Start, as sent: empty/None parts take the
    Trainer's defaults (trainer.push.resolve_policy)."""

    floors: dict[str, float] = dataclasses.field(default_factory=dict)
    max_regression: float | None = None
    regression_metric: str = ""
    skip: bool = False
    held_out_corpus: str = ""
    max_background_labeled: float | None = None


@dataclasses.dataclass(frozen=True)
class ValidationPolicy:
    """When a new model version may be pushed to serving: every held-out
    metric in ``floors`` at or above its floor, and ``regression_metric`` at
    most ``max_regression`` below the served version's on the same documents.
    ``skip``: push without validating. ``held_out_corpus``: score both on it
    (relative to the data root) instead of the job's own held-out split.
    ``max_background_labeled``: the highest share of the held-out real
    background text (trainer.background) the new version may label; None: no
    ceiling."""

    floors: dict[str, float] = dataclasses.field(default_factory=dict)
    max_regression: float = 0.02
    regression_metric: str = "f1"
    skip: bool = False
    held_out_corpus: str = ""
    max_background_labeled: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationPolicy:
        return cls(
            floors={str(k): float(v) for k, v in data.get("floors", {}).items()},
            max_regression=float(data.get("max_regression", 0.02)),
            regression_metric=str(data.get("regression_metric", "f1")),
            skip=bool(data.get("skip", False)),
            held_out_corpus=str(data.get("held_out_corpus", "")),
            max_background_labeled=(
                None if data.get("max_background_labeled") is None else float(data["max_background_labeled"])
            ),
        )


@dataclasses.dataclass(frozen=True)
class HeldOutMetrics:
    """A model version's scores on held-out documents."""

    precision: float
    recall: float
    f1: float
    documents: int

    def value(self, metric: str) -> float:
        return float(getattr(self, metric))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeldOutMetrics:
        return cls(
            float(data["precision"]), float(data["recall"]), float(data["f1"]), int(data.get("documents", 0))
        )


class PushOutcome(enum.Enum):
    PUSHED = "PUSHED"  # validated and served
    REJECTED = "REJECTED"  # kept under <model>/rejected/<version>/, not served
    PUSHED_UNVALIDATED = "PUSHED_UNVALIDATED"  # validation skipped on request


@dataclasses.dataclass(frozen=True)
class PushDecision:
    """The validation before push of one new version, as the recipe reported it."""

    outcome: PushOutcome
    reason: str
    candidate_version: int
    candidate: HeldOutMetrics
    served_version: int = 0
    served: HeldOutMetrics | None = None
    failures: tuple[str, ...] = ()
    rejected_path: str = ""  # relative to the model root

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["outcome"] = self.outcome.value
        out["failures"] = list(self.failures)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PushDecision:
        """Raises KeyError, TypeError or ValueError on a malformed report."""
        served = data.get("served")
        return cls(
            outcome=PushOutcome(data["outcome"]),
            reason=str(data["reason"]),
            candidate_version=int(data["candidate_version"]),
            candidate=HeldOutMetrics.from_dict(data["candidate"]),
            served_version=int(data.get("served_version") or 0),
            served=HeldOutMetrics.from_dict(served) if served else None,
            failures=tuple(str(f) for f in data.get("failures", ())),
            rejected_path=str(data.get("rejected_path", "")),
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
