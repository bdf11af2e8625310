"""``labeler shadow-report``: what an operator reads before promoting a shadow
candidate, computed from a Labeler's Prometheus metrics (labeler.rollout).

Per label since the Labeler started (or its metrics were reset): documents
compared, the share whose decision (>= threshold) agrees, both positive rates,
the mean and an upper bound of the 95th percentile of |shadow - served|, and
the shadow scorings shed or failed.
"""

from __future__ import annotations

import dataclasses
import math
import urllib.request
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families


@dataclasses.dataclass(frozen=True)
class ShadowSummary:
    label: str
    candidate_version: int
    sample_percent: float
    documents: int
    agreements: int
    served_positives: int
    shadow_positives: int
    mean_abs_difference: float  # NaN without documents
    p95_abs_difference: float  # a bucket bound: the 95th percentile is at most this
    outcomes: dict[str, int]  # OK, SHED, failure codes -> shadow scorings

    @property
    def agreement(self) -> float:
        return self.agreements / self.documents if self.documents else math.nan

    @property
    def disagreement(self) -> float:
        return 1.0 - self.agreement if self.documents else math.nan

    @property
    def served_positive_rate(self) -> float:
        return self.served_positives / self.documents if self.documents else math.nan

    @property
    def shadow_positive_rate(self) -> float:
        return self.shadow_positives / self.documents if self.documents else math.nan


def fetch_metrics(url: str, timeout: float = 10.0) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--metrics-url must be an http(s) URL, got {url!r}")
    with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 - http(s) only
        return reply.read().decode("utf-8")


def summarize(text: str) -> list[ShadowSummary]:
    """One summary per label with a shadow configured or shadow metrics, in label order."""
    values: dict[str, dict] = defaultdict(lambda: defaultdict(float))
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    outcomes: dict[str, dict[str, int]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = sample.labels.get("label")
            if label is None:
                continue
            name, tags, value = sample.name, sample.labels, sample.value
            if name == "labeler_rollout_candidate_version" and tags.get("mode") == "shadow":
                values[label]["version"] = value
            elif name == "labeler_rollout_percent" and tags.get("mode") == "shadow":
                values[label]["percent"] = value
            elif name == "labeler_shadow_documents_total":
                values[label]["documents"] = value
            elif name == "labeler_shadow_agreements_total":
                values[label]["agreements"] = value
            elif name == "labeler_shadow_positives_total":
                values[label][f"positives_{tags.get('arm')}"] = value
            elif name == "labeler_shadow_probability_difference_sum":
                values[label]["difference_sum"] = value
            elif name == "labeler_shadow_probability_difference_bucket":
                buckets[label].append((float(tags["le"]), value))
            elif name == "labeler_shadow_requests_total":
                outcomes[label][tags.get("outcome", "")] = int(value)
    summaries = []
    for label, v in values.items():
        documents = int(v["documents"])
        summaries.append(
            ShadowSummary(
                label=label,
                candidate_version=int(v["version"]),
                sample_percent=v["percent"],
                documents=documents,
                agreements=int(v["agreements"]),
                served_positives=int(v["positives_served"]),
                shadow_positives=int(v["positives_shadow"]),
                mean_abs_difference=v["difference_sum"] / documents if documents else math.nan,
                p95_abs_difference=_quantile_bound(sorted(buckets[label]), 0.95),
                outcomes=outcomes[label],
            )
        )
    return summaries


def _quantile_bound(cumulative: list[tuple[float, float]], q: float) -> float:
    """The smallest bucket bound holding a ``q`` share of the observations."""
    if not cumulative or cumulative[-1][1] <= 0:
        return math.nan
    total = cumulative[-1][1]
    for bound, count in cumulative:
        if count >= q * total:
            return bound
    return math.inf


def format_report(summaries: list[ShadowSummary]) -> str:
    if not summaries:
        return "no shadow rollout: configure shadows { label: ... version: ... sample_percent: ... }"
    header = (
        "label", "candidate", "sample%", "documents", "agreement", "served+", "shadow+",
        "mean|diff|", "p95|diff|<=", "shadow scorings",
    )  # fmt: skip
    rows = [header]
    for s in summaries:
        rows.append(
            (
                s.label,
                str(s.candidate_version or "-"),
                f"{s.sample_percent:g}",
                str(s.documents),
                _percent(s.agreement),
                _percent(s.served_positive_rate),
                _percent(s.shadow_positive_rate),
                "-" if math.isnan(s.mean_abs_difference) else f"{s.mean_abs_difference:.4f}",
                "-" if math.isnan(s.p95_abs_difference) else f"{s.p95_abs_difference:g}",
                " ".join(f"{k}={n}" for k, n in sorted(s.outcomes.items())) or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _percent(x: float) -> str:
    return "-" if math.isnan(x) else f"{x * 100:.2f}%"
