"""Scoring a trained fastText model: held-out precision/recall/F1, the
false-positive rate on held-out negatives, the no-evidence sets (general
and unknown-word text, issue 14) and how much real background text it
labels (issue 23)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from modelspec.features import FeaturePipeline
from trainer.corpus import general_documents, unknown_documents
from trainer.recipes.result import Rate
from trainer.recipes.train_config import GENERAL_EVAL_DOCUMENTS, UNKNOWN_EVAL_DOCUMENTS


def false_positive_rate(y_true: np.ndarray, probability: np.ndarray, threshold: float = 0.5) -> float:
    """Share of the negatives labeled positive at ``threshold``."""
    negative = y_true.reshape(-1) < 0.5
    labeled = probability.reshape(-1) >= threshold
    return float(np.sum(negative & labeled)) / max(1.0, float(np.sum(negative)))


def no_evidence_sets(*labels: str) -> dict[str, list[list[str]]]:
    """The evaluation texts that should get no label: general text of other
    topics (less any topic named like one of the labels) and unknown-word text."""
    general = [d["words"] for d in general_documents(GENERAL_EVAL_DOCUMENTS) if d["topic"] not in labels]
    unknown = [d["words"] for d in unknown_documents(UNKNOWN_EVAL_DOCUMENTS)]
    return {"general": general, "unknown": unknown}


def scores(y_true: np.ndarray, probability: np.ndarray, threshold: float = 0.5) -> tuple[float, float, float]:
    """Precision, recall and F1 of ``probability >= threshold``."""
    truth = y_true.reshape(-1) >= 0.5
    pred = probability.reshape(-1) >= threshold
    tp = float(np.sum(truth & pred))
    precision = tp / max(1.0, float(np.sum(pred)))
    recall = tp / max(1.0, float(np.sum(truth)))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


HeldOutScorer = Callable[[], tuple[float, float, float]]


def held_out_scorer(model, x_test: np.ndarray, y_test: np.ndarray) -> HeldOutScorer:
    """Held-out (precision, recall, F1) of the model as it is now; a bundle's
    are the mean over its labels, as its result's are."""

    def score() -> tuple[float, float, float]:
        if not len(x_test):
            return 0.0, 0.0, 0.0
        probability = model.predict(x_test, batch_size=1024, verbose=0)
        per = [scores(y_test[:, j : j + 1], probability[:, j : j + 1]) for j in range(y_test.shape[1])]
        p, r, f = (float(np.mean([m[k] for m in per])) for k in range(3))
        return p, r, f

    return score


def labeled_by_output(model, pipeline: FeaturePipeline, texts: Sequence[Sequence[str]]) -> np.ndarray:
    """Which of ``texts`` each output labels at 0.5: bool [len(texts), outputs]."""
    if not texts:
        return np.zeros((0, 1), dtype=bool)
    return np.asarray(model.predict(pipeline.transform(texts), batch_size=1024, verbose=0)) >= 0.5


def any_rate(labeled: np.ndarray) -> Rate:
    """How many texts got any label."""
    return Rate(int(np.sum(np.any(labeled, axis=1))), labeled.shape[0])
