"""Validation before push, as types: what a Start asks, the policy in
effect, held-out scores and the verdict (trainer.push decides it;
trainer.domain re-exports these)."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

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
    """Lowest held-out precision, recall or f1 to push (METRIC=VALUE)."""
    max_regression: float = 0.02
    """Largest drop of the regression metric against the served version."""
    regression_metric: str = "f1"
    """Metric compared with the served version."""
    skip: bool = False
    """Push without validating."""
    held_out_corpus: str = ""
    """Score on this corpus (relative to the data root) instead of the job's held-out split."""
    max_background_labeled: float | None = None
    """Highest share of the held-out real background text a new version may label (e.g. 0.03); unset: no ceiling."""

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
