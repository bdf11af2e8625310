"""Per-label rollouts of candidate model versions, and per-label outcomes.

Every label scoring of a request passes through ``Rollouts.score``, which

- records the label's outcome (OK or the failure's code) and latency, by arm;
- **canary**: routes a configured share of the label's documents to a
  candidate version. The arm is chosen by a hash of the label and the
  document's words, so one text always goes to the same arm (sticky) on
  every Labeler replica; the answer names the version that scored it;
- **shadow**: for a sample of the label's requests, also scores the documents
  with a candidate version in a background task, after the answer is known,
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
import time
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from labeler.config import CanarySpec, LabelSpec, Settings, ShadowSpec
from labeler.domain import Binding, CandidateInfo, LabelState, ModelCallError, Prediction
from labeler.metrics import LabelerMetrics
from labeler.model_client import ClientPool
from labeler.predictor import Predictor
from labeler.registry import ModelRegistry, Snapshot

log = logging.getLogger(__name__)

SERVED = "served"
CANARY = "canary"
SHADOW = "shadow"
# Canary buckets: percent is honoured to 0.01 %.
_BUCKETS = 10_000

ServedPredict = Callable[[Binding, Sequence[Sequence[str]], float], Awaitable[Prediction]]


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
    """Canary and shadow routing per label, with per-label outcome metrics."""

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
        )
        self._shadow_versions = ModelRegistry(
            _candidate_settings(settings, [s.candidate for s in settings.shadows]),
            ClientPool(settings.model_server_tls),
            on_change=lambda s: self._on_change(SHADOW, s),
        )
        self._canaries = {c.label: c for c in settings.canaries}
        self._shadows = {s.label: s for s in settings.shadows}
        self._shadow_state: dict[str, _ShadowState] = {}
        self._shadow_tasks: set[asyncio.Task] = set()
        self._random = random.Random()
        self._overloaded: Callable[[], bool] = _never
        self._publish_percents(None, settings)

    def shed_shadows_when(self, overloaded: Callable[[], bool]) -> None:
        """Shed every shadow scoring while ``overloaded()`` is true (the
        Labeler's overload control calls this), so shadow work goes first."""
        self._overloaded = overloaded

    # -- lifecycle ---------------------------------------------------------------

    async def run(self) -> None:
        """Poll the candidates' versions forever (cancel to stop)."""
        await asyncio.gather(self._canary_versions.run(), self._shadow_versions.run())

    async def reload(self, settings: Settings) -> None:
        """Switch to ``settings``' canaries and shadows: candidates are polled
        (features loaded) before the switch, so no request sees a half-made one."""
        await asyncio.gather(
            self._canary_versions.reload(
                _candidate_settings(settings, [c.candidate for c in settings.canaries])
            ),
            self._shadow_versions.reload(
                _candidate_settings(settings, [s.candidate for s in settings.shadows])
            ),
        )
        old, self._settings = self._settings, settings
        self._canaries = {c.label: c for c in settings.canaries}
        self._shadows = {s.label: s for s in settings.shadows}
        self._publish_percents(old, settings)

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

    def describe(self, label: str) -> tuple[CandidateInfo | None, CandidateInfo | None]:
        """(canary, shadow) of ``label`` as ListLabels shows them."""
        canary, shadow = self._canaries.get(label), self._shadows.get(label)
        return (
            self._info(self.candidate(CANARY, label), canary.percent) if canary else None,
            self._info(self.candidate(SHADOW, label), shadow.sample_percent) if shadow else None,
        )

    @staticmethod
    def _info(binding: Binding | None, percent: float) -> CandidateInfo:
        if binding is None:  # configured but not yet polled (a reload in progress)
            return CandidateInfo(0, percent, LabelState.LOADING, "")
        version = binding.loaded.version if binding.loaded else 0
        return CandidateInfo(version, percent, binding.state, binding.message)

    async def drain_shadows(self) -> None:
        """Wait for the shadow scorings in flight (tests, benchmarks)."""
        while self._shadow_tasks:
            await asyncio.gather(*list(self._shadow_tasks), return_exceptions=True)

    # -- the request path --------------------------------------------------------

    async def score(
        self,
        binding: Binding,
        documents: Sequence[Sequence[str]],
        deadline: float,
        served: ServedPredict,
        predictor: Predictor,
    ) -> Prediction:
        """One label's probabilities for the batch: served, or split with its canary."""
        label = binding.spec.label
        started = time.perf_counter()
        arm = SERVED
        code = "OK"
        try:
            canary = self._canaries.get(label)
            candidate = self.candidate(CANARY, label) if canary is not None else None
            if (
                canary is None
                or candidate is None
                or candidate.loaded is None
                or canary.percent <= 0
                # A label serving "latest" may reach the candidate's version: nothing to split.
                or (binding.loaded is not None and candidate.loaded.version == binding.loaded.version)
            ):
                prediction = await served(binding, documents, deadline)
            else:
                to_canary = [routes_to_canary(label, words, canary.percent) for words in documents]
                if all(to_canary):
                    arm = CANARY
                    prediction = await self._candidate_predict(predictor, candidate, documents, deadline)
                elif not any(to_canary):
                    prediction = await served(binding, documents, deadline)
                else:
                    arm = CANARY  # a batch split between the arms counts as canary traffic
                    prediction = await self._split(
                        binding, candidate, documents, to_canary, deadline, served, predictor
                    )
            self._maybe_shadow(binding, documents, prediction)
            return prediction
        except ModelCallError as exc:
            code = exc.code_name
            raise
        except asyncio.CancelledError:
            code = "DEADLINE_EXCEEDED"  # the request gave up on this label at its deadline
            raise
        except Exception:
            code = "INTERNAL"
            raise
        finally:
            if (m := self._metrics) is not None:
                m.child(m.label_results, label, arm, code).inc()
                m.child(m.label_latency, label, arm).observe(time.perf_counter() - started)

    @staticmethod
    async def _candidate_predict(
        predictor: Predictor, candidate: Binding, documents: Sequence[Sequence[str]], deadline: float
    ) -> Prediction:
        assert candidate.loaded is not None
        features = candidate.loaded.pipeline.transform(documents)
        return await predictor.predict(candidate, features, deadline)

    async def _split(
        self,
        binding: Binding,
        candidate: Binding,
        documents: Sequence[Sequence[str]],
        to_canary: list[bool],
        deadline: float,
        served: ServedPredict,
        predictor: Predictor,
    ) -> Prediction:
        """Score each arm's documents with its version; one Prediction in document order."""
        canary_rows = [i for i, c in enumerate(to_canary) if c]
        served_rows = [i for i, c in enumerate(to_canary) if not c]
        served_part, canary_part = await asyncio.gather(
            served(binding, [documents[i] for i in served_rows], deadline),
            self._candidate_predict(predictor, candidate, [documents[i] for i in canary_rows], deadline),
        )
        probabilities = np.empty(len(documents), dtype=np.float64)
        probabilities[served_rows] = served_part.probabilities
        probabilities[canary_rows] = canary_part.probabilities
        versions = [served_part.version] * len(documents)
        for i in canary_rows:
            versions[i] = canary_part.version
        return Prediction(probabilities, served_part.version, tuple(versions))

    # -- shadow ------------------------------------------------------------------

    def _maybe_shadow(self, binding: Binding, documents: Sequence[Sequence[str]], answer: Prediction) -> None:
        shadow = self._shadows.get(binding.spec.label)
        if shadow is None or shadow.sample_percent <= 0:
            return
        if shadow.sample_percent < 100 and self._random.random() * 100.0 >= shadow.sample_percent:
            return
        candidate = self.candidate(SHADOW, shadow.label)
        if candidate is None or candidate.loaded is None or candidate.loaded.version == answer.version:
            return
        state = self._shadow_state.setdefault(shadow.label, _ShadowState())
        if state.in_flight >= shadow.max_in_flight or self._overloaded():
            if self._metrics is not None:
                self._metrics.shadow_requests.labels(shadow.label, "SHED").inc()
            return
        state.in_flight += 1
        task = asyncio.ensure_future(self._shadow(shadow, binding.spec, candidate, documents, answer, state))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(
        self,
        shadow: ShadowSpec,
        served_spec: LabelSpec,
        candidate: Binding,
        documents: Sequence[Sequence[str]],
        answer: Prediction,
        state: _ShadowState,
    ) -> None:
        outcome = "OK"
        try:
            deadline = asyncio.get_running_loop().time() + candidate.spec.timeout_s
            result = await self._candidate_predict(self._shadow_predictor, candidate, documents, deadline)
            self._compare(shadow.label, served_spec.threshold, answer.probabilities, result.probabilities)
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


__all__ = ["CanarySpec", "Rollouts", "ShadowSpec", "canary_bucket", "routes_to_canary"]
