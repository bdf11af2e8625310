"""Job events for Watch: state changes and log lines, fanned out to every
subscriber of a job. Everything runs on the server's event loop."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Callable

from trainer.domain import JobRecord

# A watcher that reads slower than its job logs loses lines beyond this, and
# is told how many; state changes are never dropped.
MAX_PENDING_LINES = 10_000


@dataclasses.dataclass(frozen=True)
class JobEvent:
    job: JobRecord | None = None
    line: str | None = None
    # The job ended: nothing more will come.
    final: bool = False


class Subscription:
    def __init__(self) -> None:
        self._pending: collections.deque[JobEvent] = collections.deque()
        self._ready = asyncio.Event()
        self._lines = 0
        self.dropped = 0
        self.closed = False

    def push(self, event: JobEvent) -> None:
        if event.line is not None:
            if self._lines >= MAX_PENDING_LINES:
                self.dropped += 1
                return
            self._lines += 1
        self._pending.append(event)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def next(self) -> JobEvent | None:
        """The next event; None once closed and drained."""
        while not self._pending:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            return JobEvent(line=f"[trainer] {dropped} log line(s) dropped: this watcher read too slowly")
        event = self._pending.popleft()
        if event.line is not None:
            self._lines -= 1
        return event


class EventHub:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[Subscription]] = collections.defaultdict(set)
        # Called with every job's state changes (not log lines): the sweep driver.
        self._listeners: list[Callable[[str, JobEvent], None]] = []

    def listen(self, callback: Callable[[str, JobEvent], None]) -> None:
        self._listeners.append(callback)

    def subscribe(self, job_id: str) -> Subscription:
        sub = Subscription()
        self._subscribers[job_id].add(sub)
        return sub

    def unsubscribe(self, job_id: str, sub: Subscription) -> None:
        subs = self._subscribers.get(job_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[job_id]

    def publish(self, job_id: str, event: JobEvent) -> None:
        if event.job is not None:
            for callback in self._listeners:
                callback(job_id, event)
        for sub in list(self._subscribers.get(job_id, ())):
            sub.push(event)

    def close(self) -> None:
        for subs in self._subscribers.values():
            for sub in subs:
                sub.close()
