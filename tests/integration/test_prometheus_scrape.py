"""A real Prometheus (Debian's ``prometheus``) scrapes a running Labeler's
/metrics and its series come back through Prometheus's HTTP API; the alert
rules load into it."""

from __future__ import annotations

import json
import pathlib
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import grpc
import pytest

from labeler.v1 import config_pb2, labeler_pb2
from tests.support.labeler_support import EXAMPLE, BackgroundLoop, stub
from tests.support.observability_support import require_prometheus_tool

pytestmark = pytest.mark.timeout(180)

REPO = pathlib.Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _query(port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as reply:
        body = json.load(reply)
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_a_running_labeler(tmp_path):
    prometheus = require_prometheus_tool("prometheus")
    from labeler.server import create_server

    # No model server: the label stays unavailable, which is itself a series to find.
    config = config_pb2.LabelerConfig(default_target="127.0.0.1:9", version_poll_interval_ms=500)
    config.labels.add(label="影视", model="movie", timeout_ms=100)
    loop = BackgroundLoop()
    server = loop.run(create_server(config, metrics_port=0))
    port = server.port
    proc = None
    try:
        channel, labeler = stub(port)
        with channel, pytest.raises(grpc.RpcError):  # UNAVAILABLE: counted all the same
            labeler.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE), timeout=5)
        (tmp_path / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {REPO / 'deploy/prometheus/labeler-alerts.yaml'}\n"
            "scrape_configs:\n  - job_name: labeler\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{server.app.metrics_port}']\n",
            encoding="utf-8",
        )
        web = _free_port()
        proc = subprocess.Popen(
            [
                prometheus,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{web}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "prometheus.log", "wb"),  # noqa: SIM115 - closed with the process
        )
        deadline = time.monotonic() + 90
        found: dict[str, list[dict]] = {}
        wanted = {
            "up": 'up{job="labeler"} == 1',
            "available": 'labeler_label_available{label="影视", model="movie"}',
            "requests": 'labeler_rpc_requests_total{method="Classify", code="UNAVAILABLE"}',
            "failures": 'labeler_label_results_total{label="影视", arm="served", code="UNAVAILABLE"}',
        }
        while time.monotonic() < deadline and len(found) < len(wanted):
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text(errors="replace")[-2000:]
            for key, promql in wanted.items():
                try:
                    result = _query(web, promql)
                except OSError:  # not listening yet
                    break
                if result:
                    found[key] = result
            time.sleep(0.5)
        assert set(found) == set(wanted), f"series not found through Prometheus: {set(wanted) - set(found)}"
        assert float(found["available"][0]["value"][1]) == 0.0
        assert float(found["requests"][0]["value"][1]) >= 1.0
        # The alert rules loaded into the real server.
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/api/v1/rules", timeout=5) as reply:
            groups = json.load(reply)["data"]["groups"]
        assert {r["name"] for g in groups for r in g["rules"]} >= {"LabelerLabelUnavailable"}
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        loop.run(server.stop(None))
        loop.run(server.app.close())
        loop.close()
