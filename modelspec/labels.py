"""Which labels a model version predicts, in output column order.

A single-label (binary) model's signature outputs ``probability`` [batch, 1]
and its artifacts name one ``label``. A multi-label model (a bundle) outputs
[batch, L] and its artifacts (``assets.extra/features.json``, beside the
feature settings, so features and columns are pinned together by the
version) list the L labels under ``labels``, column by column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# Keys of the version's artifact metadata (features.json).
LABEL_KEY = "label"
LABELS_KEY = "labels"
# Most labels one bundle may carry.
MAX_BUNDLE_LABELS = 4096


def bundle_metadata(labels: Sequence[str]) -> dict[str, object]:
    """The metadata an export writes for a bundle of ``labels`` (column order)."""
    checked = check_labels(labels)
    return {LABELS_KEY: list(checked)}


def check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    """``labels`` as a tuple; ValueError if one is empty, repeated or not a string."""
    out = tuple(labels)
    if not out:
        raise ValueError("a bundle needs at least one label")
    if len(out) > MAX_BUNDLE_LABELS:
        raise ValueError(f"a bundle may carry at most {MAX_BUNDLE_LABELS} labels, got {len(out)}")
    seen: set[str] = set()
    for i, label in enumerate(out):
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"labels[{i}] is {label!r}; every column needs a non-empty label")
        if label in seen:
            raise ValueError(f"labels[{i}] {label!r} is repeated; each column needs its own label")
        seen.add(label)
    return out


def column_labels(metadata: Mapping[str, object]) -> tuple[str, ...] | None:
    """The labels of a version's output columns: the bundle's ``labels``, or
    None for a single-label model (its one column is the configured label)."""
    labels = metadata.get(LABELS_KEY)
    if labels is None:
        return None
    if not isinstance(labels, list):
        raise ValueError(f"{LABELS_KEY!r} must be a list of labels, got {type(labels).__name__}")
    return check_labels(labels)
