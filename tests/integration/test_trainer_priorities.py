"""Priorities, deadlines and retries through the real Trainer: admission
order and the gate's choice at danger on scripted load and with a real
memory burner; run-time and wall-clock deadlines; retries of a job that
fails on its own (and none for a validation rejection); bad input."""

from __future__ import annotations

import re
import time

import grpc
import psutil
import pytest
from google.protobuf import timestamp_pb2

from tests.support.trainer_support import (
    ScriptedLoad,
    alive,
    make_config,
    pids_from_log,
    running_trainer,
    write_spec,
)
from trainer.gate import GatePolicy
from trainer.v1 import trainer_pb2

pytestmark = pytest.mark.timeout(180)
S = trainer_pb2
# settle_s=0: the scripted reading is the whole load (a just-admitted job is not
# expected to add its thread budget on top), so jobs run side by side below danger.
GATE = GatePolicy(
    cpu_normal=55, cpu_danger=95, memory_normal=55, memory_danger=95, warmup_s=0, window_s=0.2, settle_s=0
)


def test_the_queue_admits_higher_priority_first_then_oldest(tmp_path):
    load = ScriptedLoad(cpu=70, memory=10)  # nothing admitted until the load drops
    config = make_config(tmp_path, gate=GATE)
    with running_trainer(config, load) as trainer:
        started = [
            (name, trainer.start(name, corpus="fake.json", priority=priority).job_id)
            for name, priority in (
                ("low", S.PRIORITY_LOW),
                ("normal1", S.PRIORITY_UNSPECIFIED),  # unspecified is NORMAL
                ("high", S.PRIORITY_HIGH),
                ("normal2", S.PRIORITY_NORMAL),
            )
        ]
        assert trainer.status(started[1][1]).job.priority == S.PRIORITY_NORMAL
        time.sleep(0.4)
        assert all(trainer.status(j).job.state == S.JOB_STATE_QUEUED for _, j in started)
        load.set(cpu=10, memory=10)
        done = {name: trainer.wait(job_id) for name, job_id in started}
    order = sorted(done, key=lambda n: done[n].start_time.ToNanoseconds())
    assert order == ["high", "normal1", "normal2", "low"]
    assert all(j.state == S.JOB_STATE_SUCCEEDED for j in done.values())


def test_at_danger_the_gate_stops_the_lowest_priority_job_even_if_older(tmp_path):
    load = ScriptedLoad(cpu=10, memory=10)
    config = make_config(tmp_path, gate=GATE)
    slow = write_spec(config.data_root, "slow.json", epoch_s=30)
    steady = write_spec(config.data_root, "steady.json", epoch_s=0.3)
    with running_trainer(config, load) as trainer:
        low = trainer.start(
            "movie", corpus=steady, priority=S.PRIORITY_LOW, hyperparameters=S.Hyperparameters(epochs=8)
        )
        trainer.wait_log(low.job_id, '"epoch": 1,')
        high = trainer.start("star", "明星", corpus=slow, priority=S.PRIORITY_HIGH)
        trainer.wait(high.job_id, [S.JOB_STATE_RUNNING])
        load.set(cpu=99, memory=10)
        requeued = trainer.wait(low.job_id, [S.JOB_STATE_QUEUED])
        # The reading is a window's mean, so the scripted 99% may show as 98.9%.
        assert re.search(r"cpu 9[5-9]\.\d% >= danger 95%", requeued.reason), requeued.reason
        assert "the newest of the 1 LOW-priority job(s) of 2 running goes first" in requeued.reason
        assert trainer.status(high.job_id).job.state == S.JOB_STATE_RUNNING
        load.set(cpu=10, memory=10)
        done = trainer.wait(low.job_id)
        assert done.state == S.JOB_STATE_SUCCEEDED and done.attempts == 2
        assert any(
            line.startswith("resumed after epoch") for line in trainer.status(low.job_id, 1000).log_tail
        )


def test_a_real_memory_burner_gets_the_low_priority_job_killed_before_a_newer_normal_one(tmp_path):
    baseline = psutil.virtual_memory().percent
    gib = 100 * 2**30 / psutil.virtual_memory().total
    gate = GatePolicy(
        cpu_normal=101,
        cpu_danger=101,
        memory_normal=baseline + 0.5 * gib,
        memory_danger=baseline + 0.8 * gib,
        warmup_s=0,
        window_s=0.5,
    )
    config = make_config(tmp_path, gate=gate, sample_interval_s=0.1, overload_policy="fail")
    trigger = tmp_path / "burn-now"
    burner = write_spec(
        config.data_root, "burner.json", epoch_s=30, burn_memory_mb=1536, burn_s=20, burn_when=str(trigger)
    )
    idle = write_spec(config.data_root, "idle.json", epoch_s=30)
    with running_trainer(config) as trainer:
        # The LOW job is the older one; without priorities the newer one would go first.
        low = trainer.start("movie", corpus=idle, priority=S.PRIORITY_LOW)
        trainer.wait(low.job_id, [S.JOB_STATE_RUNNING], timeout=120)
        normal = trainer.start("star", "明星", corpus=burner)
        trainer.wait(normal.job_id, [S.JOB_STATE_RUNNING], timeout=120)
        trigger.touch()
        first = trainer.wait(low.job_id, timeout=120)
        second = trainer.wait(normal.job_id, timeout=120)
    assert first.state == second.state == S.JOB_STATE_FAILED
    assert "killed by the load gate: memory" in first.reason and "LOW-priority" in first.reason
    assert "killed by the load gate: memory" in second.reason and "newest of 1" in second.reason
    assert first.end_time.ToNanoseconds() < second.end_time.ToNanoseconds()


