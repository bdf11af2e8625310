"""Overload control: bounded work in flight, refused early with a pushback.

Two bounds (config ``overload``): Classify calls running in the Labeler
(``AdmissionGate``) and Predicts in flight per model server target
(``LimitedPredictor``). A call that cannot get a slot within its share of the
caller's deadline is refused at once with RESOURCE_EXHAUSTED carrying a
``retry_pushback_ms`` (sent as the ``grpc-retry-pushback-ms`` trailer), never
left to time out in a queue: the caller learns to back off, and the calls
that were admitted keep their latency.

No gRPC here (the core's rule); rpc.server turns the error into the status.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import time
from collections.abc import AsyncIterator

import numpy as np

from labeler.config import Overload
from labeler.domain import Binding, ModelCallError, Prediction
from labeler.metrics import LabelerMetrics
from labeler.predictor import Predictor
from rpc import errors

# Pushback bounds: soon enough to use a free slot, late enough to let the
# queue drain; jittered so refused callers do not come back together.
_PUSHBACK_MIN_MS = 10
_PUSHBACK_MAX_MS = 5000
# Weight of the newest sample in the moving average of a slot's holding time.
_EWMA_WEIGHT = 0.1


class Slots:
    """At most ``limit`` holders; waiters queue FIFO (at most ``max_queued``)
    for at most the time they are given. A freed slot passes straight to the
    first waiter, so a newcomer cannot overtake the queue."""

    def __init__(self, limit: int, max_queued: int | None = None) -> None:
        self.limit = limit
        self.max_queued = max_queued
        self.running = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.hold_s = 0.01  # moving average of how long a slot is held
        # High-water marks: what the bounds held to (tests, introspection).
        self.peak_running = 0
        self.peak_queued = 0

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def resize(self, limit: int, max_queued: int | None) -> None:
        self.limit, self.max_queued = limit, max_queued
        while self.running < self.limit and self._wake_one():
            self.running += 1

    async def acquire(self, wait_s: float) -> bool:
        """Take a slot, waiting at most ``wait_s``; False if none came (or
        the queue is full)."""
        if self.running < self.limit and not self._waiters:
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
            return True
        if wait_s <= 0 or (self.max_queued is not None and len(self._waiters) >= self.max_queued):
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.peak_queued = max(self.peak_queued, len(self._waiters))
        try:
            # asyncio.timeout, not wait_for: no extra task and futures per waiter.
            async with asyncio.timeout(wait_s):
                await waiter
            return True
        except TimeoutError:
            return self._gave_up(waiter)
        except asyncio.CancelledError:
            if self._gave_up(waiter):
                self.release(0.0)  # the slot was handed to us as we left: pass it on
            raise

    def _gave_up(self, waiter: asyncio.Future[None]) -> bool:
        """Whether the slot arrived anyway (it is ours then)."""
        if waiter.done() and not waiter.cancelled():
            return True
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        return False

    def release(self, held_s: float) -> None:
        if held_s > 0:
            self.hold_s += _EWMA_WEIGHT * (held_s - self.hold_s)
        self.running -= 1
        if self.running < self.limit and self._wake_one():
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)

    def _wake_one(self) -> bool:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return True
        return False

    def pushback_ms(self) -> int:
        """When a refused caller may find a slot: the queue ahead of it,
        drained ``limit`` at a time at the average holding time."""
        rounds = (len(self._waiters) + 1) / max(self.limit, 1)
        estimate = self.hold_s * 1000 * max(rounds, 1.0) * random.uniform(1.0, 1.5)
        return int(min(max(estimate, _PUSHBACK_MIN_MS), _PUSHBACK_MAX_MS))


def wait_budget(settings: Overload, time_remaining: float | None) -> float:
    """How long a call may wait for a slot: its share of what is left of its
    deadline, and never more than ``max_queue_wait_s``."""
    if time_remaining is None:
        return settings.max_queue_wait_s
    return max(0.0, min(settings.max_queue_wait_s, settings.queue_deadline_share * time_remaining))


class AdmissionGate:
    """Bounds the Classify calls running in the Labeler."""

    def __init__(self, settings: Overload, metrics: LabelerMetrics | None = None) -> None:
        self.settings = settings
        self.slots = Slots(settings.max_classify_in_flight, settings.max_classify_queued)
        self.refused = 0
        self._metrics = metrics

    def update(self, settings: Overload) -> None:
        self.settings = settings
        self.slots.resize(settings.max_classify_in_flight, settings.max_classify_queued)

    def overloaded(self) -> bool:
        """True while calls wait for a slot: the moment to shed optional work
        (shadow scoring) before any caller is refused."""
        return self.settings.enabled and self.slots.queued > 0

    def _refuse(self, why: str) -> errors.ResourceExhausted:
        self.refused += 1
        if self._metrics is not None:
            self._metrics.overload_refused.labels("classify").inc()
        return errors.ResourceExhausted(
            f"{why}; retry after the grpc-retry-pushback-ms trailer's delay, with backoff "
            "(docs/clients.md has a retry policy)",
            retry_pushback_ms=self.slots.pushback_ms(),
        )

    @contextlib.asynccontextmanager
    async def admit(self, time_remaining: float | None) -> AsyncIterator[float]:
        """Hold a slot for the body; yields the seconds spent waiting. Raises
        ResourceExhausted (with a pushback) when no slot comes in time."""
        if not self.settings.enabled:
            yield 0.0
            return
        started = time.perf_counter()
        wait_s = wait_budget(self.settings, time_remaining)
        if time_remaining is not None:
            if time_remaining < self.slots.hold_s and self.slots.running > 0:
                # Less time left than a call takes now (the call waited in
                # the server before it got here): doing the work would end
                # in DEADLINE_EXCEEDED and take the CPU the others need.
                # (Not while nothing runs: the estimate may be stale then,
                # and only a call can refresh it.)
                raise self._refuse(
                    f"the call has {time_remaining * 1000:.0f} ms of its deadline left, less than a call "
                    f"takes now ({self.slots.hold_s * 1000:.0f} ms): the Labeler is overloaded "
                    f"({self.slots.running} calls running; overload.max_classify_in_flight is {self.slots.limit})"
                )
            # Waiting longer would leave less than a call usually takes.
            wait_s = min(wait_s, time_remaining - self.slots.hold_s)
        if not await self.slots.acquire(wait_s):
            raise self._refuse(
                f"the Labeler is at capacity ({self.slots.running} calls running, {self.slots.queued} "
                f"waiting; overload.max_classify_in_flight is {self.slots.limit})"
            )
        admitted = time.perf_counter()
        try:
            yield admitted - started
        finally:
            self.slots.release(time.perf_counter() - admitted)


class LimitedPredictor:
    """At most ``max_predicts_per_target`` Predicts in flight to each model
    server target (below coalescing: a coalesced batch is one Predict), so
    the model server is not handed more than it can run. The callers are
    admitted Classify calls (bounded by the gate), so they may wait for a
    slot; one that could no longer finish in time fails at once with
    RESOURCE_EXHAUSTED rather than at its deadline.

    A target's bound is never below the number of models configured on it
    (``set_fanout``): one admitted Classify's fan-out goes out at once rather
    than in waves (measured with 64 binary models and a bound of 32: waves
    cost the Labeler about 40 µs of CPU per model call, and latency)."""

    def __init__(self, inner: Predictor, settings: Overload, metrics: LabelerMetrics | None = None) -> None:
        self._inner = inner
        self.settings = settings
        self._targets: dict[str, Slots] = {}
        self._fanout: dict[str, int] = {}
        self._metrics = metrics

    def _limit(self, target: str) -> int:
        return max(self.settings.max_predicts_per_target, self._fanout.get(target, 0))

    def set_fanout(self, models_per_target: dict[str, int]) -> None:
        """The models configured per target (the registry's snapshot)."""
        self._fanout = dict(models_per_target)
        for target, slots in self._targets.items():
            if slots.limit != self._limit(target):
                slots.resize(self._limit(target), None)

    def slots(self, target: str) -> Slots:
        slots = self._targets.get(target)
        if slots is None:
            slots = self._targets[target] = Slots(self._limit(target))
        return slots

    def pushback_ms(self, target: str) -> int:
        return self.slots(target).pushback_ms()

    async def predict(self, binding: Binding, features: np.ndarray, deadline: float) -> Prediction:
        slots = self.slots(binding.spec.target)
        # The Classify is admitted already: its Predicts may wait while a
        # Predict could still finish in time (the average holding time).
        remaining = deadline - asyncio.get_running_loop().time()
        if not await slots.acquire(remaining - slots.hold_s):
            if self._metrics is not None:
                self._metrics.overload_refused.labels("predict").inc()
            raise ModelCallError(
                "RESOURCE_EXHAUSTED",
                f"{slots.running} Predicts already in flight to {binding.spec.target} "
                f"(overload.max_predicts_per_target is {slots.limit})",
            )
        started = time.perf_counter()
        try:
            return await self._inner.predict(binding, features, deadline)
        finally:
            slots.release(time.perf_counter() - started)
