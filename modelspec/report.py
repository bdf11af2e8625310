"""The report lines a training recipe prints and the Trainer reads: the one
definition of their format.

A recipe writes, one per line on stdout, ``progress {json}`` after each epoch,
``validation {json}`` with its verdict when it validated a new version before
push (trainer.push reads the verdict), and ``result {json}`` once its version
directory is complete. ``format_*``
write them (the recipe side), ``parse_line`` reads them (the Trainer side):
anything else on the output is plain log text.

A result carries the exported ``version`` and its directory, the held-out
``precision`` / ``recall`` / ``f1``, and any further metrics a recipe adds
(``extra``: for example a per-label metrics mapping, epochs run, seconds):
readers keep what they do not know instead of rejecting the line.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

PROGRESS = "progress"
RESULT = "result"
VALIDATION = "validation"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _metrics(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        return {}
    read = {str(k): _number(v) for k, v in value.items()}
    return {k: v for k, v in read.items() if v is not None}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclasses.dataclass(frozen=True)
class ProgressReport:
    """One finished epoch (from 1) of ``epochs``; metrics a recipe has not got
    are None. ``held_out``: the held-out metrics after this epoch (e.g.
    ``{"f1": 0.8}``), what a sweep's pruner judges a trial by; empty if none."""

    epoch: int
    epochs: int
    loss: float | None = None
    accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    held_out: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ProgressReport:
        return cls(
            epoch=_count(value.get("epoch")),
            epochs=_count(value.get("epochs")),
            loss=_number(value.get("loss")),
            accuracy=_number(value.get("accuracy")),
            val_loss=_number(value.get("val_loss")),
            val_accuracy=_number(value.get("val_accuracy")),
            held_out=_metrics(value.get("held_out")),
        )

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if v is not None and k != "held_out"}
        if self.held_out:
            out["held_out"] = dict(self.held_out)
        return out


@dataclasses.dataclass(frozen=True)
class ResultReport:
    """The exported model version (0: none named) and its held-out metrics;
    ``extra`` holds every further field the recipe wrote, unchanged."""

    version: int
    version_dir: str = ""
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    _KNOWN = ("version", "version_dir", "precision", "recall", "f1")

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ResultReport:
        version_dir = value.get("version_dir")
        return cls(
            version=_count(value.get("version")),
            version_dir=version_dir if isinstance(version_dir, str) else "",
            precision=_number(value.get("precision")),
            recall=_number(value.get("recall")),
            f1=_number(value.get("f1")),
            extra={k: v for k, v in value.items() if k not in cls._KNOWN},
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out["version"] = self.version
        if self.version_dir:
            out["version_dir"] = self.version_dir
        for name in ("precision", "recall", "f1"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


@dataclasses.dataclass(frozen=True)
class ValidationReport:
    """The verdict of validation before push, as the recipe wrote it (the
    Trainer's trainer.push reads its fields; this format does not own them)."""

    verdict: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.verdict)


Report = ProgressReport | ResultReport | ValidationReport


def format_progress(report: ProgressReport | Mapping[str, Any]) -> str:
    """The ``progress {json}`` line (no newline) for one epoch."""
    if not isinstance(report, ProgressReport):
        report = ProgressReport.from_json(report)
    return f"{PROGRESS} {json.dumps(report.to_json(), ensure_ascii=False)}"


def format_result(report: ResultReport | Mapping[str, Any]) -> str:
    """The ``result {json}`` line (no newline); a mapping keeps its extra fields."""
    if not isinstance(report, ResultReport):
        report = ResultReport.from_json(report)
    return f"{RESULT} {json.dumps(report.to_json(), ensure_ascii=False)}"


def format_validation(report: ValidationReport | Mapping[str, Any]) -> str:
    """The ``validation {json}`` line (no newline) with a verdict."""
    verdict = report.verdict if isinstance(report, ValidationReport) else report
    return f"{VALIDATION} {json.dumps(dict(verdict), ensure_ascii=False)}"


def parse_line(line: str) -> Report | None:
    """The report a line carries, or None for any other output."""
    kind, _, rest = line.partition(" ")
    if kind not in (PROGRESS, RESULT, VALIDATION):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    if kind == VALIDATION:
        return ValidationReport(value)
    return ProgressReport.from_json(value) if kind == PROGRESS else ResultReport.from_json(value)
