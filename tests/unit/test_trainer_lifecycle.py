"""The job lifecycle (trainer.lifecycle): its table, its decisions, and
random event sequences driven through the real store's one transition call
and the real event hub Watch reads."""

from __future__ import annotations

import ast
import asyncio
import pathlib
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainer import lifecycle
from trainer.domain import JobContainment, JobRecord, JobState, Placement
from trainer.events import EventHub, JobEvent
from trainer.lifecycle import (
    Admitted,
    Exited,
    IllegalTransition,
    RequeuePolicy,
    StartFailed,
    StopAsked,
    StopKind,
    Stopped,
)
from trainer.store import JobStore

POLICY = RequeuePolicy("requeue", 2, lambda n: 1.0 * n)
ROOT = pathlib.Path(__file__).resolve().parents[2]


def job(job_id: str = "j", **fields) -> JobRecord:
    values = dict(
        job_id=job_id,
        recipe="fake",
        model="m",
        label="l",
        corpus="c",
        params={},
        state=JobState.QUEUED,
        create_time=1.0,
    )
    values.update(fields)
    return JobRecord(**values)


def admitted(pid: int = 10) -> Admitted:
    return Admitted("admitted", pid, 5.0, JobContainment(marker="j.1", session=pid), Placement("local", "n"))


def test_nothing_leaves_an_ended_state():
    for old in JobState:
        for new in JobState:
            if old.ended:
                assert not lifecycle.allowed(old, new)
    with pytest.raises(IllegalTransition, match="an ended job stays ended"):
        lifecycle.check(JobState.KILLED, JobState.QUEUED)


def test_an_attempt_starts_and_its_time_is_counted_once_it_ends():
    rec = job(max_retries=0)
    running = lifecycle.apply(rec, lifecycle.decide(rec, admitted(), POLICY, 100.0), 100.0)
    assert (running.state, running.attempts, running.pid, running.start_time) == (
        JobState.RUNNING,
        1,
        10,
        100.0,
    )
    assert running.placement == Placement("local", "n") and rec.state is JobState.QUEUED  # a new record
    done = lifecycle.apply(running, lifecycle.decide(running, Exited(0, 7, True), POLICY, 130.0), 130.0)
    assert (done.state, done.model_version, done.end_time, done.run_s) == (JobState.SUCCEEDED, 7, 130.0, 30.0)
    assert (done.pid, done.containment) == (0, JobContainment())


def test_a_failure_is_retried_but_not_a_deterministic_one():
    rec = lifecycle.apply(job(max_retries=2), lifecycle.decide(job(max_retries=2), admitted(), POLICY, 0), 0)
    retry = lifecycle.decide(rec, Exited(1, failure="exited with code 1"), POLICY, 10.0)
    assert (
        retry.state is JobState.QUEUED and retry.fields["retries"] == 1 and retry.fields["not_before"] == 11.0
    )
    assert "retry 1 of at most 2" in retry.reason
    bad = lifecycle.decide(
        rec, Exited(2, failure="exited with code 2", deterministic_codes=frozenset({2})), POLICY, 10
    )
    assert (
        bad.state is JobState.FAILED
        and "not retried: the recipe says this exit is deterministic" in bad.reason
    )
    rejected = lifecycle.decide(rec, Exited(lifecycle.EXIT_REJECTED, failure="x"), POLICY, 10.0)
    assert rejected.state is JobState.FAILED


def test_a_gate_kill_requeues_until_the_limit_and_watch_sees_killed_on_the_way():
    rec = lifecycle.apply(job(), lifecycle.decide(job(), admitted(), POLICY, 0), 0)
    stopping = lifecycle.apply(
        rec, lifecycle.decide(rec, StopAsked(StopKind.GATE, "killed by the load gate"), POLICY, 1), 1
    )
    change = lifecycle.decide(stopping, Stopped(StopKind.GATE, "killed by the load gate", -15), POLICY, 2.0)
    assert change.state is JobState.QUEUED and change.passing is JobState.KILLED
    assert "overload kill 1 of at most 2" in change.reason and change.fields["not_before"] == 3.0
    last = lifecycle.apply(stopping, change, 2.0)
    last.overload_kills = 2
    again = lifecycle.apply(last, lifecycle.decide(last, admitted(), POLICY, 5), 5)
    again = lifecycle.apply(again, lifecycle.decide(again, StopAsked(StopKind.GATE, "g"), POLICY, 6), 6)
    failed = lifecycle.decide(again, Stopped(StopKind.GATE, "g"), POLICY, 7)
    assert failed.state is JobState.FAILED and "killed 3 times (limit 2 requeues)" in failed.reason


