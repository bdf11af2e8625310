"""The load driver: ``concurrency`` workers call one operation back to back
until ``requests`` have been measured or ``budget_s`` has passed (a worker
finishes the call it is in), after a short warm-up. Async operations run as
tasks on one event loop; blocking ones (the old design) on threads."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Awaitable, Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class CellResult:
    """Latency percentiles (ms) and throughput of one (design, K, concurrency) cell."""

    design: str
    models: int
    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    rps: float
    first_error: str = ""
    # CPU milliseconds per request of each process (client = the load generator).
    cpu_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    # Classify only: mean documents per Predict the Labeler sent (coalescing merges them).
    docs_per_predict: float = 0.0


def summarize(
    design: str,
    models: int,
    concurrency: int,
    latencies: list[float],
    errors: list[str],
    seconds: float,
    cpu_ms: dict[str, float] | None = None,
) -> CellResult:
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    p50, p90, p99 = (float(np.percentile(lat, q)) for q in (50, 90, 99))
    rps = round(len(latencies) / seconds, 1) if seconds else 0.0
    return CellResult(
        design,
        models,
        concurrency,
        len(latencies),
        len(errors),
        round(seconds, 3),
        round(p50, 3),
        round(p90, 3),
        round(p99, 3),
        rps,
        errors[0] if errors else "",
        dict(cpu_ms or {}),
    )


class _Budget:
    def __init__(self, requests: int, budget_s: float) -> None:
        self.left = requests
        self.end = time.perf_counter() + budget_s
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.left <= 0 or time.perf_counter() > self.end:
                return False
            self.left -= 1
            return True


async def run_async(
    call: Callable[[int], Awaitable[object]], concurrency: int, requests: int, budget_s: float, warmup: int
) -> tuple[list[float], list[str], float]:
    """(latencies in s, error messages, wall seconds); ``call(i)`` serves request i."""
    await asyncio.gather(*(call(i) for i in range(warmup)))
    budget = _Budget(requests, budget_s)
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(10**9))

    async def worker() -> None:
        while budget.take():
            i = next(counter)
            start = time.perf_counter()
            try:
                await call(i)
            except Exception as exc:  # noqa: BLE001 - counted, reported with the cell
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - start


def run_threads(
    call: Callable[[int], object], concurrency: int, requests: int, budget_s: float, warmup: int
) -> tuple[list[float], list[str], float]:
    """As ``run_async`` for a blocking ``call``, with one thread per worker."""
    for i in range(warmup):
        call(i)
    budget = _Budget(requests, budget_s)
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(10**9))
    lock = threading.Lock()

    def worker() -> None:
        while budget.take():
            with lock:
                i = next(counter)
            start = time.perf_counter()
            try:
                call(i)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - start
