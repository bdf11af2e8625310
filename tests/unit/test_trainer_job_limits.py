"""Deadlines, retries and priorities: the pure rules (trainer.job_limits),
and the gate's choice of whom to stop at danger with priorities."""

from __future__ import annotations

import pytest

from rpc.errors import InvalidArgument
from tests.support.trainer_support import make_config
from trainer import gate
from trainer.domain import JobRecord, JobState
from trainer.gate import GatePolicy, RunningJob, Sample
from trainer.job_limits import (
    Priority,
    check_limits,
    check_priority,
    deadline_passed,
    requeue_for_retry,
    retryable,
    run_seconds,
    victim,
)

POLICY = GatePolicy(cpu_normal=55, cpu_danger=95, memory_normal=55, memory_danger=95, warmup_s=0, window_s=1)


def record(**fields) -> JobRecord:
    values = dict(
        job_id="j",
        recipe="fake",
        model="movie",
        label="影视",
        corpus="c",
        params={},
        state=JobState.RUNNING,
        create_time=0.0,
    )
    values.update(fields)
    return JobRecord(**values)


def test_run_time_deadline_counts_earlier_attempts():
    rec = record(start_time=100.0, run_s=20.0, deadline_s=30.0)
    assert run_seconds(rec, 105.0) == 25.0 and deadline_passed(rec, 105.0) == ""
    assert "ran 30.0s of its deadline_seconds 30" in deadline_passed(rec, 110.0)
    queued = record(state=JobState.QUEUED, start_time=100.0, run_s=20.0, deadline_s=30.0)
    assert deadline_passed(queued, 1e9) == ""  # a queued job's run time does not grow


def test_absolute_deadline_applies_queued_or_running():
    rec = record(state=JobState.QUEUED, deadline_at=1000.0)
    assert deadline_passed(rec, 999.0) == ""
    assert deadline_passed(rec, 1000.0).startswith("deadline passed: deadline_time 1970-01-01T00:16:40Z")
    assert deadline_passed(record(), 1e12) == ""  # none


@pytest.mark.parametrize(
    ("code", "fields", "expected"),
    [
        (2, {}, True),
        (-9, {}, True),  # killed by a signal not from the Trainer (out of memory)
        (0, {}, False),
        (None, {}, False),  # re-attached: unknown
        (3, {}, False),  # validation rejected its version
        (2, {"retries": 2}, False),  # none left
        (2, {"state": JobState.KILLED}, False),  # a Kill or a gate kill
    ],
)
def test_only_a_job_failing_on_its_own_with_retries_left_is_retried(code, fields, expected):
    rec = record(**{"state": JobState.FAILED, "max_retries": 2, **fields})
    assert retryable(rec, code) is expected


def test_a_retry_requeues_with_backoff_and_says_why(tmp_path):
    config = make_config(tmp_path, requeue_backoff_s=5, max_requeue_backoff_s=60)
    rec = record(state=JobState.FAILED, max_retries=3, reason="exited with code 2")
    requeue_for_retry(rec, config, now=1000.0)
    assert rec.state is JobState.QUEUED and rec.retries == 1 and rec.not_before == 1005.0
    assert rec.reason == "exited with code 2; retry 1 of at most 3 in 5s (resumes from its last epoch)"
    requeue_for_retry(rec, config, now=1000.0)
    assert rec.not_before == 1010.0  # doubles


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((0.0, None, 0), "deadline_seconds"),
        ((None, 5.0, 0), "deadline_time"),
        ((None, None, 11), "max_retries"),
    ],
)
def test_bad_limits_name_the_field(args, field):
    with pytest.raises(InvalidArgument, match=field):
        check_limits(*args, now=10.0)


def test_priorities():
    assert check_priority(2) is Priority.HIGH
    with pytest.raises(InvalidArgument, match="priority has an unknown value 7"):
        check_priority(7)


def test_the_victim_is_the_newest_of_the_lowest_priority():
    jobs = [
        RunningJob("low-old", 1.0, priority=0),
        RunningJob("low-new", 2.0, priority=0),
        RunningJob("high-newest", 3.0, priority=2),
    ]
    assert victim(jobs).job_id == "low-new"
    assert victim([RunningJob("a", 1.0), RunningJob("b", 2.0)]).job_id == "b"  # equal: the newest


def _samples(cpu: float, memory: float, now: float) -> list[Sample]:
    return [Sample(now - 2 + i * 0.1, now - 2 + (i + 1) * 0.1, cpu, memory) for i in range(20)]


def test_the_gate_stops_the_lowest_priority_newest_job_first():
    now = 100.0
    running = [
        RunningJob("normal", 10.0, priority=1),
        RunningJob("low", 20.0, priority=0),
        RunningJob("high", 30.0, priority=2),
    ]
    cpu = gate.decide_overload(_samples(99, 10, now), now, running, POLICY)
    assert cpu.job_id == "low" and "the newest of the 1 LOW-priority job(s) of 3 running" in cpu.reason
    memory = gate.decide_overload(_samples(10, 99, now), now, running[::2], POLICY)
    assert memory.job_id == "normal"  # NORMAL is below HIGH, although older
    same = gate.decide_overload(
        _samples(99, 10, now), now, [RunningJob("a", 1.0), RunningJob("b", 2.0)], POLICY
    )
    assert same.job_id == "b" and "the newest of 2 running jobs goes first" in same.reason
