"""Multi-label models (bundles) in the Labeler.

A bundle is one model whose signature outputs ``probability`` [batch, L]; the
version's artifacts name the L labels in column order (modelspec.labels). A
``bundles`` config entry binds every label its served version carries; the
registry keeps one binding per bundle (its version, features and columns,
pinned together), and a request sends one Predict per bundle whatever number
of its labels it asks for, then reads each label's column from the columns of
the version that answered.

Never a silent wrong answer: a label bound twice (by two bundles, or by a
bundle and ``labels``) is a named per-label failure; a version that lacks a
label named in the config, or drops a label the version before it carried, is
not switched to (the registry keeps the version it has and says why).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from labeler.config import LabelSpec
from labeler.domain import Binding, LabelFailure, LabelInfo, LabelScore, LabelState, LoadedVersion, Prediction
from modelspec import labels as label_columns


@dataclasses.dataclass(frozen=True)
class BundleLabel:
    """One label a bundle's loaded version carries."""

    label: str
    binding: Binding  # the bundle's
    column: int  # in the loaded version
    threshold: float


@dataclasses.dataclass(frozen=True)
class BundleTable:
    """Every bundle label of one registry snapshot, built once per snapshot."""

    labels: dict[str, BundleLabel]  # scorable bundle labels, in config order
    # label -> why it cannot be scored (bound twice); binary labels included.
    conflicts: dict[str, str]
    # model -> all its scorable labels: what a request that names no label reads.
    all_labels: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


def version_columns(spec: LabelSpec, metadata: Mapping[str, object]) -> tuple[str, ...]:
    """The columns of a version for ``spec``; ValueError if model and config disagree."""
    columns = label_columns.column_labels(metadata)
    if spec.bundle:
        if columns is None:
            raise ValueError(
                f"{spec.model} is configured under bundles but this version names no labels (a single-label "
                "model); bind it under labels instead"
            )
        unknown = [label for label, _ in spec.label_thresholds if label not in columns]
        if unknown:
            raise ValueError(
                f"label_thresholds names label(s) {', '.join(unknown)} that this version does not carry "
                f"(it carries {', '.join(columns[:20])}{' ...' if len(columns) > 20 else ''})"
            )
        return columns
    if columns is not None and len(columns) != 1:
        raise ValueError(
            f"{spec.model} is a bundle of {len(columns)} labels; bind it under bundles, not as label {spec.label}"
        )
    return ()


def loaded_version(spec: LabelSpec, version: int, pipeline, metadata: dict) -> LoadedVersion:
    columns = version_columns(spec, metadata)
    return LoadedVersion(
        version=version,
        pipeline=pipeline,
        metadata=metadata,
        columns=columns,
        column_index={label: j for j, label in enumerate(columns)},
    )


def check_switch(spec: LabelSpec, old: LoadedVersion | None, new: LoadedVersion) -> None:
    """A bundle may not switch to a version that drops a label the version in
    use carries (requests would silently stop getting it); reload the config
    to accept the new label set."""
    if not spec.bundle or old is None:
        return
    dropped = [label for label in old.columns if label not in new.column_index]
    if dropped:
        raise ValueError(
            f"version {new.version} drops label(s) {', '.join(dropped[:20])} that version {old.version} "
            "carries; keep them in the bundle, or reload the Labeler config to accept the change"
        )


def build_table(binary: Mapping[str, Binding], bundles: Iterable[Binding]) -> BundleTable:
    owners: dict[str, list[str]] = {label: [f"labels ({b.spec.model})"] for label, b in binary.items()}
    found: dict[str, BundleLabel] = {}
    for binding in bundles:
        if binding.loaded is None:
            continue
        for label, column in binding.loaded.column_index.items():
            owners.setdefault(label, []).append(f"bundle {binding.spec.model}")
            found.setdefault(label, BundleLabel(label, binding, column, binding.spec.threshold_of(label)))
    conflicts = {
        label: f"label {label} is bound twice ({' and '.join(who)}); bind it once: fix the Labeler config "
        "or the bundles' labels"
        for label, who in owners.items()
        if len(who) > 1
    }
    scorable = {k: v for k, v in found.items() if k not in conflicts}
    all_labels: dict[str, list[str]] = {}
    for label, entry in scorable.items():
        all_labels.setdefault(entry.binding.spec.model, []).append(label)
    return BundleTable(scorable, conflicts, {m: tuple(labels) for m, labels in all_labels.items()})


@dataclasses.dataclass(frozen=True)
class BundleCall:
    """One Predict of a request: a bundle and which of its labels to read."""

    binding: Binding
    labels: tuple[str, ...]


