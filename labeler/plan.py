"""The request path's plan: what one request asks of which model, per document.

``route(view, documents, labels)`` turns a request and one immutable
``RequestView`` (the registry's snapshot, the rollouts' view and the
predictor, taken once at the request's start) into a ``Plan``: one ``Call``
per Predict to send, each naming its binding, its arm (served or canary), the
rows (documents) it scores and, for a bundle, which labels it reads. The
service sends every call of the plan at once and merges the answers
(labeler.service).

``RequestFeatures`` computes each feature pipeline's features once per
(pipeline, document) for the request, passed explicitly to whoever sends:
calls that share a pipeline (models with identical artifacts, or the two
arms of a canary on one pipeline) share its rows, and each call gets exactly
the rows of its own documents.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from labeler import bundles
from labeler.domain import Binding, LabelFailure, LabelState, Prediction
from labeler.predictor import Predictor
from labeler.registry import Snapshot
from labeler.rollout import CANARY, SERVED, RolloutView, routes_to_canary
from modelspec.features import FeaturePipeline
from rpc import errors


@dataclasses.dataclass(frozen=True)
class RequestView:
    """Everything a request reads, taken once at its start: a reload or a
    poll during the request changes nothing it sees."""

    snapshot: Snapshot
    rollouts: RolloutView
    predictor: Predictor


@dataclasses.dataclass(frozen=True)
class Call:
    """One Predict of a request."""

    label: str  # the binary label, or the bundle's "bundle:<model>"
    binding: Binding  # the version asked: the served one, or the canary's candidate
    arm: str  # SERVED or CANARY
    rows: tuple[int, ...] | None  # the documents it scores; None: every document
    # A canary call: the served binding its documents fall back to if the candidate fails.
    served: Binding | None = None
    bundle: bundles.BundleCall | None = None  # a bundle's call: which labels to read

    def documents(self, total: int) -> int:
        return total if self.rows is None else len(self.rows)


@dataclasses.dataclass(frozen=True)
class Skipped:
    """Documents a canary would have taken but the served version scores,
    because the candidate is unavailable (counted as canary fallbacks)."""

    label: str
    documents: int
    reason: str


@dataclasses.dataclass(frozen=True)
class Plan:
    calls: list[Call]
    early_failures: list[LabelFailure]  # labels failed before any call (bound twice, no version)
    skipped: list[Skipped]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one call got: its prediction, or why not. A canary call whose
    candidate failed and that the served version answered has arm SERVED."""

    call: Call
    result: Prediction | LabelFailure
    arm: str
    fallback_reason: str = ""  # a canary call answered by the served version: why


def route(view: RequestView, documents: Sequence[Sequence[str]], labels: Sequence[str]) -> Plan:
    """The calls of one request, binary labels first (config order), then bundles."""
    snapshot = view.snapshot
    table = snapshot.bundle_table
    bundle_calls, early_failures = bundles.plan(table, list(snapshot.bundles.values()), labels)
    calls: list[Call] = []
    skipped: list[Skipped] = []
    selected = select(snapshot, labels)
    for binding in selected:
        if binding.spec.label in table.conflicts:
            continue
        _route_label(view.rollouts, binding, documents, calls, skipped)
    calls += [Call(c.binding.spec.label, c.binding, SERVED, None, bundle=c) for c in bundle_calls]
    return Plan(calls, early_failures, skipped)


def _route_label(
    rollouts: RolloutView,
    binding: Binding,
    documents: Sequence[Sequence[str]],
    calls: list[Call],
    skipped: list[Skipped],
) -> None:
    """One label's calls: every document to the served version, or split by
    the canary's sticky per-document hash."""
    label = binding.spec.label
    canary = rollouts.canaries.get(label)
    if canary is None or canary.percent <= 0 or not documents:
        calls.append(Call(label, binding, SERVED, None))
        return
    candidate = canary.binding
    if (
        candidate is None
        or candidate.loaded is None
        # A label serving "latest" may reach the candidate's version: nothing to split.
        or (binding.loaded is not None and candidate.loaded.version == binding.loaded.version)
    ):
        calls.append(Call(label, binding, SERVED, None))
        return
    to_canary = [routes_to_canary(label, words, canary.percent) for words in documents]
    canary_rows = tuple(i for i, c in enumerate(to_canary) if c)
    if not canary_rows:
        calls.append(Call(label, binding, SERVED, None))
        return
    if not candidate_usable(candidate):
        # The candidate is gone (its poll says so): the served version answers.
        skipped.append(Skipped(label, len(canary_rows), "UNAVAILABLE"))
        calls.append(Call(label, binding, SERVED, None))
        return
    served_rows = tuple(i for i, c in enumerate(to_canary) if not c)
    if served_rows:
        calls.append(Call(label, binding, SERVED, served_rows))
    rows = None if not served_rows else canary_rows
    calls.append(Call(label, candidate, CANARY, rows, served=binding))


