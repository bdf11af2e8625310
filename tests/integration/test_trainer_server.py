"""The Trainer through its gRPC API: a real server on 127.0.0.1:0, real job
processes (the fake recipe: no TensorFlow), real SQLite and log files."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

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

pytestmark = pytest.mark.timeout(120)
S = trainer_pb2


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path)


@pytest.fixture
def trainer(config):
    with running_trainer(config) as t:
        yield t


def code_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_a_job_runs_to_success_and_reports_progress_and_version(trainer, config):
    job = trainer.start("movie", "影视", hyperparameters=S.Hyperparameters(epochs=4))
    assert job.state == S.JOB_STATE_QUEUED  # Start returns at once; the scheduler admits later
    assert job.hyperparameters.epochs == 4 and job.hyperparameters.threads == 1  # defaults filled in
    done = trainer.wait(job.job_id)
    assert done.state == S.JOB_STATE_SUCCEEDED, done.reason
    assert done.progress.epoch == 4 and done.progress.epochs == 4
    assert done.progress.f1 == pytest.approx(0.847)
    assert done.model_version > 0 and (config.model_root / "movie" / str(done.model_version)).is_dir()
    assert done.exit_code == 0 and done.attempts == 1 and done.pid == 0
    assert done.gate.action == S.GATE_ACTION_ADMIT
    tail = trainer.status(job.job_id, 3).log_tail
    assert len(tail) == 3 and tail[-1].startswith("result ")
    health = health_pb2_grpc.HealthStub(trainer.channel).Check(
        health_pb2.HealthCheckRequest(service="trainer.v1.Trainer"), timeout=5
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_a_failing_job_is_failed_with_its_exit_code_and_last_line(trainer, config):
    spec = write_spec(config.data_root, "fails.json", exit_code=3)
    done = trainer.wait(trainer.start(corpus=spec).job_id)
    assert done.state == S.JOB_STATE_FAILED
    assert done.exit_code == 3
    assert "exited with code 3" in done.reason and "failing on purpose" in done.reason


def test_exit_zero_without_a_result_is_a_failure(trainer, config):
    spec = write_spec(config.data_root, "quiet.json", no_result=True)
    done = trainer.wait(trainer.start(corpus=spec).job_id)
    assert done.state == S.JOB_STATE_FAILED and "no exported version" in done.reason


def test_a_result_line_longer_than_a_shown_line_is_read_whole(trainer, config):
    """A 256-label bundle's result line is tens of kilobytes: the job succeeds
    with every label's scores; the line shown in its log tail is cut."""
    spec = write_spec(config.data_root, "bundle.json", result_labels=256)
    done = trainer.wait(trainer.start(corpus=spec).job_id)
    assert done.state == S.JOB_STATE_SUCCEEDED, done.reason
    assert len(done.progress.label_metrics) == 256
    tail = trainer.status(done.job_id, 1).log_tail
    assert tail[-1].startswith("result ") and tail[-1].endswith(" ...") and len(tail[-1]) < 5000


def test_kill_leaves_no_process_of_the_job_behind(trainer, config):
    spec = write_spec(config.data_root, "slow.json", epoch_s=30, grandchildren=True)
    job = trainer.start(corpus=spec)
    pids = pids_from_log(trainer.wait_log(job.job_id, '"escapee"'))
    assert len(pids) == 3 and all(alive(p) for p in pids.values())
    stopping = trainer.stub.Kill(S.KillRequest(job_id=job.job_id), timeout=30).job
    # Kill answers at once; the tree is ended in the background.
    assert stopping.state == S.JOB_STATE_STOPPING and stopping.reason == "stopping: killed by a Kill request"
    killed = trainer.wait(job.job_id)
    assert killed.state == S.JOB_STATE_KILLED and killed.reason == "killed by a Kill request"
    assert killed.exit_code == -15
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in pids.values() if alive(p)] == []
    # Killing an ended job is a no-op that returns it.
    again = trainer.stub.Kill(S.KillRequest(job_id=job.job_id), timeout=10).job
    assert again.state == S.JOB_STATE_KILLED and again.end_time == killed.end_time


def test_kill_of_a_queued_job_takes_it_off_the_queue(tmp_path):
    load = ScriptedLoad(cpu=70)  # between normal and danger: nothing is admitted
    config = make_config(tmp_path, gate=GatePolicy(warmup_s=0, window_s=0.2, settle_s=0))
    with running_trainer(config, load) as trainer:
        job = trainer.start()
        waiting = trainer.wait(job.job_id, [S.JOB_STATE_QUEUED])
        killed = trainer.stub.Kill(S.KillRequest(job_id=job.job_id), timeout=10).job
        assert killed.state == S.JOB_STATE_KILLED and "while queued" in killed.reason
        load.set(cpu=10, memory=10)
        assert trainer.status(job.job_id).job.state == S.JOB_STATE_KILLED
        assert waiting.attempts == 0


