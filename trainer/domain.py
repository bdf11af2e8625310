"""Plain types the Trainer's parts share; no gRPC here (the servicer turns
them into protos). The job record is typed end to end: the store writes these
dataclasses as JSON columns and reads them back, the scheduler fills them, the
servicer maps them field by field."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from modelspec.report import ProgressReport, Report, ResultReport


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
        """This progress updated by a recipe's report line."""
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

    def copy(self) -> JobRecord:
        # Every nested value is frozen: a shallow copy with its own params and
        # labels is a full copy.
        return dataclasses.replace(self, params=dict(self.params), labels=list(self.labels))


__all__ = [
    "GateAction",
    "GateDecision",
    "JobContainment",
    "JobProgress",
    "JobRecord",
    "JobRequest",
    "JobResources",
    "JobState",
    "LabelMetrics",
    "ResultReport",
    "TrackedProcess",
]
