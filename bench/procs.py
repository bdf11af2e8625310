"""The servers under test, each in its own process (so the load generator's GIL
does not slow them): labeler-modelserver and the Labeler, started through their
real command lines and waited for with the standard health service."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from bench.models import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A child server; ``started_s`` is spawn -> SERVING on ``service``."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        service: str,
        log_dir: pathlib.Path,
        metrics_port: int | None = None,
        start_timeout_s: float = 180.0,
    ) -> None:
        self.name, self.port, self.service = name, port, service
        self.metrics_port = metrics_port  # the Labeler's Prometheus endpoint, when it has one
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        start = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_serving(timeout=start_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.started_s = time.perf_counter() - start

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.proc.returncode}; see {self.log_path}:\n"
                        + self.log_path.read_text()[-2000:]
                    )
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(service=self.service), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.02)
        raise TimeoutError(f"{self.name} not SERVING after {timeout:.0f} s; see {self.log_path}")

    def rss_mb(self) -> float:
        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_model_server(
    config_file: pathlib.Path, log_dir: pathlib.Path, start_timeout_s: float = 180.0
) -> ServerProcess:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "modelserver.cli",
        f"--port={port}",
        f"--model_config_file={config_file}",
        "--file_system_poll_wait_seconds=0",
    ]
    return ServerProcess(
        "modelserver", argv, port, "tensorflow.serving.PredictionService", log_dir, None, start_timeout_s
    )


def start_labeler(
    config_file: pathlib.Path, log_dir: pathlib.Path, name: str = "labeler", start_timeout_s: float = 180.0
) -> ServerProcess:
    port, metrics_port = free_port(), free_port()
    argv = [
        sys.executable,
        "-m",
        "labeler.cli",
        "serve",
        "--config",
        str(config_file),
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        "--log-level",
        "WARNING",
    ]
    return ServerProcess(name, argv, port, "labeler.v1.Labeler", log_dir, metrics_port, start_timeout_s)


def predict_batch_totals(labeler: ServerProcess) -> tuple[float, float]:
    """(documents, Predicts) the Labeler has sent so far, from its Prometheus endpoint."""
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{labeler.metrics_port}/metrics", timeout=10).read().decode()
    )
    totals = {"_sum": 0.0, "_count": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name == "labeler_predict_batch_documents":
            for sample in family.samples:
                for suffix in totals:
                    if sample.name.endswith(suffix):
                        totals[suffix] += sample.value
    return totals["_sum"], totals["_count"]