@pytest.mark.parametrize(
    ("fields", "code", "says"),
    [
        (dict(model="a/b"), grpc.StatusCode.INVALID_ARGUMENT, "model name 'a/b' is not allowed"),
        (dict(model="Movie"), grpc.StatusCode.INVALID_ARGUMENT, "lowercase"),
        (dict(label=""), grpc.StatusCode.INVALID_ARGUMENT, "label"),
        (dict(label="--model-root=/etc"), grpc.StatusCode.INVALID_ARGUMENT, "not starting with '-'"),
        (dict(corpus="../secret.json"), grpc.StatusCode.INVALID_ARGUMENT, "contains '..'"),
        (dict(corpus="x/../../etc/passwd"), grpc.StatusCode.INVALID_ARGUMENT, "contains '..'"),
        (dict(corpus="/etc/passwd"), grpc.StatusCode.INVALID_ARGUMENT, "relative to the Trainer's data root"),
        (dict(corpus="escape.json"), grpc.StatusCode.INVALID_ARGUMENT, "outside the Trainer's data root"),
        (dict(corpus="missing.json"), grpc.StatusCode.NOT_FOUND, "does not exist"),
        (
            dict(recipe="rm -rf"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown recipe 'rm -rf'; this Trainer runs: fake",
        ),
        (
            dict(hyperparameters=S.Hyperparameters(epochs=0)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "epochs must be",
        ),
        (dict(hyperparameters=S.Hyperparameters(epochs=201)), grpc.StatusCode.INVALID_ARGUMENT, "1..200"),
        (
            dict(hyperparameters=S.Hyperparameters(batch_size=8)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "no hyperparameter",
        ),
    ],
)
def test_bad_start_requests_get_a_clear_status(trainer, config, tmp_path, fields, code, says):
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    if not (config.data_root / "escape.json").exists():
        os.symlink(outside, config.data_root / "escape.json")
    request = {"model": "movie", "label": "影视", **fields}
    got, details = code_of(lambda: trainer.stub.Start(S.StartRequest(**request), timeout=10))
    assert got == code
    assert says in details
    assert trainer.stub.List(S.ListRequest(), timeout=10).jobs == []  # nothing was queued


def test_unknown_jobs_and_bad_arguments_elsewhere(trainer):
    for call in (
        lambda: trainer.stub.Status(S.StatusRequest(job_id="movie-000000000000"), timeout=10),
        lambda: trainer.stub.Kill(S.KillRequest(job_id="nope"), timeout=10),
        lambda: list(trainer.stub.Watch(S.WatchRequest(job_id="nope"), timeout=10)),
    ):
        code, details = code_of(call)
        assert code == grpc.StatusCode.NOT_FOUND and "trainer list" in details
    assert (
        code_of(lambda: trainer.stub.Status(S.StatusRequest(), timeout=10))[0]
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    code, details = code_of(lambda: trainer.stub.List(S.ListRequest(limit=5000), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "limit must be 0..1000" in details
    code, details = code_of(
        lambda: trainer.stub.List(S.ListRequest(states=[S.JOB_STATE_UNSPECIFIED]), timeout=10)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown job state" in details
    job = trainer.start()
    code, details = code_of(
        lambda: trainer.stub.Status(S.StatusRequest(job_id=job.job_id, log_lines=1001), timeout=10)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "log_lines" in details
    assert trainer.wait(job.job_id).state == S.JOB_STATE_SUCCEEDED  # the server is still up


def test_list_filters_by_state_and_model(trainer, config):
    slow = write_spec(config.data_root, "slow.json", epoch_s=30)
    done = trainer.start("movie")
    trainer.wait(done.job_id)
    running = trainer.start("star", "明星", corpus=slow)
    trainer.wait(running.job_id, [S.JOB_STATE_RUNNING])
    other = trainer.start("movie", corpus=slow)
    trainer.wait(other.job_id, [S.JOB_STATE_RUNNING])

    def ids(**fields):
        return [j.job_id for j in trainer.stub.List(S.ListRequest(**fields), timeout=10).jobs]

    assert ids() == [other.job_id, running.job_id, done.job_id]
    assert ids(states=[S.JOB_STATE_RUNNING]) == [other.job_id, running.job_id]
    assert ids(model="movie") == [other.job_id, done.job_id]
    assert ids(model="movie", states=[S.JOB_STATE_SUCCEEDED]) == [done.job_id]
    assert ids(limit=1) == [other.job_id]


def test_watch_streams_state_changes_and_log_lines_until_the_end(trainer, config):
    spec = write_spec(config.data_root, "watched.json", epoch_s=0.2)
    job = trainer.start(corpus=spec, hyperparameters=S.Hyperparameters(epochs=3))
    events = list(trainer.stub.Watch(S.WatchRequest(job_id=job.job_id), timeout=60))
    states = [e.job.state for e in events if e.HasField("job")]
    lines = [e.log_line for e in events if e.HasField("log_line")]
    assert states[-1] == S.JOB_STATE_SUCCEEDED
    assert S.JOB_STATE_RUNNING in states
    assert [line for line in lines if line.startswith("progress ")] and lines[-1].startswith("result ")
    assert len([line for line in lines if line.startswith("result ")]) == 1  # no line twice
    epochs = [e.job.progress.epoch for e in events if e.HasField("job")]
    assert epochs == sorted(epochs) and epochs[-1] == 3


def test_watch_of_an_ended_job_returns_it_and_its_log_then_ends(trainer):
    job = trainer.start()
    trainer.wait(job.job_id)
    events = list(trainer.stub.Watch(S.WatchRequest(job_id=job.job_id), timeout=10))
    assert events[0].job.state == S.JOB_STATE_SUCCEEDED
    assert events[-1].log_line.startswith("result ")


def test_a_retried_start_with_an_idempotency_key_returns_the_same_job(trainer):
    request = S.StartRequest(model="movie", label="影视", idempotency_key="retry-1")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        jobs = list(pool.map(lambda _: trainer.stub.Start(request, timeout=10).job, range(8)))
    assert len({j.job_id for j in jobs}) == 1
    assert len(trainer.stub.List(S.ListRequest(), timeout=10).jobs) == 1
    code, details = code_of(
        lambda: trainer.stub.Start(
            S.StartRequest(model="star", label="明星", idempotency_key="retry-1"), timeout=10
        )
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS and "use a new key" in details


def test_concurrent_starts_never_admit_more_than_the_gate_allows(tmp_path):
    # Load below normal, but a long warm-up: the gate admits one job, then watches.
    config = make_config(tmp_path, gate=GatePolicy(warmup_s=600, window_s=0.2))
    write_spec(config.data_root, "fake.json", epoch_s=30)
    with running_trainer(config, ScriptedLoad(cpu=10, memory=10)) as trainer:
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            jobs = list(pool.map(lambda i: trainer.start(f"m{i}"), range(10)))
        assert all(j.state == S.JOB_STATE_QUEUED for j in jobs)

        def running():
            return [
                j
                for j in trainer.stub.List(S.ListRequest(), timeout=10).jobs
                if j.state == S.JOB_STATE_RUNNING
            ]

        deadline = time.monotonic() + 30
        while not running() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # many scheduler ticks: give a wrong second admission every chance
        assert len(running()) == 1
        queued = trainer.stub.List(S.ListRequest(states=[S.JOB_STATE_QUEUED]), timeout=10).jobs
        assert len(queued) == 9
        head = trainer.status(queued[-1].job_id).job  # the oldest queued job is next
        assert head.gate.action == S.GATE_ACTION_WAIT and "warming up" in head.gate.reason


def test_closing_just_after_a_start_woke_the_scheduler_still_finishes(config):
    """Regression: a Start (or a job's end) wakes the scheduler right as the
    Trainer closes. Python 3.11's asyncio.wait_for swallowed the cancel that
    landed while its wake-up completed; the scheduler ran on and closing the
    Trainer (hence stopping the server) hung forever."""
    from tests.support.labeler_support import BackgroundLoop
    from trainer.domain import JobRequest, JobState
    from trainer.server import create_server

    loop = BackgroundLoop()
    try:
        server = loop.run(create_server(config))
        service = server.app
        scheduler_task = service._task

        async def start_then_close():
            await asyncio.sleep(0.3)  # the scheduler is idle, pausing between ticks
            job = service.start_job(JobRequest(model="movie", label="影视"))  # wakes it
            await service.close()  # in the same step: the cancel meets the wake-up
            return job

        try:
            job = loop.run(start_then_close(), timeout=30)
        except concurrent.futures.TimeoutError:
            pytest.fail(f"closing the Trainer hung; its scheduler task: {scheduler_task}")
        assert scheduler_task.done() and job.state is JobState.QUEUED
        loop.run(server.stop(1.0), timeout=30)
    finally:
        loop.close()
    # The job was queued, not lost: a restarted Trainer runs it.
    with running_trainer(config) as trainer:
        assert trainer.wait(job.job_id).state == S.JOB_STATE_SUCCEEDED
