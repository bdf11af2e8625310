"""One server per port (issue 15, item 3): a second Labeler, Trainer or model
server started on a port another one holds exits non-zero with a clear
message, instead of sharing the port (gRPC's default SO_REUSEPORT would let
the kernel split connections between the two); the first keeps answering.
``make run`` (devstack) says the stack is already running before it starts
anything."""

from __future__ import annotations

import pathlib
import socket
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2

from labeler.v1 import labeler_pb2, labeler_pb2_grpc
from tests.support.procs import (
    ENV,
    health,
    labeler_process,
    modelserver_process,
    trainer_process,
    write_labeler_config,
)
from tests.support.server_process import ServerProcess
from trainer.v1 import trainer_pb2, trainer_pb2_grpc

pytestmark = pytest.mark.timeout(240)

PORT_TAKEN = "the port is in use (is another server already running there?)"


def run_to_the_end(server: ServerProcess) -> subprocess.CompletedProcess:
    """Run a server that should refuse to start; one that starts instead
    (sharing the port) fails the test with TimeoutExpired."""
    return subprocess.run(
        server.argv, env=ENV, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )


def assert_refused(proc: subprocess.CompletedProcess, port: int) -> None:
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert PORT_TAKEN in proc.stderr and f"127.0.0.1:{port}" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]


def empty_modelserver_config(tmp_path) -> pathlib.Path:
    path = tmp_path / "models.config"
    path.write_text("model_config_list {\n}\n")
    return path


def test_a_second_model_server_on_a_taken_port_exits_and_the_first_answers(tmp_path):
    config = empty_modelserver_config(tmp_path)
    with modelserver_process(config) as first:
        second = run_to_the_end(modelserver_process(config, port=first.port))
        assert_refused(second, first.port)
        assert "labeler-modelserver: Failed to start server." in second.stderr
        with grpc.insecure_channel(first.target) as channel:
            assert health(channel) == health_pb2.HealthCheckResponse.SERVING
        assert first.proc.poll() is None


def test_a_second_labeler_on_a_taken_port_exits_and_the_first_answers(tmp_path):
    # The model server is unreachable: the Labeler still serves (its label unavailable).
    config = write_labeler_config(tmp_path / "labeler.json", tmp_path / "models", {"movie": "127.0.0.1:1"})
    metrics = ("--metrics-port", str(free_port()))  # the second fails on the gRPC port, before this one
    with labeler_process(config, *metrics) as first:
        second = run_to_the_end(labeler_process(config, *metrics, "--port", str(first.port)))
        assert_refused(second, first.port)
        assert "labeler serve:" in second.stderr
        for _ in range(5):  # fresh connections: none may reach a second server
            with grpc.insecure_channel(first.target) as channel:
                reply = labeler_pb2_grpc.LabelerStub(channel).ListLabels(
                    labeler_pb2.ListLabelsRequest(), timeout=10
                )
            assert [(info.label, info.model) for info in reply.labels] == [("影视", "movie")]
        assert first.proc.poll() is None


def test_a_second_trainer_on_a_taken_port_exits_and_the_first_answers(tmp_path):
    with trainer_process(tmp_path / "first") as first:
        # Its own state directory: the port, not the state lock, must stop it.
        second = run_to_the_end(trainer_process(tmp_path / "second", "--port", str(first.port)))
        assert_refused(second, first.port)
        assert "trainer serve:" in second.stderr
        for _ in range(5):
            with grpc.insecure_channel(first.target) as channel:
                reply = trainer_pb2_grpc.TrainerStub(channel).List(trainer_pb2.ListRequest(), timeout=10)
            assert list(reply.jobs) == []
        assert first.proc.poll() is None
        # The second Trainer touched no job store: it stopped at the port.
        assert not (tmp_path / "second" / "state").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_run_says_the_stack_is_already_running_and_starts_nothing(tmp_path):
    root = tmp_path / "var"
    with socket.socket() as running:  # stands in for a running stack's Trainer
        running.bind(("127.0.0.1", 0))
        running.listen()
        taken = running.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "devstack",
                "--root",
                str(root),
                "--trainer-port",
                str(taken),
                "--labeler-port",
                str(free_port()),
                "--modelserver-port",
                str(free_port()),
            ],
            env=ENV,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode != 0
    assert "the stack is already running" in proc.stderr
    assert f"127.0.0.1:{taken} (Trainer)" in proc.stderr
    assert "starting" not in proc.stdout
    assert not root.exists()
