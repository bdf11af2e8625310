"""Per-label rollouts of candidate model versions, and per-label outcomes.

A request takes one immutable ``RolloutView`` (``Rollouts.view``) at its
start; the router (labeler.plan) reads it:

- **canary**: a configured share of the label's documents goes to a
  candidate version. The arm is chosen by a hash of the label and the
  document's words, so one text always goes to the same arm (sticky) on
  every Labeler replica, whatever batch it comes in; the answer names the
  version that scored it. A candidate that is unavailable, or whose Predict
  fails, leaves its documents to the served version (counted in
  ``labeler_canary_fallbacks_total``);
- **shadow** (``Rollouts.shadow``): for a sample of the label's requests, also
  scores the documents with a candidate version in a background task, after the answer is known,
  and records how often the candidate's decision (>= threshold) agrees with
  the answer's, the probability differences and both positive rates. The
  caller never waits for it and never sees its failures; at most
  ``max_in_flight`` shadow Predicts per label run at once, the rest are shed
  (counted as SHED), so a stalled candidate or an overloaded Labeler drops
  shadow work first.

Candidate versions are resolved and their features loaded by registries of
their own (labeler.registry), one for canaries and one for shadows, polled
like the served versions and swapped atomically on reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

from labeler.config import CanarySpec, ConfigError, LabelSpec, Settings, ShadowSpec
from labeler.domain import Binding, CandidateInfo, LabelState, ModelCallError, Prediction
from labeler.metrics import LabelerMetrics
from labeler.model_client import ClientPool
from labeler.predictor import Predictor
from labeler.registry import ModelRegistry, Snapshot
from modelspec.features import FeaturePipeline

log = logging.getLogger(__name__)

SERVED = "served"
CANARY = "canary"
SHADOW = "shadow"
# Canary buckets: percent is honoured to 0.01 %.
_BUCKETS = 10_000


@dataclasses.dataclass(frozen=True)
class CanaryRoute:
    percent: float
    binding: Binding | None  # the candidate; None: not polled yet


@dataclasses.dataclass(frozen=True)
class ShadowRoute:
    spec: ShadowSpec
    served: LabelSpec  # the label's served spec (its threshold)
    binding: Binding | None  # the candidate; None: not polled yet


@dataclasses.dataclass(frozen=True)
class RolloutView:
    """The canaries and shadows a request sees, with their candidates, fixed
    for the whole request."""

    canaries: Mapping[str, CanaryRoute]
    shadows: Mapping[str, ShadowRoute]


NO_ROLLOUTS = RolloutView({}, {})


def canary_bucket(label: str, words: Sequence[str]) -> int:
    """A stable bucket in [0, 10000) for one document of one label."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(label.encode("utf-8"))
    for word in words:
        digest.update(b"\x1f")
        digest.update(word.encode("utf-8"))
    return int.from_bytes(digest.digest(), "big") % _BUCKETS


def routes_to_canary(label: str, words: Sequence[str], percent: float) -> bool:
    return canary_bucket(label, words) < percent * (_BUCKETS / 100.0)


def _never() -> bool:
    return False


def _candidate_settings(settings: Settings, candidates: Sequence[LabelSpec]) -> Settings:
    return dataclasses.replace(settings, labels=tuple(candidates), canaries=(), shadows=())


@dataclasses.dataclass
class _ShadowState:
    in_flight: int = 0


