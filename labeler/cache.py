"""The prediction cache: a model version answers the same feature row the same
way, so its answer is kept under (model, version, signature, input, output,
feature row) and reused: one probability for a single-label model, the whole
row of L probabilities for a bundle (a bundle's version fixes its columns, so
the key needs nothing more). A new version is a new key: nothing is ever
served from another version than the one the request's snapshot uses.

Bounded in bytes (least recently used entries go first). Identical rows in
flight share one Predict: a request whose row is already being asked for
waits for that answer instead of asking again. If the request that asked is
cancelled, its Predict is cancelled too (labeler.predictor's rule) and the
requests that shared it ask for themselves.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Hashable
from typing import Any

import numpy as np

from labeler.domain import Binding, ModelCallError, Prediction
from labeler.metrics import LabelerMetrics
from labeler.predictor import Predictor

# Bytes an entry costs beyond its row's bytes: the key tuple, the bytes
# object's header, the float and the ordered-dict node (measured with
# tracemalloc on CPython 3.11, rounded up).
ENTRY_OVERHEAD_BYTES = 240

CacheKey = tuple[Hashable, bytes]
# One row's answer: a probability, or a bundle's read-only row of L of them.
RowAnswer = float | np.ndarray


def _entry_bytes(key: CacheKey, value: RowAnswer) -> int:
    extra = value.nbytes if isinstance(value, np.ndarray) else 0
    return len(key[1]) + extra + ENTRY_OVERHEAD_BYTES


def _row_answers(probabilities: np.ndarray) -> list[RowAnswer]:
    """Each row's answer: [batch] gives floats, a bundle's [batch, L] read-only rows."""
    if probabilities.ndim == 1:
        return probabilities.tolist()
    rows = np.array(probabilities, dtype=np.float64)  # our own copy, then frozen
    rows.flags.writeable = False
    return list(rows)


class PredictionCache:
    """A byte-bounded LRU map from a cache key to one row's answer."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0
        self._entries: collections.OrderedDict[CacheKey, RowAnswer] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> RowAnswer | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: CacheKey, value: RowAnswer) -> int:
        """Store one entry; returns how many entries were evicted for it."""
        size = _entry_bytes(key, value)
        if size > self.max_bytes:
            return 0
        if key in self._entries:
            self.bytes -= _entry_bytes(key, self._entries[key])
            self._entries[key] = value
            self._entries.move_to_end(key)
            self.bytes += size
            return 0
        self._entries[key] = value
        self.bytes += size
        evicted = 0
        while self.bytes > self.max_bytes:
            old, old_value = self._entries.popitem(last=False)
            self.bytes -= _entry_bytes(old, old_value)
            evicted += 1
        self.evictions += evicted
        return evicted


class _Abandoned(Exception):
    """The request that was asking for a shared row gave up or failed."""


class CachingPredictor:
    """Answers cached rows from the cache, shares rows in flight and sends only
    the rest (once each) to ``inner``."""

    def __init__(
        self, inner: Predictor, cache: PredictionCache, metrics: LabelerMetrics | None = None
    ) -> None:
        self._inner = inner
        self.cache = cache
        self._metrics = metrics
        self._in_flight: dict[CacheKey, asyncio.Future[RowAnswer]] = {}

    async def predict(self, binding: Binding, features: np.ndarray, deadline: float) -> Prediction:
        assert binding.loaded is not None
        spec = binding.spec
        version = binding.loaded.version
        scope = (
            spec.model,
            version,
            spec.signature_name,
            spec.input_name,
            spec.output_name,
            features.dtype.str,
            features.shape[1:],
        )
        rows = np.ascontiguousarray(features)
        # Filled row by row; a bundle's rows are [L] arrays (stacked at the end).
        probabilities: list[Any] = [None] * rows.shape[0]
        missed: dict[CacheKey, list[int]] = {}
        shared: dict[CacheKey, list[int]] = {}
        hits = 0
        for i in range(rows.shape[0]):
            key = (scope, rows[i].tobytes())
            value = self.cache.get(key)
            if value is not None:
                probabilities[i] = value
                hits += 1
            elif key in missed:
                missed[key].append(i)
            elif key in self._in_flight:
                shared.setdefault(key, []).append(i)
            else:
                missed[key] = [i]
        self._count(spec.model, hits, len(missed), len(shared))
        if missed:
            await self._ask(binding, rows, missed, probabilities, deadline, scope_version=version)
        if shared:
            await self._wait_shared(binding, rows, shared, probabilities, deadline, version)
        return Prediction(np.asarray(probabilities, dtype=np.float64), version)

    async def _ask(
        self,
        binding: Binding,
        rows: np.ndarray,
        missed: dict[CacheKey, list[int]],
        probabilities: list[Any],
        deadline: float,
        scope_version: int,
    ) -> None:
        """One Predict for the missed rows (each once); others may share it."""
        loop = asyncio.get_running_loop()
        owned: dict[CacheKey, asyncio.Future[RowAnswer]] = {}
        for key in missed:
            if key not in self._in_flight:
                future = owned[key] = self._in_flight[key] = loop.create_future()
                future.add_done_callback(_consume)
        try:
            first = [indices[0] for indices in missed.values()]
            prediction = await self._inner.predict(binding, rows[first], deadline)
        except BaseException:
            for key, future in owned.items():
                self._in_flight.pop(key, None)
                if not future.done():
                    future.set_exception(_Abandoned())
            raise
        cacheable = prediction.version == scope_version
        evicted = 0
        answers = _row_answers(prediction.probabilities)
        for (key, indices), value in zip(missed.items(), answers, strict=True):
            for i in indices:
                probabilities[i] = value
            if cacheable:
                evicted += self.cache.put(key, value)
            waiting = owned.get(key)
            if waiting is not None:
                self._in_flight.pop(key, None)
                waiting.set_result(value)
        if self._metrics is not None:
            if evicted:
                self._metrics.cache_evictions.labels(binding.spec.model).inc(evicted)
            self._metrics.cache_bytes.set(self.cache.bytes)

    async def _wait_shared(
        self,
        binding: Binding,
        rows: np.ndarray,
        shared: dict[CacheKey, list[int]],
        probabilities: list[Any],
        deadline: float,
        version: int,
    ) -> None:
        """Wait for rows another request is asking for; ask again for those
        whose asker gave up."""
        loop = asyncio.get_running_loop()
        again: dict[CacheKey, list[int]] = {}
        for key, indices in shared.items():
            future = self._in_flight.get(key)
            if future is None:  # answered (or abandoned) since we looked
                value = self.cache.get(key)
                if value is None:
                    again[key] = indices
                else:
                    for i in indices:
                        probabilities[i] = value
                continue
            try:
                value = await asyncio.wait_for(asyncio.shield(future), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise ModelCallError(
                    "DEADLINE_EXCEEDED", f"model {binding.spec.model} did not answer in time"
                ) from None
            except _Abandoned:
                again[key] = indices
                continue
            for i in indices:
                probabilities[i] = value
        if again:
            await self._ask(binding, rows, again, probabilities, deadline, scope_version=version)

    def _count(self, model: str, hits: int, misses: int, shared: int) -> None:
        if (m := self._metrics) is None:
            return
        for outcome, count in (("hit", hits), ("miss", misses), ("shared", shared)):
            if count:
                m.child(m.cache_lookups, model, outcome).inc(count)


def _consume(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()
