"""The load gate's decisions, branch by branch, on scripted readings."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.gate import (
    Action,
    Candidate,
    GatePolicy,
    LoadSampler,
    RunningJob,
    Sample,
    decide_admission,
    decide_overload,
    summarize,
)

POLICY = GatePolicy(cpu_normal=55, cpu_danger=95, memory_normal=55, memory_danger=95, warmup_s=3, window_s=3)
NOW = 1000.0
HEAD = Candidate("queued-1")


def load(
    cpu: float, memory: float, start: float = NOW - 10, end: float = NOW, step: float = 0.5
) -> list[Sample]:
    """Contiguous samples at one level over [start, end]."""
    out, t = [], start
    while t + step <= end + 1e-9:
        out.append(Sample(t, t + step, cpu, memory))
        t += step
    return out


def running(*admitted_at: float) -> list[RunningJob]:
    return [RunningJob(f"job-{i}", t) for i, t in enumerate(admitted_at)]


def admit(samples, jobs=(), candidate=HEAD, **times):
    return decide_admission(samples, NOW, list(jobs), candidate, POLICY, **times)


# -- readings -------------------------------------------------------------------


def test_summarize_averages_cpu_over_the_window_and_takes_the_latest_memory():
    samples = load(20, 30, start=NOW - 10, end=NOW - 1.5) + load(80, 40, start=NOW - 1.5, end=NOW)
    reading = summarize(samples, NOW, window_s=3)
    assert reading.cpu == pytest.approx(50.0)
    assert reading.memory == 40
    assert (reading.since, reading.until) == (NOW - 3, NOW)


def test_summarize_needs_samples_covering_the_window_after_since():
    samples = load(20, 30)
    assert summarize(samples, NOW, window_s=3, since=NOW - 1) is None
    assert summarize([], NOW, window_s=3) is None
    assert summarize(samples, NOW, window_s=3, since=NOW - 3).cpu == 20


# -- admission ------------------------------------------------------------------


def test_admits_when_cpu_and_memory_are_below_normal():
    decision = admit(load(30, 40))
    assert decision.action is Action.ADMIT
    assert decision.job_id == "queued-1"
    assert "below normal" in decision.reason and "cpu 30.0%" in decision.reason


@pytest.mark.parametrize(("cpu", "memory", "named"), [(55, 10, "cpu 55.0%"), (10, 70, "memory 70.0%")])
def test_waits_between_normal_and_danger(cpu, memory, named):
    decision = admit(load(cpu, memory), running(NOW - 100))
    assert decision.action is Action.WAIT
    assert "at or above normal" in decision.reason and named in decision.reason


def test_waits_without_a_reading_yet():
    decision = admit(load(10, 10, start=NOW - 1))
    assert decision.action is Action.WAIT
    assert "waiting for a 3s load reading" in decision.reason


def test_warm_up_holds_admission_then_needs_a_full_window_after_it():
    samples = load(10, 10)
    during = admit(samples, running(NOW - 1), last_admit=NOW - 1)
    assert during.action is Action.WAIT and "warming up" in during.reason
    # Warm-up over, but only 1 s of readings since it ended: not enough.
    short = admit(samples, running(NOW - 4), last_admit=NOW - 4)
    assert short.action is Action.WAIT and "load reading" in short.reason
    settled = admit(samples, running(NOW - 6), last_admit=NOW - 6)
    assert settled.action is Action.ADMIT


def test_a_job_ending_never_admits_above_normal_however_recent_or_stale():
    # Issue 15 case 1: a job ended long ago, a burner holds cpu at 52% with
    # normal at 30: the old rule admitted ("a running job ended"), forever.
    strict = GatePolicy(cpu_normal=30, cpu_danger=95, warmup_s=3, window_s=3)
    samples = load(52, 20, start=NOW - 60)
    for ended_ago in (0.5, 8.0, 45.0):
        decision = decide_admission(
            samples, NOW, [], HEAD, strict, last_admit=NOW - 70, last_end=NOW - ended_ago
        )
        assert decision.action is Action.WAIT and "at or above normal" in decision.reason
    # Between normal and danger right after an end: still no.
    between = admit(load(70, 60), running(NOW - 20), last_admit=NOW - 20, last_end=NOW - 0.5)
    assert between.action is Action.WAIT and "at or above normal" in between.reason


def test_a_job_ending_ends_the_warm_up_early_but_not_the_normal_rule():
    # The job admitted 1 s ago already ended: nothing to watch, and the
    # reading (which still holds its load) is below normal: admit now.
    decision = admit(load(10, 10), (), last_admit=NOW - 1, last_end=NOW - 0.5)
    assert decision.action is Action.ADMIT
    assert admit(load(10, 10), (), last_admit=NOW - 1).action is Action.WAIT  # still warming up


def test_load_that_drops_only_at_the_end_of_the_window_is_not_below_normal():
    # Issue 15 case 1: burners stopped 0.6 s ago; the window still holds them.
    samples = load(90, 20, end=NOW - 0.6) + load(5, 20, start=NOW - 0.6)
    decision = admit(samples, (), last_kill=NOW - 45)
    assert decision.action is Action.WAIT and "at or above normal" in decision.reason


def test_never_admits_above_danger_even_after_a_job_ended():
    for cpu, memory in ((96, 10), (10, 95)):
        decision = admit(load(cpu, memory), last_admit=NOW - 20, last_end=NOW - 5)
        assert decision.action is Action.WAIT
        assert "above danger" in decision.reason


def test_a_running_job_just_under_normal_leaves_no_room_for_a_second_one():
    # Issue 15 case 2: one single-threaded job holds 2 cores at 53%; a second
    # one (thread budget 1 of 2 cores = 50%) would push the machine to danger.
    first = RunningJob("job-0", NOW - 30, cpu_share=51.0, cpu_budget=50.0)
    head = Candidate("queued-1", cpu_budget=50.0)
    decision = admit(load(53, 20), [first], head, last_admit=NOW - 30)
    assert decision.action is Action.WAIT
    assert (
        "expected load with it would reach danger" in decision.reason and "thread budget" in decision.reason
    )
    # With the machine quieter it fits: 30 + 50 < 95.
    assert admit(load(30, 20), [first], head, last_admit=NOW - 30).action is Action.ADMIT


def test_a_job_admitted_moments_ago_counts_with_its_budget_until_it_settles():
    # Its load does not show yet (imports): the reading is low, but it will use its budget.
    young = RunningJob("job-0", NOW - 7, cpu_share=2.0, cpu_budget=50.0)
    head = Candidate("queued-1", cpu_budget=50.0)
    decision = admit(load(10, 20), [young], head, last_admit=NOW - 7)
    assert decision.action is Action.WAIT and "not yet shown by jobs just admitted" in decision.reason
    settled = RunningJob("job-0", NOW - 11, cpu_share=2.0, cpu_budget=50.0)
    assert admit(load(10, 20), [settled], head, last_admit=NOW - 11).action is Action.ADMIT


def test_readings_from_before_the_last_kill_do_not_count():
    samples = load(10, 10)
    assert admit(samples, last_kill=NOW - 1).action is Action.WAIT
    assert admit(samples, last_kill=NOW - 3).action is Action.ADMIT


def test_a_requeued_job_waits_while_its_known_load_would_reach_danger():
    requeued = Candidate("queued-1", cpu_share=48.0, memory_share=2.0)
    samples = load(50, 20)
    decision = admit(samples, running(NOW - 30), requeued)
    assert decision.action is Action.WAIT
    assert "48% (its recent load on its last attempt)" in decision.reason
    # Alone it may run: no other job of ours to wait for.
    assert admit(samples, (), requeued).action is Action.ADMIT
    # A first attempt has no estimate: below normal admits.
    assert admit(samples, running(NOW - 30)).action is Action.ADMIT


def test_a_requeued_job_waits_on_its_memory_estimate_too():
    requeued = Candidate("queued-1", cpu_share=5.0, memory_share=50.0)
    decision = admit(load(10, 50), running(NOW - 30), requeued)
    assert decision.action is Action.WAIT and "memory" in decision.reason


# -- overload -------------------------------------------------------------------


def test_no_running_job_means_nothing_to_kill():
    assert decide_overload(load(100, 100), NOW, [], POLICY) is None


def test_memory_above_danger_kills_the_newest_job():
    jobs = running(NOW - 30, NOW - 5, NOW - 12)
    decision = decide_overload(load(20, 96), NOW, jobs, POLICY)
    assert decision.action is Action.KILL
    assert decision.job_id == "job-1"
    assert "memory 96.0% >= danger 95%" in decision.reason


def test_cpu_above_danger_kills_the_newest_of_several_jobs():
    decision = decide_overload(load(97, 20), NOW, running(NOW - 30, NOW - 5), POLICY)
    assert decision.action is Action.KILL and decision.job_id == "job-1"
    assert "cpu 97.0% >= danger 95%" in decision.reason


def test_cpu_alone_never_kills_the_only_running_job_but_memory_does():
    assert decide_overload(load(100, 20), NOW, running(NOW - 30), POLICY) is None
    assert decide_overload(load(100, 99), NOW, running(NOW - 30), POLICY).job_id == "job-0"


def test_a_cpu_spike_shorter_than_the_window_kills_nothing():
    samples = load(40, 20, end=NOW - 0.5) + load(100, 20, start=NOW - 0.5)
    assert decide_overload(samples, NOW, running(NOW - 30, NOW - 20), POLICY) is None


def test_after_a_kill_only_fresh_readings_count():
    jobs = running(NOW - 30, NOW - 20)
    assert decide_overload(load(99, 99), NOW, jobs, POLICY, last_kill=NOW) is None
    assert (
        decide_overload(load(99, 20), NOW, jobs, POLICY, last_kill=NOW - 1) is None
    )  # cpu window not refilled
    assert decide_overload(load(20, 99), NOW, jobs, POLICY, last_kill=NOW - 1).job_id == "job-1"


def test_a_danger_above_100_disables_that_check():
    policy = GatePolicy(cpu_normal=100, cpu_danger=101, memory_normal=100, memory_danger=101)
    assert decide_overload(load(100, 100), NOW, running(1, 2), policy) is None


@pytest.mark.parametrize(
    "kwargs",
    [dict(cpu_normal=96, cpu_danger=95), dict(memory_normal=0), dict(window_s=0), dict(warmup_s=-1)],
)
def test_policy_rejects_inconsistent_thresholds(kwargs):
    with pytest.raises(ValueError):
        GatePolicy(**kwargs)


@settings(max_examples=200, deadline=None)
@given(
    cpu=st.floats(0, 100),
    memory=st.floats(0, 100),
    ages=st.lists(st.floats(0.1, 500), min_size=0, max_size=4, unique=True),
    ended=st.booleans(),
)
def test_decisions_respect_the_thresholds(cpu, memory, ages, ended):
    samples, jobs = load(cpu, memory), running(*(NOW - a for a in ages))
    last_admit = NOW - min(ages) if ages else None
    decision = admit(samples, jobs, last_admit=last_admit, last_end=NOW - 0.01 if ended else None)
    if decision.action is Action.ADMIT:
        # Never above normal, whatever happened before.
        assert cpu < POLICY.cpu_normal and memory < POLICY.memory_normal
    kill = decide_overload(samples, NOW, jobs, POLICY)
    if kill is not None:
        assert kill.job_id == max(jobs, key=lambda j: j.admitted_at).job_id
        assert memory >= POLICY.memory_danger or (cpu >= POLICY.cpu_danger and len(jobs) > 1)
    elif jobs:
        assert memory < POLICY.memory_danger and (cpu < POLICY.cpu_danger or len(jobs) == 1)


# -- the real sampler -------------------------------------------------------------


def test_sampler_reads_the_machine_in_the_background():
    sampler = LoadSampler(interval_s=0.05)
    sampler.start()
    try:
        deadline = time.monotonic() + 10
        while len(sampler.samples()) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        samples = sampler.samples()
    finally:
        sampler.stop()
    assert len(samples) >= 4
    assert all(0 <= s.cpu <= 100 and 0 < s.memory <= 100 and s.end > s.start for s in samples)
    assert all(a.end == b.start for a, b in zip(samples, samples[1:], strict=False))
    reading = summarize(samples, samples[-1].end, window_s=samples[-1].end - samples[0].start)
    assert reading is not None and reading.memory == samples[-1].memory