class Rollouts:
    """Canary and shadow candidates per label, and shadow scoring."""

    def __init__(
        self,
        settings: Settings,
        clients: ClientPool,
        shadow_predictor: Predictor,
        metrics: LabelerMetrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._shadow_predictor = shadow_predictor
        self._settings = settings
        # Status polls of candidates use channels of their own: a registry
        # closes the channels of targets it no longer polls.
        self._canary_versions = ModelRegistry(
            _candidate_settings(settings, [c.candidate for c in settings.canaries]),
            ClientPool(settings.model_server_tls),
            on_change=lambda s: self._on_change(CANARY, s),
            role=CANARY,
        )
        self._shadow_versions = ModelRegistry(
            _candidate_settings(settings, [s.candidate for s in settings.shadows]),
            ClientPool(settings.model_server_tls),
            on_change=lambda s: self._on_change(SHADOW, s),
            role=SHADOW,
        )
        self._canaries = {c.label: c for c in settings.canaries}
        self._shadows = {s.label: s for s in settings.shadows}
        self._view: RolloutView | None = None
        self._shadow_state: dict[str, _ShadowState] = {}
        self._shadow_tasks: set[asyncio.Task] = set()
        self._random = random.Random()
        self._overloaded: Callable[[], bool] = _never
        self._publish_percents(None, settings)

    def shed_shadows_when(self, overloaded: Callable[[], bool]) -> None:
        """Shed every shadow scoring while ``overloaded()`` is true (the
        Labeler's overload control calls this), so shadow work goes first."""
        self._overloaded = overloaded

    def view(self) -> RolloutView:
        """The canaries and shadows now, with their candidates: one immutable
        object, rebuilt only when a candidate or the config changes."""
        view = self._view
        if view is None:
            view = self._view = RolloutView(
                {
                    label: CanaryRoute(c.percent, self.candidate(CANARY, label))
                    for label, c in self._canaries.items()
                },
                {
                    label: ShadowRoute(
                        s, self._settings.label(label) or s.candidate, self.candidate(SHADOW, label)
                    )
                    for label, s in self._shadows.items()
                },
            )
        return view

    # -- lifecycle ---------------------------------------------------------------

    async def run(self) -> None:
        """Poll the candidates' versions forever (cancel to stop)."""
        await asyncio.gather(self._canary_versions.run(), self._shadow_versions.run())

    async def check_candidates(self) -> None:
        """At start: poll every candidate once; a candidate version the model
        server says it does not serve is a ConfigError (a model server that
        cannot be reached yet is not: its poll goes on)."""
        await asyncio.gather(self._canary_versions.refresh(), self._shadow_versions.refresh())
        _refuse_unserved(self._settings, self._canary_versions.snapshot(), self._shadow_versions.snapshot())

    async def prepare(self, settings: Settings) -> tuple[Settings, Snapshot, Snapshot]:
        """Poll ``settings``' candidates (features loaded) without switching;
        ConfigError if one is a version the model server does not serve."""
        canaries, shadows = await asyncio.gather(
            self._canary_versions.prepare(
                _candidate_settings(settings, [c.candidate for c in settings.canaries])
            ),
            self._shadow_versions.prepare(
                _candidate_settings(settings, [s.candidate for s in settings.shadows])
            ),
        )
        _refuse_unserved(settings, canaries, shadows)
        return settings, canaries, shadows

    def install(self, prepared: tuple[Settings, Snapshot, Snapshot]) -> None:
        """Switch to what ``prepare`` polled: no request sees a half-made one."""
        settings, canaries, shadows = prepared
        self._canary_versions.install(canaries)
        self._shadow_versions.install(shadows)
        old, self._settings = self._settings, settings
        self._canaries = {c.label: c for c in settings.canaries}
        self._shadows = {s.label: s for s in settings.shadows}
        self._view = None
        self._publish_percents(old, settings)

    async def reload(self, settings: Settings) -> None:
        """Switch to ``settings``' canaries and shadows (``prepare`` + ``install``)."""
        self.install(await self.prepare(settings))

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until every candidate has a version loaded."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            if self._canary_versions.snapshot().ready and self._shadow_versions.snapshot().ready:
                return True
            await asyncio.sleep(0.05)
        return False

    async def close(self) -> None:
        for task in list(self._shadow_tasks):
            task.cancel()
        await asyncio.gather(*self._shadow_tasks, return_exceptions=True)

    def candidate(self, mode: str, label: str) -> Binding | None:
        """The candidate binding of ``label`` in ``mode`` (canary, shadow), if any."""
        versions = self._canary_versions if mode == CANARY else self._shadow_versions
        return versions.snapshot().bindings.get(label)

    def describe(
        self, label: str, served_version: int = 0
    ) -> tuple[CandidateInfo | None, CandidateInfo | None]:
        """(canary, shadow) of ``label`` as ListLabels shows them; a candidate
        that is the version served now says it does nothing."""
        canary, shadow = self._canaries.get(label), self._shadows.get(label)
        return (
            self._info(self.candidate(CANARY, label), canary.percent, served_version) if canary else None,
            self._info(self.candidate(SHADOW, label), shadow.sample_percent, served_version)
            if shadow
            else None,
        )

    @staticmethod
    def _info(binding: Binding | None, percent: float, served_version: int) -> CandidateInfo:
        if binding is None:  # configured but not yet polled (a reload in progress)
            return CandidateInfo(0, percent, LabelState.LOADING, "")
        version = binding.loaded.version if binding.loaded else 0
        message = binding.message
        if version and version == served_version:
            message = (
                f"version {version} is the version the label serves now: this candidate does nothing "
                "(pin the label to another version, or name another candidate)"
            )
        return CandidateInfo(version, percent, binding.state, message)

    async def drain_shadows(self) -> None:
        """Wait for the shadow scorings in flight (tests, benchmarks)."""
        while self._shadow_tasks:
            await asyncio.gather(*list(self._shadow_tasks), return_exceptions=True)

    # -- shadow ------------------------------------------------------------------

    def shadow(
        self,
        route: ShadowRoute,
        documents: Sequence[Sequence[str]],
        answered: Sequence[tuple[tuple[int, ...] | None, Prediction]],
        features: FeatureSource,
    ) -> None:
        """Maybe score the label's answered documents with its shadow candidate,
        in the background (the caller never waits for it). ``answered``: the
        label's (rows, prediction) parts; rows None is every document."""
        shadow = route.spec
        if shadow.sample_percent <= 0:
            return
        if shadow.sample_percent < 100 and self._random.random() * 100.0 >= shadow.sample_percent:
            return
        candidate = route.binding
        if candidate is None or candidate.loaded is None:
            return
        rows: list[int] = []
        served: list[float] = []
        for part_rows, prediction in answered:
            if prediction.version == candidate.loaded.version:
                continue  # the candidate answered these itself
            rows += range(len(documents)) if part_rows is None else part_rows
            served += prediction.probabilities.tolist()
        if not rows:
            return
        state = self._shadow_state.setdefault(shadow.label, _ShadowState())
        if state.in_flight >= shadow.max_in_flight or self._overloaded():
            if self._metrics is not None:
                self._metrics.shadow_requests.labels(shadow.label, "SHED").inc()
            return
        state.in_flight += 1
        key = None if len(rows) == len(documents) and rows == sorted(rows) else tuple(rows)
        answer = np.asarray(served, dtype=np.float64)
        task = asyncio.ensure_future(self._shadow(route, candidate, key, answer, features, state))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(
        self,
        route: ShadowRoute,
        candidate: Binding,
        rows: tuple[int, ...] | None,
        answer: np.ndarray,
        features: FeatureSource,
        state: _ShadowState,
    ) -> None:
        shadow = route.spec
        outcome = "OK"
        try:
            assert candidate.loaded is not None
            deadline = asyncio.get_running_loop().time() + candidate.spec.timeout_s
            x = features.rows(candidate.loaded.pipeline, rows)
            result = await self._shadow_predictor.predict(candidate, x, deadline)
            self._compare(shadow.label, route.served.threshold, answer, result.probabilities)
        except ModelCallError as exc:
            outcome = exc.code_name
        except asyncio.CancelledError:
            outcome = "CANCELLED"
            raise
        except Exception:  # noqa: BLE001 - a shadow must never hurt the Labeler
            log.exception("shadow scoring of label %s failed", shadow.label)
            outcome = "INTERNAL"
        finally:
            state.in_flight -= 1
            if self._metrics is not None:
                self._metrics.shadow_requests.labels(shadow.label, outcome).inc()

    def _compare(self, label: str, threshold: float, served: np.ndarray, shadow: np.ndarray) -> None:
        if self._metrics is None:
            return
        m = self._metrics
        served_positive = served >= threshold
        shadow_positive = shadow >= threshold
        m.shadow_documents.labels(label).inc(len(served))
        m.shadow_agreements.labels(label).inc(int(np.count_nonzero(served_positive == shadow_positive)))
        m.shadow_positives.labels(label, SERVED).inc(int(np.count_nonzero(served_positive)))
        m.shadow_positives.labels(label, SHADOW).inc(int(np.count_nonzero(shadow_positive)))
        difference = m.shadow_difference.labels(label)
        for d in np.abs(shadow - served).tolist():
            difference.observe(d)

    # -- metrics -----------------------------------------------------------------

    def _on_change(self, mode: str, snapshot: Snapshot) -> None:
        self._view = None  # a candidate changed: the next request sees it
        if self._metrics is None:
            return
        for label, b in snapshot.bindings.items():
            self._metrics.rollout_candidate_version.labels(label, mode).set(
                b.loaded.version if b.loaded else 0
            )
            if b.state is LabelState.UNAVAILABLE:
                log.warning("%s candidate of label %s: %s", mode, label, b.message)

    def _publish_percents(self, old: Settings | None, new: Settings) -> None:
        if self._metrics is None:
            return
        m = self._metrics
        now: set[tuple[str, str]] = set()
        for c in new.canaries:
            m.rollout_percent.labels(c.label, CANARY).set(c.percent)
            now.add((c.label, CANARY))
        for s in new.shadows:
            m.rollout_percent.labels(s.label, SHADOW).set(s.sample_percent)
            now.add((s.label, SHADOW))
        if old is not None:
            before = {(c.label, CANARY) for c in old.canaries} | {(s.label, SHADOW) for s in old.shadows}
            for label, mode in before - now:
                with contextlib.suppress(KeyError):
                    m.rollout_percent.remove(label, mode)
                    m.rollout_candidate_version.remove(label, mode)


def _refuse_unserved(settings: Settings, canaries: Snapshot, shadows: Snapshot) -> None:
    """A candidate version the model server answered NOT_FOUND for is a
    config error: it would never take a document."""
    problems = []
    for kind, snapshot in (("canaries", canaries), ("shadows", shadows)):
        for label, b in snapshot.bindings.items():
            if b.not_served and b.loaded is None:
                problems.append(
                    f"{kind} ({label}): the candidate is not served by {b.spec.target}: {b.message}"
                )
    if problems:
        raise ConfigError(
            "; ".join(problems) + "; name a version the model server serves (GetModelStatus lists them)"
        )


class FeatureSource(Protocol):
    def rows(self, pipeline: FeaturePipeline, rows: tuple[int, ...] | None) -> np.ndarray: ...


__all__ = [
    "CanaryRoute",
    "CanarySpec",
    "RolloutView",
    "Rollouts",
    "ShadowRoute",
    "ShadowSpec",
    "canary_bucket",
    "routes_to_canary",
]
