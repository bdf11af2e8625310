"""OpenTelemetry traces across a real Labeler and a real labeler-modelserver,
in-process, exported to an in-memory exporter: a SERVER span per Classify,
one CLIENT span per Predict (label, model, version, target, outcome) as its
child, and the model server's own SERVER span as the child of that, found
through the trace context the Predict carried in its gRPC metadata."""

from __future__ import annotations

import logging

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from labeler.v1 import labeler_pb2
from rpc import tracing as rpc_tracing
from tests.support.labeler_support import (
    EXAMPLE,
    SAMPLE_LABELS,
    BackgroundLoop,
    health_status,
    labeler_config,
    stub,
    wait_until,
)

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

PREDICT = "tensorflow.serving.PredictionService/Predict"


async def _model_server(model_root, tracing):
    from modelserver.server import ModelServerOptions, create_server
    from tfserving.protos import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for model in SAMPLE_LABELS:
        config.model_config_list.config.add(
            name=model, base_path=str(model_root / model), model_platform="tensorflow"
        )
    options = ModelServerOptions(
        model_config=config,
        port=0,
        intra_op_parallelism=1,
        inter_op_parallelism=1,
        request_threads=2,
        tracing=tracing,
    )
    return await create_server(options)


def test_tracing_off_by_default_installs_nothing():
    assert rpc_tracing.create_tracing(rpc_tracing.TracingSettings()) is None
    assert not rpc_tracing.settings_from_env("labeler", {}).enabled
    assert rpc_tracing.settings_from_env("labeler", {"OTEL_TRACES_EXPORTER": "otlp"}).enabled
    assert not rpc_tracing.settings_from_env(
        "labeler", {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}
    ).enabled


def test_an_unknown_traces_exporter_is_a_warning_naming_what_is_supported(caplog):
    with caplog.at_level(logging.WARNING, logger="rpc.tracing_settings"):
        assert not rpc_tracing.settings_from_env("labeler", {"OTEL_TRACES_EXPORTER": "console"}).enabled
    (record,) = caplog.records
    assert (
        "console is not supported" in record.getMessage() and "supported: otlp, none" in record.getMessage()
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rpc.tracing_settings"):
        rpc_tracing.settings_from_env("labeler", {"OTEL_TRACES_EXPORTER": "otlp"})
        rpc_tracing.settings_from_env("labeler", {"OTEL_TRACES_EXPORTER": "none"})
    assert not caplog.records


def test_spans_of_a_classify_across_labeler_and_model_server(trained_model_root):
    from labeler.server import create_server

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = rpc_tracing.Tracing(provider)

    loop = BackgroundLoop()
    model_server = loop.run(_model_server(trained_model_root, tracing))
    ms_port = model_server.port
    target = f"127.0.0.1:{ms_port}"
    # A generous per-Predict timeout: a busy shared machine must not turn a span into a failure.
    config = labeler_config(trained_model_root, {m: target for m in SAMPLE_LABELS}, timeout_ms=10000)
    server = loop.run(create_server(config, tracing=tracing))
    port = server.port
    try:
        assert loop.run(server.app.wait_ready(120))
        exporter.clear()
        channel, labeler = stub(port)
        with channel:
            reply = labeler.Classify(labeler_pb2.ClassifyRequest(words=EXAMPLE), timeout=30)
            assert "影视" in [s.label for s in reply.labels]
        wait_until(
            lambda: any(s.name == "labeler.v1.Labeler/Classify" for s in exporter.get_finished_spans()),
            timeout=10,
            what="the Classify span",
        )
        assert health_status(port) == 1  # SERVING; health checks are not traced
        spans = exporter.get_finished_spans()
        # Only the Labeler's and the PredictionService's calls are traced: not
        # health checks, nor the version polls (GetModelStatus, every 200 ms).
        assert {s.name for s in spans} == {"labeler.v1.Labeler/Classify", PREDICT}
        classify = [s for s in spans if s.name == "labeler.v1.Labeler/Classify"]
        assert len(classify) == 1
        root = classify[0]
        assert root.kind is SpanKind.SERVER and root.parent is None
        assert root.attributes["rpc.grpc.status_code"] == "OK"

        predicts = [s for s in spans if s.name == PREDICT and s.kind is SpanKind.CLIENT]
        assert sorted(s.attributes["labeler.model"] for s in predicts) == sorted(SAMPLE_LABELS)
        versions = {i.label: i.model_version for i in server.app.service.list_labels()}
        for span in predicts:
            assert span.parent is not None and span.parent.span_id == root.context.span_id
            assert span.context.trace_id == root.context.trace_id
            model = span.attributes["labeler.model"]
            assert span.attributes["labeler.label"] == SAMPLE_LABELS[model]
            assert span.attributes["labeler.model_version"] == versions[SAMPLE_LABELS[model]]
            assert span.attributes["labeler.target"] == target
            assert span.attributes["labeler.arm"] == "served"
            assert span.attributes["rpc.grpc.status_code"] == "OK"

        # The model server's span of each Predict is a child of the Labeler's CLIENT span.
        served = [s for s in spans if s.name == PREDICT and s.kind is SpanKind.SERVER]
        assert len(served) == len(predicts)
        by_id = {s.context.span_id: s for s in predicts}
        for span in served:
            assert span.parent is not None and span.parent.span_id in by_id
            client = by_id[span.parent.span_id]
            assert span.context.trace_id == root.context.trace_id
            assert span.attributes["tfserving.model"] == client.attributes["labeler.model"]
            assert span.attributes["tfserving.model_version"] == client.attributes["labeler.model_version"]

        # A failing call: INVALID_ARGUMENT on the Classify span, no Predict.
        exporter.clear()
        channel, labeler = stub(port)
        with channel, pytest.raises(grpc.RpcError) as failure:
            labeler.Classify(labeler_pb2.ClassifyRequest(words=[]), timeout=10)
        assert failure.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        # The server span ends just after the answer is sent.
        failed = wait_until(
            lambda: [s for s in exporter.get_finished_spans() if s.name == "labeler.v1.Labeler/Classify"],
            timeout=10,
            what="the failed Classify's span",
        )
        assert len(failed) == 1
        assert failed[0].status.status_code is StatusCode.ERROR
        assert failed[0].attributes["rpc.grpc.status_code"] == "INVALID_ARGUMENT"
        assert not [s for s in exporter.get_finished_spans() if s.name == PREDICT]
    finally:
        loop.run(server.stop(None))
        loop.run(server.app.close())
        loop.run(model_server.stop(None))  # closes its ModelManager too
        loop.close()
