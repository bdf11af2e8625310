"""The job store on a real SQLite file."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from trainer.domain import JobRecord, JobState
from trainer.store import JobStore, StoreError


def job(job_id: str, model: str = "movie", state: JobState = JobState.QUEUED, **fields) -> JobRecord:
    return JobRecord(
        job_id=job_id,
        recipe="fasttext",
        model=model,
        label="影视",
        corpus="sample/train.jsonl",
        params={"epochs": 2},
        state=state,
        create_time=time.time(),
        **fields,
    )


def test_jobs_survive_reopening_with_every_field(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    record, created = store.insert(job("a", progress={"epoch": 1.0}, gate={"action": "WAIT", "reason": "r"}))
    assert created and record.seq == 1
    record.state, record.pid, record.pid_create_time, record.exit_code = JobState.RUNNING, 42, 12.5, None
    record.resources = {"cpu_share": 48.0}
    store.update(record)
    store.close()
    again = JobStore(path).get("a")
    assert again == record
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_idempotency_key_returns_the_first_job(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    first, created = store.insert(job("a", idempotency_key="k1"))
    assert created
    second, created = store.insert(job("b", idempotency_key="k1"))
    assert not created and second.job_id == "a"
    assert [j.job_id for j in store.list()] == ["a"]
    # Jobs without a key never collide.
    assert store.insert(job("c"))[1] and store.insert(job("d"))[1]


def test_concurrent_inserts_with_one_key_make_one_job(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    results = []

    def insert(i: int) -> None:
        results.append(store.insert(job(f"j{i}", idempotency_key="same"))[0].job_id)

    threads = [threading.Thread(target=insert, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert len(store.list()) == 1


def test_list_filters_by_state_and_model_newest_first(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    for i, (model, state) in enumerate(
        [
            ("movie", JobState.QUEUED),
            ("star", JobState.RUNNING),
            ("movie", JobState.FAILED),
            ("movie", JobState.RUNNING),
        ]
    ):
        store.insert(job(f"j{i}", model, state))
    assert [j.job_id for j in store.list()] == ["j3", "j2", "j1", "j0"]
    assert [j.job_id for j in store.list(states=[JobState.RUNNING])] == ["j3", "j1"]
    assert [j.job_id for j in store.list(model="movie", states=[JobState.RUNNING, JobState.QUEUED])] == [
        "j3",
        "j0",
    ]
    assert [j.job_id for j in store.list(limit=2)] == ["j3", "j2"]


def test_next_queued_is_the_oldest_whose_backoff_passed(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    now = time.time()
    store.insert(job("backing-off", not_before=now + 60))
    store.insert(job("running", state=JobState.RUNNING))
    store.insert(job("next"))
    store.insert(job("later"))
    assert store.next_queued(now).job_id == "next"
    assert store.next_queued(now + 61).job_id == "backing-off"
    assert [j.job_id for j in store.in_state(JobState.QUEUED)] == ["backing-off", "next", "later"]


def test_updating_a_missing_job_is_an_error(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    with pytest.raises(StoreError):
        store.update(job("ghost"), "state")


def test_next_queued_is_the_highest_priority_then_the_oldest(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    for job_id, priority in (("low", 0), ("normal-1", 1), ("high", 2), ("normal-2", 1)):
        store.insert(job(job_id, priority=priority))
    order = []
    while (head := store.next_queued(time.time())) is not None:
        order.append(head.job_id)
        head.state = JobState.RUNNING
        store.update(head, "state")
    assert order == ["high", "normal-1", "normal-2", "low"]


def test_sweeps_and_the_new_job_fields_survive_reopening(tmp_path):
    from trainer.domain import Direction, SearchSpace, SweepRecord, SweepSpec, SweepState

    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    spec = SweepSpec(
        model="movie",
        label="影视",
        search_space={
            "epochs": SearchSpace(minimum=1, maximum=9),
            "batch_size": SearchSpace(values=(8.0, 16.0)),
        },
        metric="f1",
        direction=Direction.MAXIMIZE,
        trial_budget=4,
        idempotency_key="k",
        priority=2,
    )
    sweep, created = store.insert_sweep(SweepRecord("s1", spec, [{"epochs": 1}], SweepState.RUNNING, 1.0))
    assert created
    again, created = store.insert_sweep(SweepRecord("s2", spec, [], SweepState.RUNNING, 2.0))
    assert not created and again.sweep_id == "s1"
    sweep.state, sweep.final_job_id = SweepState.PUSHING, "j9"
    store.update_sweep(sweep)
    record, _ = store.insert(
        job("t", sweep_id="s1", no_push=True, deadline_s=5.0, deadline_at=9.0, max_retries=2, priority=0)
    )
    store.close()
    reopened = JobStore(path)
    assert reopened.get_sweep("s1") == sweep
    assert reopened.get("t") == record and reopened.get("t").no_push is True
    assert [j.job_id for j in reopened.list(sweep_id="s1")] == ["t"] and reopened.list(sweep_id="s2") == []
    assert [s.sweep_id for s in reopened.list_sweeps([SweepState.PUSHING])] == ["s1"]
