"""Tracing turned on by the Labeler's config exports over OTLP/gRPC: a real
Labeler sends its spans to an in-process OTLP collector (the OTLP
TraceService on 127.0.0.1:0) with the configured service name."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from labeler.v1 import config_pb2, labeler_pb2
from tests.support.labeler_support import EXAMPLE, BackgroundLoop, stub

pytestmark = pytest.mark.timeout(120)


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def Export(self, request, context):
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


def test_config_tracing_exports_spans_over_otlp():
    from labeler.server import create_server

    loop = BackgroundLoop()
    collector = _Collector()

    async def start_collector():
        server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    otlp, otlp_port = loop.run(start_collector())
    config = config_pb2.LabelerConfig(default_target="127.0.0.1:9", version_poll_interval_ms=5000)
    config.labels.add(label="影视", model="movie", timeout_ms=100)
    config.tracing.enabled = True
    config.tracing.otlp_endpoint = f"http://127.0.0.1:{otlp_port}"
    config.tracing.service_name = "labeler-under-test"
    server = loop.run(create_server(config))
    port = server.port
    try:
        assert server.app.tracing is not None
        channel, labeler = stub(port)
        with channel, pytest.raises(grpc.RpcError):  # no model server: UNAVAILABLE, traced all the same
            labeler.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE), timeout=5)
    finally:
        loop.run(server.stop(None))
        loop.run(server.app.close())  # shuts the exporter down: the batch is sent now
        loop.run(otlp.stop(None))
        loop.close()
    spans = {}
    for request in collector.requests:
        for resource_spans in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}[
                "service.name"
            ]
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    spans[span.name] = (service, {a.key: a.value.string_value for a in span.attributes})
    assert "labeler.v1.Labeler/Classify" in spans, list(spans)
    service, attributes = spans["labeler.v1.Labeler/Classify"]
    assert service == "labeler-under-test"
    assert attributes["rpc.grpc.status_code"] == "UNAVAILABLE"


def test_tracing_sample_ratio_is_validated():
    from labeler.config import ConfigError, validate

    config = config_pb2.LabelerConfig()
    config.labels.add(label="影视", model="movie")
    config.tracing.sample_ratio = 1.5
    with pytest.raises(ConfigError, match=r"tracing.sample_ratio must be within \[0, 1\], got 1.5"):
        validate(config)
