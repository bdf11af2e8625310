"""Validation before push: the pure part.

A job's new model version becomes visible to serving only if its held-out
metrics meet their floors and do not fall more than a tolerance below the
served version's, both scored on the same held-out documents (the recipe
does the scoring and the moving: ``trainer.recipes.export`` stages, promotes
or rejects). Here: the Start's policy checked and resolved against the
Trainer's defaults, the verdict, the recipe flags that carry the policy to
the job, and reading the verdict back from the job's ``validation {json}``
line. No TensorFlow, no files.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence

from modelspec.report import Report, ValidationReport
from rpc.errors import InvalidArgument, shown
from trainer import lifecycle
from trainer.domain import (
    METRICS,
    HeldOutMetrics,
    JobRecord,
    PushDecision,
    PushOutcome,
    ValidationPolicy,
    ValidationRequest,
)

log = logging.getLogger(__name__)

# The recipe's exit status when validation rejected its model (not pushed).
EXIT_REJECTED = lifecycle.EXIT_REJECTED
_METRICS_TEXT = ", ".join(METRICS)


def _in_unit_range(value: float) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value) and 0.0 <= value <= 1.0


def check_policy(policy: ValidationPolicy | ValidationRequest, field: str = "validation") -> None:
    """Raise InvalidArgument naming the field that is wrong (``field`` prefixes the names)."""
    for metric, floor in policy.floors.items():
        if metric not in METRICS:
            raise InvalidArgument(
                f"{field}.floors has an unknown metric {shown(metric)}; the recipe reports {_METRICS_TEXT}"
            )
        if not _in_unit_range(floor):
            raise InvalidArgument(f"{field}.floors[{metric!r}] must be in [0, 1], got {floor!r}")
    ceiling = policy.max_background_labeled
    if ceiling is not None and not _in_unit_range(ceiling):
        raise InvalidArgument(
            f"{field}.max_background_labeled must be in [0, 1] (a share of the held-out background "
            f"text, e.g. 0.03), got {ceiling!r}"
        )
    if policy.max_regression is not None and not _in_unit_range(policy.max_regression):
        raise InvalidArgument(
            f"{field}.max_regression must be in [0, 1] (a drop of the metric, e.g. 0.02), "
            f"got {policy.max_regression!r}"
        )
    if policy.regression_metric and policy.regression_metric not in METRICS:
        raise InvalidArgument(
            f"{field}.regression_metric {shown(policy.regression_metric)} is not a metric the recipe "
            f"reports; use one of {_METRICS_TEXT}"
        )


def resolve_policy(
    request: ValidationRequest, defaults: ValidationPolicy, recipe: str, validates: bool
) -> ValidationPolicy | None:
    """The policy in effect for a Start: what it gave, the Trainer's defaults
    for the rest; None for a recipe that cannot validate. Raises InvalidArgument."""
    check_policy(request)
    if request.skip and (
        request.floors
        or request.max_regression is not None
        or request.regression_metric
        or request.max_background_labeled is not None
    ):
        raise InvalidArgument(
            "validation.skip pushes without validating: drop validation.floors, "
            "validation.max_regression, validation.regression_metric and "
            "validation.max_background_labeled, or drop skip"
        )
    if not validates:
        if request != ValidationRequest():
            raise InvalidArgument(
                f"recipe {recipe!r} does not validate its models before push; leave validation unset"
            )
        return None
    if request.skip:
        return ValidationPolicy(
            floors={}, max_regression=0.0, skip=True, held_out_corpus=request.held_out_corpus
        )
    return ValidationPolicy(
        floors=dict(request.floors) if request.floors else dict(defaults.floors),
        max_regression=(
            request.max_regression if request.max_regression is not None else defaults.max_regression
        ),
        regression_metric=request.regression_metric or defaults.regression_metric,
        held_out_corpus=request.held_out_corpus,
        max_background_labeled=(
            request.max_background_labeled
            if request.max_background_labeled is not None
            else defaults.max_background_labeled
        ),
    )


def decide(
    policy: ValidationPolicy,
    candidate_version: int,
    candidate: HeldOutMetrics,
    served_version: int = 0,
    served: HeldOutMetrics | None = None,
    served_error: str = "",
    background_labeled: float | None = None,
) -> PushDecision:
    """PUSHED or REJECTED (or PUSHED_UNVALIDATED when the policy skips), and why.

    ``served`` is the served version's metrics on the candidate's held-out
    documents; None when nothing is served, or when it could not be scored
    (``served_error`` says why: the comparison is then left out, since a new
    version is what a broken served one needs). ``background_labeled``: the
    share of the held-out real background text the new version labeled, held
    to ``policy.max_background_labeled``; None when it was not measured, which
    fails a policy with that ceiling."""
    if policy.skip:
        return PushDecision(
            PushOutcome.PUSHED_UNVALIDATED,
            "pushed without validation (validation.skip)",
            candidate_version,
            candidate,
            served_version,
        )
    failures = [
        f"{metric} {candidate.value(metric):.3f} < floor {floor:.3f}"
        for metric, floor in sorted(policy.floors.items())
        if candidate.value(metric) < floor
    ]
    ceiling = policy.max_background_labeled
    if ceiling is not None:
        if background_labeled is None:
            failures.append(
                "background text labeled not measured (no held-out background text; "
                "python -m trainer.background fetches it) but max_background_labeled is set"
            )
        elif background_labeled > ceiling + 1e-9:
            failures.append(f"background text labeled {background_labeled:.3f} > ceiling {ceiling:.3f}")
    metric = policy.regression_metric
    if served is not None:
        drop = served.value(metric) - candidate.value(metric)
        compared = (
            f"{metric} {candidate.value(metric):.3f} vs {served.value(metric):.3f} of served version "
            f"{served_version} on the same {candidate.documents} held-out documents"
        )
        if drop > policy.max_regression + 1e-9:
            failures.append(
                f"{compared}: {drop:.3f} lower, more than the tolerance {policy.max_regression:.3f}"
            )
    elif served_version:
        compared = f"served version {served_version} could not be scored ({served_error}); not compared"
    else:
        compared = "no version was served"
    if failures:
        return PushDecision(
            PushOutcome.REJECTED,
            "not pushed: " + "; ".join(failures),
            candidate_version,
            candidate,
            served_version,
            served,
            tuple(failures),
        )
    limits = [f"{m} >= {f:.3f}" for m, f in sorted(policy.floors.items())]
    if ceiling is not None:
        limits.append(f"background labeled {background_labeled:.3f} <= {ceiling:.3f}")
    floors = ", ".join(limits) if limits else "none"
    return PushDecision(
        PushOutcome.PUSHED,
        f"validated and pushed: {compared}; floors met ({floors})",
        candidate_version,
        candidate,
        served_version,
        served,
    )


def kept_at(decision: PushDecision, rejected_path: str) -> PushDecision:
    """A rejected decision that says where the version is kept."""
    return dataclasses.replace(
        decision,
        rejected_path=rejected_path,
        reason=f"{decision.reason}; kept for inspection in {rejected_path}",
    )


def recipe_flags(policy: ValidationPolicy, held_out_path: str | None = None) -> list[str]:
    """The recipe's command-line flags for ``policy`` (``held_out_path``: its
    held-out corpus resolved to a file)."""
    flags = ["--validate"]
    if policy.skip:
        flags.append("--skip-validation")
    else:
        for metric, floor in sorted(policy.floors.items()):
            flags += ["--floor", f"{metric}={floor!r}"]
        flags += [
            "--max-regression",
            repr(policy.max_regression),
            "--regression-metric",
            policy.regression_metric,
        ]
        if policy.max_background_labeled is not None:
            flags += ["--max-background-labeled", repr(policy.max_background_labeled)]
    if held_out_path:
        flags += ["--test-corpus", held_out_path]
    return flags


def parse_floor(text: str) -> tuple[str, float]:
    """``METRIC=VALUE`` of a ``--floor`` flag; raises ValueError."""
    metric, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"a floor is METRIC=VALUE, e.g. f1=0.8; got {text!r}")
    return metric.strip(), float(value)


def policy_from_flags(
    floors: Sequence[tuple[str, float]],
    max_regression: float | None,
    regression_metric: str | None,
    skip: bool,
    max_background_labeled: float | None = None,
) -> ValidationPolicy:
    """The policy a recipe was given on its command line; raises InvalidArgument."""
    policy = ValidationPolicy(
        floors=dict(floors),
        max_regression=0.02 if max_regression is None else max_regression,
        regression_metric=regression_metric or "f1",
        skip=skip,
        max_background_labeled=max_background_labeled,
    )
    check_policy(policy, "--validate")
    return policy


def fold_report(record: JobRecord, report: Report) -> bool:
    """Take the verdict from a job's ``validation {json}`` line into ``record``;
    True when it was one."""
    if not isinstance(report, ValidationReport):
        return False
    try:
        record.push = PushDecision.from_dict(dict(report.verdict))
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("job %s: malformed validation line ignored (%s)", record.job_id, exc)
        return False
    return True


def rejected(record: JobRecord) -> bool:
    return rejection(record) is not None


def rejection(record: JobRecord) -> PushDecision | None:
    """The verdict that rejected the job's version, else None."""
    return record.push if record.push is not None and record.push.outcome is PushOutcome.REJECTED else None
