"""Faults, with real processes: a model server SIGKILLed under load and
started again; a "model server" that accepts connections and never speaks;
the Trainer SIGKILLed mid-job and restarted (twice); a disk that refuses
the export's writes.

tests/integration/test_labeler_faults.py covers graceful stops and stalls of
in-process model servers behind a proxy; tests/integration/test_trainer_restart.py
a Trainer stopped cleanly; these add the crashes."""

from __future__ import annotations

import os
import pathlib
import socket
import sqlite3
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2

from labeler.v1 import labeler_pb2
from rpc.security import ClientSecurity
from tests.support.labeler_support import (
    EXAMPLE,
    BackgroundLoop,
    label_versions,
    labeler_config,
    stub,
    wait_until,
)
from tests.support.procs import (
    CLOSED_GATE_FLAGS,
    OPEN_GATE_FLAGS,
    Load,
    health,
    modelserver_process,
    trainer_process,
    write_modelserver_config,
)
from tests.support.trainer_support import make_config, running_trainer
from trainer.recipes import FASTTEXT, Recipe
from trainer.v1 import trainer_pb2, trainer_pb2_grpc

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]
S = trainer_pb2
OTHERS = {"beauty": "美妆", "star": "明星", "fashion": "时尚"}


def labeler_with(
    loop: BackgroundLoop, model_root, targets: dict[str, str], tls: ClientSecurity | None, **top
):
    """An in-process Labeler (plaintext to its callers) on the given model servers."""
    from labeler.server import create_server

    config = labeler_config(model_root, targets, **top)
    if tls is not None:
        config.model_server_tls.ca_file, config.model_server_tls.cert_file = tls.tls.ca, tls.tls.cert
        config.model_server_tls.key_file = tls.tls.key
    return loop.run(create_server(config))


def classify(labeler, **fields) -> labeler_pb2.ClassifyResponse:
    return labeler.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE, **fields), timeout=10)


# -- a model server killed under load ------------------------------------------------------


def test_a_model_server_killed_under_load_fails_its_label_alone_then_comes_back(secure_stack, pki, tmp_path):
    tls = pki.server
    flags = (f"--tls-cert={tls.cert}", f"--tls-key={tls.key}", f"--tls-client-ca={tls.ca}")
    config = write_modelserver_config(tmp_path / "movie.config", secure_stack.model_root, ["movie"])
    movie = modelserver_process(config, *flags).start()
    loop = BackgroundLoop()
    server = None
    try:
        targets = {"movie": movie.target, **dict.fromkeys(OTHERS, secure_stack.modelserver.target)}
        server = labeler_with(loop, secure_stack.model_root, targets, pki.client_security(), poll_ms=200)
        port = server.port
        assert loop.run(server.app.wait_ready(60))
        channel, labeler = stub(port)
        with channel:
            load = Load(channel, workers=3, subsets=False).start()
            try:
                wait_until(lambda: load.total >= 50, 60, what="load before the kill")
                movie.kill()  # SIGKILL: no goodbye, connections just drop
                wait_until(
                    lambda: label_versions(labeler)["影视"][1] == "LABEL_STATE_UNAVAILABLE",
                    30,
                    what="影视 UNAVAILABLE",
                )
                down = classify(labeler, threshold=0)
                assert {s.label for s in down.labels} == set(OTHERS.values())
                assert [(f.label, f.code_name) for f in down.failures] == [("影视", "UNAVAILABLE")]
                partial_before = load.partial
                wait_until(lambda: load.partial >= partial_before + 20, 60, what="partial answers under load")

                movie = modelserver_process(config, *flags, port=movie.port).start()  # the same address
                wait_until(lambda: not classify(labeler).failures, 60, what="影视 back")
                served = load.total
                wait_until(lambda: load.total >= served + 50, 60, what="load after the restart")
            finally:
                load.stop()
            assert label_versions(labeler)["影视"][1] == "LABEL_STATE_AVAILABLE"
            assert {s.label for s in classify(labeler, threshold=0).labels} == {"影视", *OTHERS.values()}
        # Not one call failed: while the movie server was gone the others' labels still came back.
        assert set(load.outcomes) == {"OK"}, load.failures[:5]
        assert load.partial >= 20 and set(load.failed_labels) == {"影视"}
    finally:
        if server is not None:
            loop.run(server.stop(None))
        loop.close()
        movie.stop()


