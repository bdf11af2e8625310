"""Prometheus metrics of one Labeler: RPC counts and latency, per-model Predict
latency and errors, and each label's version in use.

Each Labeler has its own CollectorRegistry (several in-process servers in one
test process must not share counters); the endpoint is off unless a port is
given.
"""

from __future__ import annotations

from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LabelerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rpc_requests = Counter(
            "labeler_rpc_requests",
            "Labeler RPCs handled, by method and status code.",
            ["method", "code"],
            registry=r,
        )
        self.rpc_latency = Histogram(
            "labeler_rpc_latency_seconds",
            "Labeler RPC latency, by method.",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.predict_latency = Histogram(
            "labeler_predict_latency_seconds",
            "Predict latency per model (one batch, retries included).",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.predict_errors = Counter(
            "labeler_predict_errors",
            "Failed Predicts per model and status code.",
            ["model", "code"],
            registry=r,
        )
        self.predict_documents = Histogram(
            "labeler_predict_batch_documents",
            "Documents per Predict, by model.",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.label_version = Gauge(
            "labeler_label_model_version",
            "Model version in use per label (0: none loaded).",
            ["label", "model"],
            registry=r,
        )
        self.label_available = Gauge(
            "labeler_label_available",
            "1 when the label can be scored, else 0.",
            ["label", "model"],
            registry=r,
        )
        self._http: WSGIServer | None = None
        # (metric, label values) -> child: ``labels()`` takes a lock and builds
        # its key on every call, and the hot path records per model call.
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}
        self._add_pressure_metrics()
        self._add_rollout_metrics(r)

    def child(self, metric: MetricWrapperBase, *values: str) -> Any:
        """``metric.labels(*values)``, looked up once. Only for metrics whose
        children are never removed (per-model and per-label call metrics)."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def _add_pressure_metrics(self) -> None:
        """Overload control and prediction cache (issue 17)."""
        r = self.registry
        self.cache_lookups = Counter(
            "labeler_cache_lookups",
            "Prediction cache lookups per model, by outcome: hit, miss, or shared (an identical row "
            "was already in flight and its answer was shared).",
            ["model", "outcome"],
            registry=r,
        )
        self.cache_evictions = Counter(
            "labeler_cache_evictions",
            "Prediction cache entries evicted to stay within prediction_cache.max_bytes, per model.",
            ["model"],
            registry=r,
        )
        self.cache_bytes = Gauge(
            "labeler_cache_bytes", "Bytes held by the prediction cache (estimated).", registry=r
        )
        self.overload_refused = Counter(
            "labeler_overload_refused",
            "Calls refused with RESOURCE_EXHAUSTED by overload control, by where: classify (no "
            "Classify slot in time, or none free and no room to wait), deadline (less of the call's "
            "deadline left than a call takes now), expired (less than 20 ms of its deadline left: answered "
            "DEADLINE_EXCEEDED) or predict (no Predict slot to a target in time).",
            ["stage"],
            registry=r,
        )
        self.past_deadline = Counter(
            "labeler_calls_past_deadline",
            "Admitted calls whose deadline passed while the Labeler worked on them, by outcome: "
            "cancelled (the work was stopped at the deadline) or late (the answer was ready only "
            "after it). Work for nobody: under overload it should stay near 0.",
            ["outcome"],
            registry=r,
        )

    def _add_rollout_metrics(self, r: CollectorRegistry) -> None:
        """Per-label outcomes (what the dashboards and alerts read) and the
        canary and shadow rollouts of candidate versions (labeler.rollout)."""
        self.label_results = Counter(
            "labeler_label_results",
            "Documents scored per label, arm (served, canary: the version that answered each document) "
            "and outcome code (OK or the failure's code); a ClassifyBatch counts each of its documents.",
            ["label", "arm", "code"],
            registry=r,
        )
        self.canary_fallbacks = Counter(
            "labeler_canary_fallbacks",
            "Documents a canary routed to its candidate but the served version scored, per label and "
            "reason: the candidate's Predict failure code, or UNAVAILABLE (its poll finds it not served).",
            ["label", "reason"],
            registry=r,
        )
        self.label_latency = Histogram(
            "labeler_label_latency_seconds",
            "Time of one label's Predict call for one request (features, Predict, retries), by label and arm.",
            ["label", "arm"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rollout_candidate_version = Gauge(
            "labeler_rollout_candidate_version",
            "Candidate model version per label and rollout mode (canary, shadow); 0: not loaded.",
            ["label", "mode"],
            registry=r,
        )
        self.rollout_percent = Gauge(
            "labeler_rollout_percent",
            "Configured share of documents, in percent, per label and rollout mode (canary, shadow).",
            ["label", "mode"],
            registry=r,
        )
        self.shadow_documents = Counter(
            "labeler_shadow_documents",
            "Documents scored by both the served and the shadow version, per label.",
            ["label"],
            registry=r,
        )
        self.shadow_agreements = Counter(
            "labeler_shadow_agreements",
            "Documents where the shadow version's decision (>= threshold) equals the served one's.",
            ["label"],
            registry=r,
        )
        self.shadow_positives = Counter(
            "labeler_shadow_positives",
            "Shadowed documents at or above the label's threshold, per label and arm (served, shadow).",
            ["label", "arm"],
            registry=r,
        )
        self.shadow_difference = Histogram(
            "labeler_shadow_probability_difference",
            "|shadow probability - served probability| per shadowed document, by label "
            "(the positive rates show the direction).",
            ["label"],
            buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
            registry=r,
        )
        self.shadow_requests = Counter(
            "labeler_shadow_requests",
            "Shadow scorings per label and outcome: OK, a failure's code, or SHED (dropped: "
            "too many in flight or the Labeler overloaded).",
            ["label", "outcome"],
            registry=r,
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Start the /metrics HTTP endpoint; returns its port."""
        server, _thread = start_http_server(port, host, registry=self.registry)
        self._http = server
        return server.server_port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
