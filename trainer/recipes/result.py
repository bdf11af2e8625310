"""What one fastText training delivers: TrainResult (held-out scores, the
no-evidence and background rates, the push verdict) and its ``result``
line's JSON."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

from modelspec.features import FeaturePipeline
from trainer.domain import PushDecision


@dataclasses.dataclass(frozen=True)
class Rate:
    """How many of ``documents`` (all negatives) the model labeled."""

    positives: int
    documents: int

    @property
    def rate(self) -> float:
        return self.positives / self.documents if self.documents else 0.0


@dataclasses.dataclass
class TrainResult:
    version: int  # 0: nothing exported (a sweep trial)
    version_dir: pathlib.Path | None
    precision: float
    recall: float
    f1: float
    epochs_run: int
    test_documents: int
    seconds: float
    # False-positive rates: held-out negatives, general text, unknown-word text.
    false_positive_rate: float = 0.0
    general: Rate = dataclasses.field(default_factory=lambda: Rate(0, 0))
    unknown: Rate = dataclasses.field(default_factory=lambda: Rate(0, 0))
    # Held-out real background text labeled (by any label); per label for a bundle.
    background: Rate = dataclasses.field(default_factory=lambda: Rate(0, 0))
    background_per_label: dict[str, Rate] = dataclasses.field(default_factory=dict)
    threads: tuple[int, int] = (0, 0)  # TensorFlow (intra, inter) op threads in effect
    # A bundle's held-out scores per label: label -> (precision, recall, f1).
    label_metrics: dict[str, tuple[float, float, float]] = dataclasses.field(default_factory=dict)
    model: Any = dataclasses.field(repr=False, default=None)  # the trained keras.Model
    pipeline: FeaturePipeline | None = dataclasses.field(repr=False, default=None)
    # The verdict of validation before push (None when not validated).
    push: PushDecision | None = None

    def to_json(self) -> dict:
        return {
            "version": self.version,
            "version_dir": str(self.version_dir) if self.version_dir else "",
            "precision": round(self.precision, 6),
            "recall": round(self.recall, 6),
            "f1": round(self.f1, 6),
            "false_positive_rate": round(self.false_positive_rate, 6),
            "general_false_positive_rate": round(self.general.rate, 6),
            "general_documents": self.general.documents,
            "unknown_false_positive_rate": round(self.unknown.rate, 6),
            "unknown_documents": self.unknown.documents,
            # None when no background text was there to measure (see background_eval).
            "background_labeled_rate": round(self.background.rate, 6) if self.background.documents else None,
            "background_documents": self.background.documents,
            **(
                {
                    "background_label_rates": {
                        label: round(r.rate, 6) for label, r in self.background_per_label.items()
                    }
                }
                if self.background_per_label
                else {}
            ),
            "epochs_run": self.epochs_run,
            "test_documents": self.test_documents,
            "seconds": round(self.seconds, 3),
            "intra_op_threads": self.threads[0],
            "inter_op_threads": self.threads[1],
            **(
                {
                    "label_metrics": {
                        label: {"precision": round(p, 6), "recall": round(r, 6), "f1": round(f, 6)}
                        for label, (p, r, f) in self.label_metrics.items()
                    }
                }
                if self.label_metrics
                else {}
            ),
        }

    @property
    def bundle(self) -> bool:
        return bool(self.label_metrics)
