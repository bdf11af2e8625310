"""An executor whose start blocks (a Ray Jobs API submit is an HTTP call to
the head) must not block the Trainer's event loop: its RPCs keep answering
while an attempt starts, and a job killed while its attempt starts ends
KILLED with that attempt stopped. Through a real Trainer server and the real
local executor, whose start is held until the test lets it go."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from tests.support.trainer_support import ScriptedLoad, make_config, running_trainer, write_spec
from trainer.executor import Attempt, LaunchSpec
from trainer.local_runner import LocalExecutor
from trainer.v1 import trainer_pb2

pytestmark = pytest.mark.timeout(120)
S = trainer_pb2


class HeldStart(LocalExecutor):
    """The local executor, its start held until ``go`` is set (as a submit waits for a slow Ray head)."""

    def __init__(self, cgroup_root: str) -> None:
        super().__init__(cgroup_root)
        self.entered = threading.Event()
        self.go = threading.Event()
        self.started: list[Attempt] = []

    def spawn(self, spec: LaunchSpec) -> Attempt:
        self.entered.set()
        self.go.wait(60)
        attempt = super().spawn(spec)
        self.started.append(attempt)
        return attempt


def wait_until(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s"
        time.sleep(0.05)
    return value


def test_rpcs_answer_while_an_attempt_starts(tmp_path):
    config = make_config(tmp_path)
    executor = HeldStart(config.cgroup_root)
    with running_trainer(config, ScriptedLoad(), executor=executor) as trainer:
        try:
            job = trainer.start("movie")
            assert executor.entered.wait(30), "the scheduler never started the job's attempt"
            # The start is held: a loop that waits for it could not answer (DEADLINE_EXCEEDED).
            try:
                status = trainer.stub.Status(S.StatusRequest(job_id=job.job_id), timeout=10)
            except grpc.RpcError as exc:
                pytest.fail(f"Status did not answer while the attempt started: {exc.code()}")
            assert status.job.state == S.JOB_STATE_QUEUED
            listed = trainer.stub.List(S.ListRequest(), timeout=10)
            assert [j.job_id for j in listed.jobs] == [job.job_id]
        finally:
            executor.go.set()
        assert trainer.wait(job.job_id).state == S.JOB_STATE_SUCCEEDED


def test_a_job_killed_while_its_attempt_starts_ends_killed_and_the_attempt_is_stopped(tmp_path):
    config = make_config(tmp_path)
    slow = write_spec(config.data_root, "slow.json", epoch_s=30)
    executor = HeldStart(config.cgroup_root)
    with running_trainer(config, ScriptedLoad(), executor=executor) as trainer:
        try:
            job = trainer.start("movie", corpus=slow)
            assert executor.entered.wait(30), "the scheduler never started the job's attempt"
            killed = trainer.stub.Kill(S.KillRequest(job_id=job.job_id), timeout=10).job
            assert killed.state == S.JOB_STATE_KILLED
        finally:
            executor.go.set()
        lines = trainer.wait_log(job.job_id, "attempt 1 stopped")
        assert any("KILLED" in line for line in lines if "attempt 1 stopped" in line)
        attempt = wait_until("the attempt started", lambda: executor.started and executor.started[0])
        wait_until("the attempt stopped", attempt.exited)
        assert trainer.status(job.job_id).job.state == S.JOB_STATE_KILLED