# -- a model server that accepts and never answers -------------------------------------


class BlackHole:
    """A TCP port that accepts connections and never reads or writes a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_a_model_server_that_never_answers_costs_only_its_own_label(secure_stack, pki):
    hole = BlackHole()
    loop = BackgroundLoop()
    server = None
    try:
        targets = {"movie": hole.target, **dict.fromkeys(OTHERS, secure_stack.modelserver.target)}
        server = labeler_with(
            loop, secure_stack.model_root, targets, pki.client_security(), poll_ms=200, timeout_ms=300
        )
        port = server.port
        channel, labeler = stub(port)
        with channel:
            wait_until(
                lambda: all(
                    label_versions(labeler)[label][1] == "LABEL_STATE_AVAILABLE" for label in OTHERS.values()
                ),
                60,
                what="the other labels",
            )
            for _ in range(3):
                reply = classify(labeler, threshold=0)
                assert {s.label for s in reply.labels} == set(OTHERS.values())
                [failure] = reply.failures
                assert (failure.label, failure.code_name) == ("影视", "UNAVAILABLE")
                assert "no version of model movie is loaded yet" in failure.message

            def movie_info():
                info = {
                    i.label: i for i in labeler.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=5).labels
                }
                return info["影视"] if "GetModelStatus failed" in info["影视"].message else None

            movie = wait_until(movie_info, 30, what="the first poll of the silent server to time out")
            assert movie.state == labeler_pb2.LABEL_STATE_UNAVAILABLE and movie.model_version == 0
            assert f"DEADLINE_EXCEEDED: model server {hole.target} did not answer" in movie.message
            with pytest.raises(grpc.RpcError) as err:
                classify(labeler, labels=["影视"])
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "影视 (movie)" in err.value.details()
            # Not ready: a load balancer sends it no traffic. Alive: nobody restarts it.
            assert health(channel, "labeler.v1.Labeler") == health_pb2.HealthCheckResponse.NOT_SERVING
            assert health(channel, "liveness") == health_pb2.HealthCheckResponse.SERVING
            # Polling (every 200 ms for ~2 s) reuses one channel: no connection per poll.
            time.sleep(2.0)
            assert 1 <= len(hole.accepted) <= 3
    finally:
        if server is not None:
            loop.run(server.stop(None))
        loop.close()
        hole.close()


# -- the Trainer SIGKILLed mid-job -----------------------------------------------------------

TINY = S.Hyperparameters(epochs=1, batch_size=32, embedding_dim=8, threads=1)
# Seconds an epoch (batch size 1): the Trainer dies mid-training, and a
# restarted one finds the job still running.
SLOW = S.Hyperparameters(epochs=6, batch_size=1, embedding_dim=8, threads=1)


def trainer_stub(process):
    channel = grpc.insecure_channel(process.target)
    return channel, trainer_pb2_grpc.TrainerStub(channel)


def wait_job(trainer, job_id: str, done, timeout: float = 120.0, what: str = "job") -> S.StatusResponse:
    def ready():
        reply = trainer.Status(S.StatusRequest(job_id=job_id, log_lines=200), timeout=10)
        return reply if done(reply) else None

    return wait_until(ready, timeout, interval=0.2, what=what)


def version_dirs(model_root: pathlib.Path, model: str) -> list[str]:
    path = model_root / model
    return sorted(p.name for p in path.iterdir() if p.name.isdigit()) if path.exists() else []


def test_a_trainer_killed_mid_job_loses_nothing(tmp_path):
    """Three Trainers on one state directory, the first two SIGKILLed: one
    with a job mid-training, one with a job starting and another queued.
    Every job ends SUCCEEDED, each with its own version."""
    from trainer.corpus import write_corpus

    write_corpus(tmp_path / "data" / "sample", seed=1, docs_per_label=200)
    models = tmp_path / "models"
    first = trainer_process(tmp_path, *OPEN_GATE_FLAGS).start()
    try:
        channel, trainer = trainer_stub(first)
        with channel:
            tiny = trainer.Start(
                S.StartRequest(model="movie", label="影视", hyperparameters=TINY), timeout=10
            ).job
            slow = trainer.Start(
                S.StartRequest(model="star", label="明星", hyperparameters=SLOW), timeout=10
            ).job
            finished = wait_job(
                trainer, tiny.job_id, lambda r: r.job.state == S.JOB_STATE_SUCCEEDED, what="the tiny job"
            ).job
            running = wait_job(trainer, slow.job_id, lambda r: r.job.progress.epoch >= 1, what="an epoch").job
            assert running.state == S.JOB_STATE_RUNNING and running.progress.epoch < SLOW.epochs
    finally:
        first.kill()  # SIGKILL mid-job: nothing is flushed, nothing is told
    os.kill(running.pid, 0)  # the job lives on without its Trainer

    second = trainer_process(tmp_path, *CLOSED_GATE_FLAGS).start()
    try:
        channel, trainer = trainer_stub(second)
        with channel:
            again = trainer.Status(S.StatusRequest(job_id=slow.job_id), timeout=10).job
            assert again.state == S.JOB_STATE_RUNNING and again.pid == running.pid
            assert f"re-attached to pid {running.pid}" in again.reason
            assert trainer.Status(S.StatusRequest(job_id=tiny.job_id), timeout=10).job == finished
            # Load above normal: these wait, also after the running job ended (a
            # job's end never admits above normal: issue 15).
            third_job = trainer.Start(
                S.StartRequest(model="fashion", label="时尚", hyperparameters=TINY), timeout=10
            ).job
            fourth_job = trainer.Start(
                S.StartRequest(model="beauty", label="美妆", hyperparameters=TINY), timeout=10
            ).job
            # The job started under the first Trainer finishes under the second.
            ended = wait_job(
                trainer,
                slow.job_id,
                lambda r: r.job.state != S.JOB_STATE_RUNNING,
                180,
                what="the slow job to end",
            ).job
            assert ended.state == S.JOB_STATE_SUCCEEDED, ended.reason
            assert version_dirs(models, "star") == [str(ended.model_version)]
            for job in (third_job, fourth_job):
                waiting = wait_job(
                    trainer,
                    job.job_id,
                    lambda r: "at or above normal" in r.job.gate.reason,
                    what="a load reason",
                ).job
                assert waiting.state == S.JOB_STATE_QUEUED
    finally:
        second.kill()  # two jobs queued

    third = trainer_process(tmp_path, *OPEN_GATE_FLAGS).start()
    try:
        channel, trainer = trainer_stub(third)
        with channel:
            for job in (third_job, fourth_job):
                wait_job(
                    trainer,
                    job.job_id,
                    lambda r: r.job.state in (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_KILLED),
                    180,
                    what="the last jobs",
                )
            jobs = trainer.List(S.ListRequest(), timeout=10).jobs
    finally:
        assert third.stop() == 0, third.output()
    assert [j.job_id for j in jobs] == [fourth_job.job_id, third_job.job_id, slow.job_id, tiny.job_id]
    for job in jobs:
        assert job.state == S.JOB_STATE_SUCCEEDED, (job.model, job.reason)
        assert version_dirs(models, job.model) == [str(job.model_version)]
    with sqlite3.connect(tmp_path / "state" / "jobs.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (4,)


# -- a disk that refuses the export's writes ----------------------------------------------


def test_a_disk_refusing_the_export_fails_the_job_cleanly_with_no_half_version(tmp_path):
    from trainer.corpus import write_corpus

    full_disk = Recipe(name="fasttext", module="tests.support.full_disk_recipe", params=FASTTEXT.params)
    config = make_config(
        tmp_path,
        registry={"fasttext": full_disk},
        default_recipe="fasttext",
        default_corpus="sample/train.jsonl",
        kill_grace_s=5.0,
    )
    write_corpus(config.data_root / "sample", seed=2, docs_per_label=40)
    with running_trainer(config) as trainer:
        job = trainer.start("movie", "影视", hyperparameters=TINY)
        ended = trainer.wait(job.job_id, timeout=180)
        log = list(trainer.status(job.job_id, 1000).log_tail)
        assert ended.state == S.JOB_STATE_FAILED, (ended.reason, log[-10:])
        assert ended.reason.startswith("exited with code 1; last line: fasttext: training movie failed: ")
        assert any("File too large" in line for line in log), log[-10:]  # EFBIG, the kernel's refusal
        assert ended.model_version == 0
        assert any(line.startswith("progress ") for line in log)  # it trained; the export failed
        # No version, not even half of one, and no temporary directory left behind.
        assert os.listdir(config.model_root / "movie") == []
        assert trainer.stub.List(S.ListRequest(), timeout=10).jobs[0].job_id == job.job_id
