"""rpc.server's server lifecycle: the handle every create_server returns, one
server per port, and the app closed exactly once on every path."""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rpc import server as rpc_server
from rpc.security import ServerSecurity


class App:
    """Stands in for an app object: counts its closes."""

    def __init__(self) -> None:
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1


async def start(app: App, port: int = 0, on_bound=None) -> rpc_server.ServerHandle[App]:
    return await rpc_server.start_server(
        app,
        host="127.0.0.1",
        port=port,
        security=ServerSecurity(),
        service_names=["test.v1.Nothing"],
        add_servicers=lambda server: None,
        close_app=app.close,
        on_bound=on_bound,
    )


async def health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return reply.status


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_a_handle_serves_and_stops_once():
    async def run() -> None:
        app = App()
        handle = await start(app)
        assert handle.app is app and handle.port > 0
        assert await health(handle.port) == health_pb2.HealthCheckResponse.SERVING
        await handle.stop(0.5)
        await handle.stop(0.5)
        assert app.closed == 1
        assert port_is_free(handle.port)

    asyncio.run(run())


def test_a_taken_port_is_refused_and_the_app_closed():
    async def run() -> None:
        first = await start(App())
        second_app = App()
        with pytest.raises(rpc_server.PortInUse, match=f"127.0.0.1:{first.port}: the port is in use"):
            await start(second_app, port=first.port)
        assert second_app.closed == 1
        assert await health(first.port) == health_pb2.HealthCheckResponse.SERVING
        await first.stop(0.5)

    asyncio.run(run())


def test_a_failed_start_up_frees_the_port_and_closes_the_app():
    async def run() -> None:
        app = App()

        async def fail() -> None:
            raise RuntimeError("start-up failed")

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with pytest.raises(RuntimeError, match="start-up failed"):
            await start(app, port=port, on_bound=fail)
        assert app.closed == 1
        assert port_is_free(port)

    asyncio.run(run())


def test_serve_until_signal_reports_not_serving_then_stops_and_closes():
    async def run() -> None:
        app = App()
        handle = await start(app)
        statuses: list[int] = []

        async def watch() -> None:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
                stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
                async for reply in stream:
                    statuses.append(reply.status)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        os.kill(os.getpid(), signal.SIGTERM)

        watcher = asyncio.ensure_future(watch())
        await asyncio.wait_for(rpc_server.serve_until_signal(handle, grace=0.5), 30)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        assert statuses[0] == health_pb2.HealthCheckResponse.SERVING
        assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses
        assert app.closed == 1 and handle.drain.draining

    asyncio.run(run())
