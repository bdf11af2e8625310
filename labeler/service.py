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

from labeler import bundles, shared_features
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
from labeler.overload import AdmissionGate
from labeler.predictor import Predictor
from labeler.registry import ModelRegistry, Snapshot
from labeler.rollout import Rollouts
from rpc import errors

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What one request asks: binary labels, one call per bundle, and the
    labels that failed before any call (bound twice)."""

    selected: list[Binding]
    bundle_calls: list[bundles.BundleCall]
    early_failures: list[LabelFailure]


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
    ) -> None:
        self._registry = registry
        self._predictor = predictor
        self._admission = admission
        self._rollouts = rollouts  # canary/shadow routing and per-label metrics

    def use_predictor(self, predictor: Predictor) -> None:
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
                **self._candidates(b.spec.label),
            )
            for b in self._registry.snapshot().bindings.values()
        ]

    def _candidates(self, label: str) -> dict:
        if self._rollouts is None:
            return {}
        canary, shadow = self._rollouts.describe(label)
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

    async def _classify(
        self,
        documents: Sequence[Sequence[str]],
        labels: Sequence[str],
        threshold: float | None,
        time_remaining: float | None,
        single: bool,
    ) -> BatchResult:
        started = time.perf_counter()
        snapshot = self._registry.snapshot()  # one table for the whole request
        _check_documents(documents, snapshot.settings.limits, single)
        _check_threshold(threshold)
        selected = _select(snapshot, labels)
        # Multi-label models: one Predict per bundle; labels bound twice fail by name.
        table = snapshot.bundle_table
        bundle_calls, early_failures = bundles.plan(table, list(snapshot.bundles.values()), labels)
        if table.conflicts:
            selected = [b for b in selected if b.spec.label not in table.conflicts]
        if time_remaining is not None and time_remaining < _MIN_USEFUL_DEADLINE_S:
            raise errors.DeadlineExceeded(
                f"the call's deadline left {max(time_remaining, 0.0) * 1000:.1f} ms, too little to ask the label "
                "models; give the call a deadline of at least 100 ms"
            )

        plan = _Plan(selected, bundle_calls, early_failures)
        if self._admission is None:
            return await self._run(plan, documents, threshold, time_remaining, started)
        async with self._admission.admit(time_remaining) as waited_s:
            if time_remaining is not None:
                time_remaining -= waited_s
            return await self._run(plan, documents, threshold, time_remaining, started)

    async def _run(
        self,
        plan: _Plan,
        documents: Sequence[Sequence[str]],
        threshold: float | None,
        time_remaining: float | None,
        started: float,
    ) -> BatchResult:
        selected, bundle_calls = plan.selected, plan.bundle_calls
        loop = asyncio.get_running_loop()
        budget = None
        if time_remaining is not None:
            budget = max(0.0, time_remaining - min(_ANSWER_MARGIN_S, 0.1 * time_remaining))
        now = loop.time()
        calls = selected + [c.binding for c in bundle_calls]
        deadlines = [now + min(b.spec.timeout_s, budget if budget is not None else math.inf) for b in calls]
        shared_features.begin_request()  # models with identical feature artifacts share features
        outcomes = await self._score_all(calls, documents, deadlines)

        results: list[list[LabelScore]] = [[] for _ in documents]
        failures: list[LabelFailure] = list(plan.early_failures)
        for call, outcome in zip(bundle_calls, outcomes[len(selected) :], strict=True):
            bundles.collect(call, outcome, threshold, results, failures)
        for binding, outcome in zip(selected, outcomes, strict=False):
            spec = binding.spec
            if isinstance(outcome, LabelFailure):
                failures.append(outcome)
                continue
            cut = spec.threshold if threshold is None else threshold
            versions = outcome.versions
            for i, p in enumerate(outcome.probabilities.tolist()):
                if p >= cut:
                    version = versions[i] if versions is not None else outcome.version
                    results[i].append(LabelScore(spec.label, p, spec.model, version))
        for found in results:
            found.sort(key=lambda s: -s.probability)

        # Only a request that logs or fails needs an id (uuid4 reads os.urandom).
        request_id = uuid.uuid4().hex[:12] if failures or log.isEnabledFor(logging.DEBUG) else ""
        if failures:
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
                "request %s: %d document(s), %d label(s), found %s, %d failure(s), %.1f ms",
                request_id,
                len(documents),
                len(selected),
                [[s.label for s in r] for r in results[:4]],
                len(failures),
                (time.perf_counter() - started) * 1000,
            )
        asked = len(selected) + sum(len(c.labels) for c in bundle_calls) + len(plan.early_failures)
        if failures and len(failures) == asked:
            _raise_if_overloaded(failures, self._admission, request_id)
            raise errors.Unavailable(
                "no label could be scored: "
                + "; ".join(f"{f.label} ({f.model}): {f.code_name}: {f.message}" for f in failures)
                + f" (request id {request_id})"
            )
        return BatchResult(results, failures)

    async def _score_all(
        self, selected: Sequence[Binding], documents: Sequence[Sequence[str]], deadlines: Sequence[float]
    ) -> list[Prediction | LabelFailure]:
        """Every label at once; a label still running at its deadline is a failure."""
        if not selected:
            return []
        tasks = [
            asyncio.ensure_future(self._score(b, documents, d))
            for b, d in zip(selected, deadlines, strict=False)
        ]
        try:
            # Belt and braces: every call inside is bounded by its deadline, and
            # so is the whole, with one timer rather than one per label.
            timeout = max(deadlines) - asyncio.get_running_loop().time() + 0.02
            await asyncio.wait(tasks, timeout=max(timeout, 0.0))
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
        return [
            task.result()
            if task.done() and not task.cancelled()
            else _failure(b, "DEADLINE_EXCEEDED", f"model {b.spec.model} did not answer in time")
            for b, task in zip(selected, tasks, strict=False)
        ]

    async def _score(
        self, binding: Binding, documents: Sequence[Sequence[str]], deadline: float
    ) -> Prediction | LabelFailure:
        """One label's probabilities for the batch, or why there are none."""
        try:
            if self._rollouts is not None:
                return await self._rollouts.score(
                    binding, documents, deadline, self._predict, self._predictor
                )
            return await self._predict(binding, documents, deadline)
        except ModelCallError as exc:
            return _failure(binding, exc.code_name, exc.message)

    async def _predict(
        self, binding: Binding, documents: Sequence[Sequence[str]], deadline: float
    ) -> Prediction:
        if binding.loaded is None:
            raise ModelCallError(
                "UNAVAILABLE", f"no version of model {binding.spec.model} is loaded yet: {binding.message}"
            )
        features = shared_features.transform(binding.loaded.pipeline, documents)
        try:
            return _answered(binding, await self._predictor.predict(binding, features, deadline))
        except ModelCallError as exc:
            if binding.previous is not None and exc.code_name in _NOT_SERVED:
                return await self._fall_back(binding, documents, deadline, exc)
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
            features = shared_features.transform(fresh.loaded.pipeline, documents)
            return _answered(fresh, await self._predictor.predict(fresh, features, deadline))

    async def _fall_back(
        self, binding: Binding, documents: Sequence[Sequence[str]], deadline: float, error: ModelCallError
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
                features = shared_features.transform(chosen.loaded.pipeline, documents)
                return _answered(chosen, await self._predictor.predict(chosen, features, deadline))
            except ModelCallError as exc:
                if exc.code_name not in _NOT_SERVED:
                    raise
                error = exc
        raise error


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


def _select(snapshot: Snapshot, labels: Sequence[str]) -> list[Binding]:
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
