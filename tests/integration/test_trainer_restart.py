"""A restarted Trainer reconciles its jobs: queued ones stay queued, a running
one whose process lives on (same pid and create time) is re-attached, one
that is gone is judged by its log; nothing is silently lost."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import psutil
import pytest

from tests.support.trainer_support import (
    ScriptedLoad,
    alive,
    make_config,
    pids_from_log,
    running_trainer,
    write_spec,
)
from trainer.gate import GatePolicy
from trainer.service import StateDirInUse, TrainerService
from trainer.v1 import trainer_pb2

pytestmark = pytest.mark.timeout(120)
S = trainer_pb2
GATE = GatePolicy(warmup_s=0, window_s=0.2, settle_s=0)


def ended(pid: int) -> bool:
    """Exited: gone, or a zombie. The in-process Trainer's jobs are children of
    this test process, which stands in for the stopped Trainer and does not
    reap them (the subprocess test in test_trainer_cli restarts a real one)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_dead(pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ended(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ended(pid), f"pid {pid} still running"


def test_a_restarted_trainer_reattaches_requeues_and_judges_its_jobs(tmp_path):
    config = make_config(tmp_path, gate=GATE, stop_jobs_on_exit=False)
    slow = write_spec(config.data_root, "slow.json", epoch_s=30, grandchildren=True)
    # Long enough to end only after the first Trainer stopped (an end would let
    # the queued job in, as a job ending frees its place).
    short = write_spec(config.data_root, "short.json", epoch_s=4)
    load = ScriptedLoad(cpu=10, memory=10)
    with running_trainer(config, load) as first:
        kept = first.start("movie", corpus=slow)
        lost = first.start("star", "明星", corpus=slow)
        finishes = first.start("beauty", "美妆", corpus=short, hyperparameters=S.Hyperparameters(epochs=1))
        for job in (kept, lost, finishes):
            first.wait(job.job_id, [S.JOB_STATE_RUNNING])
        kept_pids = pids_from_log(first.wait_log(kept.job_id, '"escapee"'))
        lost_pids = pids_from_log(first.wait_log(lost.job_id, '"escapee"'))
        finishes_pid = first.status(finishes.job_id).job.pid
        load.set(cpu=70, memory=10)  # between normal and danger: the next job waits
        time.sleep(0.5)  # a full window of the new load
        queued = first.start("fashion", "时尚")
        time.sleep(0.3)
        assert first.status(queued.job_id).job.state == S.JOB_STATE_QUEUED
    # The Trainer is gone; its jobs are not.
    assert alive(kept_pids["root"]) and alive(lost_pids["root"])
    os.killpg(lost_pids["root"], signal.SIGKILL)  # one job dies while nobody watches
    os.kill(lost_pids["escapee"], signal.SIGKILL)
    wait_dead(finishes_pid)  # another finishes while nobody watches

    with running_trainer(config, ScriptedLoad(cpu=70, memory=10)) as second:
        reattached = second.status(kept.job_id).job
        assert reattached.state == S.JOB_STATE_RUNNING
        assert reattached.pid == kept_pids["root"] and "re-attached" in reattached.reason
        gone = second.status(lost.job_id).job
        assert (
            gone.state == S.JOB_STATE_FAILED
            and "lost" in gone.reason
            and str(lost_pids["root"]) in gone.reason
        )
        finished = second.status(finishes.job_id).job
        assert finished.state == S.JOB_STATE_SUCCEEDED and "while the Trainer was down" in finished.reason
        assert (config.model_root / "beauty" / str(finished.model_version)).is_dir()
        assert second.status(queued.job_id).job.state == S.JOB_STATE_QUEUED
        # The re-attached job is fully managed: Kill takes its whole tree.
        second.stub.Kill(S.KillRequest(job_id=kept.job_id), timeout=30)
        assert second.wait(kept.job_id).state == S.JOB_STATE_KILLED
        for pid in kept_pids.values():
            wait_dead(pid)
        log = second.status(kept.job_id, 1000).log_tail
        assert any("re-attached" in line for line in log)


def test_stop_jobs_on_exit_requeues_running_jobs_for_the_next_start(tmp_path):
    config = make_config(tmp_path, gate=GATE)  # stop_jobs_on_exit=True
    steady = write_spec(config.data_root, "steady.json", epoch_s=0.3)
    with running_trainer(config, ScriptedLoad()) as first:
        job = first.start(corpus=steady, hyperparameters=S.Hyperparameters(epochs=6))
        first.wait_log(job.job_id, '"epoch": 2,')
        pid = first.status(job.job_id).job.pid
    wait_dead(pid)
    with running_trainer(config, ScriptedLoad()) as second:
        done = second.wait(job.job_id)
        assert done.state == S.JOB_STATE_SUCCEEDED and done.attempts == 2
        log = second.status(job.job_id, 1000).log_tail
        assert any(line.startswith("resumed after epoch") for line in log)


def test_two_trainers_cannot_share_a_state_dir(tmp_path):
    config = make_config(tmp_path)

    async def scenario() -> None:
        first = TrainerService(config, ScriptedLoad())
        await first.start()
        try:
            with pytest.raises(StateDirInUse, match="another Trainer is using the state directory"):
                await TrainerService(config, ScriptedLoad()).start()
        finally:
            await first.close()
        second = TrainerService(config, ScriptedLoad())
        await second.start()  # free again once the first closed
        await second.close()

    asyncio.run(scenario())
