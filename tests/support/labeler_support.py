"""Helpers for the Labeler's integration tests: an event loop in a thread (so
servers outlive one test and sync stubs, grpcurl and the CLI can call them), a
TCP proxy that can be stopped or made to stall (a model server that accepts
and never answers), and Labeler configs.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine, Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from labeler.v1 import config_pb2, labeler_pb2, labeler_pb2_grpc

EXAMPLE = ["霸王别姬", "是一部", "非常", "值得", "看的", "电影"]
SAMPLE_LABELS = {"movie": "影视", "beauty": "美妆", "star": "明星", "fashion": "时尚"}


class BackgroundLoop:
    """An asyncio loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine, timeout: float = 120.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a backend. ``stall()`` keeps accepting and
    holding connections but never forwards a byte (a server that accepts and
    never speaks); ``stop()`` closes the port and every connection;
    ``forward()`` serves normally again on the same port."""

    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self.port = 0
        self.stalled = False
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def forward(self) -> None:
        self.stalled = False
        if self._server is None:
            await self.start()

    async def stall(self) -> None:
        self.stalled = True

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._drop_connections()

    def _drop_connections(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            w.close()
            self._writers.discard(w)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            while self.stalled:  # hold the bytes: the peer hears nothing
                await asyncio.sleep(0.05)
            writer.write(data)
            await writer.drain()


def labeler_config(
    model_root,
    targets: Mapping[str, str],
    poll_ms: int = 200,
    timeout_ms: int = 1000,
    **top,
) -> config_pb2.LabelerConfig:
    """A config with one label per sample model in ``targets`` (model -> target)."""
    config = config_pb2.LabelerConfig(model_root=str(model_root), version_poll_interval_ms=poll_ms, **top)
    for model, target in targets.items():
        config.labels.add(label=SAMPLE_LABELS[model], model=model, target=target, timeout_ms=timeout_ms)
    return config


def stub(port: int) -> tuple[grpc.Channel, labeler_pb2_grpc.LabelerStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return channel, labeler_pb2_grpc.LabelerStub(channel)


def health_status(port: int, service: str = "labeler.v1.Labeler") -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return reply.status


def wait_until(
    condition: Callable[[], object], timeout: float = 60.0, interval: float = 0.1, what: str = "condition"
):
    """Poll ``condition`` until it returns something truthy; its last value."""
    end = time.monotonic() + timeout
    while True:
        with contextlib.suppress(grpc.RpcError):
            value = condition()
            if value:
                return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def label_versions(labeler: labeler_pb2_grpc.LabelerStub) -> dict[str, tuple[int, str]]:
    reply = labeler.ListLabels(labeler_pb2.ListLabelsRequest(), timeout=5)
    return {i.label: (i.model_version, labeler_pb2.LabelState.Name(i.state)) for i in reply.labels}


class ModelServer:
    """A real labeler-modelserver, in-process (same event loop as its caller)."""

    def __init__(self, model_root, models, port: int = 0, poll_s: float = 0.5) -> None:
        self.model_root = model_root
        self.models = list(models)
        self.port = port
        self.poll_s = poll_s
        self._server = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def manager(self):
        """The running server's ModelManager (versions, warm-up state)."""
        assert self._server is not None, "the model server is not running"
        return self._server.app

    async def start(self) -> ModelServer:
        from modelserver.server import ModelServerOptions, create_server
        from tfserving.protos import model_server_config_pb2

        config = model_server_config_pb2.ModelServerConfig()
        for model in self.models:
            config.model_config_list.config.add(
                name=model, base_path=str(self.model_root / model), model_platform="tensorflow"
            )
        options = ModelServerOptions(
            model_config=config,
            port=self.port,  # 0 the first time; the same port on a restart
            file_system_poll_wait_seconds=self.poll_s,
            intra_op_parallelism=1,
            inter_op_parallelism=1,
            request_threads=2,
        )
        self._server = await create_server(options)
        self.port = self._server.port
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = None
