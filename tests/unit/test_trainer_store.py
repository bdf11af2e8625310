"""The job store on a real SQLite file."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from trainer.domain import (
    GateAction,
    GateDecision,
    JobContainment,
    JobProgress,
    JobRecord,
    JobResources,
    JobState,
    TrackedProcess,
)
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
    record, created = store.insert(
        job(
            "a",
            progress=JobProgress(epoch=1, loss=0.5),
            gate=GateDecision(GateAction.WAIT, "r", 70.0, 20.0, decided_at=5.0),
        )
    )
    assert created and record.seq == 1
    record.state, record.pid, record.pid_create_time, record.exit_code = JobState.RUNNING, 42, 12.5, None
    record.resources = JobResources(cpu_percent=96.0, rss_bytes=1 << 20, cpu_share=48.0, memory_share=1.5)
    record.containment = JobContainment("a.1", "", 42, (TrackedProcess(43, 13.0),))
    store.update(record)
    store.close()
    again = JobStore(path).get("a")
    assert again == record
    assert isinstance(again.gate.action, GateAction)  # typed through the store, not a dict
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_version_1_store_is_upgraded_and_its_dicts_read_as_types(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(_V1_SCHEMA)
    db.execute(
        "INSERT INTO jobs (job_id, recipe, model, label, corpus, params, state, create_time, progress, gate, "
        "resources) VALUES ('old', 'fasttext', 'movie', 'x', 'c', '{}', 'QUEUED', 1.0, ?, ?, ?)",
        (
            '{"epoch": 2.0, "f1": 0.5}',
            '{"action": "KILL", "reason": "r", "cpu": 99, "memory": 1, "time": 7}',
            '{"cpu_percent": 50, "rss_bytes": 10.0, "cpu_share": 25}',
        ),
    )
    db.commit()
    db.close()
    old = JobStore(path).get("old")
    assert old.progress == JobProgress(epoch=2, f1=0.5)
    assert old.gate == GateDecision(GateAction.KILL, "r", 99.0, 1.0, decided_at=7.0)
    assert old.resources.cpu_share == 25 and old.resources.rss_bytes == 10
    assert old.containment == JobContainment()


_V1_SCHEMA = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL UNIQUE, recipe TEXT NOT NULL,
    model TEXT NOT NULL, label TEXT NOT NULL, corpus TEXT NOT NULL, params TEXT NOT NULL,
    state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', pid INTEGER NOT NULL DEFAULT 0,
    pid_create_time REAL NOT NULL DEFAULT 0, create_time REAL NOT NULL, start_time REAL, end_time REAL,
    exit_code INTEGER, attempts INTEGER NOT NULL DEFAULT 0, overload_kills INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0, model_version INTEGER NOT NULL DEFAULT 0,
    progress TEXT NOT NULL DEFAULT '{}', gate TEXT NOT NULL DEFAULT '{}', resources TEXT NOT NULL DEFAULT '{}',
    idempotency_key TEXT
);
PRAGMA user_version=1;
"""


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


@pytest.mark.parametrize(
    ("added", "version"),
    [
        # a schema-2 database with process containment only
        ("containment TEXT NOT NULL DEFAULT '{}'", 2),
        # a schema-2 database with validation before push only
        ("validation TEXT NOT NULL DEFAULT '', push TEXT NOT NULL DEFAULT ''", 2),
        # a schema-3 database with validation, sweeps, deadlines, retries and priorities but no containment
        (
            "validation TEXT NOT NULL DEFAULT '', push TEXT NOT NULL DEFAULT '', "
            "sweep_id TEXT NOT NULL DEFAULT '', no_push INTEGER NOT NULL DEFAULT 0, "
            "deadline_s REAL NOT NULL DEFAULT 0, deadline_at REAL NOT NULL DEFAULT 0, "
            "run_s REAL NOT NULL DEFAULT 0, max_retries INTEGER NOT NULL DEFAULT 0, "
            "retries INTEGER NOT NULL DEFAULT 0, priority INTEGER NOT NULL DEFAULT 1",
            3,
        ),
    ],
)
def test_every_older_schema_is_upgraded_to_the_one_sequence(tmp_path, added, version):
    from trainer.domain import HeldOutMetrics, PushDecision, PushOutcome, ValidationPolicy
    from trainer.store import SCHEMA_VERSION

    path = tmp_path / "jobs.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        _V1_SCHEMA.replace("    idempotency_key TEXT\n", f"    idempotency_key TEXT, {added}\n").replace(
            "user_version=1", f"user_version={version}"
        )
    )
    db.execute(
        "INSERT INTO jobs (job_id, recipe, model, label, corpus, params, state, create_time, progress) "
        "VALUES ('old', 'fasttext', 'movie', 'x', 'c', '{}', 'QUEUED', 1.0, '{\"epoch\": 3}')"
    )
    db.commit()
    db.close()
    store = JobStore(path)
    old = store.get("old")
    assert old.progress == JobProgress(epoch=3)
    assert old.containment == JobContainment() and old.validation is None and old.push is None
    assert (old.sweep_id, old.no_push, old.priority, old.max_retries, old.run_s) == ("", False, 1, 0, 0.0)
    # Every field of both features is written and read back as a type.
    old.containment = JobContainment("old.1", "", 7, (TrackedProcess(8, 2.0),))
    old.validation = ValidationPolicy(floors={"f1": 0.5})
    metrics = HeldOutMetrics(0.9, 0.8, 0.85, 10)
    old.push = PushDecision(PushOutcome.PUSHED, "pushed", 5, metrics)
    old.priority, old.deadline_s = 2, 30.0
    store.update(old)
    store.close()
    reopened = JobStore(path)
    assert reopened.get("old") == old
    assert reopened.list_sweeps() == []  # the sweeps table exists
    reopened.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_newer_schema_is_refused(tmp_path):
    from trainer.store import SCHEMA_VERSION

    path = tmp_path / "jobs.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="schema version"):
        JobStore(path)
