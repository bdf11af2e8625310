"""``labeler serve --workers 2`` (issue 27) as a real subprocess in front of
the slow stand-in model server: two processes answer on one port; another
server on that port is still refused; health, metrics (a port per worker)
and SIGHUP reload work across workers; SIGTERM stops them all."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import urllib.request

import grpc
import pytest
from google.protobuf import text_format
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families

from labeler.v1 import labeler_pb2, labeler_pb2_grpc
from rpc import server as rpc_server
from rpc.security import ServerSecurity
from tests.support.labeler_support import BackgroundLoop, health_status, labeler_config, wait_until
from tests.support.server_process import ServerProcess
from tests.support.slow_modelserver import SlowModelServer, write_features

pytestmark = pytest.mark.timeout(300)

WORKERS_ON_PORT = re.compile(r"Labeler workers \[[\d, ]+\] on port (\d+)")
WORKER_SERVING = re.compile(r"Labeler worker (\d) \(pid (\d+)\) serving on")
CONNECTIONS = 16  # new connections land on a worker the kernel picks: all on one is 2**-15 likely


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            base = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", base + 1))
                except OSError:
                    continue
        return base
    raise RuntimeError("no two adjacent free ports")


def _labels(target: str) -> labeler_pb2.ListLabelsResponse:
    with grpc.insecure_channel(target) as channel:  # a new connection each time
        return labeler_pb2_grpc.LabelerStub(channel).ListLabels(labeler_pb2.ListLabelsRequest(), timeout=10)


def _classify(target: str, i: int) -> labeler_pb2.ClassifyResponse:
    with grpc.insecure_channel(target) as channel:
        return labeler_pb2_grpc.LabelerStub(channel).Classify(
            labeler_pb2.ClassifyRequest(words=["电影", "明星", str(i)], threshold=0), timeout=10
        )


def _classify_ok(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "labeler_rpc_requests_total"
        and s.labels.get("method") == "Classify"
        and s.labels.get("code") == "OK"
    )


@pytest.fixture
def model_server(tmp_path):
    loop = BackgroundLoop()
    root = tmp_path / "models"
    write_features(root, "movie", 1)
    server = loop.run(SlowModelServer({"movie": [1]}, 0.0).start())
    yield root, server
    loop.run(server.stop())
    loop.close()


def test_two_workers_share_one_port(model_server, tmp_path):
    root, slow = model_server
    config = labeler_config(root, {"movie": slow.target}, poll_ms=30_000)
    config_file = tmp_path / "labeler.textproto"
    config_file.write_text(text_format.MessageToString(config, as_utf8=True), encoding="utf-8")
    metrics_base = _free_port_pair()
    argv = [sys.executable, "-m", "labeler.cli", "serve", f"--config={config_file}"]
    proc = ServerProcess(
        [*argv, "--port=0", "--workers=2", f"--metrics-port={metrics_base}"], WORKERS_ON_PORT
    ).start()
    try:
        target = proc.target
        wait_until(
            lambda: len({m.group(1) for m in map(WORKER_SERVING.search, proc.log) if m}) == 2,
            timeout=120,
            what="both workers to serve",
        )
        pids = {int(m.group(2)) for m in map(WORKER_SERVING.search, proc.log) if m}
        assert len(pids) == 2 and proc.pid not in pids

        # Health: every connection (whichever worker) reports SERVING once ready.
        for _ in range(CONNECTIONS):
            wait_until(
                lambda: health_status(proc.port) == health_pb2.HealthCheckResponse.SERVING,
                timeout=60,
                what="SERVING",
            )

        # Calls are answered by both workers; each worker's metrics on its own port.
        for i in range(CONNECTIONS):
            assert [s.label for s in _classify(target, i).labels] == ["影视"]
        per_worker = [_classify_ok(metrics_base), _classify_ok(metrics_base + 1)]
        assert sum(per_worker) == CONNECTIONS and min(per_worker) >= 1, per_worker

        # Another server on the port is refused: a gRPC server of this
        # project, a single Labeler, and a second set of workers.
        loop = BackgroundLoop()
        try:
            with pytest.raises(rpc_server.PortInUse):
                loop.run(
                    rpc_server.start_server(
                        None,
                        host="127.0.0.1",
                        port=proc.port,
                        security=ServerSecurity(),
                        service_names=[],
                        add_servicers=lambda server: None,
                        close_app=_nothing,
                    )
                )
        finally:
            loop.close()
        for extra in ([], ["--workers=2"]):
            other = ServerProcess([*argv, f"--port={proc.port}", *extra], re.compile(r"never (\d+)"))
            with pytest.raises(RuntimeError, match="exited with 1"):
                other.start()
            assert "port" in other.output()

        # SIGHUP to the parent reloads every worker (the file poll is 30 s away).
        assert all(info.threshold != 0.25 for info in _labels(target).labels)
        config.labels[0].threshold = 0.25
        config_file.write_text(text_format.MessageToString(config, as_utf8=True), encoding="utf-8")
        proc.proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: all(
                _labels(target).labels[0].threshold == pytest.approx(0.25) for _ in range(CONNECTIONS)
            ),
            timeout=60,
            what="every worker to reload",
        )
    finally:
        assert proc.stop() == 0, proc.output()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def _nothing() -> None:
    return None
