"""Delivering a trained fastText model: nothing (a sweep trial), an export
at once, or validation before push (stage, score the served version on the
same held-out documents, promote or reject; trainer.push decides), and the
``validation`` report line."""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import sys
from collections.abc import Sequence
from typing import TextIO

import numpy as np

from modelspec import report
from modelspec.features import FeaturePipeline
from trainer import push
from trainer.domain import HeldOutMetrics, PushDecision, PushOutcome
from trainer.recipes.data import bundle_targets, targets
from trainer.recipes.evaluation import scores
from trainer.recipes.result import Rate, TrainResult
from trainer.recipes.train_config import TrainConfig


def deliver(
    cfg: TrainConfig,
    model,
    pipeline: FeaturePipeline,
    test_docs: Sequence[dict],
    held_out: HeldOutMetrics,
    background_rate: Rate,
) -> tuple[int, pathlib.Path | None, PushDecision | None]:
    """Export the trained model as the job asked: nothing (a sweep trial),
    at once, or after validation before push. Returns (version, its
    directory, verdict); version 0 and no directory for a trial."""
    from trainer.recipes.export import export_version

    if cfg.no_push:  # a sweep trial: its held-out metrics are all it delivers
        return 0, None, None
    if cfg.validation is None:
        bundle = list(cfg.labels) or None
        version, version_dir = export_version(
            model, pipeline, cfg.model_root, cfg.model, cfg.label, labels=bundle
        )
        return version, version_dir, None
    return export_validated(cfg, model, pipeline, test_docs, held_out, background_rate)


def _served_metrics(cfg: TrainConfig, version_dir: pathlib.Path, test_docs: Sequence[dict]) -> HeldOutMetrics:
    """The served version's held-out metrics on the same documents, scored as
    the new version was: one label's, or a bundle's macro average over its
    labels, each read from the served version's own column for it."""
    from modelspec.labels import column_labels
    from trainer.recipes import export

    probability = export.predict_version(version_dir, [d["words"] for d in test_docs])
    _, meta = FeaturePipeline.load(version_dir)
    columns = column_labels(meta) or ()
    if not cfg.labels:
        if columns:
            raise ValueError(
                "the served version is a bundle, the new one a single-label model: not comparable"
            )
        return HeldOutMetrics(*scores(targets(test_docs, cfg.label), probability), len(test_docs))
    missing = [label for label in cfg.labels if label not in columns]
    if missing:
        raise ValueError(f"the served version does not carry label(s) {missing}: not comparable")
    y = bundle_targets(test_docs, cfg.labels)
    per_label = [scores(y[:, j], probability[:, columns.index(label)]) for j, label in enumerate(cfg.labels)]
    macro = [float(np.mean([m[k] for m in per_label])) for k in range(3)]
    return HeldOutMetrics(macro[0], macro[1], macro[2], len(test_docs))


def export_validated(
    cfg: TrainConfig,
    model,
    pipeline: FeaturePipeline,
    test_docs: Sequence[dict],
    candidate: HeldOutMetrics,
    background_rate: Rate | None = None,
) -> tuple[int, pathlib.Path, PushDecision]:
    """Stage the new version, score the served one on the same held-out
    documents, and promote the new one or keep it under rejected/ (see
    trainer.push for the verdict). Returns (version, its directory, verdict)."""
    from trainer.recipes import export

    policy = cfg.validation
    assert policy is not None, "export_validated runs with --validate"
    model_dir = pathlib.Path(cfg.model_root) / cfg.model
    bundle = list(cfg.labels) or None
    version, staged = export.stage_version(model, pipeline, model_dir, cfg.model, cfg.label, labels=bundle)
    try:
        served_version, served, served_error = export.served_version(model_dir), None, ""
        if served_version and not policy.skip:
            try:
                served = _served_metrics(cfg, model_dir / str(served_version), test_docs)
            except Exception as exc:  # noqa: BLE001 - a broken served version must not block its replacement
                served_error = f"{type(exc).__name__}: {exc}"[:300]
        background_labeled = background_rate.rate if background_rate and background_rate.documents else None
        decision = push.decide(
            policy, version, candidate, served_version, served, served_error, background_labeled
        )
        if decision.outcome is PushOutcome.REJECTED:
            rejected = export.reject(staged, model_dir, version, decision.to_dict())
            decision = push.kept_at(decision, rejected.relative_to(pathlib.Path(cfg.model_root)).as_posix())
            return version, rejected, decision
        version, version_dir = export.promote(staged, model_dir, version)
        return version, version_dir, dataclasses.replace(decision, candidate_version=version)
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # gone after a promote or a reject


def report_push(result: TrainResult, out: TextIO) -> int | None:
    """Print the verdict line ``validation {json}``; the exit status when
    the version was rejected (the job failed to deliver a model), else None."""
    if result.push is None:
        return None
    print(report.format_validation(result.push.to_dict()), file=out, flush=True)
    if result.push.outcome is PushOutcome.REJECTED:
        print(f"fasttext: {result.push.reason}", file=sys.stderr, flush=True)
        return push.EXIT_REJECTED
    return None
