"""The Labeler's core: validate a request, compute each label model's features,
ask every model at once, keep the labels at or above the threshold.

It knows nothing of gRPC: it raises rpc.errors and returns labeler.domain
types; the servicer translates. A Classify is a batch of one document.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
import uuid
from collections.abc import Sequence

from labeler import bundles
from labeler.config import Limits
from labeler.domain import (
    BatchResult,
    Binding,
    LabelFailure,
    LabelInfo,
    LabelScore,
    LabelState,
    ModelCallError,
    Prediction,
)
from labeler.metrics import LabelerMetrics
from labeler.overload import AdmissionGate
from labeler.plan import Call, Outcome, Plan, RequestFeatures, RequestView, route
from labeler.predictor import Predictor
from labeler.registry import ModelRegistry
from labeler.rollout import CANARY, NO_ROLLOUTS, SERVED, Rollouts
from rpc import errors

log = logging.getLogger(__name__)


# Time kept back from the caller's deadline to build and send the answer.
_ANSWER_MARGIN_S = 0.05
# A deadline shorter than this cannot cover one Predict round trip: it is the
# caller's DEADLINE_EXCEEDED, not the models' UNAVAILABLE (which clients retry).
_MIN_USEFUL_DEADLINE_S = 0.005


class LabelerService:
    def __init__(
        self,
        registry: ModelRegistry,
        predictor: Predictor,
        admission: AdmissionGate | None = None,
        rollouts: Rollouts | None = None,
        metrics: LabelerMetrics | None = None,
    ) -> None:
        self._registry = registry
        self._predictor = predictor
        self._admission = admission
        self._rollouts = rollouts  # canary and shadow candidates
        self._metrics = metrics  # per-label, per-arm outcomes (documents) and latency

    def use_predictor(self, predictor: Predictor) -> None:
        """Requests started from now on use ``predictor`` (a reload); a request
        in flight keeps the one its view took."""
        self._predictor = predictor

    # -- queries -----------------------------------------------------------------

    def list_labels(self) -> list[LabelInfo]:
        # A binary label a bundle also carries is bound twice: say so, as Classify does.
        conflicts = self._registry.snapshot().bundle_table.conflicts
        binary = [
            dataclasses.replace(i, state=LabelState.UNAVAILABLE, message=conflicts[i.label])
            if i.label in conflicts
            else i
            for i in self._binary_label_infos()
        ]
        return binary + bundles.label_infos(self._registry.snapshot())

    def _binary_label_infos(self) -> list[LabelInfo]:
        return [
            LabelInfo(
                label=b.spec.label,
                model=b.spec.model,
                target=b.spec.target,
                model_version=b.loaded.version if b.loaded else 0,
                state=b.state,
                threshold=b.spec.threshold,
                message=b.message,
                **self._candidates(b),
            )
            for b in self._registry.snapshot().bindings.values()
        ]

    def _candidates(self, binding: Binding) -> dict:
        if self._rollouts is None:
            return {}
        served = binding.loaded.version if binding.loaded is not None else 0
        canary, shadow = self._rollouts.describe(binding.spec.label, served)
        return {"canary": canary, "shadow": shadow}

    async def classify(
        self,
        words: Sequence[str],
        labels: Sequence[str] = (),
        threshold: float | None = None,
        time_remaining: float | None = None,
    ) -> tuple[list[LabelScore], list[LabelFailure]]:
        result = await self._classify([words], labels, threshold, time_remaining, single=True)
        return result.results[0], result.failures

    async def classify_batch(
        self,
        documents: Sequence[Sequence[str]],
        labels: Sequence[str] = (),
        threshold: float | None = None,
        time_remaining: float | None = None,
    ) -> BatchResult:
        return await self._classify(documents, labels, threshold, time_remaining, single=False)

    # -- the request path --------------------------------------------------------
    #
    # view (one snapshot) -> plan (route) -> features -> send every call -> merge.

    def view(self) -> RequestView:
        """What a request reads from start to end, taken once."""
        rollouts = self._rollouts.view() if self._rollouts is not None else NO_ROLLOUTS
        return RequestView(self._registry.snapshot(), rollouts, self._predictor)

    async def _classify(
        self,
        documents: Sequence[Sequence[str]],
        labels: Sequence[str],
        threshold: float | None,
        time_remaining: float | None,
        single: bool,
    ) -> BatchResult:
        started = time.perf_counter()
        view = self.view()
        _check_documents(documents, view.snapshot.settings.limits, single)
        _check_threshold(threshold)
        plan = route(view, documents, labels)
        if time_remaining is not None and time_remaining < _MIN_USEFUL_DEADLINE_S:
            raise errors.DeadlineExceeded(
                f"the call's deadline left {max(time_remaining, 0.0) * 1000:.1f} ms, too little to ask the label "
                "models; give the call a deadline of at least 100 ms"
            )
        if self._admission is None:
            return await self._run(view, plan, documents, threshold, time_remaining, started)
        async with self._admission.admit(time_remaining) as waited_s:
            if time_remaining is not None:
                time_remaining -= waited_s
            return await self._run(view, plan, documents, threshold, time_remaining, started)

    async def _run(
        self,
        view: RequestView,
        plan: Plan,
        documents: Sequence[Sequence[str]],
        threshold: float | None,
        time_remaining: float | None,
        started: float,
    ) -> BatchResult:
        features = RequestFeatures(documents)
        for call in plan.calls:
            if call.binding.loaded is not None:
                features.want(call.binding.loaded.pipeline, call.rows)
        outcomes = await self._send_all(view, plan.calls, features, time_remaining)
        results, failures, scored = self._merge(view, plan, outcomes, documents, threshold, features)

        # Only a request that logs or fails needs an id (uuid4 reads os.urandom).
        request_id = uuid.uuid4().hex[:12] if failures or log.isEnabledFor(logging.DEBUG) else ""
        for f in failures:
            log.warning(
                "request %s: label %s (%s) failed: %s: %s",
                request_id,
                f.label,
                f.model,
                f.code_name,
                f.message,
            )
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "request %s: %d document(s), %d call(s), found %s, %d failure(s), %.1f ms",
                request_id,
                len(documents),
                len(plan.calls),
                [[s.label for s in r] for r in results[:4]],
                len(failures),
                (time.perf_counter() - started) * 1000,
            )
        if failures and not scored:
            _raise_if_overloaded(failures, self._admission, request_id)
            raise errors.Unavailable(
                "no label could be scored: "
                + "; ".join(f"{f.label} ({f.model}): {f.code_name}: {f.message}" for f in failures)
                + f" (request id {request_id})"
            )
        return BatchResult(results, failures)

    # -- send: every call of the plan at once ----------------------------------------

    async def _send_all(
        self,
        view: RequestView,
        calls: Sequence[Call],
        features: RequestFeatures,
        time_remaining: float | None,
    ) -> list[Outcome]:
        """Every call at once; a call still running at its deadline is a failure."""
        if not calls:
            return []
        loop = asyncio.get_running_loop()
        budget = math.inf
        if time_remaining is not None:
            budget = max(0.0, time_remaining - min(_ANSWER_MARGIN_S, 0.1 * time_remaining))
        now = loop.time()
        deadlines = [now + min(c.binding.spec.timeout_s, budget) for c in calls]
        tasks = [
            asyncio.ensure_future(self._send(view, c, features, d))
            for c, d in zip(calls, deadlines, strict=True)
        ]
        try:
            # Every call inside is bounded by its deadline, and so is the whole,
            # with one timer rather than one per call.
            await asyncio.wait(tasks, timeout=max(max(deadlines) - loop.time() + 0.02, 0.0))
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
        return [
            task.result()
            if task.done() and not task.cancelled()
            else Outcome(
                c,
                _failure(
                    c.binding, "DEADLINE_EXCEEDED", f"model {c.binding.spec.model} did not answer in time"
                ),
                c.arm,
            )
            for c, task in zip(calls, tasks, strict=True)
        ]

    async def _send(
        self, view: RequestView, call: Call, features: RequestFeatures, deadline: float
    ) -> Outcome:
        """One call's Predict. A canary whose candidate fails falls back to the
        served version for its documents: the other arm never fails by it."""
        started = time.perf_counter()
        arm = call.arm
        try:
            if call.arm == CANARY:
                assert call.binding.loaded is not None and call.served is not None
                try:
                    rows = features.rows(call.binding.loaded.pipeline, call.rows)
                    return Outcome(call, await view.predictor.predict(call.binding, rows, deadline), CANARY)
                except ModelCallError as exc:
                    log.info(
                        "canary of label %s (version %d) failed (%s: %s); its %d document(s) fall back to "
                        "the served version",
                        call.label,
                        call.binding.loaded.version,
                        exc.code_name,
                        exc.message,
                        call.documents(len(features)),
                    )
                    arm = SERVED
                    try:
                        prediction = await self._predict(view, call.served, call.rows, features, deadline)
                    except ModelCallError as served_exc:
                        failure = _failure(call.served, served_exc.code_name, served_exc.message)
                        return Outcome(call, failure, SERVED, exc.code_name)
                    return Outcome(call, prediction, SERVED, exc.code_name)
            try:
                return Outcome(
                    call, await self._predict(view, call.binding, call.rows, features, deadline), arm
                )
            except ModelCallError as exc:
                return Outcome(call, _failure(call.binding, exc.code_name, exc.message), arm)
        finally:
            if (m := self._metrics) is not None:
                m.child(m.label_latency, call.label, arm).observe(time.perf_counter() - started)

    async def _predict(
        self,
        view: RequestView,
        binding: Binding,
        rows: tuple[int, ...] | None,
        features: RequestFeatures,
        deadline: float,
    ) -> Prediction:
        """The served version's Predict, with the rollout fallback and a retry
        on the version the server moved to."""
        if binding.loaded is None:
            raise ModelCallError(
                "UNAVAILABLE", f"no version of model {binding.spec.model} is loaded yet: {binding.message}"
            )
        predictor = view.predictor
        try:
            return _answered(
                binding,
                await predictor.predict(binding, features.rows(binding.loaded.pipeline, rows), deadline),
            )
        except ModelCallError as exc:
            if binding.previous is not None and exc.code_name in _NOT_SERVED:
                return await self._fall_back(view, binding, rows, features, deadline, exc)
            if exc.code_name != "NOT_FOUND":
                raise
            # The server stopped serving our version (it moved to a newer one
            # before our poll noticed): poll now and retry once on the version
            # it serves, with that version's own features.
            if binding.spec.bundle:
                fresh = await self._registry.refresh_bundle(binding.spec.model)
            else:
                fresh = (await self._registry.refresh([binding.spec.label])).bindings.get(binding.spec.label)
            if fresh is None or fresh.loaded is None or fresh.loaded is binding.loaded:
                raise
            log.info(
                "model %s stopped serving version %d; retrying on version %d",
                binding.spec.model,
                binding.loaded.version,
                fresh.loaded.version,
            )
            return _answered(
                fresh, await predictor.predict(fresh, features.rows(fresh.loaded.pipeline, rows), deadline)
            )

    async def _fall_back(
        self,
        view: RequestView,
        binding: Binding,
        rows: tuple[int, ...] | None,
        features: RequestFeatures,
        deadline: float,
        error: ModelCallError,
    ) -> Prediction:
        """Rollout fallback: a replica does not serve the new version yet, so
        answer from the previous one (with its own features), which the
        registry keeps until every replica serves the new one."""
        assert binding.previous is not None and binding.loaded is not None
        previous = dataclasses.replace(binding, loaded=binding.previous, previous=None)
        log.info(
            "model %s version %d not served by a replica (%s); falling back to version %d",
            binding.spec.model,
            binding.loaded.version,
            error.code_name,
            binding.previous.version,
        )
        for use_previous in _FALLBACK_ORDER:
            chosen = previous if use_previous else binding
            try:
                assert chosen.loaded is not None
                x = features.rows(chosen.loaded.pipeline, rows)
                return _answered(chosen, await view.predictor.predict(chosen, x, deadline))
            except ModelCallError as exc:
                if exc.code_name not in _NOT_SERVED:
                    raise
                error = exc
        raise error

    # -- merge: the answer, per document ---------------------------------------------

    def _merge(
        self,
        view: RequestView,
        plan: Plan,
        outcomes: Sequence[Outcome],
        documents: Sequence[Sequence[str]],
        threshold: float | None,
        features: RequestFeatures,
    ) -> tuple[list[list[LabelScore]], list[LabelFailure], bool]:
        """Each document's labels, the labels that failed (once each, even if
        both arms did), and whether any call answered at all."""
        total = len(documents)
        scored = False
        results: list[list[LabelScore]] = [[] for _ in documents]
        failures: list[LabelFailure] = list(plan.early_failures)
        failed: dict[str, int] = {}  # binary label -> its failure's index in failures
        answered: dict[str, list[tuple[tuple[int, ...] | None, Prediction]]] = {}
        m = self._metrics
        for skip in plan.skipped:
            if m is not None:
                m.child(m.canary_fallbacks, skip.label, skip.reason).inc(skip.documents)
        for outcome in outcomes:
            call, result = outcome.call, outcome.result
            n = call.documents(total)
            if m is not None:
                code = result.code_name if isinstance(result, LabelFailure) else "OK"
                m.child(m.label_results, call.label, outcome.arm, code).inc(n)
                if outcome.fallback_reason:
                    m.child(m.canary_fallbacks, call.label, outcome.fallback_reason).inc(n)
            if call.bundle is not None:
                before = len(failures)
                bundles.collect(call.bundle, result, threshold, results, failures)
                scored = scored or (
                    not isinstance(result, LabelFailure) and len(failures) - before < len(call.bundle.labels)
                )
                continue
            if isinstance(result, LabelFailure):
                if call.label in failed:  # the label's other arm failed too: one failure
                    continue
                failed[call.label] = len(failures)
                if n < total:
                    result = dataclasses.replace(
                        result, message=f"{result.message} (for {n} of {total} documents)"
                    )
                failures.append(result)
                continue
            scored = True
            spec = call.binding.spec
            cut = spec.threshold if threshold is None else threshold
            rows = range(total) if call.rows is None else call.rows
            version = result.version
            for i, p in zip(rows, result.probabilities.tolist(), strict=True):
                if p >= cut:
                    results[i].append(LabelScore(spec.label, p, spec.model, version))
            if call.label in view.rollouts.shadows:
                answered.setdefault(call.label, []).append((call.rows, result))
        for found in results:
            found.sort(key=lambda s: -s.probability)
        if self._rollouts is not None:
            for label, parts in answered.items():
                self._rollouts.shadow(view.rollouts.shadows[label], documents, parts, features)
        return results, failures, scored


# What a replica answers for a version it does not serve (yet).
_NOT_SERVED = ("NOT_FOUND", "FAILED_PRECONDITION")
# After the new version failed: the previous, the previous, the new. With two
# replicas in round robin, one of these reaches a replica that serves it.
_FALLBACK_ORDER = (True, True, False)


def _answered(binding: Binding, prediction: Prediction) -> Prediction:
    """A bundle's answer carries the columns of the version asked (Predicts are
    pinned to it), so each label is read from the right column."""
    if not binding.spec.bundle:
        return prediction
    assert binding.loaded is not None
    return dataclasses.replace(prediction, columns=binding.loaded.columns)


def _raise_if_overloaded(
    failures: Sequence[LabelFailure], admission: AdmissionGate | None, request_id: str
) -> None:
    """No label scored because every model server was at its Predict bound:
    that is overload (back off), not an outage (retry elsewhere)."""
    if all(f.code_name == "RESOURCE_EXHAUSTED" for f in failures):
        raise errors.ResourceExhausted(
            "the model servers are at capacity: "
            + "; ".join(f"{f.label} ({f.model}): {f.message}" for f in failures)
            + f"; retry after the grpc-retry-pushback-ms trailer's delay (request id {request_id})",
            retry_pushback_ms=admission.slots.pushback_ms() if admission is not None else 100,
        )


def _failure(binding: Binding, code_name: str, message: str) -> LabelFailure:
    return LabelFailure(binding.spec.label, binding.spec.model, code_name, message)


def _check_documents(documents: Sequence[Sequence[str]], limits: Limits, single: bool) -> None:
    if not documents:
        raise errors.InvalidArgument("documents is empty; send at least one document with its words")
    if len(documents) > limits.max_batch_documents:
        raise errors.InvalidArgument(
            f"documents has {len(documents)} documents; at most {limits.max_batch_documents} are allowed "
            "in one ClassifyBatch (limits.max_batch_documents): split it into smaller batches"
        )
    # A word of at most max_word_bytes // 4 characters cannot exceed the byte limit.
    short = limits.max_word_bytes // 4
    for d, words in enumerate(documents):
        field = "words" if single else f"documents[{d}].words"
        if not words:
            raise errors.InvalidArgument(
                f"{field} is empty; send the document's words, already segmented, "
                'e.g. ["霸王别姬", "是一部", "非常", "值得", "看的", "电影"]'
            )
        if len(words) > limits.max_words:
            raise errors.InvalidArgument(
                f"{field} has {len(words)} words; at most {limits.max_words} are allowed "
                "(limits.max_words): shorten or split the document"
            )
        for w, word in enumerate(words):
            if len(word) > short and len(word.encode("utf-8")) > limits.max_word_bytes:
                raise errors.InvalidArgument(
                    f"{field}[{w}] is {len(word.encode('utf-8'))} bytes long; a word may have at most "
                    f"{limits.max_word_bytes} UTF-8 bytes (limits.max_word_bytes): send segmented words"
                )


def _check_threshold(threshold: float | None) -> None:
    if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise errors.InvalidArgument(
            f"threshold must be within [0, 1], got {threshold:g}; leave it unset to use each label's configured threshold"
        )
