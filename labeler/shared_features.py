"""Feature work shared between models whose feature artifacts are identical.

Models trained on one corpus with one set of settings (or copies of one model
under several names) have identical vocabularies, n-gram tables and settings.
Their versions share one ``FeaturePipeline`` object (``intern``, at load
time), and a request computes each shared pipeline's features once
(``transform``, memoized for the current request by ``begin_request``), not
once per model.
"""

from __future__ import annotations

import contextvars
import weakref
from collections.abc import Sequence

import numpy as np

from modelspec.features import FeaturePipeline

# fingerprint -> the one pipeline object with those artifacts (while in use).
_INTERNED: weakref.WeakValueDictionary[str, FeaturePipeline] = weakref.WeakValueDictionary()
# The current request's features: id(pipeline) -> (pipeline, features).
_REQUEST_FEATURES: contextvars.ContextVar[dict[int, tuple[FeaturePipeline, np.ndarray]] | None] = (
    contextvars.ContextVar("request_features", default=None)
)


def intern(pipeline: FeaturePipeline) -> FeaturePipeline:
    """The pipeline already in use with identical artifacts, else this one."""
    key = pipeline.fingerprint()
    existing = _INTERNED.get(key)
    if existing is not None:
        return existing
    _INTERNED[key] = pipeline
    return pipeline


def begin_request() -> None:
    """Start memoizing features for the current request (its task and the
    tasks it starts, which copy its context)."""
    _REQUEST_FEATURES.set({})


def transform(pipeline: FeaturePipeline, documents: Sequence[Sequence[str]]) -> np.ndarray:
    """``pipeline.transform(documents)``, once per pipeline per request."""
    memo = _REQUEST_FEATURES.get()
    if memo is None:
        return pipeline.transform(documents)
    found = memo.get(id(pipeline))
    if found is not None and found[0] is pipeline:
        return found[1]
    features = pipeline.transform(documents)
    memo[id(pipeline)] = (pipeline, features)
    return features