def test_the_store_refuses_a_transition_the_table_does_not_allow(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    rec, _ = store.insert(job())
    killed = store.transition(rec, lifecycle.Change(JobState.KILLED, "killed while queued"), 5.0)
    assert store.get("j").state is JobState.KILLED and store.get("j").end_time == 5.0
    with pytest.raises(IllegalTransition):
        store.transition(killed, lifecycle.Change(JobState.QUEUED, "again"), 6.0)
    stale = rec.copy()  # a caller holding an old copy cannot write past the stored state either
    with pytest.raises(IllegalTransition):
        store.transition(stale, lifecycle.Change(JobState.RUNNING, "admitted"), 6.0)
    stale.state = JobState.QUEUED
    with pytest.raises(IllegalTransition):
        store.update(stale)
    assert store.get("j").state is JobState.KILLED


# -- random event sequences ------------------------------------------------------------

EVENTS = st.one_of(
    st.just(("start",)),
    st.just(("start_failed",)),
    st.tuples(st.just("exit"), st.sampled_from([0, 1, 2, 3, -9, None]), st.booleans()),
    st.tuples(st.just("stop"), st.sampled_from(list(StopKind))),
    st.tuples(st.just("stopped"), st.sampled_from([0, -15, -9, None])),
    st.tuples(st.just("restart"), st.booleans()),
)


def _event(rec: JobRecord, raw: tuple, asked: dict[str, StopAsked]):
    """A scripted event as the scheduler would phrase it for ``rec``."""
    kind = raw[0]
    if kind == "start":
        return admitted(pid=1000 + rec.attempts)
    if kind == "start_failed":
        return StartFailed("no such recipe")
    if kind == "exit":
        return Exited(
            raw[1],
            version=5 if raw[2] else 0,
            exported=raw[2],
            failure=f"exited with code {raw[1]}",
            deterministic_codes=frozenset({2}),
        )
    if kind == "stop":
        ask = StopAsked(raw[1], f"stop {raw[1].value}")
        asked[rec.job_id] = ask
        return ask
    if kind == "stopped":
        ask = asked.get(rec.job_id, StopAsked(StopKind.KILL, "killed"))
        return Stopped(ask.kind, ask.reason, raw[1])
    # A restarted Trainer: a RUNNING job whose process died is judged as
    # ended while down; a STOPPING one is killed for good; others untouched.
    if rec.state is JobState.STOPPING:
        return Stopped(StopKind.KILL, "finished by a restarted Trainer")
    if rec.state is JobState.RUNNING and not raw[1]:
        return Exited(None, while_down=True)
    return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sequences=st.lists(st.lists(EVENTS, max_size=14), min_size=1, max_size=3),
    max_retries=st.integers(0, 2),
)
def test_random_event_sequences_keep_every_invariant(sequences, max_retries):
    """Through the real store and the real event hub: no ended state is ever
    left, no job is lost, no job has two attempts at once (an attempt starts
    only from QUEUED, attempts count up by one), and the last event a
    watcher got agrees with the stored record (final exactly when ended)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = JobStore(pathlib.Path(tmp) / "jobs.sqlite3")
        hub = EventHub()
        seen: dict[str, list[JobEvent]] = {}
        asyncio.run(_drive(store, hub, sequences, max_retries, seen))
        jobs = {r.job_id: r for r in store.list(limit=100)}
        assert set(jobs) == {f"job-{i}" for i in range(len(sequences))}  # none lost
        for job_id, record in jobs.items():
            events = [e for e in seen[job_id] if e.job is not None]
            last = events[-1].job
            assert (last.state, last.attempts, last.reason) == (record.state, record.attempts, record.reason)
            assert events[-1].final == record.state.ended
            assert [e.final for e in events].count(True) == (1 if record.state.ended else 0)
            if record.state is not JobState.RUNNING and record.state is not JobState.STOPPING:
                assert record.pid == 0
        store.close()


async def _drive(store, hub, sequences, max_retries, seen):
    asked: dict[str, StopAsked] = {}
    subs = {}
    for i, events in enumerate(sequences):
        rec, _ = store.insert(job(f"job-{i}", max_retries=max_retries))
        subs[rec.job_id] = hub.subscribe(rec.job_id)
        hub.publish(rec.job_id, JobEvent(job=rec.copy()))
        now = 10.0
        for raw in events:
            now += 1.0
            event = _event(rec, raw, asked)
            if event is None:
                continue
            change = lifecycle.decide(rec, event, POLICY, now)
            if change is None:
                continue
            before = rec
            assert not before.state.ended, "a decision for an ended job"
            passing = lifecycle.passing_record(rec, change, now)
            if passing is not None:
                assert passing.state is JobState.KILLED and not rec.state.ended
                hub.publish(rec.job_id, JobEvent(job=passing))  # not final: the job goes on
            rec = store.transition(rec, change, now)
            assert lifecycle.allowed(before.state, rec.state)
            if rec.state is JobState.RUNNING:
                assert before.state is JobState.QUEUED and rec.attempts == before.attempts + 1
            else:
                assert rec.attempts == before.attempts
            hub.publish(rec.job_id, JobEvent(job=rec.copy(), final=rec.state.ended))
    hub.close()
    for job_id, sub in subs.items():
        seen[job_id] = []
        while (event := await sub.next()) is not None:
            seen[job_id].append(event)


def test_the_lifecycle_is_the_only_place_a_job_state_is_set():
    """No module of the Trainer but trainer.lifecycle assigns a ``.state``
    of a job (a new job is created QUEUED in service.start_job; the sweep
    driver sets its sweeps' SweepStates)."""
    offenders = []
    for path in sorted((ROOT / "trainer").rglob("*.py")):
        if path.name == "lifecycle.py" or "v1" in path.parts:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                pairs = []
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    pairs = list(zip(target.elts, node.value.elts, strict=False))
                else:
                    pairs = [(target, node.value)]
                for t, v in pairs:
                    if not (isinstance(t, ast.Attribute) and t.attr == "state"):
                        continue
                    sweep = "sweep" in ast.unparse(t.value) and "JobState" not in ast.unparse(v)
                    if not sweep:  # a SweepRecord's state is the sweep driver's
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == []
