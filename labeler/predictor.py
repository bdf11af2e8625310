"""How the core sends a batch of feature rows to one label's model.

``DirectPredictor`` sends one Predict per call over the target's shared
channel. ``CoalescingPredictor`` merges concurrent calls for the same model
version into one batched Predict (the unit of work is already a batch of
documents, so a Classify is just a batch of one).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import numpy as np

from labeler.domain import Binding, LabelState, ModelCallError, Prediction
from labeler.metrics import LabelerMetrics
from labeler.model_client import ClientPool
from rpc.tracing import Tracing


class Predictor(Protocol):
    async def predict(self, binding: Binding, features: np.ndarray, deadline: float) -> Prediction: ...


class DirectPredictor:
    """One Predict per call, pinned to the binding's loaded version."""

    def __init__(
        self, clients: ClientPool, metrics: LabelerMetrics | None = None, tracing: Tracing | None = None
    ) -> None:
        self._clients = clients
        self._metrics = metrics
        self._tracing = tracing  # None: tracing off, nothing recorded or allocated

    async def predict(self, binding: Binding, features: np.ndarray, deadline: float) -> Prediction:
        if self._tracing is not None:
            return await self._traced_predict(self._tracing, binding, features, deadline)
        return await self._predict(binding, features, deadline)

    async def _traced_predict(
        self, tracing: Tracing, binding: Binding, features: np.ndarray, deadline: float
    ) -> Prediction:
        """The Predict inside a CLIENT span whose context goes to the model server."""
        spec = binding.spec
        attributes = {
            "labeler.label": spec.label,
            "labeler.model": spec.model,
            "labeler.model_version": binding.loaded.version if binding.loaded else 0,
            "labeler.target": spec.target,
            "labeler.arm": spec.arm,
            "labeler.documents": int(features.shape[0]),
        }
        with tracing.client_span("tensorflow.serving.PredictionService/Predict", attributes) as span:
            try:
                prediction = await self._predict(binding, features, deadline, span.metadata)
            except ModelCallError as exc:
                span.set_outcome(exc.code_name)
                raise
            span.set_outcome("OK")
            return prediction

    async def _predict(
        self,
        binding: Binding,
        features: np.ndarray,
        deadline: float,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> Prediction:
        spec = binding.spec
        assert binding.loaded is not None
        client = self._clients.get(spec.target)
        start = time.perf_counter()
        try:
            return await client.predict(
                spec.model,
                binding.loaded.version,
                spec.signature_name,
                spec.input_name,
                spec.output_name,
                features,
                deadline,
                # While the poller finds the server down, fail fast rather than
                # hold every request for the model's whole timeout; the poller
                # notices when it is back.
                retry_unavailable=binding.state is not LabelState.UNAVAILABLE,
                metadata=metadata,
                # A bundle answers [batch, L], L the labels its version's artifacts name.
                columns=len(binding.loaded.columns) if spec.bundle else None,
            )
        except ModelCallError as exc:
            if self._metrics is not None:
                self._metrics.child(self._metrics.predict_errors, spec.model, exc.code_name).inc()
            raise
        finally:
            if (m := self._metrics) is not None:
                m.child(m.predict_latency, spec.model).observe(time.perf_counter() - start)
                m.child(m.predict_documents, spec.model).observe(features.shape[0])


class _PendingBatch:
    def __init__(self, binding: Binding) -> None:
        self.binding = binding
        self.parts: list[np.ndarray] = []
        self.waiters: list[asyncio.Future[Prediction]] = []
        self.rows = 0
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        # Members still waiting for the answer, and the Predict once sent:
        # when the last member gives up (cancelled, or its deadline), the
        # Predict is cancelled too (or never sent), so the model server
        # stops working for nobody.
        self.live = 0
        self.task: asyncio.Task | None = None


class CoalescingPredictor:
    """Merges concurrent predicts for one (target, model, version) into one
    Predict of up to ``max_documents`` rows.

    Adaptive, so a lone caller pays no delay: when no Predict for the model is
    in flight, a batch goes out at the end of the current event-loop turn
    (whatever arrived in that turn joins it). While one is in flight, new
    callers gather and go out when it returns, after ``max_delay_s`` at most.
    Each caller still waits only until its own deadline; the batch runs until
    the latest deadline of its members."""

    def __init__(self, inner: Predictor, max_delay_s: float, max_documents: int) -> None:
        self._inner = inner
        self._max_delay_s = max_delay_s
        self._max_documents = max_documents
        self._pending: dict[tuple, _PendingBatch] = {}
        self._running: set[asyncio.Task] = set()
        self._in_flight: dict[tuple, int] = {}

    async def predict(self, binding: Binding, features: np.ndarray, deadline: float) -> Prediction:
        if features.shape[0] >= self._max_documents:
            return await self._inner.predict(binding, features, deadline)
        spec = binding.spec
        assert binding.loaded is not None
        key = (
            spec.target,
            spec.model,
            binding.loaded.version,
            spec.signature_name,
            spec.input_name,
            spec.output_name,
        )
        batch = self._pending.get(key)
        if batch is not None and batch.rows + features.shape[0] > self._max_documents:
            self._flush(key)
            batch = None
        loop = asyncio.get_running_loop()
        if batch is None:
            batch = self._pending[key] = _PendingBatch(binding)
            if self._in_flight.get(key, 0):
                batch.timer = loop.call_later(self._max_delay_s, self._flush, key)
            else:
                loop.call_soon(self._flush, key)
        start = batch.rows
        waiter: asyncio.Future[Prediction] = loop.create_future()
        # A member that gave up (its deadline) leaves the outcome unread.
        waiter.add_done_callback(_consume)
        batch.parts.append(features)
        batch.waiters.append(waiter)
        batch.rows += features.shape[0]
        batch.live += 1
        batch.deadline = max(batch.deadline, deadline)
        if batch.rows >= self._max_documents:
            self._flush(key)
        remaining = deadline - loop.time()
        try:
            whole = await asyncio.wait_for(asyncio.shield(waiter), max(remaining, 0.0))
        except TimeoutError:
            self._leave(key, batch)
            raise ModelCallError("DEADLINE_EXCEEDED", f"model {spec.model} did not answer in time") from None
        except asyncio.CancelledError:
            self._leave(key, batch)
            raise
        return Prediction(whole.probabilities[start : start + features.shape[0]], whole.version)

    def _flush(self, key: tuple) -> None:
        batch = self._pending.pop(key, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        if batch.live <= 0:
            return  # every member left before it was sent
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        task = batch.task = asyncio.ensure_future(self._send(key, batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _send(self, key: tuple, batch: _PendingBatch) -> None:
        features = batch.parts[0] if len(batch.parts) == 1 else np.concatenate(batch.parts)
        try:
            result = await self._inner.predict(batch.binding, features, batch.deadline)
        except BaseException as exc:  # noqa: BLE001 - handed to every member
            self._done(key)
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_exception(
                        exc if isinstance(exc, ModelCallError) else ModelCallError("INTERNAL", str(exc))
                    )
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self._done(key)
        for waiter in batch.waiters:
            if not waiter.done():
                waiter.set_result(result)

    def _leave(self, key: tuple, batch: _PendingBatch) -> None:
        """A member gave up; the last one to go takes the Predict with it."""
        batch.live -= 1
        if batch.live > 0:
            return
        if self._pending.get(key) is batch:
            self._pending.pop(key)
            if batch.timer is not None:
                batch.timer.cancel()
        elif batch.task is not None and not batch.task.done():
            batch.task.cancel()

    def _done(self, key: tuple) -> None:
        """A Predict returned: the callers that gathered meanwhile go now."""
        left = self._in_flight.get(key, 1) - 1
        if left:
            self._in_flight[key] = left
        else:
            self._in_flight.pop(key, None)
            self._flush(key)


def _consume(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()
