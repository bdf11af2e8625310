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
    # A bundle's labels in column order; empty for a single-label model.
    labels: list[str] = dataclasses.field(default_factory=list)

    def copy(self) -> JobRecord:
        return dataclasses.replace(
            self,
            labels=list(self.labels),
            params=dict(self.params),
            progress=dict(self.progress),
            gate=dict(self.gate),
            resources=dict(self.resources),
        )