def candidate_usable(candidate: Binding) -> bool:
    """A candidate the canary may send to: loaded, and its last poll found it served."""
    return candidate.loaded is not None and candidate.state is LabelState.AVAILABLE


def select(snapshot: Snapshot, labels: Sequence[str]) -> list[Binding]:
    """The binary labels asked (all when none are named); unknown names are refused."""
    bindings = snapshot.bindings
    if not labels:
        return list(bindings.values())
    table = snapshot.bundle_table  # bundle labels are known too (bundles.plan selects them)
    unknown = [
        name
        for name in labels
        if name not in bindings and name not in table.labels and name not in table.conflicts
    ]
    if unknown:
        raise errors.InvalidArgument(
            f"unknown label{'s' if len(unknown) > 1 else ''} {', '.join(map(errors.shown, unknown[:10]))}; "
            f"known labels: {', '.join([*bindings, *table.labels][:50])} (ListLabels lists them)"
            + "".join(
                f"; bundle {b.spec.model} has no version loaded yet, so its labels are not known"
                for b in snapshot.bundles.values()
                if b.loaded is None
            )
        )
    return [bindings[name] for name in dict.fromkeys(labels) if name in bindings]


class RequestFeatures:
    """One request's features, computed once per (pipeline, document).

    ``want`` registers the rows a call will read (the plan's calls, before
    any is sent); the first ``rows`` of a pipeline transforms the union of its
    registered rows once, and every call reads its own rows from it. A
    pipeline nobody registered (a retry on another version) is transformed
    for the rows asked, once."""

    def __init__(self, documents: Sequence[Sequence[str]]) -> None:
        self._documents = documents
        # id(pipeline) -> (pipeline, rows wanted: None = all, or a set)
        self._wanted: dict[int, tuple[FeaturePipeline, set[int] | None]] = {}
        # id(pipeline) -> (pipeline, position of each document's row or -1, features)
        self._done: dict[int, tuple[FeaturePipeline, np.ndarray | None, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._documents)

    def want(self, pipeline: FeaturePipeline, rows: tuple[int, ...] | None) -> None:
        key = id(pipeline)
        found = self._wanted.get(key)
        if found is None:
            self._wanted[key] = (pipeline, None if rows is None else set(rows))
        elif found[1] is not None:
            if rows is None:
                self._wanted[key] = (pipeline, None)
            else:
                found[1].update(rows)

    def rows(self, pipeline: FeaturePipeline, rows: tuple[int, ...] | None) -> np.ndarray:
        """The features of ``rows`` (None: every document), in that order."""
        key = id(pipeline)
        done = self._done.get(key)
        if done is None or done[0] is not pipeline or not _covers(done[1], rows):
            done = self._transform(pipeline, rows)
        _, positions, features = done
        if positions is None:
            return features if rows is None else features[list(rows)]
        assert rows is not None
        return features[positions[list(rows)]]

    def _transform(
        self, pipeline: FeaturePipeline, rows: tuple[int, ...] | None
    ) -> tuple[FeaturePipeline, np.ndarray | None, np.ndarray]:
        wanted = self._wanted.get(id(pipeline))
        union: set[int] | None
        if wanted is None or wanted[0] is not pipeline:
            union = None if rows is None else set(rows)
        else:
            union = wanted[1] if (rows is None or wanted[1] is None) else wanted[1] | set(rows)
            if rows is None:
                union = None
        done: tuple[FeaturePipeline, np.ndarray | None, np.ndarray]
        if union is None or len(union) == len(self._documents):
            done = (pipeline, None, pipeline.transform(self._documents))
        else:
            ordered = sorted(union)
            positions = np.full(len(self._documents), -1, dtype=np.intp)
            positions[ordered] = np.arange(len(ordered))
            done = (pipeline, positions, pipeline.transform([self._documents[i] for i in ordered]))
        self._done[id(pipeline)] = done
        return done


def _covers(positions: np.ndarray | None, rows: tuple[int, ...] | None) -> bool:
    if positions is None:
        return True
    if rows is None:
        return False
    return bool(np.all(positions[list(rows)] >= 0))
