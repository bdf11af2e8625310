"""The job store as the event loop uses it: never waiting on SQLite's locks.

Measured (docs/trainer.md): with another process holding the store's write
lock, every write on the event loop stalled every RPC for as long as the
lock was held (up to ``busy_timeout``, 10 s). Here:

- **Writes** go to one writer thread, in the order they were made (a queue;
  one connection). A write that finds the file locked waits there (and is
  tried again past ``busy_timeout``), so none is lost; the caller does not
  wait. Until a write is on disk its record is *pending*: reads see it.
- **Reads** for RPCs (Status, List, the sweeps') use a second connection:
  in WAL mode a reader never waits on a writer, in this process or another.
  They see the pending records over what the file holds.
- **The scheduler's reads** (the queue's head, jobs in a state) run on the
  writer thread behind its own writes (``await``), so they always see them:
  the scheduler waits while the file is locked, the RPCs do not.

``insert`` (Start) queues its write too: an idempotency key is checked
against the pending inserts and the file (and again by the writer, in one
transaction).
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import logging
import pathlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from trainer import lifecycle
from trainer.domain import JobRecord, JobState, SweepRecord, SweepState
from trainer.store import JobStore

log = logging.getLogger(__name__)
T = TypeVar("T")

# A write that found the store locked past busy_timeout is tried again after this long.
RETRY_S = 0.5


class QueuedStore:
    def __init__(self, path: str | pathlib.Path) -> None:
        self.path = pathlib.Path(path)
        self._writer = JobStore(path)
        self._reader = JobStore(path)
        self._lock = threading.Lock()
        self._pending: dict[str, JobRecord] = {}
        self._pending_keys: dict[str, str] = {}  # idempotency key -> job id, inserts not yet written
        self._pending_sweeps: dict[str, SweepRecord] = {}
        self._pending_sweep_keys: dict[str, str] = {}
        self._queue: queue.SimpleQueue[
            tuple[Callable[[], Any], concurrent.futures.Future, Callable[[], None]] | None
        ] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="job-store-writer", daemon=True)
        self._thread.start()

    # -- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            work, future, settle = item
            if not future.set_running_or_notify_cancel():
                settle()  # a read nobody waits for any more (writes are never cancelled)
                continue
            while True:
                try:
                    result = work()
                except sqlite3.OperationalError as exc:
                    if "locked" in str(exc) or "busy" in str(exc):
                        log.warning("job store locked (%s): trying the write again in %gs", exc, RETRY_S)
                        time.sleep(RETRY_S)
                        continue
                    log.error("job store write failed: %s", exc)
                    future.set_exception(exc)
                except BaseException as exc:  # noqa: BLE001 - handed to whoever waits; logged if nobody does
                    log.error("job store write refused: %s", exc)
                    future.set_exception(exc)
                else:
                    future.set_result(result)
                break
            settle()

    def _submit(
        self, work: Callable[[], T], settle: Callable[[], None] = lambda: None
    ) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        if self._closed:
            raise RuntimeError("the job store is closed")
        self._queue.put((work, future, settle))
        return future

    def _settle_job(self, record: JobRecord) -> Callable[[], None]:
        def settle() -> None:
            with self._lock:
                if self._pending.get(record.job_id) is record:
                    del self._pending[record.job_id]
                key = record.idempotency_key
                if (
                    key
                    and self._pending_keys.get(key) == record.job_id
                    and record.job_id not in self._pending
                ):
                    del self._pending_keys[key]

        return settle

    async def _behind_writes(self, work: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self._submit(work))

    # -- jobs ---------------------------------------------------------------------------

    def insert(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Queue a new job; with an idempotency key already used, that job instead."""
        key = record.idempotency_key
        with self._lock:
            if key and key in self._pending_keys:
                return self._pending[self._pending_keys[key]].copy(), False
        if key:
            found = self._reader.get_by_key(key)
            if found is not None:
                return self._overlay(found), False
        stored = record.copy()
        with self._lock:
            self._pending[stored.job_id] = stored
            if key:
                self._pending_keys[key] = stored.job_id
        self._submit(lambda: self._writer.insert(stored), self._settle_job(stored))
        return stored.copy(), True

    def transition(self, record: JobRecord, change: lifecycle.Change, now: float) -> JobRecord:
        """``record`` after ``change`` (trainer.lifecycle), at once; written in order by the writer
        (which checks the table against the stored state again)."""
        new = lifecycle.apply(record, change, now)
        before, pending = record.copy(), new.copy()  # the caller may change its objects meanwhile
        with self._lock:
            self._pending[new.job_id] = pending
        self._submit(lambda: self._writer.transition(before, change, now), self._settle_job(pending))
        return new

    def update(self, record: JobRecord, *fields: str) -> None:
        """Queue a write of ``record``'s named fields (never its state: ``transition``)."""
        if "state" in fields or not fields:
            fields = tuple(f for f in (fields or _ALL_BUT_STATE) if f != "state")
        pending = record.copy()
        with self._lock:
            self._pending[record.job_id] = pending
        self._submit(lambda: self._writer.update(pending, *fields), self._settle_job(pending))

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            pending = self._pending.get(job_id)
        if pending is not None:
            return pending.copy()
        return self._reader.get(job_id)

    def list(
        self, states: Iterable[JobState] = (), model: str = "", limit: int = 100, sweep_id: str = ""
    ) -> builtins.list[JobRecord]:
        states = builtins.list(states)
        rows = self._reader.list(states, model, limit, sweep_id)
        with self._lock:
            pending = dict(self._pending)
        if not pending:
            return rows

        def wanted(r: JobRecord) -> bool:
            return (
                (not states or r.state in states)
                and (not model or r.model == model)
                and (not sweep_id or r.sweep_id == sweep_id)
            )

        shown = {r.job_id for r in rows}
        merged = [pending[r.job_id].copy() if r.job_id in pending else r for r in rows]
        new = [p.copy() for job_id, p in pending.items() if job_id not in shown and wanted(p)]
        out = [r for r in [*new, *merged] if wanted(r)]
        out.sort(key=lambda r: r.seq or float("inf"), reverse=True)  # not yet written: the newest
        return out[:limit]

    def _overlay(self, record: JobRecord) -> JobRecord:
        with self._lock:
            pending = self._pending.get(record.job_id)
        return pending.copy() if pending is not None else record

    async def next_queued(self, now: float) -> JobRecord | None:
        """The head of the queue, read behind every write made so far."""
        return await self._behind_writes(lambda: self._writer.next_queued(now))

    async def in_state(self, state: JobState) -> builtins.list[JobRecord]:
        return await self._behind_writes(lambda: self._writer.in_state(state))

    def in_state_now(self, state: JobState) -> builtins.list[JobRecord]:
        """``in_state`` for a worker thread (waits on the file's lock)."""
        return self._writer.in_state(state)

    # -- sweeps ---------------------------------------------------------------------------

    def insert_sweep(self, sweep: SweepRecord) -> tuple[SweepRecord, bool]:
        key = sweep.spec.idempotency_key
        with self._lock:
            if key and key in self._pending_sweep_keys:
                return self._pending_sweeps[self._pending_sweep_keys[key]], False
        if key:
            found = self._reader.get_sweep_by_key(key)
            if found is not None:
                return self.get_sweep(found.sweep_id) or found, False
        with self._lock:
            self._pending_sweeps[sweep.sweep_id] = sweep
            if key:
                self._pending_sweep_keys[key] = sweep.sweep_id
        self._submit(lambda: self._writer.insert_sweep(sweep), self._settle_sweep(sweep))
        return sweep, True

    def update_sweep(self, sweep: SweepRecord) -> None:
        with self._lock:
            seq = self._pending_sweeps.get(sweep.sweep_id, sweep).seq
            written = SweepRecord(**{**vars(sweep), "seq": sweep.seq or seq})
            self._pending_sweeps[sweep.sweep_id] = written
        self._submit(lambda: self._writer.update_sweep(written), self._settle_sweep(written))

    def _settle_sweep(self, sweep: SweepRecord) -> Callable[[], None]:
        def settle() -> None:
            with self._lock:
                if self._pending_sweeps.get(sweep.sweep_id) is sweep:
                    del self._pending_sweeps[sweep.sweep_id]
                key = sweep.spec.idempotency_key
                if key and sweep.sweep_id not in self._pending_sweeps:
                    self._pending_sweep_keys.pop(key, None)

        return settle

    def get_sweep(self, sweep_id: str) -> SweepRecord | None:
        with self._lock:
            pending = self._pending_sweeps.get(sweep_id)
        return _sweep_copy(pending) if pending is not None else self._reader.get_sweep(sweep_id)

    def list_sweeps(self, states: Iterable[SweepState] = (), limit: int = 100) -> builtins.list[SweepRecord]:
        states = builtins.list(states)
        rows = self._reader.list_sweeps(states, limit)
        with self._lock:
            pending = dict(self._pending_sweeps)
        if not pending:
            return rows
        shown = {r.sweep_id for r in rows}
        merged = [_sweep_copy(pending[r.sweep_id]) if r.sweep_id in pending else r for r in rows]
        new = [_sweep_copy(p) for sid, p in pending.items() if sid not in shown]
        out = [r for r in [*new, *merged] if not states or r.state in states]
        out.sort(key=lambda r: r.seq or float("inf"), reverse=True)
        return out[:limit]

    # -- closing ----------------------------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> bool:
        """Until every write made so far is on disk (or refused), or
        ``timeout`` seconds: True when they all are."""
        future = asyncio.wrap_future(self._submit(lambda: None))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return False
        return True

    def pending(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._pending_sweeps)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued (waiting up to ``timeout`` for a locked file), then close."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error(
                    "the job store's writer did not finish in %gs: %d write(s) not on disk",
                    timeout,
                    self.pending(),
                )
                return
        self._writer.close()
        self._reader.close()


def _sweep_copy(sweep: SweepRecord) -> SweepRecord:
    return SweepRecord(**vars(sweep))


_ALL_BUT_STATE = tuple(
    name for name in JobRecord.__dataclass_fields__ if name not in ("seq", "job_id", "state")
)
