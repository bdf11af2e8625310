"""Partial failures and deadlines with real model servers and real models.

Every label has its own model-server target so one can fail alone: 影视 is
served by its own model server (really stopped and restarted); the other three
by a second model server, each behind its own TCP proxy that can be made to
stall (accept and never answer) or to refuse connections.
"""

from __future__ import annotations

import grpc
import pytest

from labeler.v1 import labeler_pb2
from tests.support.labeler_support import (
    EXAMPLE,
    BackgroundLoop,
    ModelServer,
    TcpProxy,
    label_versions,
    labeler_config,
    stub,
    wait_until,
)

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

OTHERS = ("beauty", "star", "fashion")


class Faults:
    def __init__(self, loop, movie_server, others_server, proxies, port):
        self.loop = loop
        self.movie_server = movie_server
        self.others_server = others_server
        self.proxies = proxies
        self.port = port


@pytest.fixture(scope="module")
def faults(trained_model_root):
    from labeler.server import create_server

    loop = BackgroundLoop()
    movie_server = loop.run(ModelServer(trained_model_root, ["movie"]).start())
    others_server = loop.run(ModelServer(trained_model_root, OTHERS).start())
    proxies = {m: loop.run(TcpProxy(others_server.port).start()) for m in OTHERS}
    targets = {"movie": movie_server.target, **{m: p.target for m, p in proxies.items()}}
    # Per-model timeouts far longer than the callers' deadlines below: the
    # caller's deadline must bound the call.
    config = labeler_config(trained_model_root, targets, timeout_ms=30_000)
    # Every call must reach the model servers: a cached answer would hide the fault.
    config.prediction_cache.disabled = True
    server = loop.run(create_server(config))
    port = server.port
    assert loop.run(server.app.wait_ready(60))
    yield Faults(loop, movie_server, others_server, proxies, port)
    loop.run(server.stop(None))
    for proxy in proxies.values():
        loop.run(proxy.stop())
    loop.run(movie_server.stop())
    loop.run(others_server.stop())
    loop.close()


def _classify(labeler, timeout: float = 10.0, **fields) -> labeler_pb2.ClassifyResponse:
    return labeler.Classify(
        labeler_pb2.ClassifyRequest(words=EXAMPLE, threshold=0, **fields), timeout=timeout
    )


def test_stopped_model_server_fails_alone_and_comes_back(faults):
    channel, labeler = stub(faults.port)
    with channel:
        assert {s.label for s in _classify(labeler).labels} == {"影视", "美妆", "明星", "时尚"}
        faults.loop.run(faults.movie_server.stop())

        reply = _classify(labeler, timeout=5)
        assert {s.label for s in reply.labels} == {"美妆", "明星", "时尚"}
        [failure] = reply.failures
        assert (failure.label, failure.model, failure.code_name, failure.code) == (
            "影视",
            "movie",
            "UNAVAILABLE",
            14,
        )
        assert faults.movie_server.target in failure.message
        wait_until(
            lambda: label_versions(labeler)["影视"][1] == "LABEL_STATE_UNAVAILABLE",
            30,
            what="影视 UNAVAILABLE",
        )
        # Known down: later calls still answer the others.
        reply = _classify(labeler, timeout=5)
        assert [f.label for f in reply.failures] == ["影视"] and len(reply.labels) == 3

        faults.loop.run(faults.movie_server.start())  # same port
        back = wait_until(
            lambda: (r := _classify(labeler, timeout=5)) and not r.failures and r,
            60,
            what="影视 to come back",
        )
        assert {s.label for s in back.labels} == {"影视", "美妆", "明星", "时尚"}
        wait_until(
            lambda: label_versions(labeler)["影视"][1] == "LABEL_STATE_AVAILABLE", 30, what="影视 AVAILABLE"
        )


def test_stalled_model_server_cannot_hold_the_call_past_its_deadline(faults):
    proxy = faults.proxies["beauty"]
    channel, labeler = stub(faults.port)
    with channel:
        faults.loop.run(proxy.stall())
        try:
            # The per-model timeout is 30 s; the caller gives 1.5 s and still
            # gets an answer (not DEADLINE_EXCEEDED) with the others' labels.
            for _ in range(2):
                reply = _classify(labeler, timeout=1.5)
                assert {s.label for s in reply.labels} == {"影视", "明星", "时尚"}
                [failure] = reply.failures
                assert (failure.label, failure.model, failure.code_name) == (
                    "美妆",
                    "beauty",
                    "DEADLINE_EXCEEDED",
                )
            # Only the stalled model asked: every model failed -> UNAVAILABLE, still in time.
            with pytest.raises(grpc.RpcError) as err:
                _classify(labeler, timeout=1.5, labels=["美妆"])
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "美妆 (beauty): DEADLINE_EXCEEDED" in err.value.details()
        finally:
            faults.loop.run(proxy.forward())
        back = wait_until(
            lambda: (r := _classify(labeler, timeout=5)) and not r.failures and r, 60, what="美妆 back"
        )
        assert "美妆" in {s.label for s in back.labels}


def test_every_model_down_is_unavailable_naming_them(faults):
    channel, labeler = stub(faults.port)
    with channel:
        for proxy in faults.proxies.values():
            faults.loop.run(proxy.stop())
        try:
            with pytest.raises(grpc.RpcError) as err:
                _classify(labeler, timeout=5, labels=list(["美妆", "明星", "时尚"]))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            for part in (
                "美妆 (beauty): UNAVAILABLE",
                "明星 (star): UNAVAILABLE",
                "时尚 (fashion): UNAVAILABLE",
            ):
                assert part in err.value.details()
            # 影视 still answers on its own server.
            assert [s.label for s in _classify(labeler, labels=["影视"]).labels] == ["影视"]
        finally:
            for proxy in faults.proxies.values():
                faults.loop.run(proxy.forward())
        wait_until(lambda: not _classify(labeler, timeout=5).failures, 60, what="all labels back")
