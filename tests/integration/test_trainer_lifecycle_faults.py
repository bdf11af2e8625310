"""Faults found by a hostile user, through a real Trainer and real processes
(issue 25): the gate re-admitting a requeued job on an estimate taken while
it starved, only to kill it again; a deterministic failure retried anyway;
a CLI reader that closes its pipe; the job store locked by another process
while clients call."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.support.trainer_support import REGISTRY, ScriptedLoad, make_config, running_trainer, write_spec
from trainer.gate import GatePolicy
from trainer.recipes import RECIPES
from trainer.v1 import trainer_pb2

pytestmark = pytest.mark.timeout(180)
S = trainer_pb2
GATE = GatePolicy(
    cpu_normal=55, cpu_danger=95, memory_normal=55, memory_danger=95, warmup_s=0, window_s=0.2, settle_s=0
)


def wait_until(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s"
        time.sleep(0.05)
    return value


def test_a_job_starved_then_requeued_is_not_readmitted_only_to_be_killed_again(tmp_path):
    load = ScriptedLoad(cpu=10, memory=10)
    config = make_config(tmp_path, gate=GATE, requeue_backoff_s=0.1, max_requeue_backoff_s=0.1)
    slow = write_spec(config.data_root, "slow.json", epoch_s=30)
    with running_trainer(config, load) as trainer:
        steady = trainer.start("movie", corpus=slow)
        trainer.wait(steady.job_id, [S.JOB_STATE_RUNNING])
        # A thread budget of about half the machine: it fits beside 10%, not beside 50%.
        cpus = trainer.status(steady.job_id).load_limits.cpu_cores
        threads = max(1, round(cpus / 2))
        if not 45 <= 100 * threads / cpus < 85:
            pytest.skip(f"no thread budget of about half of {cpus:g} cpus")
        starved = trainer.start(
            "star", "明星", corpus=slow, hyperparameters=S.Hyperparameters(threads=threads)
        )
        trainer.wait(starved.job_id, [S.JOB_STATE_RUNNING])
        # Measured while it starves (it sleeps: its tree shows next to no CPU).
        wait_until(
            "a reading of its tree", lambda: trainer.status(starved.job_id).job.resources.read_time.seconds
        )
        time.sleep(0.5)  # a few windows of samples
        load.set(cpu=99, memory=10)  # burners take the machine to danger: the newest job goes
        requeued = trainer.wait(starved.job_id, [S.JOB_STATE_QUEUED])
        assert "killed by the load gate" in requeued.reason and "overload kill 1" in requeued.reason
        load.set(cpu=50, memory=10)  # the burners stopped; the steady job's load stays
        end = time.monotonic() + 3.0  # 30 backoffs: every chance to churn
        while time.monotonic() < end:
            job = trainer.status(starved.job_id).job
            if job.state == S.JOB_STATE_RUNNING:
                load.set(cpu=99, memory=10)  # what its real load does to a machine at 50%
            time.sleep(0.05)
        job = trainer.status(starved.job_id).job
        assert job.state == S.JOB_STATE_QUEUED and job.attempts == 1, job.reason
        assert "expected load with it would reach danger" in job.gate.reason, job.gate.reason
        assert "(its thread budget)" in job.gate.reason
        # Once the steady job ends, it runs (alone: CPU never kills the only job).
        load.set(cpu=10, memory=10)
        trainer.stub.Kill(S.KillRequest(job_id=steady.job_id), timeout=30)
        again = trainer.wait(starved.job_id, [S.JOB_STATE_RUNNING])
        assert again.attempts == 2
        log = trainer.status(starved.job_id, 1000).log_tail
        assert sum("killed by the load gate" in line for line in log) == 1, log
        trainer.stub.Kill(S.KillRequest(job_id=starved.job_id), timeout=30)


def test_a_deterministic_failure_of_the_real_recipe_is_not_retried(tmp_path):
    config = make_config(tmp_path, registry={**RECIPES, **REGISTRY})
    (config.data_root / "empty.jsonl").write_text("")
    flaky = write_spec(config.data_root, "flaky.json", fail_times=1)
    with running_trainer(config) as trainer:
        bad = trainer.start(recipe="fasttext", corpus="empty.jsonl", max_retries=2)
        other = trainer.start(
            "star", "明星", corpus=flaky, max_retries=2
        )  # exit 2 of the fake recipe: not declared
        failed = trainer.wait(bad.job_id, timeout=120)
        assert failed.state == S.JOB_STATE_FAILED and failed.exit_code == 2
        assert (failed.attempts, failed.retries) == (1, 0), failed.reason
        assert "too small" in failed.reason and "not retried" in failed.reason
        done = trainer.wait(other.job_id)
        assert done.state == S.JOB_STATE_SUCCEEDED and done.retries == 1


def test_cli_output_into_a_closed_pipe_ends_quietly(tmp_path):
    config = make_config(tmp_path)
    with running_trainer(config) as trainer:
        job = trainer.start()
        for _ in range(3):
            trainer.start()
        env = {**os.environ, "TRAINER_TARGET": trainer.target}
        for args in (["list"], ["status", job.job_id]):
            # The reader is gone before the command writes (as `| head -1` is after one line).
            proc = subprocess.Popen(
                [sys.executable, "-m", "trainer.cli", *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            proc.stdout.close()
            _, err = proc.communicate(timeout=60)
            assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()
            assert proc.returncode == 141, err.decode()  # 128 + SIGPIPE, as other tools end


LOCK_HOLDER = """
import pathlib, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN IMMEDIATE")
pathlib.Path(sys.argv[2]).write_text("locked")
time.sleep(float(sys.argv[3]))
db.execute("ROLLBACK")
"""


def test_rpcs_answer_while_another_process_holds_the_stores_write_lock(tmp_path):
    config = make_config(tmp_path)
    with running_trainer(config) as trainer:
        first = trainer.start()
        trainer.wait(first.job_id)
        ready = tmp_path / "locked"
        holder = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(config.database), str(ready), "3"],
        )
        try:
            wait_until("the lock is taken", ready.exists)
            started = trainer.stub.Start.future(S.StartRequest(model="star", label="明星"), timeout=10)
            time.sleep(0.2)  # Start is in: its write waits on the lock
            status = trainer.stub.Status(S.StatusRequest(job_id=first.job_id), timeout=1.5).job
            listed = trainer.stub.List(S.ListRequest(), timeout=1.5).jobs
            assert holder.poll() is None, "the lock was released before Status and List answered"
            assert status.state == S.JOB_STATE_SUCCEEDED and first.job_id in [j.job_id for j in listed]
            job = started.result().job  # within its deadline; its write queued
            assert job.state == S.JOB_STATE_QUEUED
            # Status and List show the queued job before its write is on disk.
            assert trainer.status(job.job_id).job.job_id == job.job_id
        finally:
            holder.wait(30)
        done = trainer.wait(job.job_id)
        assert done.state == S.JOB_STATE_SUCCEEDED
    # Nothing lost: the file holds both jobs, ended.
    rows = dict(sqlite3.connect(config.database).execute("SELECT job_id, state FROM jobs").fetchall())
    assert rows == {first.job_id: "SUCCEEDED", job.job_id: "SUCCEEDED"}