def plan(
    table: BundleTable, bundles: Sequence[Binding], requested: Sequence[str]
) -> tuple[list[BundleCall], list[LabelFailure]]:
    """The bundle Predicts a request needs (one per bundle) and the failures
    known before calling (labels bound twice; bundles with no version yet)."""
    failures: list[LabelFailure] = []
    wanted: dict[str, list[str]] = {}
    if requested:
        for label in dict.fromkeys(requested):
            if label in table.conflicts:
                failures.append(LabelFailure(label, "", "FAILED_PRECONDITION", table.conflicts[label]))
            elif label in table.labels:
                wanted.setdefault(table.labels[label].binding.spec.model, []).append(label)
    else:
        wanted = table.all_labels  # type: ignore[assignment]  # read only
        for label, why in table.conflicts.items():
            failures.append(LabelFailure(label, "", "FAILED_PRECONDITION", why))
        for b in bundles:
            if b.loaded is None:
                failures.append(
                    LabelFailure(
                        f"bundle:{b.spec.model}",
                        b.spec.model,
                        "UNAVAILABLE",
                        f"no version of bundle {b.spec.model} is loaded yet, so its labels are unknown: {b.message}",
                    )
                )
    by_model = {b.spec.model: b for b in bundles}
    calls = [BundleCall(by_model[model], tuple(labels)) for model, labels in wanted.items()]
    return calls, failures


def collect(
    call: BundleCall,
    outcome: Prediction | LabelFailure,
    threshold: float | None,
    results: list[list[LabelScore]],
    failures: list[LabelFailure],
) -> None:
    """Read each asked label from the column the answering version gives it."""
    spec = call.binding.spec
    if isinstance(outcome, LabelFailure):
        failures.extend(
            LabelFailure(label, spec.model, outcome.code_name, outcome.message) for label in call.labels
        )
        return
    reading = _reading(outcome.columns, call.labels, spec)
    for label in reading.missing:
        failures.append(
            LabelFailure(
                label,
                spec.model,
                "FAILED_PRECONDITION",
                f"version {outcome.version} of bundle {spec.model} does not carry label {label}",
            )
        )
    if not reading.labels:
        return
    # One vectorized cut for every asked label; only the hits become objects.
    scores = outcome.probabilities[:, reading.columns]
    hits = scores >= (reading.thresholds if threshold is None else threshold)
    for i, k in zip(*np.nonzero(hits), strict=True):
        results[i].append(LabelScore(reading.labels[k], float(scores[i, k]), spec.model, outcome.version))


@dataclasses.dataclass(frozen=True)
class _Reading:
    """How to read some labels out of one version's columns, worked out once."""

    labels: tuple[str, ...]  # the asked labels the version carries
    columns: np.ndarray  # their columns
    thresholds: np.ndarray  # their configured thresholds
    missing: tuple[str, ...]  # asked labels the version lacks


@functools.lru_cache(maxsize=1024)
def _reading(columns: tuple[str, ...], labels: tuple[str, ...], spec: LabelSpec) -> _Reading:
    index = {label: j for j, label in enumerate(columns)}
    found = tuple(label for label in labels if label in index)
    return _Reading(
        labels=found,
        columns=np.array([index[label] for label in found], dtype=np.intp),
        thresholds=np.array([spec.threshold_of(label) for label in found], dtype=np.float64),
        missing=tuple(label for label in labels if label not in index),
    )


def label_infos(snapshot) -> list[LabelInfo]:
    """ListLabels' rows for bundle labels: each with its model, version and
    column; labels bound twice and bundles with no version yet say why."""
    table: BundleTable = snapshot.bundle_table
    infos = []
    for label, entry in table.labels.items():
        b = entry.binding
        assert b.loaded is not None
        infos.append(
            LabelInfo(
                label=label,
                model=b.spec.model,
                target=b.spec.target,
                model_version=b.loaded.version,
                state=b.state,
                threshold=entry.threshold,
                message=b.message,
                column=entry.column,
            )
        )
    for b in snapshot.bundles.values():
        if b.loaded is None:
            infos.append(
                LabelInfo(
                    label=b.spec.label,
                    model=b.spec.model,
                    target=b.spec.target,
                    model_version=0,
                    state=b.state,
                    threshold=b.spec.threshold,
                    message=f"no version loaded yet, so its labels are unknown: {b.message}",
                )
            )
        else:
            for label, column in b.loaded.column_index.items():
                if label in table.conflicts:
                    infos.append(
                        LabelInfo(
                            label=label,
                            model=b.spec.model,
                            target=b.spec.target,
                            model_version=b.loaded.version,
                            state=LabelState.UNAVAILABLE,
                            threshold=b.spec.threshold_of(label),
                            message=table.conflicts[label],
                            column=column,
                        )
                    )
    return infos
