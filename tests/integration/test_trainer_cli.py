"""The ``trainer`` command line as real subprocesses: client commands against
an in-process server, and ``trainer serve`` itself stopped and restarted
while its job keeps running."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.trainer_support import make_config, running_trainer, write_spec
from trainer.v1 import trainer_pb2, trainer_pb2_grpc

pytestmark = pytest.mark.timeout(180)
S = trainer_pb2
TRAINER = [sys.executable, "-m", "trainer.cli"]


def cli(*args: str, target: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRAINER_TARGET"}
    if target is not None:
        env["TRAINER_TARGET"] = target
    return subprocess.run([*TRAINER, *args], capture_output=True, text=True, timeout=timeout, env=env)


def job_id_of(output: str) -> str:
    match = re.search(r"^job (\S+)", output, re.M)
    assert match, output
    return match.group(1)


@pytest.fixture
def trainer(tmp_path):
    config = make_config(tmp_path)
    write_spec(config.data_root, "slow.json", epoch_s=30)
    with running_trainer(config) as t:
        yield t


def test_start_watch_status_and_list(trainer):
    started = cli("start", "movie", "--label", "影视", "--epochs", "2", target=trainer.target)
    assert started.returncode == 0, started.stderr
    job_id = job_id_of(started.stdout)
    assert "QUEUED" in started.stdout.splitlines()[0]

    watched = cli("watch", job_id, target=trainer.target)
    assert watched.returncode == 0, watched.stdout + watched.stderr  # 0: it succeeded
    assert "SUCCEEDED" in watched.stdout and '| progress {"epoch": 2' in watched.stdout

    status = cli("status", job_id, "--target", trainer.target)  # the flag works as well as the env
    assert status.returncode == 0
    assert "result:   version" in status.stdout and "f1 0.847" in status.stdout
    assert "  log:" in status.stdout

    as_json = json.loads(cli("status", job_id, "--json", target=trainer.target).stdout)
    assert as_json["job"]["state"] == "JOB_STATE_SUCCEEDED" and as_json["job"]["label"] == "影视"

    listed = cli("list", "--state", "succeeded", "--model", "movie", target=trainer.target)
    assert listed.returncode == 0 and job_id in listed.stdout
    assert cli("list", "--state", "running", target=trainer.target).stdout.strip() == ""


def test_start_wait_and_kill(trainer):
    started = cli(
        "start",
        "star",
        "--label",
        "明星",
        "--corpus",
        "slow.json",
        "--idempotency-key",
        "k1",
        target=trainer.target,
    )
    job_id = job_id_of(started.stdout)
    again = cli(
        "start",
        "star",
        "--label",
        "明星",
        "--corpus",
        "slow.json",
        "--idempotency-key",
        "k1",
        target=trainer.target,
    )
    assert job_id_of(again.stdout) == job_id
    trainer.wait(job_id, [S.JOB_STATE_RUNNING])
    killed = cli("kill", job_id, target=trainer.target)
    assert (
        killed.returncode == 0 and "STOPPING" in killed.stdout and "killed by a Kill request" in killed.stdout
    )
    assert cli("watch", job_id, target=trainer.target).returncode == 1  # it did not succeed
    waited = cli("start", "beauty", "--label", "美妆", "--wait", target=trainer.target)
    assert waited.returncode == 0 and "SUCCEEDED" in waited.stdout


def test_errors_are_reported_with_their_status_and_exit_1(trainer):
    missing = cli("status", "movie-000000000000", target=trainer.target)
    assert missing.returncode == 1 and missing.stderr.startswith("trainer: NOT_FOUND: no job")
    bad = cli("start", "a/b", "--label", "x", target=trainer.target)
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "model name 'a/b'" in bad.stderr
    escape = cli("start", "movie", "--label", "影视", "--corpus", "../x.jsonl", target=trainer.target)
    assert escape.returncode == 1 and "contains '..'" in escape.stderr
    usage = cli("start", "movie", target=trainer.target)  # no --label
    assert usage.returncode == 2
    down = cli("list", "--timeout", "2", target="127.0.0.1:1")
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr


# -- trainer serve ------------------------------------------------------------------


def serve(tmp_path: pathlib.Path, log_name: str) -> tuple[subprocess.Popen, str]:
    port_file = tmp_path / f"{log_name}.port"
    port_file.unlink(missing_ok=True)
    log = open(tmp_path / f"{log_name}.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [
            *TRAINER,
            "serve",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--data-root",
            str(tmp_path / "data"),
            "--model-root",
            str(tmp_path / "models"),
            "--state-dir",
            str(tmp_path / "state"),
            "--sample-interval",
            "0.1",
            "--window",
            "0.5",
            "--warmup",
            "0",
            "--cpu-normal",
            "101",
            "--cpu-danger",
            "101",
            "--memory-normal",
            "101",
            "--memory-danger",
            "101",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + 60
    while not port_file.exists() or not port_file.read_text().strip():
        assert proc.poll() is None, (tmp_path / f"{log_name}.log").read_text()
        assert time.monotonic() < deadline, "trainer serve did not start"
        time.sleep(0.1)
    target = f"127.0.0.1:{port_file.read_text().strip()}"
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="trainer.v1.Trainer"), timeout=10
        )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    return proc, target


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(30)


@pytest.mark.slow
def test_serve_survives_a_restart_with_its_job_still_running(tmp_path):
    from trainer.corpus import write_corpus

    write_corpus(tmp_path / "data" / "sample", seed=0, docs_per_label=100)
    first, target = serve(tmp_path, "first")
    try:
        # The real fastText recipe, long enough to outlive a restart (killed below).
        started = cli(
            "start",
            "movie",
            "--label",
            "影视",
            "--epochs",
            "200",
            "--batch-size",
            "1",
            "--embedding-dim",
            "8",
            target=target,
        )
        job_id = job_id_of(started.stdout)
        with grpc.insecure_channel(target) as channel:
            stub = trainer_pb2_grpc.TrainerStub(channel)
            deadline = time.monotonic() + 60
            while (
                job := stub.Status(S.StatusRequest(job_id=job_id), timeout=10).job
            ).state == S.JOB_STATE_QUEUED:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert job.state == S.JOB_STATE_RUNNING, job.reason
        assert job.corpus == "sample/train.jsonl"  # the default corpus
        pid = job.pid
    finally:
        assert stop(first) == 0
    assert psutil.Process(pid).is_running()  # the job outlives its Trainer

    second, target = serve(tmp_path, "second")
    try:
        status = cli("status", job_id, target=target)
        assert "RUNNING" in status.stdout and f"re-attached to pid {pid}" in status.stdout, status.stdout
        killed = cli("kill", job_id, target=target)
        assert "STOPPING" in killed.stdout, killed.stdout + killed.stderr  # ended in the background
        deadline = time.monotonic() + 30
        while psutil.pid_exists(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not psutil.pid_exists(pid)
    finally:
        assert stop(second) == 0


def test_sweep_start_wait_status_list_and_kill(trainer, tmp_path):
    write_spec(trainer.service.config.data_root, "peak2.json", epoch_s=0.05, f1_peak_epochs=2)
    started = cli(
        "sweep", "start", "movie", "--label", "影视", "--corpus", "peak2.json", "--space", "epochs=1:3:3",
        "--grid", "--budget", "3", "--parallel", "2", "--metric", "f1", "--wait", target=trainer.target,
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    sweep_id = re.search(r"^sweep (\S+)", started.stdout, re.M).group(1)
    assert re.search(r"^ \*trial 1 +epochs=2 +SUCCEEDED +f1 0\.900", started.stdout, re.M), started.stdout
    assert "SUCCEEDED" in started.stdout.splitlines()[-6] and "final job" in started.stdout
    status = cli("sweep", "status", sweep_id, "--json", target=trainer.target)
    assert json.loads(status.stdout)["best"]["hyperparameters"]["epochs"] == 2
    listed = cli("sweep", "list", "--state", "succeeded", target=trainer.target)
    assert sweep_id in listed.stdout and "3/3 trials" in listed.stdout
    jobs = cli("list", "--sweep", sweep_id, target=trainer.target)
    assert len(jobs.stdout.splitlines()) == 4
    killed = cli("sweep", "kill", sweep_id, target=trainer.target)  # ended: a no-op
    assert killed.returncode == 0 and "SUCCEEDED" in killed.stdout.splitlines()[0]
    bad = cli(
        "sweep",
        "start",
        "movie",
        "--label",
        "影视",
        "--space",
        "epochs",
        "--budget",
        "3",
        target=trainer.target,
    )
    assert bad.returncode == 2 and "NAME=V1,V2" in bad.stderr
    empty = cli(
        "sweep",
        "start",
        "movie",
        "--label",
        "影视",
        "--space",
        "epochs=9:3",
        "--budget",
        "3",
        target=trainer.target,
    )
    assert empty.returncode == 1 and "INVALID_ARGUMENT" in empty.stderr and "min 9 > max 3" in empty.stderr


def test_start_with_priority_deadline_and_retries(trainer):
    started = cli(
        "start", "movie", "--label", "影视", "--priority", "high", "--deadline", "60", "--max-retries", "1",
        "--json", target=trainer.target,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    job = json.loads(started.stdout)
    assert (job["priority"], job["deadlineSeconds"], job["maxRetries"]) == ("PRIORITY_HIGH", 60, 1)
    bad = cli("start", "movie", "--label", "影视", "--max-retries", "99", target=trainer.target)
    assert bad.returncode == 1 and "max_retries must be 0..10" in bad.stderr
