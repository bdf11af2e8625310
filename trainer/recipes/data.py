"""The fastText recipe's data: the seeded train / validation / held-out
splits of a corpus, their targets (one label's, or a bundle's columns) and
the class weights that balance them."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from rpc.errors import InvalidArgument
from trainer.corpus import read_jsonl
from trainer.recipes.train_config import MIN_DOCUMENTS, TEST_FRACTION, VALIDATION_FRACTION, TrainConfig


def load_splits(cfg: TrainConfig) -> tuple[list[dict], list[dict], list[dict]]:
    """(train, validation, test) documents; seeded, so a restart gets the same."""
    try:
        docs = list(read_jsonl(cfg.corpus))
        test = list(read_jsonl(cfg.test_corpus)) if cfg.test_corpus else []
    except OSError as e:
        raise InvalidArgument(f"cannot read corpus: {e}") from None
    except ValueError as e:
        raise InvalidArgument(str(e)) from None
    random.Random(cfg.seed).shuffle(docs)
    if not cfg.test_corpus:
        n_test = max(1, int(len(docs) * TEST_FRACTION))
        test, docs = docs[:n_test], docs[n_test:]
    n_val = max(1, int(len(docs) * VALIDATION_FRACTION))
    val, train = docs[:n_val], docs[n_val:]
    if len(train) < MIN_DOCUMENTS:
        raise InvalidArgument(
            f"corpus {cfg.corpus} is too small: {len(train)} training documents, need >= {MIN_DOCUMENTS}"
        )
    for label in cfg.labels or (cfg.label,):
        if not any(label in d["labels"] for d in train):
            raise InvalidArgument(f"no training document of corpus {cfg.corpus} carries label {label!r}")
    return train, val, test


def targets(docs: Sequence[dict], label: str) -> np.ndarray:
    """Binary target: does the document carry ``label``."""
    return np.array([[label in d["labels"]] for d in docs], dtype=np.float32)


def bundle_targets(docs: Sequence[dict], labels: Sequence[str]) -> np.ndarray:
    """Multi-label targets [len(docs), len(labels)]: does document i carry label j."""
    column = {label: j for j, label in enumerate(labels)}
    y = np.zeros((len(docs), len(labels)), dtype=np.float32)
    for i, d in enumerate(docs):
        for label in d["labels"]:
            j = column.get(label)
            if j is not None:
                y[i, j] = 1.0
    return y


def balanced_column_weights(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column (negative, positive) weights, as balanced_class_weight for each label."""
    n = float(y.shape[0])
    positives = np.sum(y >= 0.5, axis=0).astype(np.float64)
    negatives = n - positives
    ok = (positives > 0) & (negatives > 0)
    w_pos = np.where(ok, n / (2 * np.maximum(positives, 1)), 1.0)
    w_neg = np.where(ok, n / (2 * np.maximum(negatives, 1)), 1.0)
    return w_neg.astype(np.float32), w_pos.astype(np.float32)


def balanced_class_weight(y: np.ndarray) -> dict[int, float]:
    """Weights that make positives and negatives count alike: a label carried
    by a fifth of the documents would otherwise be under-predicted (low recall)."""
    positives = float(np.sum(y >= 0.5))
    negatives = float(y.size) - positives
    if not positives or not negatives:
        return {0: 1.0, 1: 1.0}
    return {0: y.size / (2 * negatives), 1: y.size / (2 * positives)}
