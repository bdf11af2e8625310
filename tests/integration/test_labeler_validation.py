"""Bad requests get INVALID_ARGUMENT with messages that say how to fix them,
and the server keeps serving; with no model server reachable, health stays
NOT_SERVING and Classify fails UNAVAILABLE naming every model. No model server
is needed: validation happens before any model is asked."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import textwrap

import grpc
import pytest
from grpc_health.v1 import health_pb2

from labeler.v1 import labeler_pb2
from tests.support.labeler_support import EXAMPLE, BackgroundLoop, health_status, labeler_config, stub

pytestmark = pytest.mark.timeout(120)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def labeler_port(tmp_path_factory):
    from labeler.server import create_server

    loop = BackgroundLoop()
    dead = f"127.0.0.1:{_closed_port()}"
    config = labeler_config(
        tmp_path_factory.mktemp("models"),
        {"movie": dead, "beauty": dead},
        limits={"max_words": 8, "max_word_bytes": 12, "max_batch_documents": 3},
    )
    server = loop.run(create_server(config))
    port = server.port
    yield port
    loop.run(server.stop(None))
    loop.close()


def _error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=10)
    return err.value


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"words": []}, "words is empty; send the document's words"),
        ({"words": EXAMPLE, "labels": ["体育"]}, "unknown label '体育'; known labels: 影视, 美妆"),
        ({"words": EXAMPLE, "threshold": math.nan}, "threshold must be within [0, 1], got nan"),
        ({"words": EXAMPLE, "threshold": 1.5}, "threshold must be within [0, 1], got 1.5"),
        ({"words": EXAMPLE, "threshold": -math.inf}, "threshold must be within [0, 1], got -inf"),
        ({"words": EXAMPLE * 2}, "words has 12 words; at most 8 are allowed (limits.max_words)"),
        (
            {"words": ["霸王别姬霸王别姬"]},
            "words[0] is 24 bytes long; a word may have at most 12 UTF-8 bytes",
        ),
    ],
)
def test_classify_rejects_bad_requests(labeler_port, request_fields, message):
    channel, labeler = stub(labeler_port)
    with channel:
        err = _error(labeler.Classify, labeler_pb2.ClassifyRequest(**request_fields))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in err.details()
        # The server is still up and answering.
        assert len(labeler.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=10).labels) == 2


def test_classify_batch_limits(labeler_port):
    channel, labeler = stub(labeler_port)
    with channel:
        too_many = labeler_pb2.ClassifyBatchRequest(documents=[labeler_pb2.Document(words=["a"])] * 4)
        err = _error(labeler.ClassifyBatch, too_many)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "documents has 4 documents; at most 3 are allowed" in err.details()
        err = _error(labeler.ClassifyBatch, labeler_pb2.ClassifyBatchRequest())
        assert "documents is empty" in err.details()
        one_empty = labeler_pb2.ClassifyBatchRequest(
            documents=[labeler_pb2.Document(words=["a"]), labeler_pb2.Document()]
        )
        err = _error(labeler.ClassifyBatch, one_empty)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "documents[1].words is empty" in err.details()


def test_no_model_server_means_not_serving_and_unavailable(labeler_port):
    assert health_status(labeler_port) == health_pb2.HealthCheckResponse.NOT_SERVING
    channel, labeler = stub(labeler_port)
    with channel:
        labels = labeler.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=10).labels
        assert [(i.label, i.model, i.model_version) for i in labels] == [
            ("影视", "movie", 0),
            ("美妆", "beauty", 0),
        ]
        assert all(i.state != labeler_pb2.LABEL_STATE_AVAILABLE and i.message for i in labels)
        err = _error(labeler.Classify, labeler_pb2.ClassifyRequest(words=EXAMPLE))
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert "影视 (movie)" in err.details() and "美妆 (beauty)" in err.details()
        assert "no version of model movie is loaded yet" in err.details()


def test_labeler_process_never_loads_tensorflow(tmp_path):
    """Importing the Labeler's modules and serving (including a Predict
    attempt through the TF Serving client) must not start TensorFlow."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        import labeler.cli, labeler.service
        from labeler.server import create_server
        from labeler.v1 import labeler_pb2, labeler_pb2_grpc
        import grpc

        async def main():
            config = labeler.config.config_pb2.LabelerConfig(model_root={str(tmp_path)!r})
            config.labels.add(label="影视", model="movie", target="127.0.0.1:{_closed_port()}", timeout_ms=200)
            server = await create_server(config)
            port = server.port
            async with grpc.aio.insecure_channel(f"127.0.0.1:{{port}}") as channel:
                stub = labeler_pb2_grpc.LabelerStub(channel)
                await stub.ListLabels(labeler_pb2.ListLabelsRequest())
                try:
                    await stub.Classify(labeler_pb2.ClassifyRequest(words=["电影"]))
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE
            await server.stop(None)

        asyncio.run(main())
        heavy = sorted(m for m in sys.modules if m.startswith(("tensorflow.python", "keras")))
        print("HEAVY", heavy)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout
