"""What a running attempt reports and where it runs: its progress and
result metrics, its latest resource readings, how its processes are found
again, its placement. Plain frozen types (trainer.domain re-exports them)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from modelspec.report import ProgressReport, Report, ValidationReport


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
    # The most ``cpu_share`` was over a window while the machine stayed below
    # danger (what the job uses when nothing starves it; None: not seen).
    cpu_unstarved: float | None = None

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
class Placement:
    """Where an attempt runs, as its executor reports it (trainer.executor):
    the executor's name (``local``, ``ray``), the node (id or host name) and
    its address, and the executor's own handle for the attempt (the local
    runner: the root pid; a cluster executor: its submission id), which is
    what re-attaches it after a Trainer restart."""

    executor: str = ""
    node: str = ""
    address: str = ""
    handle: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Placement:
        return cls(**{f.name: str(value.get(f.name, "")) for f in dataclasses.fields(cls)})