def test_a_run_time_deadline_kills_and_fails_the_job(tmp_path):
    config = make_config(tmp_path, gate=GATE)
    slow = write_spec(config.data_root, "slow.json", epoch_s=30, grandchildren=True)
    with running_trainer(config, ScriptedLoad()) as trainer:
        job = trainer.start(corpus=slow, deadline_seconds=1, max_retries=3)
        pids = pids_from_log(trainer.wait_log(job.job_id, "pids "))
        failed = trainer.wait(job.job_id)
        assert failed.state == S.JOB_STATE_FAILED, failed.reason
        assert "deadline passed: ran" in failed.reason and "deadline_seconds 1" in failed.reason
        assert failed.retries == 0 and failed.attempts == 1 and failed.deadline_seconds == 1  # not retried
        assert 1.0 <= failed.run_seconds < 30
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(p) for p in pids.values())


def test_a_wall_clock_deadline_fails_a_job_still_queued(tmp_path):
    load = ScriptedLoad(cpu=70, memory=10)
    config = make_config(tmp_path, gate=GATE)
    with running_trainer(config, load) as trainer:
        when = timestamp_pb2.Timestamp()
        when.FromNanoseconds(time.time_ns() + 1_000_000_000)
        job = trainer.start(deadline_time=when)
        failed = trainer.wait(job.job_id)
        assert failed.state == S.JOB_STATE_FAILED and failed.attempts == 0
        assert "deadline passed: deadline_time" in failed.reason and "while queued" in failed.reason


def test_a_job_failing_on_its_own_is_retried_and_resumes(tmp_path):
    config = make_config(tmp_path, gate=GATE)
    flaky = write_spec(config.data_root, "flaky.json", fail_times=2)
    always = write_spec(config.data_root, "always.json", exit_code=2)
    rejected = write_spec(config.data_root, "reject.json", reject=True)
    with running_trainer(config, ScriptedLoad()) as trainer:
        ok = trainer.start("movie", corpus=flaky, max_retries=2)
        bad = trainer.start("star", "明星", corpus=always, max_retries=2)
        no = trainer.start("beauty", "美妆", corpus=rejected, max_retries=2)
        done = trainer.wait(ok.job_id)
        assert done.state == S.JOB_STATE_SUCCEEDED and done.retries == 2 and done.attempts == 3
        log = "\n".join(trainer.status(ok.job_id, 1000).log_tail)
        assert "retry 1 of at most 2" in log and "retry 2 of at most 2" in log
        assert "resumed after epoch 3" in log
        failed = trainer.wait(bad.job_id)
        assert failed.state == S.JOB_STATE_FAILED and failed.retries == 2 and failed.attempts == 3
        assert failed.reason.startswith("exited with code 2")
        not_retried = trainer.wait(no.job_id)
        assert (
            not_retried.state == S.JOB_STATE_FAILED and not_retried.attempts == 1 and not_retried.retries == 0
        )
        assert not_retried.exit_code == 3


def test_bad_limits_and_priorities_are_invalid_argument_naming_the_field(tmp_path):
    config = make_config(tmp_path, gate=GATE)
    past = timestamp_pb2.Timestamp(seconds=1)
    with running_trainer(config, ScriptedLoad()) as trainer:
        for fields, words in (
            (dict(max_retries=11), "max_retries must be 0..10"),
            (dict(priority=9), "priority has an unknown value 9"),
            (dict(deadline_time=past), "deadline_time 1970-01-01T00:00:01Z has already passed"),
            (dict(deadline_seconds=0), "deadline_seconds must be 1.."),
        ):
            with pytest.raises(grpc.RpcError) as err:
                trainer.start(**fields)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in err.value.details(), err.value.details()
        spec = S.SweepSpec(
            model="movie",
            label="影视",
            search_space={"epochs": S.SearchSpace(values=S.ValueList(values=[1, 2]))},
            trial_budget=2,
            metric="f1",
            direction=S.METRIC_DIRECTION_MAXIMIZE,
            priority=5,
        )
        with pytest.raises(grpc.RpcError) as err:
            trainer.stub.StartSweep(S.StartSweepRequest(spec=spec), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "spec.priority has an unknown value 5" in err.value.details()
