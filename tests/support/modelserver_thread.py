"""Run labeler-modelserver in-process on its own event loop thread, so tests can
talk to it with TF Serving's official (synchronous) client stubs, exactly as
TF Serving's own tests do."""

from __future__ import annotations

import asyncio
import os
import pathlib
import threading

import grpc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[2]
# TF Serving's own test models and configs, checked in (Apache-2.0, see its NOTICE).
TESTDATA = REPO / "tests" / "testdata" / "tfserving"
RPC_TIMEOUT = 30.0


class ServerThread:
    """``with ServerThread(options) as s:`` -> ``s.port``, ``s.channel``,
    ``s.manager``, ``s.run(coro)`` (on the server's loop)."""

    def __init__(self, options) -> None:
        self.options = options
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="modelserver-loop", daemon=True)
        self.server = self.manager = self.channel = None
        self.port = 0

    def run(self, coro, timeout: float = 120.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> ServerThread:
        from modelserver.server import create_server

        self._thread.start()
        try:
            self.server = self.run(create_server(self.options))
            self.port, self.manager = self.server.port, self.server.app
        except BaseException:
            self._stop_loop()
            raise
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        return self

    def __exit__(self, *exc) -> None:
        self.channel.close()
        self.run(self.server.stop(1.0))
        self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def prediction_stub(self):
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        return prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def model_stub(self):
        from tensorflow_serving.apis import model_service_pb2_grpc

        return model_service_pb2_grpc.ModelServiceStub(self.channel)
