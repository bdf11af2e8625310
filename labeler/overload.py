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
import dataclasses
import random
import sys
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
# Weights of the newest sample in the moving average of a slot's holding
# time: it follows a rise at once and a fall slowly, so under growing load
# it errs long (a call refused that might have made it) rather than short (a
# call admitted that cannot finish, whose work, the model servers' included,
# is thrown away at its deadline).
_EWMA_UP = 0.5
_EWMA_DOWN = 0.05


class Slots:
    """At most ``limit`` holders; waiters queue (at most ``max_queued``) for
    at most the time they are given. A freed slot passes straight to a
    waiter, so a newcomer cannot overtake the queue.

    Under sustained congestion (the queue not empty for ``congestion_interval_s``)
    two things change, as in Facebook's "Fail at Scale": a new waiter waits at
    most ``congested_wait_s`` (CoDel-style: a standing queue only adds delay),
    and the newest waiter is served first (adaptive LIFO: it has the most of
    its deadline left, the oldest is the likeliest to expire anyway). While
    the queue drains now and then, it is first come, first served."""

    def __init__(
        self,
        limit: int,
        max_queued: int | None = None,
        congested_wait_s: float | None = None,
        congestion_interval_s: float = 0.1,
    ) -> None:
        self.limit = limit
        self.max_queued = max_queued
        self.congested_wait_s = congested_wait_s
        self.congestion_interval_s = congestion_interval_s
        self.running = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._busy_since = 0.0  # when the queue last went from empty to not empty
        self.hold_s = 0.01  # moving average of how long a slot is held (quick up, slow down)
        # High-water marks: what the bounds held to (tests, introspection).
        self.peak_running = 0
        self.peak_queued = 0
        self.lifo_wakeups = 0  # slots handed to the newest waiter (congested)

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def resize(
        self,
        limit: int,
        max_queued: int | None,
        congested_wait_s: float | None = None,
        congestion_interval_s: float | None = None,
    ) -> None:
        self.limit, self.max_queued = limit, max_queued
        if congested_wait_s is not None:
            self.congested_wait_s = congested_wait_s
        if congestion_interval_s is not None:
            self.congestion_interval_s = congestion_interval_s
        while self.running < self.limit and self._wake_one():
            self.running += 1

    def congested(self, now: float | None = None) -> bool:
        """The queue has not been empty for ``congestion_interval_s``."""
        if not self._waiters or self.congested_wait_s is None:
            return False
        return (time.monotonic() if now is None else now) - self._busy_since >= self.congestion_interval_s

    def full(self) -> bool:
        """No slot free and no room to wait: a call now would be refused."""
        return (
            self.running >= self.limit
            and self.max_queued is not None
            and len(self._waiters) >= self.max_queued
        )

    async def acquire(self, wait_s: float) -> bool:
        """Take a slot, waiting at most ``wait_s`` (less while congested);
        False if none came (or the queue is full)."""
        if self.running < self.limit and not self._waiters:
            self.running += 1
            if self.running > self.peak_running:
                self.peak_running = self.running
            return True
        if self.congested_wait_s is not None and self.congested():
            wait_s = min(wait_s, self.congested_wait_s)
        if wait_s <= 0 or (self.max_queued is not None and len(self._waiters) >= self.max_queued):
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self._waiters:
            self._busy_since = time.monotonic()
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
            weight = _EWMA_UP if held_s > self.hold_s else _EWMA_DOWN
            self.hold_s += weight * (held_s - self.hold_s)
        self.running -= 1
        if self.running < self.limit and self._wake_one():
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)

    def _wake_one(self) -> bool:
        lifo = self.congested()
        while self._waiters:
            waiter = self._waiters.pop() if lifo else self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.lifo_wakeups += lifo
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


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why a call was not admitted: the metric's stage, the status message
    and the pushback to send (grpc-retry-pushback-ms). Stage "expired" (the
    call's own deadline is all but gone) is the caller's DEADLINE_EXCEEDED,
    not overload: no pushback, nothing for a retry policy to retry."""

    # "classify" (no slot in time), "deadline" (less left than a call takes
    # now) or "expired" (less than MIN_USEFUL_S left)
    stage: str
    message: str
    retry_pushback_ms: int

    @property
    def code(self) -> str:
        return "DEADLINE_EXCEEDED" if self.stage == "expired" else "RESOURCE_EXHAUSTED"

    def error(self) -> errors.ServiceError:
        if self.stage == "expired":
            return errors.DeadlineExceeded(self.message)
        return errors.ResourceExhausted(self.message, retry_pushback_ms=self.retry_pushback_ms)


# Less of its deadline left than this, a call cannot be answered in time
# whatever the estimate says (one Predict round trip and the answer).
MIN_USEFUL_S = 0.02


def _slot_limit(settings: Overload) -> int:
    return settings.max_classify_in_flight if settings.enabled else sys.maxsize


_RETRY_HINT = "retry after the grpc-retry-pushback-ms trailer's delay, with backoff (docs/clients.md has a retry policy)"


class AdmissionGate:
    """Bounds the Classify calls running in the Labeler.

    ``enter``/``leave`` are the hot path (the admission interceptor, which
    runs before the request is even parsed); ``admit`` wraps them for code
    that wants a context manager and an exception."""

    def __init__(self, settings: Overload, metrics: LabelerMetrics | None = None) -> None:
        self.settings = settings
        self.slots = Slots(
            _slot_limit(settings),
            settings.max_classify_queued,
            settings.congested_queue_wait_s,
            settings.congestion_interval_s,
        )
        self.refused = 0
        self._metrics = metrics
        self._messages = self._prebuilt(settings)

    def update(self, settings: Overload) -> None:
        self.settings = settings
        self.slots.resize(
            _slot_limit(settings),
            settings.max_classify_queued,
            settings.congested_queue_wait_s,
            settings.congestion_interval_s,
        )
        self._messages = self._prebuilt(settings)

    @staticmethod
    def _prebuilt(settings: Overload) -> dict[str, str]:
        """The refusal messages, built once per setting (not per refused call)."""
        bounds = (
            f"overload.max_classify_in_flight is {settings.max_classify_in_flight}, "
            f"overload.max_classify_queued {settings.max_classify_queued}"
        )
        return {
            "classify": f"the Labeler is at capacity ({bounds}); {_RETRY_HINT}",
            "deadline": (
                "the call has less of its deadline left than a call takes now: the Labeler is "
                f"overloaded ({bounds}); {_RETRY_HINT}"
            ),
            "expired": (
                f"the call's deadline left less than {MIN_USEFUL_S * 1000:.0f} ms, too little to ask the "
                "label models; give the call a deadline of at least 100 ms"
            ),
        }

    def overloaded(self) -> bool:
        """True while calls wait for a slot: the moment to shed optional work
        (shadow scoring) before any caller is refused."""
        return self.settings.enabled and self.slots.queued > 0

    def refusal_now(self) -> Refusal | None:
        """The refusal a call arriving now gets before anything else is done
        for it (no slot and no room to wait), else None."""
        if self.settings.enabled and self.slots.full():
            return self.refuse("classify")
        return None

    def refuse(self, stage: str) -> Refusal:
        self.refused += 1
        if self._metrics is not None:
            self._metrics.child(self._metrics.overload_refused, stage).inc()
        return Refusal(stage, self._messages[stage], self.slots.pushback_ms() if stage != "expired" else 0)

    async def enter(self, time_remaining: float | None) -> Refusal | None:
        """Take a slot for a call with ``time_remaining`` seconds left (None:
        no deadline); None when admitted (``leave`` must follow), else why not.

        Rules, in order: (1) overload control off: admitted; (2) less time
        left than a call takes now: refused at once (the work would end in
        DEADLINE_EXCEEDED and take the CPU others need). While nothing runs
        the estimate may be stale and only a call can refresh it, so then it
        is not applied. Less than ``MIN_USEFUL_S`` left is refused always,
        as DEADLINE_EXCEEDED (the caller's deadline, not overload; a flood's
        oldest calls arrive so, and each one let in would cost the whole
        request path); (3) a free slot: admitted; (4) wait for one at
        most the call's share of its deadline, never so long that less than a
        call's duration would be left, and only briefly while congested
        (Slots); none in time: refused."""
        slots = self.slots
        if not self.settings.enabled:
            await slots.acquire(0.0)  # unbounded: counted only, so a reload can turn control on
            return None
        wait_s = wait_budget(self.settings, time_remaining)
        if time_remaining is not None:
            if time_remaining < min(slots.hold_s, MIN_USEFUL_S):
                return self.refuse("expired")
            if time_remaining < slots.hold_s and slots.running > 0:
                return self.refuse("deadline")
            wait_s = min(wait_s, time_remaining - slots.hold_s)
        if await slots.acquire(wait_s):
            return None
        return self.refuse("classify")

    def leave(self, held_s: float, answered: bool = True) -> None:
        """Free the slot. Only the duration of a call that was answered (or
        ran until its deadline) feeds the estimate of how long a call takes:
        a call that failed fast (its deadline nearly gone) would drag the
        estimate down, let in more calls that cannot finish, and feed on
        itself."""
        self.slots.release(held_s if answered else 0.0)

    @contextlib.asynccontextmanager
    async def admit(self, time_remaining: float | None) -> AsyncIterator[float]:
        """Hold a slot for the body; yields the seconds spent waiting. Raises
        ResourceExhausted (with a pushback) when no slot comes in time."""
        started = time.perf_counter()
        refusal = await self.enter(time_remaining)
        if refusal is not None:
            raise refusal.error()
        admitted = time.perf_counter()
        answered = False
        try:
            yield admitted - started
            answered = True
        finally:
            self.leave(time.perf_counter() - admitted, answered)


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
