"""The job store as the event loop uses it (trainer.queued_store): writes
queued to one thread in order, reads that see them before they are on disk
and never wait on a locked file, nothing lost while another connection
holds the write lock."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

from trainer import lifecycle
from trainer.domain import JobRecord, JobState
from trainer.queued_store import QueuedStore
from trainer.store import JobStore


def job(job_id: str, **fields) -> JobRecord:
    values = dict(
        job_id=job_id, recipe="fake", model="m", label="l", corpus="c", params={}, state=JobState.QUEUED,
        create_time=1.0,
    )  # fmt: skip
    values.update(fields)
    return JobRecord(**values)


def hold_lock(path, seconds: float, taken: threading.Event) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    taken.set()
    time.sleep(seconds)
    db.execute("ROLLBACK")
    db.close()


def test_reads_see_queued_writes_and_do_not_wait_on_a_locked_file(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = QueuedStore(path)
    store.insert(job("old"))
    asyncio.run(store.flush())
    taken = threading.Event()
    holder = threading.Thread(target=hold_lock, args=(path, 3.0, taken))
    holder.start()
    taken.wait(10)
    new, created = store.insert(job("new", idempotency_key="k"))
    again, created_again = store.insert(job("other-id", idempotency_key="k"))
    assert created and not created_again and again.job_id == "new"  # the key is held while queued
    running = store.transition(new, lifecycle.Change(JobState.RUNNING, "admitted"), 5.0)
    assert store.get("new").state is JobState.RUNNING and store.get("old").state is JobState.QUEUED
    assert [j.job_id for j in store.list()] == ["new", "old"]  # not yet written: the newest
    assert [j.job_id for j in store.list(states=[JobState.QUEUED])] == ["old"]
    assert holder.is_alive()  # all answered while the lock is still held
    on_file = sqlite3.connect(path).execute("SELECT count(*) FROM jobs WHERE job_id = 'new'").fetchone()
    assert on_file == (0,)  # ...and it is not on disk yet
    holder.join()
    assert asyncio.run(store.flush(30))
    on_disk = JobStore(path).get("new")
    assert on_disk.state is JobState.RUNNING and on_disk.start_time == running.start_time == 5.0
    store.close()


def test_the_scheduler_reads_behind_its_own_writes(tmp_path):
    store = QueuedStore(tmp_path / "jobs.sqlite3")
    first, _ = store.insert(job("a"))
    store.insert(job("b"))
    store.transition(first, lifecycle.Change(JobState.RUNNING, "admitted"), 2.0)

    async def head():
        return await store.next_queued(time.time())

    assert asyncio.run(head()).job_id == "b"  # never "a" again: its admission is written first
    store.close()


def test_a_refused_write_does_not_stop_the_writer(tmp_path):
    store = QueuedStore(tmp_path / "jobs.sqlite3")
    rec, _ = store.insert(job("a"))
    killed = store.transition(rec, lifecycle.Change(JobState.KILLED, "killed while queued"), 2.0)
    stale = rec.copy()
    stale.reason = "a stale copy"
    # Allowed from the stale copy's QUEUED, refused by the writer against the stored KILLED.
    store.transition(stale, lifecycle.Change(JobState.RUNNING, "admitted"), 3.0)
    store.insert(job("b"))
    assert asyncio.run(store.flush(30))
    on_disk = JobStore(tmp_path / "jobs.sqlite3")
    assert on_disk.get("a").state is JobState.KILLED and on_disk.get("a").reason == killed.reason
    assert on_disk.get("b") is not None
    store.close()
