"""Plain types the Trainer's parts share; no gRPC here (the servicer turns
them into protos)."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any


class JobState(enum.Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    KILLED = "KILLED"

    @property
    def ended(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.KILLED)


PROGRESS_FIELDS = (
    "epoch",
    "epochs",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "precision",
    "recall",
    "f1",
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


@dataclasses.dataclass(frozen=True)
class ValidationPolicy:
    """When a new model version may be pushed to serving: every held-out
    metric in ``floors`` at or above its floor, and ``regression_metric`` at
    most ``max_regression`` below the served version's on the same documents.
    ``skip``: push without validating. ``held_out_corpus``: score both on it
    (relative to the data root) instead of the job's own held-out split."""

    floors: dict[str, float] = dataclasses.field(default_factory=dict)
    max_regression: float = 0.02
    regression_metric: str = "f1"
    skip: bool = False
    held_out_corpus: str = ""

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
    validation: ValidationRequest = ValidationRequest()


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
    # Parsed from the job's ``progress`` / ``result`` lines (PROGRESS_FIELDS).
    progress: dict[str, float] = dataclasses.field(default_factory=dict)
    # The gate's latest decision: action, reason, cpu, memory, time.
    gate: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Latest readings: cpu_percent, rss_bytes, machine_cpu_percent,
    # machine_memory_percent, read_time; cpu_share / memory_share are the
    # machine percentages its last attempt used at most (the gate's estimate
    # for a requeued job).
    resources: dict[str, float] = dataclasses.field(default_factory=dict)
    idempotency_key: str = ""
    # The validation policy in effect (None: the recipe does not validate) and
    # its verdict on the job's model version (None until judged).
    validation: ValidationPolicy | None = None
    push: PushDecision | None = None

    def copy(self) -> JobRecord:
        return dataclasses.replace(
            self,
            params=dict(self.params),
            progress=dict(self.progress),
            gate=dict(self.gate),
            resources=dict(self.resources),
        )
