"""Feature artifacts shared between models whose artifacts are identical.

Models trained on one corpus with one set of settings (or copies of one model
under several names) have identical vocabularies, n-gram tables and settings.
Their versions share one ``FeaturePipeline`` object (``intern``, at load
time), so a request computes each shared pipeline's features once per
document (labeler.plan.RequestFeatures, keyed by the pipeline object), not
once per model.
"""

from __future__ import annotations

import weakref

from modelspec.features import FeaturePipeline

# fingerprint -> the one pipeline object with those artifacts (while in use).
_INTERNED: weakref.WeakValueDictionary[str, FeaturePipeline] = weakref.WeakValueDictionary()


def intern(pipeline: FeaturePipeline) -> FeaturePipeline:
    """The pipeline already in use with identical artifacts, else this one."""
    key = pipeline.fingerprint()
    existing = _INTERNED.get(key)
    if existing is not None:
        return existing
    _INTERNED[key] = pipeline
    return pipeline
